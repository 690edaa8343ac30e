package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/volume-agent/volume-agent/pkg/hooks"
	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

func (a *App) newSetupCommand() *cobra.Command {
	var files []string
	var output string
	var attempts int
	cmd := &cobra.Command{
		Use:   "setup -f FILE [-o text|json]",
		Short: "Set up every volume of the pods in a manifest, once",
		Long: `Set up every volume of every pod in FILE (YAML or JSON, several documents, Pods,
PersistentVolumes and claims, or Lists of them; -f - reads standard input),
through the same volume manager as "volume-agent run", and return once every
volume has settled. Volumes of those pods found on disk that FILE no longer
declares are torn down.

A volume settles when it is ready, when it fails with a final error (or its
claim is not bound), or when it has failed --attempts times with transient
errors (0.5 s then 1 s apart).

One line is printed per volume as it settles: pod, UID, volume, plugin, path,
state, and the error of a failed volume. -o json prints one JSON array of
{podUID, pod, volume, plugin, path, ready, state, error}.

Exit codes: 0 every volume is ready; 1 some volume failed (the others are
still set up); 2 the input is invalid, and nothing on disk was touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if attempts < 1 {
				return invalidInput(fmt.Errorf("invalid value %d for --attempts: must be at least 1", attempts))
			}
			if err := a.load(cmd); err != nil {
				return err
			}
			bundle, err := a.loadManifests(files)
			if err != nil {
				return err
			}
			uids := sets.New[types.UID]()
			for _, pod := range bundle.Pods {
				uids.Insert(pod.UID)
			}
			return a.runOnce(cmd.Context(), uids, bundle, volumemanager.OneShotOptions{Mode: volumemanager.OneShotSetUp, MaxAttempts: attempts}, output)
		},
	}
	addFileFlag(cmd, &files)
	addOneShotFlags(cmd, &output, &attempts)
	return cmd
}

// rootLockWait is how long a command waits for the root dir's lock, which an
// agent that just died may hold for a few more milliseconds.
const rootLockWait = 2 * time.Second

// addOneShotFlags registers the flags setup and teardown share.
func addOneShotFlags(cmd *cobra.Command, output *string, attempts *int) {
	cmd.Flags().StringVarP(output, "output", "o", "text", "output format: text or json")
	cmd.Flags().IntVar(attempts, "attempts", volumemanager.DefaultOneShotAttempts,
		"attempts before a volume that keeps failing with transient errors is reported failed")
}

// loadManifests loads and validates files as one manifest; every problem is
// invalid input.
func (a *App) loadManifests(files []string) (*manifest.Bundle, error) {
	bundle := &manifest.Bundle{}
	var problems []error
	for _, file := range files {
		b, err := a.loadManifest(file)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		bundle.Append(b)
	}
	if len(problems) == 0 && len(files) > 1 {
		// Duplicates across files.
		if err := manifest.Validate(bundle, nil); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return nil, invalidInput(fmt.Errorf("%s", problemLines(utilerrors.NewAggregate(problems))))
	}
	return bundle, nil
}

// newVolumeManager builds the volume manager from the configuration, with
// the lifecycle hooks of the configured directories.
func (a *App) newVolumeManager(ctx context.Context, scope func(types.UID) bool, extra func(*volumemanager.Config)) (*volumemanager.Manager, *hooks.Manager, error) {
	vm := a.Config.VolumeManager
	hookManager := hooks.New(ctx, hooks.Options{Directories: a.Config.Hooks.Directories})
	cfg := volumemanager.Config{
		Plugins: a.Plugins,
		Layout:  a.Layout,
		Mounter: a.Mounter,
		Executor: volumemanager.ExecutorConfig{
			Workers:        int(vm.Workers),
			InitialBackoff: vm.InitialBackoff.Duration,
			MaxBackoff:     vm.MaxBackoff.Duration,
			Timeout:        vm.OperationTimeout.Duration,
		},
		ResyncPeriod:      vm.ResyncPeriod.Duration,
		HealthCheckPeriod: vm.HealthCheckPeriod.Duration,
		SizeCheckPeriod:   vm.SizeCheckPeriod.Duration,
		VerifyPeriod:      vm.VerifyPeriod.Duration,
		SourceLoadTimeout: vm.SourceLoadTimeout.Duration,
		Hooks:             hookManager,
		PodScope:          scope,
	}
	if extra != nil {
		extra(&cfg)
	}
	m, err := volumemanager.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	a.secrets.Store(m)
	return m, hookManager, nil
}

// runOnce runs the volume manager once over the pods uids (declared by
// bundle, which may be nil), printing each volume as it settles.
func (a *App) runOnce(ctx context.Context, uids sets.Set[types.UID], bundle *manifest.Bundle, opts volumemanager.OneShotOptions, output string) error {
	unlock, err := volumemanager.LockRoot(a.Layout.Root, rootLockWait)
	if err != nil {
		return err
	}
	defer unlock()
	m, _, err := a.newVolumeManager(ctx, uids.Has, nil)
	if err != nil {
		return err
	}
	if bundle != nil {
		m.UpdateSources(volumemanager.SourceUpdate{Source: "manifest", Bundle: bundle})
	}
	printer := newResultPrinter(a.Stdout, output)
	opts.Report = printer.print
	results, err := m.RunOnce(ctx, opts)
	printer.close()
	if err != nil {
		return fmt.Errorf("interrupted before every volume settled: %w", err)
	}
	failed := 0
	for _, r := range results {
		if r.Failed() {
			failed++
		}
	}
	if failed > 0 {
		return someFailed(fmt.Errorf("%d of %d volumes failed", failed, len(results)))
	}
	return nil
}

// resultPrinter prints volume results as they come: one line each, or the
// elements of one JSON array.
type resultPrinter struct {
	w      io.Writer
	json   bool
	opened bool
}

func newResultPrinter(w io.Writer, output string) *resultPrinter {
	return &resultPrinter{w: w, json: output == "json"}
}

func (p *resultPrinter) print(r volumemanager.VolumeResult) {
	if p.json {
		data, _ := json.Marshal(r)
		sep := "[\n  "
		if p.opened {
			sep = ",\n  "
		}
		p.opened = true
		fmt.Fprintf(p.w, "%s%s", sep, data)
		return
	}
	fmt.Fprintln(p.w, resultLine(r))
}

func (p *resultPrinter) close() {
	switch {
	case !p.json:
	case p.opened:
		fmt.Fprintln(p.w, "\n]")
	default:
		fmt.Fprintln(p.w, "[]")
	}
}

// resultLine renders a result as "pod=… uid=… volume=… plugin=… path=…
// state=…", then error="…" for a failure.
func resultLine(r volumemanager.VolumeResult) string {
	line := fmt.Sprintf("pod=%s uid=%s volume=%s plugin=%s path=%s state=%s",
		orDash(r.Pod), r.PodUID, r.Volume, orDash(r.Plugin), orDash(r.Path), r.State)
	if r.Error != "" {
		line += fmt.Sprintf(" error=%q", r.Error)
	}
	return line
}

package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/validation"
	"github.com/volume-agent/volume-agent/pkg/csi"
	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/server"
	"github.com/volume-agent/volume-agent/pkg/source"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// APIManifestDir is the directory, inside the root dir, where the pods added
// through the local API are kept so that they survive a restart.
const APIManifestDir = "api-manifests"

// eventLineBuffer bounds the event lines waiting to be printed; more are
// dropped (they are still in the log and at /events).
const eventLineBuffer = 4096

func (a *App) newRunCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the agent: keep the volumes of the desired pods set up, until interrupted",
		Long: `Run the agent in the foreground. It reads pods from the static manifest path
(--pod-manifest-path: a directory of YAML and JSON files, or one file, watched for
changes and read again every --resync-period) and from its local API (on
--socket; see apply and delete), keeps every volume of those pods set up, and
tears down every other volume under the root dir once the sources are read.

A manifest that does not load (a typo, a Deployment) is reported and holds back
only what it could declare: the volumes found on disk whose pod no loaded
manifest declares wait for it, at most volumeManager.sourceLoadTimeout (2m);
then it is taken as declaring nothing, as the kubelet skips a file it cannot
read. A pod removed from a manifest that loaded is torn down at once. A
manifest that loaded once and then fails keeps its pods.

With --csi-endpoint the agent is also a CSI driver: NodePublishVolume calls
for ephemeral inline volumes are one more source of volumes (see docs/csi.md);
with --kubelet-registration-dir it registers itself with the kubelet. The pod
manifest path is optional: a CSI driver alone is a valid agent.

Each volume is printed as it becomes ready, is torn down, or fails. On SIGINT or
SIGTERM the agent cancels the operations in flight and leaves the volumes in
place, so that a restart disturbs no workload; with --teardown-on-exit it tears
every volume down first, for at most --teardown-on-exit-timeout (1m). A second
SIGINT or SIGTERM ends that tear-down at once. Either way the volumes not torn
down are left in place, named in the error, and the agent exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.load(cmd); err != nil {
				return err
			}
			return a.runAgent(cmd.Context())
		},
	}
}

// runAgent runs the daemon until ctx is cancelled.
func (a *App) runAgent(ctx context.Context) error {
	cfg := a.Config
	logger := klog.FromContext(ctx)
	socketMode, err := config.ParseSocketMode(cfg.Server.SocketMode)
	if err != nil {
		return invalidInput(err)
	}
	unlock, err := volumemanager.LockRoot(a.Layout.Root, rootLockWait)
	if err != nil {
		return err
	}
	defer unlock()

	// The agent's own context outlives ctx, so that it can tear volumes
	// down and answer the API after a signal. Deferred calls run in reverse:
	// stop cancels runCtx before wg.Wait waits for the goroutines that end
	// with it, on every return path.
	var wg sync.WaitGroup
	defer wg.Wait()
	runCtx, stop := context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), logger))
	defer stop()

	metrics := server.NewMetrics()
	printer := newEventPrinter(a.Stdout)
	wg.Go(func() { printer.run(runCtx) })
	m, hookManager, err := a.newVolumeManager(runCtx, nil, func(c *volumemanager.Config) {
		c.Observer = metrics
		c.OnEvent = printer.add
	})
	if err != nil {
		return err
	}
	metrics.WatchManager(m)
	if _, err := hookManager.Watch(runCtx); err != nil {
		logger.Error(err, "Failed to watch the hook directories; hooks are not reloaded")
	}
	manifestOpts := manifest.Options{NodeName: cfg.NodeName, Plugins: a.Plugins}
	api, err := source.NewAPI(filepath.Join(a.Layout.Root, APIManifestDir), m, manifestOpts)
	if err != nil {
		return err
	}

	listener, err := server.ListenUnix(server.SocketOptions{Path: cfg.ResolvedSocketPath(), Mode: socketMode, Group: cfg.Server.SocketGroup})
	if err != nil {
		return err
	}
	handler := server.Handler(server.Options{Manager: m, API: api, Hooks: hookManager, Version: version})
	wg.Go(func() {
		if err := server.Serve(runCtx, listener, handler); err != nil {
			logger.Error(err, "API server failed")
		}
	})
	if cfg.Server.MetricsAddress != "" {
		metricsListener, err := server.ListenMetrics(cfg.Server.MetricsAddress)
		if err != nil {
			return invalidInput(err)
		}
		logger.Info("Serving metrics", "address", metricsListener.Addr().String())
		wg.Go(func() {
			if err := server.ServeMetrics(runCtx, metricsListener, metrics); err != nil {
				logger.Error(err, "Metrics server failed")
			}
		})
	}

	managerDone := make(chan error, 1)
	go func() { managerDone <- m.Run(runCtx) }()

	// Read every source in full before anything undesired is torn down.
	if err := api.Sync(runCtx); err != nil {
		logger.Error(err, "Failed to read the pods added through the API")
	}
	if cfg.PodManifestPath != "" {
		dir, err := source.NewDir(cfg.PodManifestPath, m, source.DirOptions{
			Prefix:       "file:",
			Manifest:     manifestOpts,
			ResyncPeriod: cfg.VolumeManager.ResyncPeriod.Duration,
		})
		if err != nil {
			return invalidInput(err)
		}
		if err := dir.Sync(runCtx); err != nil {
			logger.Error(err, "Failed to read the pod manifests", "path", cfg.PodManifestPath)
		}
		wg.Go(func() { dir.Run(runCtx) })
	}
	if cfg.CSI.Endpoint != "" {
		if err := a.startCSI(runCtx, &wg, m); err != nil {
			return err
		}
	}
	m.MarkSourcesSynced()
	logger.Info("Agent started", "rootDir", a.Layout.Root, "socket", cfg.ResolvedSocketPath(), "podManifestPath", cfg.PodManifestPath, "csiEndpoint", cfg.CSI.Endpoint)
	wg.Go(func() {
		if m.WaitForReady(runCtx) == nil {
			summary := m.Summary()
			logger.Info("Agent is ready", "pods", summary.Pods, "readyVolumes", summary.Volumes[volumemanager.StateReady])
		}
	})

	select {
	case <-ctx.Done():
	case err := <-managerDone:
		return fmt.Errorf("volume manager stopped: %w", err)
	}
	logger.Info("Stopping")
	if cfg.VolumeManager.TeardownOnExit {
		timeout := cfg.VolumeManager.TeardownOnExitTimeout.Duration
		logger.Info("Tearing every volume down before exiting; a second signal stops at once", "timeout", timeout)
		teardownCtx, cancel := context.WithTimeout(runCtx, timeout)
		stopAfter := context.AfterFunc(a.stopNow, cancel)
		err := m.TearDownAll(teardownCtx)
		stopAfter()
		cancel()
		if err != nil {
			stop()
			<-managerDone
			return someFailed(fmt.Errorf("stopped with volumes left in place: %w", err))
		}
		logger.Info("Tore every volume down")
	}
	stop()
	if err := <-managerDone; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// startCSI reads the CSI publish records into m, then serves the CSI
// services and, when configured, the kubelet registration API, until ctx is
// cancelled.
func (a *App) startCSI(ctx context.Context, wg *sync.WaitGroup, m *volumemanager.Manager) error {
	cfg := a.Config.CSI
	logger := klog.FromContext(ctx)
	driverCfg := csi.Config{
		DriverName:    cfg.DriverName,
		VendorVersion: version,
		NodeID:        a.Config.NodeName,
		RootDir:       a.Layout.Root,
		Manager:       m,
		Plugins:       a.Plugins,
	}
	// The Controller service creates and deletes the volumes of the one
	// plugin that provisions (Flocker datasets).
	if prov := csi.FindProvisioner(a.Plugins); prov != nil {
		driverCfg.Controller = csi.NewControllerServer(cfg.DriverName, prov)
	}
	driver, err := csi.New(driverCfg)
	if err != nil {
		return err
	}
	if err := driver.Sync(ctx); err != nil {
		return err
	}
	endpoint := strings.TrimPrefix(cfg.Endpoint, validation.CSIEndpointScheme)
	listener, err := listenUnixIn(endpoint)
	if err != nil {
		return err
	}
	wg.Go(func() {
		if err := driver.Serve(ctx, listener); err != nil {
			logger.Error(err, "CSI server failed")
		}
	})
	logger.Info("Serving CSI", "endpoint", cfg.Endpoint, "driverName", cfg.DriverName)
	if cfg.KubeletRegistrationDir == "" {
		return nil
	}
	regListener, err := listenUnixIn(csi.RegistrationSocket(cfg.KubeletRegistrationDir, cfg.DriverName))
	if err != nil {
		return err
	}
	registration := &csi.RegistrationServer{DriverName: cfg.DriverName, Endpoint: endpoint}
	wg.Go(func() {
		if err := registration.Serve(ctx, regListener); err != nil {
			logger.Error(err, "Kubelet registration server failed")
		}
	})
	logger.Info("Serving the kubelet registration API", "socket", regListener.Addr().String())
	return nil
}

// listenUnixIn listens on the unix socket path, creating its directory,
// and replacing a stale socket as the API socket does.
func listenUnixIn(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("failed to create the directory of socket %q: %w", path, err)
	}
	return server.ListenUnix(server.SocketOptions{Path: path})
}

// eventPrinter prints the volume manager's events to the standard output,
// one line each, in order, without ever blocking the manager.
type eventPrinter struct {
	w     io.Writer
	lines chan string
}

func newEventPrinter(w io.Writer) *eventPrinter {
	return &eventPrinter{w: w, lines: make(chan string, eventLineBuffer)}
}

// add queues the line of ev; it never blocks.
func (p *eventPrinter) add(ev volumemanager.Event) {
	select {
	case p.lines <- eventLine(ev):
	default:
	}
}

func (p *eventPrinter) run(ctx context.Context) {
	for {
		select {
		case line := <-p.lines:
			fmt.Fprintln(p.w, line)
		case <-ctx.Done():
			for {
				select {
				case line := <-p.lines:
					fmt.Fprintln(p.w, line)
				default:
					return
				}
			}
		}
	}
}

// eventLine renders an event as one line.
func eventLine(ev volumemanager.Event) string {
	line := fmt.Sprintf("%s %s %s", ev.Time.Local().Format(time.TimeOnly), ev.Type, ev.Reason)
	if ev.Pod != "" {
		line += " pod=" + ev.Pod
	} else if ev.PodUID != "" {
		line += " uid=" + string(ev.PodUID)
	}
	if ev.Volume != "" {
		line += " volume=" + ev.Volume
	}
	if ev.Source != "" {
		line += " source=" + ev.Source
	}
	return line + ": " + ev.Message
}

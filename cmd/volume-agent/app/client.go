package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/server"
	"github.com/volume-agent/volume-agent/pkg/source"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// clientTimeout bounds one request to the agent.
const clientTimeout = 30 * time.Second

// client loads the configuration and returns a client of the agent's socket.
func (a *App) client(cmd *cobra.Command) (*server.Client, error) {
	if err := a.load(cmd); err != nil {
		return nil, err
	}
	return server.NewClient(a.Config.ResolvedSocketPath(), clientTimeout), nil
}

// clientError turns an API error into the command's error: a refused
// manifest is invalid input.
func clientError(err error) error {
	var status *server.StatusError
	if errors.As(err, &status) && status.Code == http.StatusUnprocessableEntity {
		return invalidInput(err)
	}
	return err
}

func (a *App) encodeJSON(v any) error {
	enc := json.NewEncoder(a.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *App) newStatusCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the running agent is ready, and its pods, volumes and sources",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			status, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return a.encodeJSON(status)
			}
			ready := "not ready"
			if status.Ready {
				ready = "ready"
			}
			fmt.Fprintf(a.Stdout, "volume-agent %s: %s (root %s, socket %s)\n", status.Version, ready, status.RootDir, c.Socket())
			fmt.Fprintf(a.Stdout, "pods: %d\n", status.Pods)
			var parts []string
			for _, state := range []volumemanager.VolumeState{volumemanager.StateReady, volumemanager.StatePending, volumemanager.StateSettingUp, volumemanager.StateFailed, volumemanager.StateTearingDown} {
				parts = append(parts, fmt.Sprintf("%d %s", status.Volumes[state], state))
			}
			fmt.Fprintf(a.Stdout, "volumes: %s\n", strings.Join(parts, ", "))
			fmt.Fprintf(a.Stdout, "sources: %d, %d with errors\n", status.Sources, len(status.SourceErrors))
			for _, s := range status.SourceErrors {
				fmt.Fprintf(a.Stdout, "  %s: %d pods, error: %s\n", s.Name, s.Pods, s.Error)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (a *App) newGetCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:       "get pods|volumes|events|plugins",
		Short:     "List the running agent's pods, volumes, events or plugins",
		ValidArgs: []string{"pods", "volumes", "events", "plugins"},
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs)(cmd, args); err != nil {
				return invalidInput(fmt.Errorf("%w: want one of pods, volumes, events, plugins", err))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "wide", "json"); err != nil {
				return err
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			wide := output == "wide"
			var data any
			var print func(io.Writer)
			switch args[0] {
			case "pods":
				pods, err := c.Pods(ctx)
				if err != nil {
					return err
				}
				data, print = pods, func(w io.Writer) { printPods(w, pods, wide) }
			case "volumes":
				volumes, err := c.Volumes(ctx)
				if err != nil {
					return err
				}
				data, print = volumes, func(w io.Writer) { printVolumes(w, volumes, wide) }
			case "events":
				events, err := c.Events(ctx)
				if err != nil {
					return err
				}
				data, print = events, func(w io.Writer) { printEvents(w, events, wide) }
			case "plugins":
				plugins, err := c.Plugins(ctx)
				if err != nil {
					return err
				}
				data, print = plugins, func(w io.Writer) { printPlugins(w, plugins) }
			}
			if output == "json" {
				return a.encodeJSON(data)
			}
			w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			print(w)
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, wide or json")
	return cmd
}

func podName(namespace, name string) string {
	if name == "" {
		return "-"
	}
	return namespace + "/" + name
}

func printPods(w io.Writer, pods []volumemanager.PodStatus, wide bool) {
	header := "POD\tUID\tSTATE\tREADY"
	if wide {
		header += "\tSOURCE"
	}
	fmt.Fprintln(w, header)
	for _, pod := range pods {
		ready := 0
		for _, v := range pod.Volumes {
			if v.State == volumemanager.StateReady {
				ready++
			}
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%d/%d", podName(pod.Namespace, pod.Name), pod.UID, pod.State, ready, len(pod.Volumes))
		if wide {
			line += "\t" + orDash(pod.Source)
		}
		fmt.Fprintln(w, line)
	}
}

func printVolumes(w io.Writer, volumes []volumemanager.VolumeStatus, wide bool) {
	header := "POD\tVOLUME\tPLUGIN\tSTATE\tREASON\tATTEMPTS\tNEXT RETRY"
	if wide {
		header += "\tUID\tPATH\tERROR"
	}
	fmt.Fprintln(w, header)
	for _, v := range volumes {
		retry := "-"
		if !v.NextRetry.IsZero() {
			retry = v.NextRetry.Local().Format(time.TimeOnly)
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%s", podName(v.PodNamespace, v.PodName), v.Volume, orDash(v.Plugin), v.State, orDash(v.Reason), v.Attempts, retry)
		if wide {
			line += fmt.Sprintf("\t%s\t%s\t%s", v.PodUID, orDash(v.Path), orDash(oneLine(v.LastError)))
		}
		fmt.Fprintln(w, line)
	}
}

func printEvents(w io.Writer, events []volumemanager.Event, wide bool) {
	fmt.Fprintln(w, "TIME\tTYPE\tREASON\tOBJECT\tMESSAGE")
	for _, ev := range events {
		object := ev.Pod
		if object == "" {
			object = string(ev.PodUID)
		}
		if ev.Volume != "" {
			object += ":" + ev.Volume
		}
		if ev.Source != "" {
			object = ev.Source
		}
		format := time.TimeOnly
		if wide {
			format = time.RFC3339Nano
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format(format), ev.Type, ev.Reason, orDash(object), oneLine(ev.Message))
	}
}

func printPlugins(w io.Writer, plugins []volumemanager.PluginStatus) {
	fmt.Fprintln(w, "PLUGIN\tACCESS MODES\tUSABLE\tMESSAGE")
	for _, p := range plugins {
		details := make([]string, 0, len(p.Details))
		for k, v := range p.Details {
			details = append(details, k+"="+v)
		}
		sort.Strings(details)
		msg := strings.TrimSpace(p.Message + " " + strings.Join(details, " "))
		name := p.Name
		if p.Driver != "" {
			// A driver's row: the plugin's name, then the driver's.
			name += ":" + p.Driver
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", name, orDash(strings.Join(p.AccessModes, ",")), p.Usable, orDash(msg))
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func (a *App) newApplyCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Add or replace pods, PersistentVolumes, claims and Secrets in the running agent",
		Long: `Send a manifest to the running agent, which validates it as "volume-agent
validate" does, keeps its objects across restarts, and sets the pods' volumes
up. An object replaces the one of the same kind, namespace and name that was
applied before; a replaced pod's volumes are torn down as the new pod's are set
up (a pod without metadata.uid gets a new UID when its content changes).
Secrets (of CSI volumes) are kept in memory only, never on disk: apply them
again after the agent restarts.
Exits 2 when the manifest is invalid, and 1 when no agent is running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(a.Stdin)
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return invalidInput(fmt.Errorf("failed to read manifest: %w", err))
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			resp, err := c.Apply(cmd.Context(), data)
			if err != nil {
				return clientError(err)
			}
			for _, secret := range resp.Secrets {
				fmt.Fprintf(a.Stdout, "secret %s/%s applied (kept in memory only: apply it again after an agent restart)\n", secret.Namespace, secret.Name)
			}
			for _, pod := range resp.Pods {
				if pod.Replaced != "" {
					fmt.Fprintf(a.Stdout, "pod %s/%s applied (uid %s, replacing uid %s)\n", pod.Namespace, pod.Name, pod.UID, pod.Replaced)
					continue
				}
				fmt.Fprintf(a.Stdout, "pod %s/%s applied (uid %s)\n", pod.Namespace, pod.Name, pod.UID)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifest file (YAML or JSON); - reads standard input")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// deleteKinds maps the kind names delete takes to kinds.
var deleteKinds = map[string]string{
	"pod": manifest.KindPod, "pods": manifest.KindPod, "po": manifest.KindPod,
	"persistentvolume": manifest.KindPersistentVolume, "persistentvolumes": manifest.KindPersistentVolume, "pv": manifest.KindPersistentVolume,
	"persistentvolumeclaim": manifest.KindPersistentVolumeClaim, "persistentvolumeclaims": manifest.KindPersistentVolumeClaim, "pvc": manifest.KindPersistentVolumeClaim,
	"secret": manifest.KindSecret, "secrets": manifest.KindSecret,
}

func (a *App) newDeleteCommand() *cobra.Command {
	var uid, namespace string
	cmd := &cobra.Command{
		Use:   "delete (--pod-uid UID | pod|pv|pvc|secret NAME [-n NAMESPACE])",
		Short: "Remove a pod, PersistentVolume, claim or Secret added with apply from the running agent",
		Long: `Remove an object added with apply from the running agent: a pod by its UID
(as apply printed it) or by namespace and name, a PersistentVolume by name, or
a PersistentVolumeClaim or Secret by namespace and name. The namespace defaults
to "default". A removed pod's volumes are torn down; volumes already set up
with a removed Secret stay set up.`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case uid != "" && len(args) == 0:
				return nil
			case uid != "":
				return invalidInput(errors.New("give either --pod-uid or a kind and a name, not both"))
			case len(args) != 2:
				return invalidInput(fmt.Errorf("want --pod-uid UID, or a kind (pod, pv, pvc or secret) and a name; got %d arguments", len(args)))
			case deleteKinds[args[0]] == "":
				return invalidInput(fmt.Errorf("invalid kind %q: want pod, pv (persistentvolume), pvc (persistentvolumeclaim) or secret", args[0]))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var ref source.ObjectRef
			if uid != "" {
				if err := validatePodUID(uid, field.NewPath("--pod-uid")); err != nil {
					return invalidInput(err)
				}
			} else {
				ref = source.ObjectRef{Kind: deleteKinds[args[0]], Namespace: namespace, Name: args[1]}
				if err := validateObjectRef(ref, cmd.Flags().Changed("namespace")); err != nil {
					return invalidInput(err)
				}
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			if uid != "" {
				if err := c.DeletePod(cmd.Context(), types.UID(uid)); err != nil {
					return clientError(err)
				}
				fmt.Fprintf(a.Stdout, "pod %s deleted\n", uid)
				return nil
			}
			if err := c.DeleteObject(cmd.Context(), ref); err != nil {
				return clientError(err)
			}
			fmt.Fprintf(a.Stdout, "%s deleted\n", ref)
			return nil
		},
	}
	cmd.Flags().StringVar(&uid, "pod-uid", "", "UID of the pod, as apply printed it")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", metav1.NamespaceDefault, "namespace of a pod, claim or Secret")
	return cmd
}

// validateObjectRef checks the name and namespace given to delete, with the
// rules of Kubernetes; a PersistentVolume has no namespace (namespaceSet
// says whether one was given).
func validateObjectRef(ref source.ObjectRef, namespaceSet bool) error {
	if ref.Kind == manifest.KindPersistentVolume {
		if namespaceSet {
			return errors.New("a PersistentVolume has no namespace: drop --namespace")
		}
		ref.Namespace = ""
	} else if msgs := validation.IsDNS1123Label(ref.Namespace); len(msgs) > 0 {
		return fmt.Errorf("invalid value %q for --namespace: %s", ref.Namespace, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1123Subdomain(ref.Name); len(msgs) > 0 {
		return fmt.Errorf("invalid %s name %q: %s", ref.Kind, ref.Name, strings.Join(msgs, "; "))
	}
	return nil
}

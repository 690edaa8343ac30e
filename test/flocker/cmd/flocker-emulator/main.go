// Command flocker-emulator runs the Flocker control service emulator of package
// github.com/volume-agent/volume-agent/test/flocker until SIGINT or SIGTERM, then unmounts the
// datasets it mounted and exits.
//
// On start it prints the API address and the FLOCKER_CONTROL_SERVICE_* variables (and writes them
// to --env-file, if given) that point the kubelet-style flocker plugin at it.
package main

import (
	"context"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/test/flocker"
)

type options struct {
	listen      string
	stateDir    string
	certDir     string
	mountRoot   string
	envFile     string
	apiUser     string
	nodeIP      string
	nodeUUID    string
	remoteNodes []string
	datasets    []string
	remoteSets  []string
	lenient     bool
	cfg         flocker.Config
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "flocker-emulator: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	o := options{}
	fs := pflag.NewFlagSet("flocker-emulator", pflag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", fmt.Sprintf("127.0.0.1:%d", flocker.DefaultPort), "address the HTTPS API listens on (port 0 picks a free port)")
	fs.StringVar(&o.stateDir, "state-dir", "", "directory for the configuration, datasets' data and (by default) certificates and mount points (required)")
	fs.StringVar(&o.certDir, "cert-dir", "", "directory holding cluster.crt, control-service.crt/.key and apiuser.crt/.key; generated if missing (default <state-dir>/certs)")
	fs.StringVar(&o.mountRoot, "mount-root", "", "where datasets on this node are bind-mounted, as <mount-root>/<dataset id> (default <state-dir>/flocker)")
	fs.DurationVar(&o.cfg.MoveDelay, "move-delay", flocker.DefaultMoveDelay, "how long a created or moved dataset is listed without primary and path")
	fs.StringVar(&o.nodeIP, "node-ip", "127.0.0.1", "IP address of this node, as listed by /v1/state/nodes")
	fs.StringVar(&o.nodeUUID, "node-uuid", "", "uuid of this node (default derived from --node-ip)")
	fs.StringSliceVar(&o.remoteNodes, "remote-node", nil, "a fake remote node, HOST or HOST=UUID (repeatable)")
	fs.StringSliceVar(&o.datasets, "dataset", nil, "create a dataset with this metadata name on this node unless one exists (repeatable)")
	fs.StringSliceVar(&o.remoteSets, "remote-dataset", nil, "create a dataset with this metadata name on the first remote node unless one exists (repeatable)")
	fs.BoolVar(&o.lenient, "lenient", false, "accept dataset ids and primaries that are not uuid4s")
	fs.StringVar(&o.apiUser, "api-user", flocker.DefaultAPIUserName, "user name of the generated API user certificate (CN user-<name>)")
	fs.StringVar(&o.envFile, "env-file", "", "write the FLOCKER_CONTROL_SERVICE_* variables to this file once serving")
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.stateDir == "" {
		return fmt.Errorf("--state-dir is required")
	}
	o.cfg.ListenAddress, o.cfg.StateDir, o.cfg.CertDir, o.cfg.MountRoot = o.listen, o.stateDir, o.certDir, o.mountRoot
	o.cfg.Lenient, o.cfg.APIUserName = o.lenient, o.apiUser
	o.cfg.LocalNode = flocker.Node{Host: o.nodeIP, UUID: o.nodeUUID}
	for _, spec := range o.remoteNodes {
		host, uuid, _ := strings.Cut(spec, "=")
		o.cfg.RemoteNodes = append(o.cfg.RemoteNodes, flocker.Node{Host: host, UUID: uuid})
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := flocker.Start(o.cfg)
	if err != nil {
		return err
	}
	if err := seed(e, o); err != nil {
		return joinClose(e, err)
	}
	env := envLines(e)
	fmt.Fprintf(stdout, "Flocker control service emulator serving %s\n", e.URL())
	fmt.Fprintf(stdout, "  local node %s (%s)\n", e.LocalNode().UUID, e.LocalNode().Host)
	for _, n := range e.RemoteNodes() {
		fmt.Fprintf(stdout, "  remote node %s (%s)\n", n.UUID, n.Host)
	}
	fmt.Fprintf(stdout, "  certificates in %s\n", e.Certs().Dir)
	fmt.Fprint(stdout, env)
	if o.envFile != "" {
		if err := writeFileAtomically(o.envFile, []byte(env)); err != nil {
			return joinClose(e, err)
		}
		defer os.Remove(o.envFile)
	}

	<-ctx.Done()
	klog.InfoS("Shutting down the Flocker control service emulator")
	return e.Close()
}

// writeFileAtomically writes data so that readers see the whole file or none of it.
func writeFileAtomically(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("failed to write env file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to write env file: %w", err)
	}
	return nil
}

func joinClose(e *flocker.Emulator, err error) error {
	if cerr := e.Close(); cerr != nil {
		return fmt.Errorf("%w; %w", err, cerr)
	}
	return err
}

// seed creates the --dataset and --remote-dataset datasets that do not exist yet (by name).
func seed(e *flocker.Emulator, o options) error {
	add := func(name, primary string) error {
		if _, ok := e.DatasetByName(name); ok {
			return nil
		}
		_, err := e.AddDataset(flocker.DatasetSpec{Name: name, Primary: primary})
		return err
	}
	for _, name := range o.datasets {
		if err := add(name, e.LocalNode().UUID); err != nil {
			return err
		}
	}
	if len(o.remoteSets) > 0 && len(e.RemoteNodes()) == 0 {
		return fmt.Errorf("--remote-dataset needs at least one --remote-node")
	}
	for _, name := range o.remoteSets {
		if err := add(name, e.RemoteNodes()[0].UUID); err != nil {
			return err
		}
	}
	return nil
}

// envLines are the kubelet's FLOCKER_CONTROL_SERVICE_* variables for this emulator.
func envLines(e *flocker.Emulator) string {
	c := e.Certs()
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	return strings.Join([]string{
		"FLOCKER_CONTROL_SERVICE_HOST=" + e.Host(),
		"FLOCKER_CONTROL_SERVICE_PORT=" + strconv.Itoa(e.Port()),
		"FLOCKER_CONTROL_SERVICE_CA_FILE=" + abs(c.CACert),
		"FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE=" + abs(c.ClientKey),
		"FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE=" + abs(c.ClientCert),
		"",
	}, "\n")
}

package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	"k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/loader"
	"github.com/volume-agent/volume-agent/pkg/faults"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// Exit codes, which scripts depend on.
const (
	// ExitOK: every volume is ready, or the command did what it was asked.
	ExitOK = 0
	// ExitFailed: some volume failed; the others were still set up.
	ExitFailed = 1
	// ExitInvalid: the input or the configuration is invalid, and nothing
	// on disk was touched.
	ExitInvalid = 2
)

// exitError carries a command's exit code up to Run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// invalidInput returns an error that exits with ExitInvalid.
func invalidInput(err error) error { return &exitError{code: ExitInvalid, err: err} }

// someFailed returns an error that exits with ExitFailed.
func someFailed(err error) error { return &exitError{code: ExitFailed, err: err} }

// Option changes how Run builds the agent.
type Option func(*App)

// WithStopNow sets a context that is done when the agent must stop at once,
// as at a second SIGINT or SIGTERM: `run` then ends its tear-down on exit
// (--teardown-on-exit) and leaves the volumes not yet torn down in place.
func WithStopNow(ctx context.Context) Option {
	return func(a *App) { a.stopNow = ctx }
}

// WithPlugins adds plugins, probed after the built-in ones. An out-of-tree
// build uses it to add its own volume types.
func WithPlugins(probe PluginProber) Option {
	return func(a *App) { a.probers = append(a.probers, probe) }
}

// App is what every command shares: the resolved configuration and the
// plugins loaded with it. Commands call a.load before they use them.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// Config is the effective configuration: file, then environment, then
	// flags.
	Config *config.AgentConfiguration
	// Plugins holds the probed plugins, loaded over Host.
	Plugins *volume.VolumePluginMgr
	// Host is the VolumeHost the plugins were loaded with.
	Host volume.VolumeHost
	// Layout names the directories under the root dir.
	Layout volume.Layout
	// Mounter is the real mounter.
	Mounter mount.Interface

	configFile string
	probers    []PluginProber
	// stopNow is done when the agent must stop without finishing its
	// tear-down on exit; never by default.
	stopNow context.Context
	// pluginLoadErr keeps the plugins that failed to load, for `plugins`.
	pluginLoadErr error
	// secrets is the volume manager whose sources' Secrets the plugins get
	// (the host's GetSecretFunc); set once the manager is built.
	secrets atomic.Pointer[volumemanager.Manager]
}

// getSecret is the host's secret getter: it asks the volume manager, which
// is built after the plugins are loaded.
func (a *App) getSecret(namespace, name string) (*v1.Secret, error) {
	m := a.secrets.Load()
	if m == nil {
		return nil, fmt.Errorf("%w: the volume manager has not started", volume.ErrSecretNotFound)
	}
	return m.GetSecret(namespace, name)
}

// Run runs volume-agent with args (without the program name) and returns the
// process's exit code. ctx is cancelled at the first SIGINT or SIGTERM (see
// WithStopNow for the second).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, opts ...Option) int {
	a := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr, probers: []PluginProber{BuiltinPlugins}, stopNow: context.Background()}
	for _, opt := range opts {
		opt(a)
	}
	root := a.newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	klog.Flush()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var exitErr *exitError
	if errors.As(err, &exitErr) {
		return exitErr.code
	}
	return ExitFailed
}

func (a *App) newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "volume-agent",
		Short: "Set pod volumes up on this node and keep them set up",
		Long: `volume-agent turns the volumes that Kubernetes pod specs declare into directories
on this node, through kubelet-style volume plugins (emptyDir, gitRepo, Flocker),
and tears them down again.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// A usage error is invalid input.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return invalidInput(err) })
	flags := root.PersistentFlags()
	flags.StringVar(&a.configFile, "config", "", "AgentConfiguration file (YAML); flags override it")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	for _, name := range []string{"v", "vmodule"} {
		flags.AddGoFlag(klogFlags.Lookup(name))
	}
	root.AddCommand(a.commands()...)
	usageErrorsAreInvalid(root)
	return root
}

// load resolves the configuration and loads the plugins. Errors are invalid
// input: nothing has been touched yet.
func (a *App) load(cmd *cobra.Command) error {
	cfg, err := loader.Resolve(a.configFile, cmd.Flags(), os.Getenv)
	if err != nil {
		return invalidInput(err)
	}
	a.Config = cfg
	setUpLogging(cfg, a.Stderr)
	a.Layout = volume.Layout{Root: cfg.RootDir}
	a.Mounter = util.NewMounter()
	var plugins []volume.VolumePlugin
	for _, probe := range a.probers {
		plugins = append(plugins, probe(cfg)...)
	}
	var executor exec.Interface = exec.New()
	if path := cfg.Hooks.FaultHooksFile; path != "" {
		// Fault injection wraps every plugin and git call; LoadScript logs
		// loudly that it is on.
		script, err := faults.LoadScript(cmd.Context(), path, faults.ScriptOptions{})
		if err != nil {
			return invalidInput(err)
		}
		interceptor := script.Interceptor()
		executor = faults.WrapExec(executor, interceptor)
		plugins = faults.WrapPlugins(plugins, interceptor)
	}
	a.Plugins = &volume.VolumePluginMgr{}
	a.Host = volume.NewHost(volume.HostConfig{
		Layout:   a.Layout,
		Mounter:  a.Mounter,
		Exec:     executor,
		Clock:    clock.RealClock{},
		NodeName: cfg.NodeName,
		NodeIP:   net.ParseIP(cfg.NodeIP),
		// The manager, built later, has the Secrets.
		GetSecret: a.getSecret,
	}, a.Plugins)
	// A plugin that fails to load is left out; the others work.
	a.pluginLoadErr = a.Plugins.InitPlugins(plugins, a.Host)
	if a.pluginLoadErr != nil {
		klog.ErrorS(a.pluginLoadErr, "Some volume plugins failed to load")
	}
	return nil
}

// setUpLogging switches klog to JSON when the configuration asks for it.
func setUpLogging(cfg *config.AgentConfiguration, stderr io.Writer) {
	if cfg.Logging.Format == config.LogFormatJSON {
		klog.SetLogger(logr.FromSlogHandler(slog.NewJSONHandler(stderr, nil)))
	}
}

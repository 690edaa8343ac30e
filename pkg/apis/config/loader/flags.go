package loader

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
)

// AddFlags registers on fs one flag per configuration field that a flag can
// set (the flags named in config.FieldSources), bound to the fields of cfg,
// whose current values become the flags' defaults. Verbosity is left to
// klog's -v flag. Bind the flags to a scratch configuration such as Default()
// and merge them with ApplyChangedFlags: parsing them straight into the
// configuration would let flag defaults hide the configuration file.
func AddFlags(fs *pflag.FlagSet, cfg *config.AgentConfiguration) {
	fs.StringVar(&cfg.RootDir, config.FlagRootDir, cfg.RootDir,
		"Directory for the agent's state: volume directories, ready markers and, by default, the API socket (config: rootDir). A relative path is taken from the working directory.")
	fs.StringVar(&cfg.PodManifestPath, config.FlagPodManifestPath, cfg.PodManifestPath,
		"File or directory of static pod manifests; empty disables the file source (config: podManifestPath). A relative path is taken from the working directory.")
	fs.StringVar(&cfg.NodeName, config.FlagNodeName, cfg.NodeName,
		"Name of this node; defaults to the lower-cased host name (config: nodeName).")
	fs.StringVar(&cfg.NodeIP, config.FlagNodeIP, cfg.NodeIP,
		"IP address of this node (config: nodeIP).")
	fs.StringVar(&cfg.Logging.Format, config.FlagLogFormat, cfg.Logging.Format,
		`Log format, "text" or "json" (config: logging.format).`)
	fs.StringSliceVar(&cfg.GitRepo.AllowedProtocols, config.FlagGitAllowedProtocols, cfg.GitRepo.AllowedProtocols,
		"Comma-separated URL schemes gitRepo volumes may use, among https, ssh, git, http and file (config: gitRepo.allowedProtocols).")
	fs.DurationVar(&cfg.GitRepo.Timeout.Duration, config.FlagGitTimeout, cfg.GitRepo.Timeout.Duration,
		"Time limit of one git clone or checkout (config: gitRepo.timeout).")
	fs.StringVar(&cfg.Flocker.ControlServiceHost, config.FlagFlockerControlServiceHost, cfg.Flocker.ControlServiceHost,
		"Host of the Flocker control service (config: flocker.controlServiceHost; env: "+config.EnvFlockerControlServiceHost+").")
	fs.Int32Var(&cfg.Flocker.Port, config.FlagFlockerControlServicePort, cfg.Flocker.Port,
		"Port of the Flocker control service (config: flocker.port; env: "+config.EnvFlockerControlServicePort+").")
	fs.Int32Var(&cfg.VolumeManager.Workers, config.FlagWorkers, cfg.VolumeManager.Workers,
		"Number of volume operations run at the same time (config: volumeManager.workers).")
	fs.DurationVar(&cfg.VolumeManager.OperationTimeout.Duration, config.FlagOperationTimeout, cfg.VolumeManager.OperationTimeout.Duration,
		"Time limit of one volume set-up or tear-down (config: volumeManager.operationTimeout).")
	fs.DurationVar(&cfg.VolumeManager.ResyncPeriod.Duration, config.FlagResyncPeriod, cfg.VolumeManager.ResyncPeriod.Duration,
		"Period of full reconciliation of desired and actual state (config: volumeManager.resyncPeriod).")
	fs.BoolVar(&cfg.VolumeManager.TeardownOnExit, config.FlagTeardownOnExit, cfg.VolumeManager.TeardownOnExit,
		"Tear every volume down when the agent stops (config: volumeManager.teardownOnExit).")
	fs.DurationVar(&cfg.VolumeManager.TeardownOnExitTimeout.Duration, config.FlagTeardownOnExitTimeout, cfg.VolumeManager.TeardownOnExitTimeout.Duration,
		"Time limit of the tear-down of --teardown-on-exit; a second SIGINT or SIGTERM ends it at once (config: volumeManager.teardownOnExitTimeout).")
	fs.StringVar(&cfg.Server.SocketPath, config.FlagSocket, cfg.Server.SocketPath,
		"Unix socket of the local API; empty means <root-dir>/"+config.DefaultSocketName+" (config: server.socketPath). A relative path is taken from the working directory.")
	fs.StringVar(&cfg.Server.SocketMode, config.FlagSocketMode, cfg.Server.SocketMode,
		"Octal permission bits of the API socket (config: server.socketMode).")
	fs.StringVar(&cfg.Server.MetricsAddress, config.FlagMetricsAddress, cfg.Server.MetricsAddress,
		"host:port or :port to serve metrics on; empty turns metrics off (config: server.metricsAddress).")
	fs.StringArrayVar(&cfg.Hooks.Directories, config.FlagHookDir, cfg.Hooks.Directories,
		"Directory searched for hooks; repeat for several, in search order. Replaces the configured list (config: hooks.directories). A relative path is taken from the working directory.")
	fs.StringVar(&cfg.Hooks.FaultHooksFile, config.FlagFaultHooksFile, cfg.Hooks.FaultHooksFile,
		"Fault-injection script; empty means none (config: hooks.faultHooksFile). A relative path is taken from the working directory.")
	fs.StringVar(&cfg.CSI.Endpoint, config.FlagCSIEndpoint, cfg.CSI.Endpoint,
		"Serve the CSI Identity, Node and Controller services on this unix socket, as unix:///ABS/PATH.sock; empty means no CSI driver (config: csi.endpoint).")
	fs.StringVar(&cfg.CSI.DriverName, config.FlagCSIDriverName, cfg.CSI.DriverName,
		"Name of the CSI driver (config: csi.driverName).")
	fs.StringVar(&cfg.CSI.KubeletRegistrationDir, config.FlagKubeletRegistrationDir, cfg.CSI.KubeletRegistrationDir,
		"The kubelet's plugin registration dir, as /var/lib/kubelet/plugins_registry: serve the registration API on DIR/<driver name>-reg.sock; empty means no registration (config: csi.kubeletRegistrationDir). A relative path is taken from the working directory.")
}

// ApplyChangedFlags copies onto cfg the value of every flag of fs that
// AddFlags registered and that was set explicitly (pflag's Changed), leaving
// every other field of cfg as it is. fs may hold other flags too; they are
// ignored. A relative path given to a path flag (root-dir, pod-manifest-path,
// socket, hook-dir, fault-hooks-file, kubelet-registration-dir) is made absolute against the working
// directory. Applying the same flags twice gives the same result.
func ApplyChangedFlags(fs *pflag.FlagSet, cfg *config.AgentConfiguration) error {
	target := pflag.NewFlagSet("config", pflag.ContinueOnError)
	AddFlags(target, cfg)
	var firstErr error
	fs.Visit(func(changed *pflag.Flag) {
		dst := target.Lookup(changed.Name)
		if dst == nil || firstErr != nil {
			return
		}
		if err := copyFlagValue(changed.Value, dst.Value); err != nil {
			firstErr = fmt.Errorf("failed to apply flag --%s: %w", changed.Name, err)
			return
		}
		if pathFlags[changed.Name] {
			if err := absolutePaths(dst.Value); err != nil {
				firstErr = fmt.Errorf("failed to apply flag --%s: %w", changed.Name, err)
			}
		}
	})
	return firstErr
}

// copyFlagValue copies a flag value onto a flag value of the same type.
// Lists go through SliceValue because their String form does not parse back.
func copyFlagValue(src, dst pflag.Value) error {
	if src.Type() != dst.Type() {
		return fmt.Errorf("flag has type %s, want %s", src.Type(), dst.Type())
	}
	srcList, srcIsList := src.(pflag.SliceValue)
	dstList, dstIsList := dst.(pflag.SliceValue)
	if srcIsList && dstIsList {
		return dstList.Replace(srcList.GetSlice())
	}
	return dst.Set(src.String())
}

// pathFlags are the flags that name a file or a directory. A relative value
// on the command line is taken from the working directory, as every other
// tool does; in the configuration file it is an error.
var pathFlags = map[string]bool{
	config.FlagRootDir:         true,
	config.FlagPodManifestPath: true,
	config.FlagSocket:          true,
	config.FlagHookDir:         true,
	config.FlagFaultHooksFile:  true,
	// The CSI endpoint is a unix:// URL, which must name an absolute path.
	config.FlagKubeletRegistrationDir: true,
}

// absolutePaths makes every non-empty path in v absolute; empty stays empty
// (it turns the setting off).
func absolutePaths(v pflag.Value) error {
	abs := func(path string) (string, error) {
		if path == "" {
			return "", nil
		}
		return filepath.Abs(path)
	}
	if list, ok := v.(pflag.SliceValue); ok {
		paths := list.GetSlice()
		for i, path := range paths {
			var err error
			if paths[i], err = abs(path); err != nil {
				return err
			}
		}
		return list.Replace(paths)
	}
	path, err := abs(v.String())
	if err != nil {
		return err
	}
	return v.Set(path)
}

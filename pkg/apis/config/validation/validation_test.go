package validation_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/validation"
)

func duration(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }

// successConfig returns a valid configuration; each case breaks it.
func successConfig() *config.AgentConfiguration {
	return &config.AgentConfiguration{
		RootDir:  "/var/lib/volume-agent",
		NodeName: "node-a",
		Logging:  config.LoggingConfiguration{Format: config.LogFormatText},
		GitRepo: config.GitRepoConfiguration{
			AllowedProtocols: []string{"https", "ssh"},
			Timeout:          duration(2 * time.Minute),
			MinGitVersion:    "2.30.0",
			Cache:            config.GitCacheConfiguration{Enabled: true, MaxBytes: 10 << 30},
		},
		Flocker: config.FlockerConfiguration{
			ControlServiceHost: "localhost",
			Port:               4523,
			CAFile:             "/etc/flocker/cluster.crt",
			ClientCertFile:     "/etc/flocker/apiuser.crt",
			ClientKeyFile:      "/etc/flocker/apiuser.key",
			MoveTimeout:        duration(2 * time.Minute),
		},
		VolumeManager: config.VolumeManagerConfiguration{
			ResyncPeriod:      duration(20 * time.Second),
			Workers:           8,
			InitialBackoff:    duration(500 * time.Millisecond),
			MaxBackoff:        duration(2*time.Minute + 2*time.Second),
			OperationTimeout:  duration(2 * time.Minute),
			HealthCheckPeriod: duration(30 * time.Second),
			SizeCheckPeriod:   duration(10 * time.Second),
			VerifyPeriod:      duration(10 * time.Second),
			SourceLoadTimeout: duration(2 * time.Minute),

			TeardownOnExitTimeout: duration(time.Minute),
		},
		Server: config.ServerConfiguration{SocketMode: "0600"},
		Hooks:  config.HooksConfiguration{Directories: []string{"/usr/share/volume-agent/hooks.d", "/etc/volume-agent/hooks.d"}},
		CSI:    config.CSIConfiguration{DriverName: "volume-agent.io"},
	}
}

func TestValidateAgentConfigurationAccepts(t *testing.T) {
	tests := map[string]func(*config.AgentConfiguration){
		"known-good config":               func(*config.AgentConfiguration) {},
		"every optional field set":        setOptionalFields,
		"IPv6 node IP":                    func(c *config.AgentConfiguration) { c.NodeIP = "fd00::7" },
		"metrics on any free port":        func(c *config.AgentConfiguration) { c.Server.MetricsAddress = ":0" },
		"metrics on an IPv6 host":         func(c *config.AgentConfiguration) { c.Server.MetricsAddress = "[::1]:9090" },
		"socket mode without leading 0":   func(c *config.AgentConfiguration) { c.Server.SocketMode = "660" },
		"disabled cache of size 0":        func(c *config.AgentConfiguration) { c.GitRepo.Cache = config.GitCacheConfiguration{} },
		"no hook directories":             func(c *config.AgentConfiguration) { c.Hooks.Directories = nil },
		"flocker host given as IP":        func(c *config.AgentConfiguration) { c.Flocker.ControlServiceHost = "192.0.2.1" },
		"flocker host name in upper case": func(c *config.AgentConfiguration) { c.Flocker.ControlServiceHost = "Flocker.Example" },
		"every git protocol": func(c *config.AgentConfiguration) {
			c.GitRepo.AllowedProtocols = []string{"https", "ssh", "git", "http", "file"}
		},
		"socket path of 107 bytes": func(c *config.AgentConfiguration) {
			c.Server.SocketPath = "/" + strings.Repeat("s", validation.MaxSocketPathLength-1)
		},
	}
	for name, configure := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := successConfig()
			configure(cfg)
			if errs := validation.ValidateAgentConfiguration(cfg); len(errs) > 0 {
				t.Errorf("valid configuration rejected: %v", errs.ToAggregate())
			}
		})
	}
}

func setOptionalFields(c *config.AgentConfiguration) {
	c.PodManifestPath = "/etc/volume-agent/pods"
	c.NodeIP = "10.0.0.7"
	c.Logging.Verbosity = 5
	c.GitRepo.MaxSizeBytes = 1 << 20
	c.Server.SocketPath = "/run/volume-agent.sock"
	c.Server.SocketGroup = "volume-agent"
	c.Server.MetricsAddress = "127.0.0.1:9090"
	c.Hooks.FaultHooksFile = "/etc/volume-agent/faults.js"
	c.VolumeManager.TeardownOnExit = true
	c.CSI.Endpoint = "unix:///var/lib/kubelet/plugins/volume-agent.io/csi.sock"
	c.CSI.KubeletRegistrationDir = "/var/lib/kubelet/plugins_registry"
	c.CSI.PluginRegistrationDir = "/var/lib/volume-agent/plugins_registry"
	c.CSI.Drivers = []config.CSIDriverEndpoint{{Name: "hostpath.csi.k8s.io", Endpoint: "unix:///run/csi/hostpath.sock"}}
	c.CSI.CallTimeout = duration(time.Minute)
}

func TestValidateAgentConfigurationRejects(t *testing.T) {
	tests := map[string]struct {
		configure func(*config.AgentConfiguration)
		errMsg    string
	}{
		"relative rootDir": {
			configure: func(c *config.AgentConfiguration) { c.RootDir = "rel/path" },
			errMsg:    `rootDir (--root-dir): Invalid value: "rel/path": must be an absolute path`,
		},
		"empty rootDir": {
			configure: func(c *config.AgentConfiguration) { c.RootDir = "" },
			errMsg:    `rootDir (--root-dir): Required value: must be an absolute path`,
		},
		"relative podManifestPath": {
			configure: func(c *config.AgentConfiguration) { c.PodManifestPath = "pods" },
			errMsg:    `podManifestPath (--pod-manifest-path): Invalid value: "pods": must be an absolute path`,
		},
		"empty nodeName": {
			configure: func(c *config.AgentConfiguration) { c.NodeName = "" },
			errMsg:    `nodeName (--node-name): Required value: the host name could not be read; set the node name`,
		},
		"nodeName with capitals": {
			configure: func(c *config.AgentConfiguration) { c.NodeName = "Node_A" },
			errMsg:    `nodeName (--node-name): Invalid value: "Node_A": a lowercase RFC 1123 subdomain`,
		},
		"bad nodeIP": {
			configure: func(c *config.AgentConfiguration) { c.NodeIP = "10.0.0" },
			errMsg:    `nodeIP (--node-ip): Invalid value: "10.0.0": must be a valid IP address`,
		},
		"negative verbosity": {
			configure: func(c *config.AgentConfiguration) { c.Logging.Verbosity = -1 },
			errMsg:    `logging.verbosity: Invalid value: -1: must not be negative`,
		},
		"unknown log format": {
			configure: func(c *config.AgentConfiguration) { c.Logging.Format = "xml" },
			errMsg:    `logging.format (--log-format): Unsupported value: "xml": supported values: "json", "text"`,
		},
		"no git protocols": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.AllowedProtocols = []string{} },
			errMsg:    `gitRepo.allowedProtocols (--git-allowed-protocols): Required value: at least one protocol must be allowed`,
		},
		"unknown git protocol": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.AllowedProtocols = []string{"https", "ftp"} },
			errMsg:    `gitRepo.allowedProtocols[1] (--git-allowed-protocols): Unsupported value: "ftp": supported values: "file", "git", "http", "https", "ssh"`,
		},
		"duplicate git protocol": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.AllowedProtocols = []string{"ssh", "ssh"} },
			errMsg:    `gitRepo.allowedProtocols[1] (--git-allowed-protocols): Duplicate value: "ssh"`,
		},
		"zero git timeout": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.Timeout = duration(0) },
			errMsg:    `gitRepo.timeout (--git-timeout): Invalid value: "0s": must be greater than zero`,
		},
		"unknown cache mode": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.Cache.Mode = "hardlink" },
			errMsg:    `gitRepo.cache.mode: Unsupported value: "hardlink": supported values: "auto", "copy", "overlay"`,
		},
		"negative maxSizeBytes": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.MaxSizeBytes = -1 },
			errMsg:    `gitRepo.maxSizeBytes: Invalid value: -1: must not be negative (0 means no limit)`,
		},
		"bad minGitVersion": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.MinGitVersion = "latest" },
			errMsg:    `gitRepo.minGitVersion: Invalid value: "latest": must be a version such as "2.30.0"`,
		},
		"enabled cache of size 0": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.Cache.MaxBytes = 0 },
			errMsg:    `gitRepo.cache.maxBytes: Invalid value: 0: must be greater than zero when the cache is enabled`,
		},
		"negative cache size": {
			configure: func(c *config.AgentConfiguration) { c.GitRepo.Cache = config.GitCacheConfiguration{MaxBytes: -5} },
			errMsg:    `gitRepo.cache.maxBytes: Invalid value: -5: must not be negative`,
		},
		"flocker host with scheme and port": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.ControlServiceHost = "https://flocker:4523" },
			errMsg:    `flocker.controlServiceHost (--flocker-control-service-host or $FLOCKER_CONTROL_SERVICE_HOST): Invalid value: "https://flocker:4523": must be a host name or an IP address, without scheme or port`,
		},
		"empty flocker host": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.ControlServiceHost = "" },
			errMsg:    `flocker.controlServiceHost (--flocker-control-service-host or $FLOCKER_CONTROL_SERVICE_HOST): Required value`,
		},
		"flocker port out of range": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.Port = 70000 },
			errMsg:    `flocker.port (--flocker-control-service-port or $FLOCKER_CONTROL_SERVICE_PORT): Invalid value: 70000: must be between 1 and 65535, inclusive`,
		},
		"relative flocker CA file": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.CAFile = "cluster.crt" },
			errMsg:    `flocker.caFile ($FLOCKER_CONTROL_SERVICE_CA_FILE): Invalid value: "cluster.crt": must be an absolute path`,
		},
		"empty flocker client certificate": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.ClientCertFile = "" },
			errMsg:    `flocker.clientCertFile ($FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE): Required value: must be an absolute path`,
		},
		"relative flocker client key": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.ClientKeyFile = "./key" },
			errMsg:    `flocker.clientKeyFile ($FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE): Invalid value: "./key": must be an absolute path`,
		},
		"negative flocker move timeout": {
			configure: func(c *config.AgentConfiguration) { c.Flocker.MoveTimeout = duration(-time.Second) },
			errMsg:    `flocker.moveTimeout: Invalid value: "-1s": must be greater than zero`,
		},
		"zero resync period": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.ResyncPeriod = duration(0) },
			errMsg:    `volumeManager.resyncPeriod (--resync-period): Invalid value: "0s": must be greater than zero`,
		},
		"no workers": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.Workers = 0 },
			errMsg:    `volumeManager.workers (--workers): Invalid value: 0: must be at least 1`,
		},
		"max backoff below initial backoff": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.MaxBackoff = duration(100 * time.Millisecond) },
			errMsg:    `volumeManager.maxBackoff: Invalid value: "100ms": must not be less than initialBackoff (500ms)`,
		},
		"zero initial backoff": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.InitialBackoff = duration(0) },
			errMsg:    `volumeManager.initialBackoff: Invalid value: "0s": must be greater than zero`,
		},
		"zero operation timeout": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.OperationTimeout = duration(0) },
			errMsg:    `volumeManager.operationTimeout (--operation-timeout): Invalid value: "0s": must be greater than zero`,
		},
		"zero health check period": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.HealthCheckPeriod = duration(0) },
			errMsg:    `volumeManager.healthCheckPeriod: Invalid value: "0s": must be greater than zero`,
		},
		"zero size check period": {
			configure: func(c *config.AgentConfiguration) { c.VolumeManager.SizeCheckPeriod = duration(0) },
			errMsg:    `volumeManager.sizeCheckPeriod: Invalid value: "0s": must be greater than zero`,
		},
		"relative socket path": {
			configure: func(c *config.AgentConfiguration) { c.Server.SocketPath = "agent.sock" },
			errMsg:    `server.socketPath (--socket): Invalid value: "agent.sock": must be an absolute path`,
		},
		"socket path too long": {
			configure: func(c *config.AgentConfiguration) {
				c.Server.SocketPath = "/" + strings.Repeat("s", validation.MaxSocketPathLength)
			},
			errMsg: `server.socketPath (--socket): Invalid value: "/` + strings.Repeat("s", validation.MaxSocketPathLength) +
				`": must be at most 107 bytes long, the limit of a unix socket path`,
		},
		"rootDir too long for the default socket": {
			configure: func(c *config.AgentConfiguration) { c.RootDir = "/" + strings.Repeat("r", 100) },
			errMsg: `server.socketPath (--socket): Invalid value: "/` + strings.Repeat("r", 100) + `/volume-agent.sock` +
				`": must be at most 107 bytes long, the limit of a unix socket path; the default socket path is inside rootDir, so shorten rootDir or set the socket path`,
		},
		"socket mode not octal": {
			configure: func(c *config.AgentConfiguration) { c.Server.SocketMode = "0800" },
			errMsg:    `server.socketMode (--socket-mode): Invalid value: "0800": must be octal permission bits between 0000 and 0777, such as "0600"`,
		},
		"socket mode with sticky bit": {
			configure: func(c *config.AgentConfiguration) { c.Server.SocketMode = "01777" },
			errMsg:    `server.socketMode (--socket-mode): Invalid value: "01777": must be octal permission bits between 0000 and 0777, such as "0600"`,
		},
		"metrics address without port": {
			configure: func(c *config.AgentConfiguration) { c.Server.MetricsAddress = "localhost" },
			errMsg:    `server.metricsAddress (--metrics-address): Invalid value: "localhost": must be "host:port" or ":port"`,
		},
		"metrics address with named port": {
			configure: func(c *config.AgentConfiguration) { c.Server.MetricsAddress = ":http" },
			errMsg:    `server.metricsAddress (--metrics-address): Invalid value: ":http": port must be a number`,
		},
		"metrics port out of range": {
			configure: func(c *config.AgentConfiguration) { c.Server.MetricsAddress = ":70000" },
			errMsg:    `server.metricsAddress (--metrics-address): Invalid value: ":70000": port must be between 0 and 65535, inclusive`,
		},
		"relative hook directory": {
			configure: func(c *config.AgentConfiguration) { c.Hooks.Directories = []string{"/etc/hooks", "hooks"} },
			errMsg:    `hooks.directories[1] (--hook-dir): Invalid value: "hooks": must be an absolute path`,
		},
		"duplicate hook directory": {
			configure: func(c *config.AgentConfiguration) { c.Hooks.Directories = []string{"/etc/hooks", "/etc/hooks"} },
			errMsg:    `hooks.directories[1] (--hook-dir): Duplicate value: "/etc/hooks"`,
		},
		"CSI endpoint without unix://": {
			configure: func(c *config.AgentConfiguration) { c.CSI.Endpoint = "/run/csi.sock" },
			errMsg:    `csi.endpoint (--csi-endpoint): Invalid value: "/run/csi.sock": must be unix:// followed by an absolute path`,
		},
		"CSI endpoint with a relative path": {
			configure: func(c *config.AgentConfiguration) { c.CSI.Endpoint = "unix://run/csi.sock" },
			errMsg:    `csi.endpoint (--csi-endpoint): Invalid value: "unix://run/csi.sock": must be unix:// followed by an absolute path`,
		},
		"CSI endpoint too long": {
			configure: func(c *config.AgentConfiguration) { c.CSI.Endpoint = "unix:///" + strings.Repeat("a", 107) },
			errMsg:    `csi.endpoint (--csi-endpoint): Invalid value: "unix:///` + strings.Repeat("a", 107) + `": the socket path must be at most 107 bytes long`,
		},
		"CSI driver name not a domain name": {
			configure: func(c *config.AgentConfiguration) { c.CSI.DriverName = "Volume_Agent" },
			errMsg:    `csi.driverName (--csi-driver-name): Invalid value: "Volume_Agent": a lowercase RFC 1123 subdomain`,
		},
		"CSI driver name longer than 63 bytes": {
			configure: func(c *config.AgentConfiguration) { c.CSI.DriverName = strings.Repeat("a", 64) + ".io" },
			errMsg:    `csi.driverName (--csi-driver-name): Too long: may not be more than 63 bytes`,
		},
		"registration without a CSI endpoint": {
			configure: func(c *config.AgentConfiguration) { c.CSI.KubeletRegistrationDir = "/var/lib/kubelet/plugins_registry" },
			errMsg:    `csi.kubeletRegistrationDir (--kubelet-registration-dir): Invalid value: "/var/lib/kubelet/plugins_registry": registering with the kubelet needs csi.endpoint (--csi-endpoint)`,
		},
		"relative registration dir": {
			configure: func(c *config.AgentConfiguration) {
				c.CSI.Endpoint = "unix:///run/csi.sock"
				c.CSI.KubeletRegistrationDir = "plugins_registry"
			},
			errMsg: `csi.kubeletRegistrationDir (--kubelet-registration-dir): Invalid value: "plugins_registry": must be an absolute path`,
		},
		"relative plugin registration dir": {
			configure: func(c *config.AgentConfiguration) { c.CSI.PluginRegistrationDir = "plugins_registry" },
			errMsg:    `csi.pluginRegistrationDir: Invalid value: "plugins_registry": must be an absolute path`,
		},
		"external driver with a bad name": {
			configure: func(c *config.AgentConfiguration) {
				c.CSI.Drivers = []config.CSIDriverEndpoint{{Name: "Host_Path", Endpoint: "unix:///run/csi.sock"}}
			},
			errMsg: `csi.drivers[0].name: Invalid value: "Host_Path"`,
		},
		"external driver twice": {
			configure: func(c *config.AgentConfiguration) {
				c.CSI.Drivers = []config.CSIDriverEndpoint{{Name: "a.example.com", Endpoint: "unix:///run/a.sock"}, {Name: "a.example.com", Endpoint: "unix:///run/b.sock"}}
			},
			errMsg: `csi.drivers[1].name: Duplicate value: "a.example.com"`,
		},
		"external driver over tcp": {
			configure: func(c *config.AgentConfiguration) {
				c.CSI.Drivers = []config.CSIDriverEndpoint{{Name: "a.example.com", Endpoint: "tcp://127.0.0.1:10000"}}
			},
			errMsg: `csi.drivers[0].endpoint: Invalid value: "tcp://127.0.0.1:10000": must be unix:// followed by an absolute path`,
		},
		"negative csi call timeout": {
			configure: func(c *config.AgentConfiguration) { c.CSI.CallTimeout = duration(-time.Second) },
			errMsg:    `csi.callTimeout: Invalid value: "-1s": must not be negative`,
		},
		"relative fault hooks file": {
			configure: func(c *config.AgentConfiguration) { c.Hooks.FaultHooksFile = "faults.js" },
			errMsg:    `hooks.faultHooksFile (--fault-hooks-file): Invalid value: "faults.js": must be an absolute path`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := successConfig()
			tc.configure(cfg)
			errs := validation.ValidateAgentConfiguration(cfg)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), errs.ToAggregate())
			}
			if got := errs[0].Error(); !strings.HasPrefix(got, tc.errMsg) {
				t.Errorf("wrong error\ngot:  %s\nwant: %s", got, tc.errMsg)
			}
		})
	}
}

func TestValidateAgentConfigurationReportsEveryProblem(t *testing.T) {
	cfg := successConfig()
	cfg.RootDir = "rel/path"
	cfg.VolumeManager.Workers = 0
	cfg.Server.SocketMode = "rw-------"
	cfg.Hooks.Directories = []string{"hooks.d"}
	cfg.Flocker.Port = 0

	errs := validation.ValidateAgentConfiguration(cfg)
	want := []string{
		`rootDir (--root-dir): Invalid value: "rel/path": must be an absolute path`,
		`flocker.port (--flocker-control-service-port or $FLOCKER_CONTROL_SERVICE_PORT): Invalid value: 0: must be between 1 and 65535, inclusive`,
		`volumeManager.workers (--workers): Invalid value: 0: must be at least 1`,
		`server.socketMode (--socket-mode): Invalid value: "rw-------": must be octal permission bits`,
		`hooks.directories[0] (--hook-dir): Invalid value: "hooks.d": must be an absolute path`,
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d: %v", len(errs), len(want), errs.ToAggregate())
	}
	for i := range want {
		if got := errs[i].Error(); !strings.HasPrefix(got, want[i]) {
			t.Errorf("error %d\ngot:  %s\nwant: %s", i, got, want[i])
		}
	}
	aggregate := errs.ToAggregate().Error()
	for _, msg := range want {
		if !strings.Contains(aggregate, msg) {
			t.Errorf("aggregate error %q does not contain %q", aggregate, msg)
		}
	}
}

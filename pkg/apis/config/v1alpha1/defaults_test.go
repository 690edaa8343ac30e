package v1alpha1

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

func duration(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }

func defaulted() *AgentConfiguration {
	return &AgentConfiguration{
		RootDir: "/var/lib/volume-agent",
		Logging: LoggingConfiguration{Format: "text"},
		GitRepo: GitRepoConfiguration{
			AllowedProtocols: []string{"https", "ssh"},
			Timeout:          duration(2 * time.Minute),
			MinGitVersion:    "2.30.0",
			Cache:            GitCacheConfiguration{Enabled: ptr.To(true), MaxBytes: 10 * 1024 * 1024 * 1024, Mode: "auto"},
		},
		Flocker: FlockerConfiguration{
			ControlServiceHost: "localhost",
			Port:               4523,
			CAFile:             "/etc/flocker/cluster.crt",
			ClientCertFile:     "/etc/flocker/apiuser.crt",
			ClientKeyFile:      "/etc/flocker/apiuser.key",
			MoveTimeout:        duration(2 * time.Minute),
		},
		VolumeManager: VolumeManagerConfiguration{
			ResyncPeriod:      duration(20 * time.Second),
			Workers:           8,
			InitialBackoff:    duration(500 * time.Millisecond),
			MaxBackoff:        duration(2*time.Minute + 2*time.Second),
			OperationTimeout:  duration(2 * time.Minute),
			HealthCheckPeriod: duration(30 * time.Second),
			SizeCheckPeriod:   duration(10 * time.Second),
			VerifyPeriod:      duration(10 * time.Second),
			SourceLoadTimeout: duration(2 * time.Minute),
			TeardownOnExit:    ptr.To(false),

			TeardownOnExitTimeout: duration(time.Minute),
		},
		Server: ServerConfiguration{SocketMode: "0600"},
		Hooks: HooksConfiguration{
			Directories: []string{"/usr/share/volume-agent/hooks.d", "/etc/volume-agent/hooks.d"},
		},
		CSI: CSIConfiguration{DriverName: "volume-agent.io", CallTimeout: duration(2 * time.Minute)},
	}
}

// custom sets every field to a value other than its default.
func custom() *AgentConfiguration {
	return &AgentConfiguration{
		RootDir:         "/srv/agent",
		PodManifestPath: "/etc/volume-agent/pods",
		NodeName:        "node-a",
		NodeIP:          "10.0.0.7",
		Logging:         LoggingConfiguration{Verbosity: 4, Format: "json"},
		GitRepo: GitRepoConfiguration{
			AllowedProtocols: []string{"file"},
			Timeout:          duration(time.Minute),
			MaxSizeBytes:     1 << 20,
			MinGitVersion:    "2.40.1",
			Cache:            GitCacheConfiguration{Enabled: ptr.To(false), MaxBytes: 1 << 30, Mode: "copy"},
		},
		Flocker: FlockerConfiguration{
			ControlServiceHost: "flocker.example",
			Port:               14523,
			CAFile:             "/pki/ca.crt",
			ClientCertFile:     "/pki/user.crt",
			ClientKeyFile:      "/pki/user.key",
			MoveTimeout:        duration(5 * time.Minute),
		},
		VolumeManager: VolumeManagerConfiguration{
			ResyncPeriod:      duration(time.Minute),
			Workers:           2,
			InitialBackoff:    duration(time.Second),
			MaxBackoff:        duration(time.Minute),
			OperationTimeout:  duration(time.Minute),
			HealthCheckPeriod: duration(time.Minute),
			SizeCheckPeriod:   duration(time.Minute),
			VerifyPeriod:      duration(time.Minute),
			SourceLoadTimeout: duration(time.Minute),
			TeardownOnExit:    ptr.To(true),

			TeardownOnExitTimeout: duration(time.Minute),
		},
		Server: ServerConfiguration{
			SocketPath:     "/run/volume-agent.sock",
			SocketMode:     "0660",
			SocketGroup:    "volume-agent",
			MetricsAddress: "127.0.0.1:9090",
		},
		Hooks: HooksConfiguration{Directories: []string{"/opt/hooks"}, FaultHooksFile: "/etc/faults.js"},
		CSI: CSIConfiguration{
			Endpoint:               "unix:///run/volume-agent/csi.sock",
			DriverName:             "csi.example.com",
			KubeletRegistrationDir: "/var/lib/kubelet/plugins_registry",
			PluginRegistrationDir:  "/var/lib/va/plugins_registry",
			Drivers:                []CSIDriverEndpoint{{Name: "hostpath.csi.k8s.io", Endpoint: "unix:///run/csi/hostpath.sock"}},
			CallTimeout:            duration(time.Minute),
		},
	}
}

func TestSetDefaultsAgentConfiguration(t *testing.T) {
	// Defaulting is exercised through a scheme to prove that registration
	// wires SetDefaults_AgentConfiguration in.
	scheme := runtime.NewScheme()
	if err := AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		config   *AgentConfiguration
		expected *AgentConfiguration
	}{
		"empty config gets every default": {
			config:   &AgentConfiguration{},
			expected: defaulted(),
		},
		"defaulting is idempotent": {
			config:   defaulted(),
			expected: defaulted(),
		},
		"values that are not defaults are kept": {
			config:   custom(),
			expected: custom(),
		},
		"explicit empty lists and false pointers are kept": {
			config: &AgentConfiguration{
				GitRepo:       GitRepoConfiguration{AllowedProtocols: []string{}, Cache: GitCacheConfiguration{Enabled: ptr.To(false)}},
				VolumeManager: VolumeManagerConfiguration{TeardownOnExit: ptr.To(true)},
				Hooks:         HooksConfiguration{Directories: []string{}},
			},
			expected: func() *AgentConfiguration {
				want := defaulted()
				want.GitRepo.AllowedProtocols = []string{}
				want.GitRepo.Cache.Enabled = ptr.To(false)
				want.VolumeManager.TeardownOnExit = ptr.To(true)
				want.Hooks.Directories = []string{}
				return want
			}(),
		},
		"one field set, the rest defaulted": {
			config: &AgentConfiguration{VolumeManager: VolumeManagerConfiguration{Workers: 3}},
			expected: func() *AgentConfiguration {
				want := defaulted()
				want.VolumeManager.Workers = 3
				return want
			}(),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			scheme.Default(tc.config)
			if !reflect.DeepEqual(tc.config, tc.expected) {
				t.Errorf("defaulted config differs\ngot:\n%s\nwant:\n%s", toYAML(t, tc.config), toYAML(t, tc.expected))
			}
		})
	}
}

func TestDefaultedConfigSharesNoLists(t *testing.T) {
	first, second := &AgentConfiguration{}, &AgentConfiguration{}
	SetDefaults_AgentConfiguration(first)
	SetDefaults_AgentConfiguration(second)
	first.GitRepo.AllowedProtocols[0] = "changed"
	first.Hooks.Directories[0] = "changed"
	if !reflect.DeepEqual(second, defaulted()) {
		t.Errorf("changing one defaulted config changed another:\n%s", toYAML(t, second))
	}
}

func toYAML(t *testing.T, obj any) string {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

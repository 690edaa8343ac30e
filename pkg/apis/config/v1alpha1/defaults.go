package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// Default values of AgentConfiguration fields.
const (
	DefaultRootDir                  = "/var/lib/volume-agent"
	DefaultLogFormat                = "text"
	DefaultGitTimeout               = 2 * time.Minute
	DefaultMinGitVersion            = "2.30.0"
	DefaultGitCacheMaxBytes   int64 = 10 << 30 // 10 GiB
	DefaultGitCacheMode             = "auto"
	DefaultFlockerHost              = "localhost"
	DefaultFlockerPort        int32 = 4523
	DefaultFlockerCAFile            = "/etc/flocker/cluster.crt"
	DefaultFlockerClientCert        = "/etc/flocker/apiuser.crt"
	DefaultFlockerClientKey         = "/etc/flocker/apiuser.key"
	DefaultFlockerMoveTimeout       = 2 * time.Minute
	DefaultResyncPeriod             = 20 * time.Second
	DefaultWorkers            int32 = 8
	DefaultInitialBackoff           = 500 * time.Millisecond
	DefaultMaxBackoff               = 2*time.Minute + 2*time.Second
	DefaultOperationTimeout         = 2 * time.Minute
	DefaultHealthCheckPeriod        = 30 * time.Second
	DefaultSizeCheckPeriod          = 10 * time.Second
	DefaultSocketMode               = "0600"
	DefaultCSIDriverName            = "volume-agent.io"
	DefaultCSICallTimeout           = 2 * time.Minute
)

// Default values of the volume manager's checks and bounds.
const (
	DefaultVerifyPeriod          = 10 * time.Second
	DefaultSourceLoadTimeout     = 2 * time.Minute
	DefaultTeardownOnExitTimeout = time.Minute
)

// DefaultGitAllowedProtocols returns the default of gitRepo.allowedProtocols.
func DefaultGitAllowedProtocols() []string { return []string{"https", "ssh"} }

// DefaultHookDirectories returns the default of hooks.directories.
func DefaultHookDirectories() []string {
	return []string{"/usr/share/volume-agent/hooks.d", "/etc/volume-agent/hooks.d"}
}

func addDefaultingFuncs(scheme *runtime.Scheme) error {
	return RegisterDefaults(scheme)
}

// SetDefaults_AgentConfiguration sets every unset field of obj to its default.
// A field is unset when it is zero, or nil for pointers and lists; an explicit
// empty list is kept. It is idempotent. nodeName is not defaulted here: the
// loader fills it from the host name, so that defaulting stays deterministic.
func SetDefaults_AgentConfiguration(obj *AgentConfiguration) { //nolint:revive // the defaulter-gen naming convention
	setDefaultString(&obj.RootDir, DefaultRootDir)
	setDefaultString(&obj.Logging.Format, DefaultLogFormat)

	git := &obj.GitRepo
	if git.AllowedProtocols == nil {
		git.AllowedProtocols = DefaultGitAllowedProtocols()
	}
	setDefaultDuration(&git.Timeout, DefaultGitTimeout)
	setDefaultString(&git.MinGitVersion, DefaultMinGitVersion)
	if git.Cache.Enabled == nil {
		git.Cache.Enabled = ptr.To(true)
	}
	if git.Cache.MaxBytes == 0 {
		git.Cache.MaxBytes = DefaultGitCacheMaxBytes
	}
	setDefaultString(&git.Cache.Mode, DefaultGitCacheMode)

	flocker := &obj.Flocker
	setDefaultString(&flocker.ControlServiceHost, DefaultFlockerHost)
	if flocker.Port == 0 {
		flocker.Port = DefaultFlockerPort
	}
	setDefaultString(&flocker.CAFile, DefaultFlockerCAFile)
	setDefaultString(&flocker.ClientCertFile, DefaultFlockerClientCert)
	setDefaultString(&flocker.ClientKeyFile, DefaultFlockerClientKey)
	setDefaultDuration(&flocker.MoveTimeout, DefaultFlockerMoveTimeout)

	vm := &obj.VolumeManager
	setDefaultDuration(&vm.ResyncPeriod, DefaultResyncPeriod)
	if vm.Workers == 0 {
		vm.Workers = DefaultWorkers
	}
	setDefaultDuration(&vm.InitialBackoff, DefaultInitialBackoff)
	setDefaultDuration(&vm.MaxBackoff, DefaultMaxBackoff)
	setDefaultDuration(&vm.OperationTimeout, DefaultOperationTimeout)
	setDefaultDuration(&vm.HealthCheckPeriod, DefaultHealthCheckPeriod)
	setDefaultDuration(&vm.SizeCheckPeriod, DefaultSizeCheckPeriod)
	setDefaultDuration(&vm.VerifyPeriod, DefaultVerifyPeriod)
	setDefaultDuration(&vm.SourceLoadTimeout, DefaultSourceLoadTimeout)
	if vm.TeardownOnExit == nil {
		vm.TeardownOnExit = ptr.To(false)
	}
	setDefaultDuration(&vm.TeardownOnExitTimeout, DefaultTeardownOnExitTimeout)

	setDefaultString(&obj.Server.SocketMode, DefaultSocketMode)

	if obj.Hooks.Directories == nil {
		obj.Hooks.Directories = DefaultHookDirectories()
	}

	setDefaultString(&obj.CSI.DriverName, DefaultCSIDriverName)
	setDefaultDuration(&obj.CSI.CallTimeout, DefaultCSICallTimeout)
}

func setDefaultString(field *string, value string) {
	if *field == "" {
		*field = value
	}
}

func setDefaultDuration(field *metav1.Duration, value time.Duration) {
	if field.Duration == 0 {
		field.Duration = value
	}
}

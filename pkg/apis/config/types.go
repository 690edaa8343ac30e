package config

import (
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultSocketName is the file name of the agent's unix socket inside RootDir,
// used when Server.SocketPath is empty.
const DefaultSocketName = "volume-agent.sock"

// Logging formats accepted in Logging.Format.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AgentConfiguration is the complete configuration of one volume-agent.
// Every field is already defaulted when it comes out of the loader; see
// v1alpha1 for the default of each field.
type AgentConfiguration struct {
	metav1.TypeMeta

	// RootDir holds the agent's state: pod volume directories, ready markers
	// and, by default, the API socket.
	RootDir string
	// PodManifestPath is a file or directory of static pod manifests.
	// Empty means no file source.
	PodManifestPath string
	// NodeName is the name this node is known by (for example to Flocker).
	// The loader fills it from the lower-cased host name when it is empty.
	NodeName string
	// NodeIP is the node's IP address. Empty means not set.
	NodeIP string
	// Logging configures the log output format and verbosity.
	Logging LoggingConfiguration
	// GitRepo configures the gitRepo volume plugin.
	GitRepo GitRepoConfiguration
	// Flocker configures the flocker volume plugin's control-service client.
	Flocker FlockerConfiguration
	// VolumeManager configures the reconciler and operation executor.
	VolumeManager VolumeManagerConfiguration
	// Server configures the local API socket and the metrics endpoint.
	Server ServerConfiguration
	// Hooks configures lifecycle hooks and fault injection.
	Hooks HooksConfiguration
	// CSI configures the agent's CSI driver mode.
	CSI CSIConfiguration
}

// LoggingConfiguration configures logging.
type LoggingConfiguration struct {
	// Verbosity is the klog verbosity level; 0 logs the least.
	Verbosity int32
	// Format is LogFormatText or LogFormatJSON.
	Format string
}

// GitRepoConfiguration configures the gitRepo volume plugin.
type GitRepoConfiguration struct {
	// AllowedProtocols lists the URL schemes a repository may use, among
	// https, ssh, git, http and file.
	AllowedProtocols []string
	// Timeout bounds one clone or checkout.
	Timeout metav1.Duration
	// MaxSizeBytes bounds the size of a checked-out repository; 0 means no limit.
	MaxSizeBytes int64
	// MinGitVersion is the oldest git the agent accepts, as "major.minor.patch".
	MinGitVersion string
	// Cache configures the shared object cache of cloned repositories.
	Cache GitCacheConfiguration
}

// GitCacheConfiguration configures the gitRepo object cache.
type GitCacheConfiguration struct {
	// Enabled turns the cache on.
	Enabled bool
	// MaxBytes is the size above which the cache is pruned.
	MaxBytes int64
	// Mode is how a volume of a cached revision is made: "overlay" (an
	// overlay mount over the cache's checkout), "copy" (a copy of it), or
	// "auto" (overlay where overlay mounts work on the root dir's file
	// system, copy elsewhere).
	Mode string
}

// FlockerConfiguration configures the client of the Flocker control service.
type FlockerConfiguration struct {
	// ControlServiceHost is the host name or address of the control service.
	ControlServiceHost string
	// Port is the control service's TCP port.
	Port int32
	// CAFile is the cluster CA certificate that signs the control service's certificate.
	CAFile string
	// ClientCertFile is the API user certificate presented to the control service.
	ClientCertFile string
	// ClientKeyFile is the private key of ClientCertFile.
	ClientKeyFile string
	// MoveTimeout bounds the wait for a dataset to move to this node.
	MoveTimeout metav1.Duration
}

// VolumeManagerConfiguration configures the reconciler and the operation executor.
type VolumeManagerConfiguration struct {
	// ResyncPeriod is how often desired and actual state are fully reconciled.
	ResyncPeriod metav1.Duration
	// Workers is the number of volume operations run at the same time.
	Workers int32
	// InitialBackoff is the first delay before a failed operation is retried.
	InitialBackoff metav1.Duration
	// MaxBackoff caps the delay between retries of a failed operation.
	MaxBackoff metav1.Duration
	// OperationTimeout bounds one set-up or tear-down operation.
	OperationTimeout metav1.Duration
	// HealthCheckPeriod is how often each plugin's health (git's version, the Flocker control service) is checked.
	HealthCheckPeriod metav1.Duration
	// SizeCheckPeriod is how often size limits of volumes are checked.
	SizeCheckPeriod metav1.Duration
	// VerifyPeriod is how often ready volumes are verified still to be set
	// up (a tmpfs still mounted), and repaired or reported when not.
	VerifyPeriod metav1.Duration
	// SourceLoadTimeout bounds how long the volumes a manifest that does not
	// load may have declared wait before they are torn down.
	SourceLoadTimeout metav1.Duration
	// TeardownOnExit tears every volume down when the agent stops.
	TeardownOnExit bool
	// TeardownOnExitTimeout bounds that tear-down; a second signal ends it
	// at once.
	TeardownOnExitTimeout metav1.Duration
}

// ServerConfiguration configures the local API and metrics.
type ServerConfiguration struct {
	// SocketPath is the unix socket of the local API. Empty means
	// <RootDir>/volume-agent.sock; use AgentConfiguration.ResolvedSocketPath.
	SocketPath string
	// SocketMode is the socket's permission bits in octal, such as "0600".
	// Use ParseSocketMode to read it.
	SocketMode string
	// SocketGroup is the group name or numeric ID that owns the socket.
	// Empty leaves the group of the agent process.
	SocketGroup string
	// MetricsAddress is the host:port or :port metrics are served on.
	// Empty turns metrics serving off.
	MetricsAddress string
}

// HooksConfiguration configures lifecycle hooks and fault injection.
type HooksConfiguration struct {
	// Directories are searched in order for hook definitions.
	Directories []string
	// FaultHooksFile is a fault-injection script. Empty means no fault injection.
	FaultHooksFile string
}

// CSIConfiguration configures the agent as a CSI driver: the CSI services
// it serves and its registration with the kubelet.
type CSIConfiguration struct {
	// Endpoint is the unix socket the CSI Identity, Node and Controller
	// services are served on, as "unix:///abs/path.sock". Empty means the
	// agent is no CSI driver.
	Endpoint string
	// DriverName is the CSI driver's name, which the kubelet and the
	// CSIDriver object know it by.
	DriverName string
	// KubeletRegistrationDir is the kubelet's plugin registration dir, where
	// the agent serves the registration API on <DriverName>-reg.sock. Empty
	// means the agent does not register with a kubelet.
	KubeletRegistrationDir string

	// The agent as a CSI consumer: the kubernetes.io/csi plugin.

	// PluginRegistrationDir is where the kubernetes.io/csi plugin watches
	// for external CSI drivers' registration sockets, as the kubelet's
	// plugins_registry. Empty means ROOT/plugins_registry.
	PluginRegistrationDir string
	// Drivers are external CSI drivers used without registration.
	Drivers []CSIDriverEndpoint
	// CallTimeout bounds each call to an external CSI driver.
	CallTimeout metav1.Duration
}

// CSIDriverEndpoint is an external CSI driver: its name and its socket.
type CSIDriverEndpoint struct {
	// Name is the driver's name, as its GetPluginInfo gives it.
	Name string
	// Endpoint is the driver's unix socket, as "unix:///abs/path.sock".
	Endpoint string
}

// ResolvedSocketPath returns the path of the API socket: Server.SocketPath
// when set, otherwise DefaultSocketName inside RootDir.
func (c *AgentConfiguration) ResolvedSocketPath() string {
	if c.Server.SocketPath != "" {
		return c.Server.SocketPath
	}
	return filepath.Join(c.RootDir, DefaultSocketName)
}

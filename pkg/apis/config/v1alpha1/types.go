package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AgentConfiguration is the configuration file of one volume-agent.
type AgentConfiguration struct {
	metav1.TypeMeta `json:",inline"`

	// rootDir holds the agent's state: pod volume directories, ready markers
	// and, by default, the API socket. Default: "/var/lib/volume-agent".
	// +optional
	RootDir string `json:"rootDir,omitempty"`
	// podManifestPath is a file or directory of static pod manifests.
	// Default: "" (no file source).
	// +optional
	PodManifestPath string `json:"podManifestPath,omitempty"`
	// nodeName is the name this node is known by. Default: the host name,
	// lower-cased, filled in by the loader (not by defaulting).
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// nodeIP is the node's IP address. Default: "" (not set).
	// +optional
	NodeIP string `json:"nodeIP,omitempty"`
	// logging configures the log output.
	// +optional
	Logging LoggingConfiguration `json:"logging"`
	// gitRepo configures the gitRepo volume plugin.
	// +optional
	GitRepo GitRepoConfiguration `json:"gitRepo"`
	// flocker configures the flocker volume plugin's control-service client.
	// +optional
	Flocker FlockerConfiguration `json:"flocker"`
	// volumeManager configures the reconciler and operation executor.
	// +optional
	VolumeManager VolumeManagerConfiguration `json:"volumeManager"`
	// server configures the local API socket and the metrics endpoint.
	// +optional
	Server ServerConfiguration `json:"server"`
	// hooks configures lifecycle hooks and fault injection.
	// +optional
	Hooks HooksConfiguration `json:"hooks"`
	// csi configures the agent's CSI driver mode.
	// +optional
	CSI CSIConfiguration `json:"csi"`
}

// LoggingConfiguration configures logging.
type LoggingConfiguration struct {
	// verbosity is the klog verbosity level. Default: 0.
	// +optional
	Verbosity int32 `json:"verbosity,omitempty"`
	// format is "text" or "json". Default: "text".
	// +optional
	Format string `json:"format,omitempty"`
}

// GitRepoConfiguration configures the gitRepo volume plugin.
type GitRepoConfiguration struct {
	// allowedProtocols lists the URL schemes a repository may use, among
	// https, ssh, git, http and file. Default: ["https", "ssh"].
	// +optional
	AllowedProtocols []string `json:"allowedProtocols"`
	// timeout bounds one clone or checkout. Default: "2m".
	// +optional
	Timeout metav1.Duration `json:"timeout,omitzero"`
	// maxSizeBytes bounds the size of a checked-out repository.
	// Default: 0 (no limit).
	// +optional
	MaxSizeBytes int64 `json:"maxSizeBytes,omitempty"`
	// minGitVersion is the oldest git accepted. Default: "2.30.0".
	// +optional
	MinGitVersion string `json:"minGitVersion,omitempty"`
	// cache configures the shared object cache of cloned repositories.
	// +optional
	Cache GitCacheConfiguration `json:"cache"`
}

// GitCacheConfiguration configures the gitRepo object cache.
type GitCacheConfiguration struct {
	// enabled turns the cache on. Default: true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// maxBytes is the size above which the cache is pruned.
	// Default: 10737418240 (10 GiB); 0 also means the default.
	// +optional
	MaxBytes int64 `json:"maxBytes,omitempty"`
	// mode is how a volume of a cached revision is made: "overlay" (an
	// overlay mount over the cache's checkout of the revision), "copy" (a
	// copy of that checkout), or "auto" (overlay where a probe mount on the
	// root dir's file system works, copy elsewhere). Default: "auto".
	// +optional
	Mode string `json:"mode,omitempty"`
}

// FlockerConfiguration configures the client of the Flocker control service.
type FlockerConfiguration struct {
	// controlServiceHost is the control service's host. Default: "localhost".
	// +optional
	ControlServiceHost string `json:"controlServiceHost,omitempty"`
	// port is the control service's TCP port. Default: 4523.
	// +optional
	Port int32 `json:"port,omitempty"`
	// caFile is the cluster CA certificate. Default: "/etc/flocker/cluster.crt".
	// +optional
	CAFile string `json:"caFile,omitempty"`
	// clientCertFile is the API user certificate.
	// Default: "/etc/flocker/apiuser.crt".
	// +optional
	ClientCertFile string `json:"clientCertFile,omitempty"`
	// clientKeyFile is the API user's private key.
	// Default: "/etc/flocker/apiuser.key".
	// +optional
	ClientKeyFile string `json:"clientKeyFile,omitempty"`
	// moveTimeout bounds the wait for a dataset to move to this node.
	// Default: "2m".
	// +optional
	MoveTimeout metav1.Duration `json:"moveTimeout,omitzero"`
}

// VolumeManagerConfiguration configures the reconciler and the operation executor.
type VolumeManagerConfiguration struct {
	// resyncPeriod is how often desired and actual state are fully
	// reconciled. Default: "20s".
	// +optional
	ResyncPeriod metav1.Duration `json:"resyncPeriod,omitzero"`
	// workers is the number of volume operations run at the same time.
	// Default: 8.
	// +optional
	Workers int32 `json:"workers,omitempty"`
	// initialBackoff is the first delay before a failed operation is retried.
	// Default: "500ms".
	// +optional
	InitialBackoff metav1.Duration `json:"initialBackoff,omitzero"`
	// maxBackoff caps the delay between retries. Default: "2m2s".
	// +optional
	MaxBackoff metav1.Duration `json:"maxBackoff,omitzero"`
	// operationTimeout bounds one set-up or tear-down operation. Default: "2m".
	// +optional
	OperationTimeout metav1.Duration `json:"operationTimeout,omitzero"`
	// healthCheckPeriod is how often each plugin's health (git's version, the
	// Flocker control service) is checked. Default: "30s".
	// +optional
	HealthCheckPeriod metav1.Duration `json:"healthCheckPeriod,omitzero"`
	// sizeCheckPeriod is how often volume size limits are checked. Default: "10s".
	// +optional
	SizeCheckPeriod metav1.Duration `json:"sizeCheckPeriod,omitzero"`
	// verifyPeriod is how often ready volumes are verified still to be set
	// up (a Memory emptyDir still mounted), and repaired or reported when
	// not. Default: "10s".
	// +optional
	VerifyPeriod metav1.Duration `json:"verifyPeriod,omitzero"`
	// sourceLoadTimeout bounds how long the volumes that a manifest which
	// does not load may have declared are kept before they are torn down.
	// Default: "2m".
	// +optional
	SourceLoadTimeout metav1.Duration `json:"sourceLoadTimeout,omitzero"`
	// teardownOnExit tears every volume down when the agent stops.
	// Default: false.
	// +optional
	TeardownOnExit *bool `json:"teardownOnExit,omitempty"`
	// teardownOnExitTimeout bounds the tear-down of teardownOnExit; a second
	// SIGINT or SIGTERM ends it at once. Default: "1m".
	// +optional
	TeardownOnExitTimeout metav1.Duration `json:"teardownOnExitTimeout,omitzero"`
}

// ServerConfiguration configures the local API and metrics.
type ServerConfiguration struct {
	// socketPath is the unix socket of the local API.
	// Default: "" (meaning <rootDir>/volume-agent.sock).
	// +optional
	SocketPath string `json:"socketPath,omitempty"`
	// socketMode is the socket's permission bits as a quoted octal string.
	// Default: "0600".
	// +optional
	SocketMode string `json:"socketMode,omitempty"`
	// socketGroup is the group name or numeric ID that owns the socket.
	// Default: "" (the agent's group).
	// +optional
	SocketGroup string `json:"socketGroup,omitempty"`
	// metricsAddress is the host:port or :port metrics are served on.
	// Default: "" (metrics off).
	// +optional
	MetricsAddress string `json:"metricsAddress,omitempty"`
}

// HooksConfiguration configures lifecycle hooks and fault injection.
type HooksConfiguration struct {
	// directories are searched in order for hook definitions. An explicit
	// empty list means no hooks. Default:
	// ["/usr/share/volume-agent/hooks.d", "/etc/volume-agent/hooks.d"].
	// +optional
	Directories []string `json:"directories"`
	// faultHooksFile is a fault-injection script. Default: "" (none).
	// +optional
	FaultHooksFile string `json:"faultHooksFile,omitempty"`
}

// CSIConfiguration configures the agent as a CSI driver.
type CSIConfiguration struct {
	// endpoint is the unix socket the CSI services are served on, as
	// "unix:///abs/path.sock". Default: "" (no CSI driver).
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// driverName is the CSI driver's name. Default: "volume-agent.io".
	// +optional
	DriverName string `json:"driverName,omitempty"`
	// kubeletRegistrationDir is the kubelet's plugin registration dir, where
	// the agent serves the registration API on <driverName>-reg.sock.
	// Default: "" (no registration).
	// +optional
	KubeletRegistrationDir string `json:"kubeletRegistrationDir,omitempty"`

	// pluginRegistrationDir is where the kubernetes.io/csi plugin watches for
	// external CSI drivers' registration sockets. Default: "" (ROOT/plugins_registry).
	// +optional
	PluginRegistrationDir string `json:"pluginRegistrationDir,omitempty"`
	// drivers are external CSI drivers the kubernetes.io/csi plugin uses
	// without registration. Default: none.
	// +optional
	Drivers []CSIDriverEndpoint `json:"drivers,omitempty"`
	// callTimeout bounds each call to an external CSI driver. Default: "2m".
	// +optional
	CallTimeout metav1.Duration `json:"callTimeout,omitempty"`
}

// CSIDriverEndpoint is an external CSI driver.
type CSIDriverEndpoint struct {
	// name is the driver's name, as its GetPluginInfo gives it.
	Name string `json:"name"`
	// endpoint is the driver's unix socket, as "unix:///abs/path.sock".
	Endpoint string `json:"endpoint"`
}

package volumemanager

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// VolumeKey names a volume on disk: ROOT/pods/<PodUID>/volumes/<escaped
// Plugin>/<Name>. Name is the name the plugin sets the volume up under: the
// pod's volume name for an inline volume, the PersistentVolume's name for a
// claim.
type VolumeKey struct {
	PodUID types.UID
	Plugin string
	Name   string
}

// String returns "<podUID>/<plugin>/<name>".
func (k VolumeKey) String() string { return fmt.Sprintf("%s/%s/%s", k.PodUID, k.Plugin, k.Name) }

// OperationKind is what an operation does to a volume.
type OperationKind string

const (
	// OperationSetUp sets a volume up through its plugin's Builder.
	OperationSetUp OperationKind = "setUp"
	// OperationTearDown tears a volume down through its plugin's Cleaner.
	OperationTearDown OperationKind = "tearDown"
)

// VolumeState is where a volume is on its way to the desired state.
type VolumeState string

const (
	// StatePending means the volume waits: for its claim to resolve (a
	// volume already set up whose claim stopped resolving is kept, and
	// shown pending), for the sources to be read before a volume found on
	// disk is judged, or for its first set-up to be queued.
	StatePending VolumeState = "pending"
	// StateSettingUp means a set-up is queued for a worker or running.
	StateSettingUp VolumeState = "settingUp"
	// StateReady means the volume is set up.
	StateReady VolumeState = "ready"
	// StateFailed means the last operation failed; Retry says whether and
	// when it is tried again.
	StateFailed VolumeState = "failed"
	// StateTearingDown means the volume is no longer desired and a
	// tear-down is queued for a worker or running (or was cancelled by a
	// stop). After a failed tear-down the volume is StateFailed until the
	// next attempt starts.
	StateTearingDown VolumeState = "tearingDown"
)

// PodState sums up the states of a pod's volumes.
type PodState string

const (
	// PodPending means some volume is pending or being set up, and none failed.
	PodPending PodState = "pending"
	// PodReady means every volume of the pod is ready.
	PodReady PodState = "ready"
	// PodFailed means some volume failed.
	PodFailed PodState = "failed"
	// PodTearingDown means the pod is no longer desired and volumes remain.
	PodTearingDown PodState = "tearingDown"
)

// VolumeStatus is what the Manager knows of one volume of a pod. Timestamps
// are in UTC; zero ones are omitted from JSON.
type VolumeStatus struct {
	// PodUID, PodNamespace and PodName name the pod. Namespace and name are
	// empty for a volume found on disk whose pod no source declares.
	PodUID       types.UID `json:"podUID"`
	PodNamespace string    `json:"podNamespace,omitempty"`
	PodName      string    `json:"podName,omitempty"`
	// Volume is the pod's name for the volume (spec.volumes[].name), or the
	// name on disk for a volume no source declares.
	Volume string `json:"volume"`
	// Plugin is the plugin's name; empty while the volume is pending or no
	// plugin matched.
	Plugin string `json:"plugin,omitempty"`
	// PersistentVolume is the bound PersistentVolume of a claim.
	PersistentVolume string `json:"persistentVolume,omitempty"`
	// Path is the volume's directory on the host.
	Path string `json:"path,omitempty"`
	// Desired is false for a volume that no source wants any more.
	Desired bool `json:"desired"`
	// State is the volume's state; Reason says why in a word and Message in
	// a sentence.
	State   VolumeState `json:"state"`
	Reason  string      `json:"reason,omitempty"`
	Message string      `json:"message,omitempty"`
	// LastError is the error of the last failed operation, and ErrorClass
	// its class (transient, final or uncertain).
	LastError  string `json:"lastError,omitempty"`
	ErrorClass string `json:"errorClass,omitempty"`
	// Attempts counts the attempts of the current operation since its last
	// success.
	Attempts int `json:"attempts,omitempty"`
	// NextRetry is when a failed operation is tried again; zero when it is
	// not (final errors wait for the spec to change).
	NextRetry time.Time `json:"nextRetry,omitzero"`
	// Since is when the volume entered its state; LastAttempt when the last
	// operation started; ReadySince when it last became ready.
	Since       time.Time `json:"since,omitzero"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	ReadySince  time.Time `json:"readySince,omitzero"`
	// SizeLimitExceeded is set when an emptyDir on disk uses more than its
	// sizeLimit; Usage is its last measured usage in bytes.
	SizeLimitExceeded bool  `json:"sizeLimitExceeded,omitempty"`
	Usage             int64 `json:"usageBytes,omitempty"`
}

// PodStatus is what the Manager knows of one pod.
type PodStatus struct {
	UID       types.UID `json:"uid"`
	Namespace string    `json:"namespace,omitempty"`
	Name      string    `json:"name,omitempty"`
	// Source is the source that declares the pod; empty for a pod found on
	// disk that no source declares.
	Source  string         `json:"source,omitempty"`
	State   PodState       `json:"state"`
	Volumes []VolumeStatus `json:"volumes"`
}

// SourceStatus is the state of one source of pods.
type SourceStatus struct {
	Name string `json:"name"`
	// Pods counts the pods the source declares now.
	Pods int `json:"pods"`
	// Error is the source's last error; its previous pods stay desired.
	Error     string    `json:"error,omitempty"`
	ErrorTime time.Time `json:"errorTime,omitzero"`
	// Updated is when the source last changed.
	Updated time.Time `json:"updated,omitzero"`
}

// EventType tells whether an event is routine.
type EventType string

const (
	// EventNormal is routine.
	EventNormal EventType = "Normal"
	// EventWarning reports a failure.
	EventWarning EventType = "Warning"
)

// Event reasons.
const (
	ReasonSetUp          = "SetUp"
	ReasonSetUpFailed    = "SetUpFailed"
	ReasonTornDown       = "TornDown"
	ReasonTearDownFailed = "TearDownFailed"
	ReasonSourceError    = "SourceError"
	// ReasonSourceConflict: a source declares a pod UID, a PersistentVolume
	// or a claim that another source declares too, and its declaration is
	// not used.
	ReasonSourceConflict    = "SourceConflict"
	ReasonPodDirRemoved     = "PodDirRemoved"
	ReasonPodDirKept        = "PodDirKept"
	ReasonSizeLimitExceeded = "SizeLimitExceeded"
	ReasonPluginUnhealthy   = "PluginUnhealthy"
	// ReasonVolumeLost: a ready volume is no longer set up (its tmpfs was
	// unmounted, its dir deleted). It is set up again when its plugin can
	// restore it, and shown failed otherwise.
	ReasonVolumeLost = "VolumeLost"
	// ReasonSourceSkipped: a source that has not loaded since the start is
	// taken, after SourceLoadTimeout, as declaring nothing.
	ReasonSourceSkipped = "SourceSkipped"
)

// Event is one entry of the Manager's bounded event list.
type Event struct {
	Time    time.Time `json:"time"`
	Type    EventType `json:"type"`
	Reason  string    `json:"reason"`
	PodUID  types.UID `json:"podUID,omitempty"`
	Pod     string    `json:"pod,omitempty"`
	Volume  string    `json:"volume,omitempty"`
	Source  string    `json:"source,omitempty"`
	Message string    `json:"message"`
}

// PluginStatus is a loaded plugin and its last health check.
type PluginStatus struct {
	Name string `json:"name"`
	// Driver is set on the row of one external driver of the plugin Name
	// (volume.DriverHealthCheckingPlugin); it follows the plugin's row.
	Driver string `json:"driver,omitempty"`
	// AccessModes are the modes of a persistent-volume plugin.
	AccessModes []string `json:"accessModes,omitempty"`
	// Checked is false for a plugin that has no health check; it is then
	// assumed usable.
	Checked   bool              `json:"checked"`
	Usable    bool              `json:"usable"`
	Message   string            `json:"message,omitempty"`
	Details   map[string]string `json:"details,omitempty"`
	CheckedAt time.Time         `json:"checkedAt,omitzero"`
}

// Summary counts what the Manager holds.
type Summary struct {
	// Ready is true once the sources have been read in full and every
	// volume of that first desired state has been tried at least once.
	Ready bool `json:"ready"`
	// SourcesSynced is true once every source has been read in full.
	SourcesSynced bool                `json:"sourcesSynced"`
	Pods          int                 `json:"pods"`
	Volumes       map[VolumeState]int `json:"volumes"`
	// Sources counts the sources; SourceErrors lists those with an error
	// (Manager.Sources lists them all).
	Sources      int            `json:"sources"`
	SourceErrors []SourceStatus `json:"sourceErrors,omitempty"`
	// LastPass is when the reconciler last ran a pass.
	LastPass time.Time `json:"lastPass,omitzero"`
}

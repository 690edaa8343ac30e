package volume

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	"k8s.io/utils/exec"
)

// Spec is the volume a plugin is asked to handle: a pod's inline volume, or
// a PersistentVolume that a pod's claim is bound to. Exactly one of Volume and
// PersistentVolume is set.
type Spec struct {
	Volume           *v1.Volume
	PersistentVolume *v1.PersistentVolume
	// ReadOnly is true when the pod asked for the volume read-only.
	ReadOnly bool
}

// NewSpecFromVolume returns the Spec of a pod's inline volume.
func NewSpecFromVolume(vol *v1.Volume) *Spec { return &Spec{Volume: vol} }

// NewSpecFromPersistentVolume returns the Spec of a PersistentVolume.
func NewSpecFromPersistentVolume(pv *v1.PersistentVolume, readOnly bool) *Spec {
	return &Spec{PersistentVolume: pv, ReadOnly: readOnly}
}

// Name returns the name of the inline volume or of the PersistentVolume.
func (s *Spec) Name() string {
	switch {
	case s.Volume != nil:
		return s.Volume.Name
	case s.PersistentVolume != nil:
		return s.PersistentVolume.Name
	}
	return ""
}

// VolumeOptions carry what a Builder needs beyond its spec and pod.
type VolumeOptions struct {
	// Context bounds the set-up: it is cancelled when the operation times out
	// or the agent stops, and it carries the logger. Nil means
	// context.Background().
	Context context.Context
}

// ContextOrBackground returns o.Context, or context.Background() when unset.
func (o VolumeOptions) ContextOrBackground() context.Context {
	if o.Context == nil {
		return context.Background()
	}
	return o.Context
}

// VolumePlugin turns one kind of volume into a directory on the host.
// Plugins are probed when the agent starts: Init is called once, before any
// other method.
type VolumePlugin interface {
	// Init gives the plugin its host. An error keeps the plugin out of the
	// registry; the other plugins still load.
	Init(host VolumeHost) error
	// Name returns the plugin's qualified name, as "kubernetes.io/empty-dir".
	// The "kubernetes.io/" prefix is reserved for the bundled plugins.
	Name() string
	// CanSupport reports whether the plugin handles spec. It must not look at
	// anything but the spec.
	CanSupport(spec *Spec) bool
	// NewBuilder returns a Builder for spec in pod. An invalid spec is a Final
	// error that names the field and the value.
	NewBuilder(spec *Spec, pod *v1.Pod, opts VolumeOptions) (Builder, error)
	// NewCleaner returns a Cleaner for the volume volName of the pod podUID,
	// from what is on disk alone.
	NewCleaner(volName string, podUID types.UID) (Cleaner, error)
}

// PersistentVolumePlugin is a VolumePlugin that backs PersistentVolumes.
type PersistentVolumePlugin interface {
	VolumePlugin
	// GetAccessModes returns the access modes the plugin supports.
	GetAccessModes() []v1.PersistentVolumeAccessMode
}

// SpecValidatingPlugin is a VolumePlugin that checks its volume source before
// anything runs. The agent calls it when validating a manifest, so bad input
// is refused before anything on disk is touched.
type SpecValidatingPlugin interface {
	VolumePlugin
	// ValidateSpec returns every problem in spec's source, each naming its
	// field under fldPath (the path of the source, as
	// spec.volumes[1].emptyDir) and the bad value.
	ValidateSpec(spec *Spec, fldPath *field.Path) field.ErrorList
}

// FallbackPlugin is a VolumePlugin that supports a whole kind of volume
// source but yields to a plugin made for some of them: the CSI plugin
// supports every csi volume, and a plugin that handles one CSI driver's
// volumes in-process takes those.
type FallbackPlugin interface {
	VolumePlugin
	// IsFallback returns true.
	IsFallback() bool
}

func isFallback(plugin VolumePlugin) bool {
	fallback, ok := plugin.(FallbackPlugin)
	return ok && fallback.IsFallback()
}

// Health tells whether a plugin is usable on this host.
type Health struct {
	// Usable is false when the plugin cannot set volumes up here.
	Usable bool `json:"usable"`
	// Message says why, or what was checked.
	Message string `json:"message,omitempty"`
	// Details are facts found on the way, as the version of a tool.
	Details map[string]string `json:"details,omitempty"`
}

// HealthCheckingPlugin is a VolumePlugin that can check whether it works on
// this host (a tool's version, a control service's answer).
type HealthCheckingPlugin interface {
	VolumePlugin
	// CheckHealth checks the plugin's dependencies. It must return within
	// ctx's deadline.
	CheckHealth(ctx context.Context) Health
}

// DriverHealth is the health of one external driver that a plugin sets
// volumes up through (a CSI node plugin).
type DriverHealth struct {
	// Name is the driver's name.
	Name string `json:"name"`
	Health
}

// DriverHealthCheckingPlugin is a HealthCheckingPlugin that sets volumes up
// through external drivers: its CheckHealth checks each of them too, and
// `volume-agent get plugins` shows a row per driver.
type DriverHealthCheckingPlugin interface {
	HealthCheckingPlugin
	// DriverHealth returns what the last CheckHealth found of each driver,
	// ordered by name.
	DriverHealth() []DriverHealth
}

// RunningPlugin is a VolumePlugin with work of its own to do while the
// agent runs (following a registration dir, probing drivers). The agent
// calls Run once, after Init, and cancels ctx when it stops; Run returns
// once its work has stopped.
type RunningPlugin interface {
	VolumePlugin
	Run(ctx context.Context)
}

// VerifyingPlugin is a VolumePlugin that can check, cheaply (a stat or a
// statfs, no walk), that a volume it set up is still set up. The volume
// manager calls it for every ready volume every verifyPeriod, never while an
// operation on the volume runs.
type VerifyingPlugin interface {
	VolumePlugin
	// VerifyVolume returns nil when the volume of pod podUID at path, set up
	// from spec, is still as SetUp left it. Otherwise its error says what is
	// missing, and its class what to do: Transient when setting the volume
	// up again restores it (a tmpfs or bind mount that is gone), so the
	// manager does; Final when it cannot (a checkout that was deleted), so
	// the manager only reports it.
	VerifyVolume(spec *Spec, podUID types.UID, path string) error
}

// VolumeHost is what a plugin may use of the node. Its paths follow the
// kubelet's layout (see Layout).
type VolumeHost interface {
	// GetPluginDir returns ROOT/plugins/<escaped pluginName>, the plugin's
	// node-global state.
	GetPluginDir(pluginName string) string
	// GetPodVolumeDir returns ROOT/pods/<uid>/volumes/<escaped pluginName>/<volName>.
	GetPodVolumeDir(podUID types.UID, pluginName, volName string) string
	// GetPodPluginDir returns ROOT/pods/<uid>/plugins/<escaped pluginName>;
	// a volume's metadata dir is <that>/<volName>.
	GetPodPluginDir(podUID types.UID, pluginName string) string
	// NewWrapperBuilder returns the Builder of the plugin that supports spec,
	// for a volume that a plugin builds on another (gitRepo on emptyDir). The
	// wrapped volume is named "wrapped_<volName>", so its metadata does not
	// collide with the outer volume's.
	NewWrapperBuilder(volName string, spec Spec, pod *v1.Pod, opts VolumeOptions) (Builder, error)
	// NewWrapperCleaner returns the Cleaner for a volume made by
	// NewWrapperBuilder.
	NewWrapperCleaner(volName string, spec Spec, podUID types.UID) (Cleaner, error)
	// GetMounter returns the mounter to mount and unmount through.
	GetMounter() mount.Interface
	// GetExec returns the interface to run commands through.
	GetExec() exec.Interface
	// GetClock returns the clock to wait and time with.
	GetClock() clock.Clock
	// GetNodeName returns this node's name.
	GetNodeName() string
	// GetNodeIP returns this node's IP, or nil when it is not configured.
	GetNodeIP() net.IP
	// GetSecretFunc returns the getter of the Secrets that the sources
	// declare, as the kubelet's does: it is read at each call, so a Secret
	// added later is found.
	GetSecretFunc() SecretGetter
}

// WrappedVolumeName returns the name under which a wrapped volume's metadata
// is kept: "wrapped_<volName>", as in the kubelet.
func WrappedVolumeName(volName string) string { return "wrapped_" + volName }

// VolumePluginMgr is the registry of probed plugins. It is safe for
// concurrent use after InitPlugins.
type VolumePluginMgr struct {
	mu      sync.RWMutex
	plugins map[string]VolumePlugin
}

// InitPlugins loads plugins with host. A plugin whose name is not a valid
// qualified name, whose name another plugin already took, or whose Init fails
// is left out; the others load, and every error is returned as one aggregate.
func (m *VolumePluginMgr) InitPlugins(plugins []VolumePlugin, host VolumeHost) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.plugins == nil {
		m.plugins = map[string]VolumePlugin{}
	}
	var errs []error
	for _, plugin := range plugins {
		name := plugin.Name()
		if problems := validation.IsQualifiedName(name); len(problems) > 0 {
			errs = append(errs, fmt.Errorf("volume plugin has invalid name %q: %s", name, strings.Join(problems, ";")))
			continue
		}
		if _, taken := m.plugins[name]; taken {
			errs = append(errs, fmt.Errorf("volume plugin %q was registered more than once", name))
			continue
		}
		if err := plugin.Init(host); err != nil {
			klog.ErrorS(err, "Failed to load volume plugin", "pluginName", name)
			errs = append(errs, fmt.Errorf("failed to init volume plugin %q: %w", name, err))
			continue
		}
		m.plugins[name] = plugin
		klog.V(1).InfoS("Loaded volume plugin", "pluginName", name)
	}
	return utilerrors.NewAggregate(errs)
}

// ListPlugins returns the loaded plugins ordered by name.
func (m *VolumePluginMgr) ListPlugins() []VolumePlugin {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.plugins))
	for name := range m.plugins {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]VolumePlugin, 0, len(names))
	for _, name := range names {
		out = append(out, m.plugins[name])
	}
	return out
}

// FindPluginBySpec returns the one plugin that supports spec; when several
// do, a FallbackPlugin among them yields to the others. No match is a Final
// error wrapping ErrNoPluginMatched; several matches left are a Final error
// that names them.
func (m *VolumePluginMgr) FindPluginBySpec(spec *Spec) (VolumePlugin, error) {
	if spec == nil {
		return nil, Finalf("failed to find a volume plugin: spec is nil")
	}
	var matches []VolumePlugin
	for _, plugin := range m.ListPlugins() {
		if plugin.CanSupport(spec) {
			matches = append(matches, plugin)
		}
	}
	if len(matches) > 1 {
		if specific := slices.DeleteFunc(slices.Clone(matches), isFallback); len(specific) > 0 {
			matches = specific
		}
	}
	switch len(matches) {
	case 0:
		return nil, NewFinalError(fmt.Errorf("volume %q: %w", spec.Name(), ErrNoPluginMatched))
	case 1:
		return matches[0], nil
	}
	names := make([]string, 0, len(matches))
	for _, plugin := range matches {
		names = append(names, plugin.Name())
	}
	return nil, Finalf("volume %q: multiple volume plugins matched: %s", spec.Name(), strings.Join(names, ","))
}

// FindPluginByName returns the plugin called name, or a Final error when
// there is none.
func (m *VolumePluginMgr) FindPluginByName(name string) (VolumePlugin, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if plugin, ok := m.plugins[name]; ok {
		return plugin, nil
	}
	return nil, Finalf("no volume plugin named %q: %w", name, ErrNoPluginMatched)
}

// FindPersistentPluginBySpec returns the plugin that supports spec, which must
// be a PersistentVolumePlugin.
func (m *VolumePluginMgr) FindPersistentPluginBySpec(spec *Spec) (PersistentVolumePlugin, error) {
	plugin, err := m.FindPluginBySpec(spec)
	if err != nil {
		return nil, err
	}
	if persistent, ok := plugin.(PersistentVolumePlugin); ok {
		return persistent, nil
	}
	return nil, Finalf("volume plugin %q does not support persistent volumes", plugin.Name())
}

// AccessModesCover reports whether the plugin's modes include every mode
// wanted.
func AccessModesCover(supported, wanted []v1.PersistentVolumeAccessMode) bool {
	for _, mode := range wanted {
		if !slices.Contains(supported, mode) {
			return false
		}
	}
	return true
}

// ProvisionOptions are what ProvisionableVolumePlugin.Provision is asked for.
type ProvisionOptions struct {
	// Name is the caller's unique name for the volume (a CSI CreateVolume
	// name). Provision with a name already used returns that volume.
	Name string
	// RequiredBytes is the least capacity wanted, LimitBytes the most; zero
	// means no bound. The plugin rounds to what its storage can do.
	RequiredBytes, LimitBytes int64
	// Metadata is stored with the volume where the storage allows it.
	Metadata map[string]string
}

// ProvisionedVolume is a volume a ProvisionableVolumePlugin created.
type ProvisionedVolume struct {
	// ID identifies the volume in the storage system (a Flocker dataset UUID).
	ID string
	// Name is the name it was provisioned under, if the storage records one.
	Name string
	// CapacityBytes is its size; zero when unlimited or unknown.
	CapacityBytes int64
}

// ProvisionableVolumePlugin is a PersistentVolumePlugin that can create and
// delete the storage behind PersistentVolumes, as the kubelet's dynamic
// provisioners and deleters do. Errors wrap ErrInvalidProvisionOptions,
// ErrCapacityOutOfRange, ErrVolumeExists or ErrVolumeNotFound where a caller
// must tell them apart; others are the storage's, classed as for set-up.
type ProvisionableVolumePlugin interface {
	PersistentVolumePlugin
	// Provision creates the volume opts.Name, or returns the volume created
	// under that name before when its capacity satisfies opts (else
	// ErrVolumeExists). It is idempotent; calls for one name are serialized.
	Provision(ctx context.Context, opts ProvisionOptions) (*ProvisionedVolume, error)
	// GetVolume returns the volume id, or ErrVolumeNotFound when there is no
	// such volume (or it was deleted).
	GetVolume(ctx context.Context, id string) (*ProvisionedVolume, error)
	// Delete deletes the volume id and its data. A volume that does not
	// exist, or was deleted already, is a success.
	Delete(ctx context.Context, id string) error
}

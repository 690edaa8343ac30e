package volume

import (
	"fmt"
	"net"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	"k8s.io/utils/exec"
)

// HostConfig is what NewHost needs. Every field is required but NodeIP and
// GetSecret.
type HostConfig struct {
	Layout   Layout
	Mounter  mount.Interface
	Exec     exec.Interface
	Clock    clock.Clock
	NodeName string
	NodeIP   net.IP
	// GetSecret is the host's SecretGetter; nil means no Secret is known.
	GetSecret SecretGetter
}

// SecretGetter returns the Secret namespace/name, as the API server stores
// it (stringData merged into data). A Secret that is not known is an error
// wrapping ErrSecretNotFound. The caller must not change the Secret, and
// must never log, show or write to disk its values.
type SecretGetter func(namespace, name string) (*v1.Secret, error)

// NewHost returns the VolumeHost that the agent gives its plugins. Wrapped
// volumes are built through plugins, the registry the plugins are loaded into.
func NewHost(cfg HostConfig, plugins *VolumePluginMgr) VolumeHost {
	return &host{cfg: cfg, plugins: plugins}
}

type host struct {
	cfg     HostConfig
	plugins *VolumePluginMgr
}

var _ VolumeHost = &host{}

func (h *host) GetPluginDir(pluginName string) string { return h.cfg.Layout.PluginDir(pluginName) }

func (h *host) GetPodVolumeDir(podUID types.UID, pluginName, volName string) string {
	return h.cfg.Layout.PodVolumeDir(podUID, pluginName, volName)
}

func (h *host) GetPodPluginDir(podUID types.UID, pluginName string) string {
	return h.cfg.Layout.PodPluginDir(podUID, pluginName)
}

func (h *host) NewWrapperBuilder(volName string, spec Spec, pod *v1.Pod, opts VolumeOptions) (Builder, error) {
	wrapped := wrappedSpec(volName, spec)
	plugin, err := h.plugins.FindPluginBySpec(wrapped)
	if err != nil {
		return nil, err
	}
	return plugin.NewBuilder(wrapped, pod, opts)
}

func (h *host) NewWrapperCleaner(volName string, spec Spec, podUID types.UID) (Cleaner, error) {
	plugin, err := h.plugins.FindPluginBySpec(wrappedSpec(volName, spec))
	if err != nil {
		return nil, err
	}
	return plugin.NewCleaner(WrappedVolumeName(volName), podUID)
}

// wrappedSpec copies spec with its volume renamed to wrapped_<volName>.
func wrappedSpec(volName string, spec Spec) *Spec {
	if spec.Volume != nil {
		vol := *spec.Volume
		vol.Name = WrappedVolumeName(volName)
		spec.Volume = &vol
	}
	return &spec
}

func (h *host) GetMounter() mount.Interface { return h.cfg.Mounter }
func (h *host) GetExec() exec.Interface     { return h.cfg.Exec }
func (h *host) GetClock() clock.Clock       { return h.cfg.Clock }
func (h *host) GetNodeName() string         { return h.cfg.NodeName }
func (h *host) GetNodeIP() net.IP           { return h.cfg.NodeIP }

func (h *host) GetSecretFunc() SecretGetter {
	if h.cfg.GetSecret == nil {
		return func(namespace, name string) (*v1.Secret, error) {
			return nil, fmt.Errorf("%w: no Secrets are available to volume plugins here", ErrSecretNotFound)
		}
	}
	return h.cfg.GetSecret
}

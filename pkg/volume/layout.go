package volume

import (
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"
	utilstrings "k8s.io/utils/strings"
)

// Layout names the directories under the agent's root dir, identical to the
// kubelet's layout under /var/lib/kubelet.
type Layout struct {
	// Root is the agent's root dir, /var/lib/volume-agent by default.
	Root string
}

// PodsDir returns ROOT/pods.
func (l Layout) PodsDir() string { return filepath.Join(l.Root, "pods") }

// PodDir returns ROOT/pods/<uid>.
func (l Layout) PodDir(podUID types.UID) string { return filepath.Join(l.PodsDir(), string(podUID)) }

// PodVolumesDir returns ROOT/pods/<uid>/volumes.
func (l Layout) PodVolumesDir(podUID types.UID) string {
	return filepath.Join(l.PodDir(podUID), "volumes")
}

// PodVolumeDir returns ROOT/pods/<uid>/volumes/<escaped plugin>/<volume>.
func (l Layout) PodVolumeDir(podUID types.UID, pluginName, volName string) string {
	return filepath.Join(l.PodVolumesDir(podUID), utilstrings.EscapeQualifiedName(pluginName), volName)
}

// PodPluginsDir returns ROOT/pods/<uid>/plugins.
func (l Layout) PodPluginsDir(podUID types.UID) string {
	return filepath.Join(l.PodDir(podUID), "plugins")
}

// PodPluginDir returns ROOT/pods/<uid>/plugins/<escaped plugin>.
func (l Layout) PodPluginDir(podUID types.UID, pluginName string) string {
	return filepath.Join(l.PodPluginsDir(podUID), utilstrings.EscapeQualifiedName(pluginName))
}

// VolumeMetadataDir returns ROOT/pods/<uid>/plugins/<escaped plugin>/<volume>,
// where the volume's ready marker lives.
func (l Layout) VolumeMetadataDir(podUID types.UID, pluginName, volName string) string {
	return filepath.Join(l.PodPluginDir(podUID, pluginName), volName)
}

// PluginDir returns ROOT/plugins/<escaped plugin>.
func (l Layout) PluginDir(pluginName string) string {
	return filepath.Join(l.Root, "plugins", utilstrings.EscapeQualifiedName(pluginName))
}

// VolumeDirs are where one volume of a pod lives: what a plugin's Builder
// and Cleaner share, found from the plugin's name, the pod's UID and the
// volume's name alone.
type VolumeDirs struct {
	// Path is the volume: ROOT/pods/<uid>/volumes/<escaped plugin>/<volume>.
	Path string
	// MetadataDir holds the volume's ready marker:
	// ROOT/pods/<uid>/plugins/<escaped plugin>/<volume>.
	MetadataDir string
}

// NewVolumeDirs returns the dirs of volume volName of pod podUID, for the
// plugin pluginName, on host.
func NewVolumeDirs(host VolumeHost, pluginName string, podUID types.UID, volName string) VolumeDirs {
	return VolumeDirs{
		Path:        host.GetPodVolumeDir(podUID, pluginName, volName),
		MetadataDir: filepath.Join(host.GetPodPluginDir(podUID, pluginName), volName),
	}
}

// GetPath returns Path, so that VolumeDirs embedded in a Builder or a
// Cleaner implements Volume.
func (d VolumeDirs) GetPath() string { return d.Path }

package attrfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"syscall"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// PluginName is the plugin's qualified name, and the CSI driver name that
// selects it.
const PluginName = "example.com/attribute-files"

// maxFileSize bounds each attribute's value.
const maxFileSize = 64 << 10

// fileName is what an attribute key must look like: a plain file name.
var fileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// ProbeVolumePlugins returns the attribute-files plugin.
func ProbeVolumePlugins() []volume.VolumePlugin {
	return []volume.VolumePlugin{&plugin{}}
}

type plugin struct {
	host volume.VolumeHost
}

var (
	_ volume.VolumePlugin         = &plugin{}
	_ volume.SpecValidatingPlugin = &plugin{}
	_ volume.Builder              = &builder{}
	_ volume.Cleaner              = &cleaner{}
)

func (p *plugin) Init(host volume.VolumeHost) error {
	p.host = host
	return nil
}

func (p *plugin) Name() string { return PluginName }

// CanSupport claims the inline CSI volumes whose driver is PluginName.
func (p *plugin) CanSupport(spec *volume.Spec) bool {
	return spec != nil && spec.Volume != nil && spec.Volume.CSI != nil && spec.Volume.CSI.Driver == PluginName
}

// ValidateSpec checks that every attribute names a plain file and that its
// content is at most 64 KiB.
func (p *plugin) ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	attrPath := fldPath.Child("volumeAttributes")
	for _, name := range sortedKeys(spec.Volume.CSI.VolumeAttributes) {
		if !fileName.MatchString(name) {
			errs = append(errs, field.Invalid(attrPath.Key(name), name,
				"must be a file name: letters, digits, '.', '_' and '-', starting with a letter or digit"))
		}
		if size := len(spec.Volume.CSI.VolumeAttributes[name]); size > maxFileSize {
			errs = append(errs, field.TooLong(attrPath.Key(name), "", maxFileSize))
		}
	}
	return errs
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}

// NewBuilder returns the Builder of a valid spec; an invalid one is a final
// error.
func (p *plugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, _ volume.VolumeOptions) (volume.Builder, error) {
	if errs := p.ValidateSpec(spec, field.NewPath("csi")); len(errs) > 0 {
		return nil, volume.NewFinalError(errs.ToAggregate())
	}
	return &builder{
		volumeRef: p.volumeRef(pod.UID, spec.Name()),
		files:     spec.Volume.CSI.VolumeAttributes,
		readOnly:  spec.ReadOnly || ptr.Deref(spec.Volume.CSI.ReadOnly, false),
	}, nil
}

// NewCleaner works from what is on disk alone.
func (p *plugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	return &cleaner{volumeRef: p.volumeRef(podUID, volName)}, nil
}

func (p *plugin) volumeRef(podUID types.UID, volName string) volumeRef {
	return volumeRef{
		plugin:  p,
		path:    p.host.GetPodVolumeDir(podUID, PluginName, volName),
		metaDir: filepath.Join(p.host.GetPodPluginDir(podUID, PluginName), volName),
	}
}

type volumeRef struct {
	plugin  *plugin
	path    string
	metaDir string
}

func (r volumeRef) GetPath() string { return r.path }

type builder struct {
	volumeRef
	files    map[string]string
	readOnly bool
}

func (b *builder) GetAttributes() volume.Attributes {
	return volume.Attributes{ReadOnly: b.readOnly, Managed: true}
}

func (b *builder) SetUp(fsGroup *int64) error { return b.SetUpAt(b.path, fsGroup) }

// SetUpAt writes one file per attribute into dir and marks the volume ready.
// A ready volume is left as it is, whatever the pod wrote into it. After a
// set-up that stopped half-way, every file is written again.
func (b *builder) SetUpAt(dir string, fsGroup *int64) error {
	if util.IsReady(b.metaDir) {
		if info, err := os.Lstat(dir); err == nil && info.IsDir() {
			return nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create volume dir %q: %w", dir, err)
	}
	for _, name := range sortedKeys(b.files) {
		if err := writeFile(filepath.Join(dir, name), b.files[name]); err != nil {
			return err
		}
	}
	if err := util.SetVolumeOwnership(dir, fsGroup, b.readOnly); err != nil {
		return err
	}
	return util.SetReady(b.metaDir)
}

// writeFile writes content to path, never through a symlink.
func writeFile(path, content string) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("failed to create %q: %w", path, err)
	}
	if _, err := file.WriteString(content); err != nil {
		file.Close()
		return fmt.Errorf("failed to write %q: %w", path, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("failed to write %q: %w", path, err)
	}
	return nil
}

type cleaner struct {
	volumeRef
}

func (c *cleaner) TearDown() error { return c.TearDownAt(c.path) }

// TearDownAt removes the ready marker, then the volume, without following its
// symlinks or deleting across a mount inside it. A volume already gone is a
// success.
func (c *cleaner) TearDownAt(dir string) error {
	if err := util.RemoveMetadataDir(c.metaDir); err != nil {
		return err
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return util.RemoveVolumeDir(c.plugin.host.GetMounter(), dir)
}

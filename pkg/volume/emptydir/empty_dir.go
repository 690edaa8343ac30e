package emptydir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// PluginName is the qualified name of the emptyDir plugin.
const PluginName = "kubernetes.io/empty-dir"

// volumeMode is the mode of an emptyDir's root on every medium, whatever the
// umask, so that containers running as any user can write to it.
const volumeMode fs.FileMode = 0o777

// ProbeVolumePlugins returns the emptyDir plugin.
func ProbeVolumePlugins() []volume.VolumePlugin {
	return []volume.VolumePlugin{&plugin{detector: statfsDetector{}}}
}

type plugin struct {
	host     volume.VolumeHost
	detector mediumDetector
}

var (
	_ volume.VolumePlugin         = &plugin{}
	_ volume.SpecValidatingPlugin = &plugin{}
	_ volume.HealthCheckingPlugin = &plugin{}
	_ volume.VerifyingPlugin      = &plugin{}
	_ volume.Builder              = &builder{}
	_ volume.Cleaner              = &cleaner{}
)

func (p *plugin) Init(host volume.VolumeHost) error {
	p.host = host
	return nil
}

func (p *plugin) Name() string { return PluginName }

func (p *plugin) CanSupport(spec *volume.Spec) bool {
	return spec != nil && spec.Volume != nil && spec.Volume.EmptyDir != nil
}

// ValidateSpec checks the medium and the size limit.
func (p *plugin) ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	source := spec.Volume.EmptyDir
	if _, _, err := parseMedium(source.Medium); err != nil {
		errs = append(errs, field.NotSupported(fldPath.Child("medium"), source.Medium,
			[]string{"", string(v1.StorageMediumMemory), string(v1.StorageMediumHugePages), "HugePages-<size>"}))
	}
	if source.SizeLimit != nil && source.SizeLimit.Sign() < 0 {
		errs = append(errs, field.Invalid(fldPath.Child("sizeLimit"), source.SizeLimit.String(), "must not be negative"))
	}
	return errs
}

// CheckHealth reports whether this process may mount tmpfs and hugetlbfs, and
// which huge page sizes the host has pages reserved of; the disk medium always
// works.
func (p *plugin) CheckHealth(_ context.Context) volume.Health {
	if os.Geteuid() != 0 {
		return volume.Health{Usable: true, Message: "disk medium only: Memory and HugePages need root (CAP_SYS_ADMIN) to mount"}
	}
	reserved, err := reservedHugePages()
	switch {
	case err != nil:
		return volume.Health{Usable: true, Message: fmt.Sprintf("disk and Memory media available; HugePages unknown: %v", err)}
	case len(reserved) == 0:
		return volume.Health{Usable: true, Message: fmt.Sprintf("disk and Memory media available; HugePages unavailable: no huge pages reserved (%s)", hugePagesDir)}
	}
	return volume.Health{Usable: true, Message: fmt.Sprintf("disk, Memory and HugePages media available (%s)", strings.Join(reserved, ", "))}
}

// VerifyVolume checks that the volume's dir is still there and, on the Memory
// and HugePages media, still a mount of that medium: one statfs and a mount
// point check. A volume that is not is a Transient error, so the manager sets
// it up again (a tmpfs unmounted behind the agent's back is mounted again,
// empty, rather than the pod writing to the root disk).
func (p *plugin) VerifyVolume(spec *volume.Spec, podUID types.UID, path string) error {
	medium, _, err := parseMedium(spec.Volume.EmptyDir.Medium)
	if err != nil {
		return volume.NewFinalError(err)
	}
	b := &builder{volumeRef: p.volumeRef(podUID, spec.Name()), medium: medium}
	if !b.stillSetUp(path) {
		return volume.NewTransientError(fmt.Errorf("emptyDir volume %q is no longer set up at %s on the %s medium", spec.Name(), path, medium))
	}
	return nil
}

func (p *plugin) NewBuilder(spec *volume.Spec, pod *v1.Pod, _ volume.VolumeOptions) (volume.Builder, error) {
	if errs := p.ValidateSpec(spec, field.NewPath("emptyDir")); len(errs) > 0 {
		return nil, volume.NewFinalError(errs.ToAggregate())
	}
	source := spec.Volume.EmptyDir
	medium, pageSize, _ := parseMedium(source.Medium)
	b := &builder{
		volumeRef: p.volumeRef(pod.UID, spec.Name()),
		medium:    medium,
	}
	switch medium {
	case mediumMemory:
		b.sizeBytes = tmpfsSize(source.SizeLimit, pod)
	case mediumHugePages:
		if pageSize == "" {
			var err error
			if pageSize, err = hugePageSizeFromPod(pod); err != nil {
				return nil, volume.NewFinalError(fmt.Errorf("failed to choose the huge page size of volume %q: %w", spec.Name(), err))
			}
		}
		b.pageSize = pageSize
	}
	return b, nil
}

func (p *plugin) NewCleaner(volName string, podUID types.UID) (volume.Cleaner, error) {
	return &cleaner{volumeRef: p.volumeRef(podUID, volName)}, nil
}

func (p *plugin) volumeRef(podUID types.UID, volName string) volumeRef {
	return volumeRef{plugin: p, VolumeDirs: volume.NewVolumeDirs(p.host, PluginName, podUID, volName)}
}

// volumeRef is what a Builder and a Cleaner share: the plugin, and where
// the volume is.
type volumeRef struct {
	volume.VolumeDirs
	plugin *plugin
}

func (r volumeRef) mounter() mount.Interface { return r.plugin.host.GetMounter() }

type medium int

const (
	mediumDisk medium = iota
	mediumMemory
	mediumHugePages
)

func (m medium) String() string {
	return [...]string{"disk", "memory", "hugepages"}[m]
}

// parseMedium returns the medium and, for "HugePages-<size>", the page size.
func parseMedium(m v1.StorageMedium) (medium, string, error) {
	switch {
	case m == v1.StorageMediumDefault:
		return mediumDisk, "", nil
	case m == v1.StorageMediumMemory:
		return mediumMemory, "", nil
	case m == v1.StorageMediumHugePages:
		return mediumHugePages, "", nil
	case strings.HasPrefix(string(m), string(v1.StorageMediumHugePagesPrefix)):
		size := strings.TrimPrefix(string(m), string(v1.StorageMediumHugePagesPrefix))
		quantity, err := resource.ParseQuantity(size)
		if err != nil || quantity.Sign() <= 0 {
			return 0, "", fmt.Errorf("invalid huge page size %q", size)
		}
		return mediumHugePages, quantity.String(), nil
	}
	return 0, "", fmt.Errorf("unknown storage medium %q", m)
}

type builder struct {
	volumeRef
	medium    medium
	sizeBytes int64
	pageSize  string
}

func (b *builder) GetAttributes() volume.Attributes {
	return volume.Attributes{ReadOnly: false, Managed: true}
}

func (b *builder) SetUp(fsGroup *int64) error { return b.SetUpAt(b.Path, fsGroup) }

// SetUpAt makes dir a 0777 directory, mounted per the medium, owned by
// fsGroup, and marks it ready. On a ready volume it changes nothing, but
// mounts a memory or huge-page volume again if its mount has gone.
func (b *builder) SetUpAt(dir string, fsGroup *int64) error {
	if util.IsReady(b.MetadataDir) && b.stillSetUp(dir) {
		return nil
	}
	var err error
	switch b.medium {
	case mediumDisk:
		err = setupDir(dir)
	case mediumMemory:
		err = b.setupMount(dir, "tmpfs", b.tmpfsOptions())
	case mediumHugePages:
		err = b.setupHugePages(dir)
	}
	if err != nil {
		return err
	}
	if err := util.SetVolumeOwnership(dir, fsGroup, false); err != nil {
		return err
	}
	return util.SetReady(b.MetadataDir)
}

// stillSetUp reports whether a volume marked ready is still in place.
func (b *builder) stillSetUp(dir string) bool {
	info, err := os.Lstat(dir)
	if err != nil || !info.IsDir() {
		return false
	}
	if b.medium == mediumDisk {
		return true
	}
	got, isMnt, err := b.plugin.detector.GetMountMedium(b.mounter(), dir)
	return err == nil && isMnt && got == b.medium
}

// setupDir creates dir with mode 0777 whatever the umask.
func setupDir(dir string) error {
	if err := os.MkdirAll(dir, volumeMode); err != nil {
		return fmt.Errorf("failed to create volume dir %q: %w", dir, err)
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("failed to stat volume dir %q: %w", dir, err)
	}
	if !info.IsDir() {
		return volume.Finalf("volume path %q exists and is not a directory", dir)
	}
	if info.Mode().Perm() != volumeMode {
		if err := os.Chmod(dir, volumeMode|info.Mode()&(fs.ModeSetgid)); err != nil {
			return fmt.Errorf("failed to chmod volume dir %q: %w", dir, err)
		}
	}
	return nil
}

// setupMount makes dir a mount of fstype, unless it already is one.
func (b *builder) setupMount(dir, fstype string, options []string) error {
	if err := setupDir(dir); err != nil {
		return err
	}
	got, isMnt, err := b.plugin.detector.GetMountMedium(b.mounter(), dir)
	if err != nil {
		return fmt.Errorf("failed to check mount at %q: %w", dir, err)
	}
	if isMnt {
		if got == b.medium {
			return nil
		}
		return volume.NewUncertainError(fmt.Errorf("volume dir %q is already a mount of another medium than %s", dir, b.medium))
	}
	options = append(options, "mode=0777")
	if err := b.mounter().Mount(fstype, dir, fstype, options); err != nil {
		if os.Geteuid() != 0 {
			return volume.NewFinalError(fmt.Errorf("failed to mount %s at %q: mounting needs root (CAP_SYS_ADMIN) and the agent runs as uid %d: %w", fstype, dir, os.Geteuid(), err))
		}
		return volume.NewUncertainError(fmt.Errorf("failed to mount %s at %q: %w", fstype, dir, err))
	}
	return nil
}

func (b *builder) tmpfsOptions() []string {
	if b.sizeBytes > 0 {
		return []string{fmt.Sprintf("size=%d", b.sizeBytes)}
	}
	return nil
}

func (b *builder) setupHugePages(dir string) error {
	if err := hostHasHugePages(b.pageSize); err != nil {
		return err
	}
	return b.setupMount(dir, "hugetlbfs", []string{"pagesize=" + b.pageSize})
}

type cleaner struct {
	volumeRef
}

func (c *cleaner) TearDown() error { return c.TearDownAt(c.Path) }

// TearDownAt removes the ready marker, unmounts a memory or huge-page mount,
// removes the directory without following symlinks or crossing a nested
// mount, then removes the metadata. A volume already gone is a success.
func (c *cleaner) TearDownAt(dir string) error {
	logger := klog.Background()
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		logger.V(4).Info("Volume dir already gone", "path", dir)
		return util.RemoveMetadataDir(c.MetadataDir)
	}
	isMnt, err := c.mounter().IsMountPoint(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to check mount at %q: %w", dir, err)
	}
	if isMnt {
		if err := util.CheckNoMountsBeneath(c.mounter(), dir); err != nil {
			return err
		}
		if err := util.RemoveMetadataDir(c.MetadataDir); err != nil {
			return err
		}
		if err := c.mounter().Unmount(dir); err != nil {
			return fmt.Errorf("failed to unmount volume at %q: %w", dir, err)
		}
	} else if err := util.RemoveMetadataDir(c.MetadataDir); err != nil {
		return err
	}
	return util.RemoveVolumeDir(c.mounter(), dir)
}

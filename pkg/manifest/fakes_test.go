package manifest_test

import (
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// fakePlugin supports the volumes its canSupport accepts. It builds nothing:
// these tests only find and validate.
type fakePlugin struct {
	name       string
	canSupport func(spec *volume.Spec) bool
}

func (p *fakePlugin) Init(volume.VolumeHost) error                         { return nil }
func (p *fakePlugin) Name() string                                         { return p.name }
func (p *fakePlugin) CanSupport(spec *volume.Spec) bool                    { return p.canSupport(spec) }
func (p *fakePlugin) NewCleaner(string, types.UID) (volume.Cleaner, error) { return nil, nil }
func (p *fakePlugin) NewBuilder(*volume.Spec, *v1.Pod, volume.VolumeOptions) (volume.Builder, error) {
	return nil, nil
}

// fakeValidatingPlugin is a fakePlugin with ValidateSpec: it records the
// paths it was given and returns what validate returns.
type fakeValidatingPlugin struct {
	fakePlugin
	validate func(spec *volume.Spec, fldPath *field.Path) field.ErrorList

	mu    sync.Mutex
	paths []string
}

func (p *fakeValidatingPlugin) ValidateSpec(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
	p.mu.Lock()
	p.paths = append(p.paths, fldPath.String())
	p.mu.Unlock()
	return p.validate(spec, fldPath)
}

// fakePersistentPlugin is a fakePlugin with access modes.
type fakePersistentPlugin struct {
	fakePlugin
	accessModes []v1.PersistentVolumeAccessMode
}

func (p *fakePersistentPlugin) GetAccessModes() []v1.PersistentVolumeAccessMode { return p.accessModes }

var (
	_ volume.SpecValidatingPlugin   = &fakeValidatingPlugin{}
	_ volume.PersistentVolumePlugin = &fakePersistentPlugin{}
)

// newFakeEmptyDir returns a validating fake of the emptyDir plugin that
// refuses the media the real one does not know.
func newFakeEmptyDir() *fakeValidatingPlugin {
	return &fakeValidatingPlugin{
		fakePlugin: fakePlugin{name: "kubernetes.io/empty-dir", canSupport: func(spec *volume.Spec) bool {
			return spec.Volume != nil && spec.Volume.EmptyDir != nil
		}},
		validate: func(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
			switch medium := spec.Volume.EmptyDir.Medium; {
			case medium == v1.StorageMediumDefault, medium == v1.StorageMediumMemory,
				strings.HasPrefix(string(medium), string(v1.StorageMediumHugePages)):
				return nil
			default:
				return field.ErrorList{field.NotSupported(fldPath.Child("medium"), medium,
					[]v1.StorageMedium{v1.StorageMediumDefault, v1.StorageMediumMemory, v1.StorageMediumHugePages})}
			}
		},
	}
}

// newFakeGitRepo returns a validating fake of the gitRepo plugin that
// refuses a repository that git would read as an option.
func newFakeGitRepo() *fakeValidatingPlugin {
	return &fakeValidatingPlugin{
		fakePlugin: fakePlugin{name: "kubernetes.io/git-repo", canSupport: func(spec *volume.Spec) bool {
			return spec.Volume != nil && spec.Volume.GitRepo != nil
		}},
		validate: func(spec *volume.Spec, fldPath *field.Path) field.ErrorList {
			if repository := spec.Volume.GitRepo.Repository; strings.HasPrefix(repository, "-") {
				return field.ErrorList{field.Invalid(fldPath.Child("repository"), repository, "must not start with '-'")}
			}
			return nil
		},
	}
}

// newFakeFlocker returns a persistent fake of the Flocker plugin.
func newFakeFlocker() *fakePersistentPlugin {
	return &fakePersistentPlugin{
		fakePlugin: fakePlugin{name: "kubernetes.io/flocker", canSupport: func(spec *volume.Spec) bool {
			return (spec.Volume != nil && spec.Volume.Flocker != nil) ||
				(spec.PersistentVolume != nil && spec.PersistentVolume.Spec.Flocker != nil)
		}},
		accessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
	}
}

func newPluginMgr(t *testing.T, plugins ...volume.VolumePlugin) *volume.VolumePluginMgr {
	t.Helper()
	mgr := &volume.VolumePluginMgr{}
	if err := mgr.InitPlugins(plugins, nil); err != nil {
		t.Fatalf("InitPlugins: %v", err)
	}
	return mgr
}

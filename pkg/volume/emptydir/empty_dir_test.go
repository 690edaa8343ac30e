package emptydir

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// fakeDetector reports the medium of every mount point in the fake mounter
// from its file system type.
type fakeDetector struct{}

func (fakeDetector) GetMountMedium(mounter mount.Interface, path string) (medium, bool, error) {
	mountPoints, err := mounter.List()
	if err != nil {
		return mediumDisk, false, err
	}
	for _, mp := range mountPoints {
		if mp.Path == path {
			switch mp.Type {
			case "tmpfs":
				return mediumMemory, true, nil
			case "hugetlbfs":
				return mediumHugePages, true, nil
			}
			return mediumDisk, true, nil
		}
	}
	return mediumDisk, false, nil
}

func testPod() *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "pod-uid"}}
}

func emptyDirSpec(name string, medium v1.StorageMedium, sizeLimit string) *volume.Spec {
	source := &v1.EmptyDirVolumeSource{Medium: medium}
	if sizeLimit != "" {
		q := resource.MustParse(sizeLimit)
		source.SizeLimit = &q
	}
	return volume.NewSpecFromVolume(&v1.Volume{Name: name, VolumeSource: v1.VolumeSource{EmptyDir: source}})
}

// newTestPlugin loads the plugin with a fake mounter and detector.
func newTestPlugin(t *testing.T, mounter mount.Interface) (volume.VolumePlugin, volume.VolumeHost) {
	host, mgr := volumetesting.NewFakeVolumeHost(t, t.TempDir(), []volume.VolumePlugin{&plugin{detector: fakeDetector{}}},
		volumetesting.FakeHostOptions{Mounter: mounter})
	p, err := mgr.FindPluginByName(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return p, host
}

func TestCanSupport(t *testing.T) {
	p, _ := newTestPlugin(t, mount.NewFakeMounter(nil))
	tests := map[string]struct {
		spec *volume.Spec
		want bool
	}{
		"emptyDir":      {spec: emptyDirSpec("v", "", ""), want: true},
		"other source":  {spec: volume.NewSpecFromVolume(&v1.Volume{Name: "v", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{}}}), want: false},
		"empty source":  {spec: volume.NewSpecFromVolume(&v1.Volume{Name: "v"}), want: false},
		"persistent PV": {spec: volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{}, false), want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := p.CanSupport(tc.spec); got != tc.want {
				t.Errorf("CanSupport() = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSetUpTearDownMatrix follows the kubelet's matrix: with and without a
// volume dir and a ready marker before SetUp, for each medium, counting the
// mounts made and checking mode, marker and teardown.
func TestSetUpTearDownMatrix(t *testing.T) {
	media := map[string]struct {
		medium     v1.StorageMedium
		wantMounts int
		wantType   string
	}{
		"disk":   {medium: "", wantMounts: 0},
		"memory": {medium: v1.StorageMediumMemory, wantMounts: 1, wantType: "tmpfs"},
	}
	for mediumName, m := range media {
		for _, dirExists := range []bool{false, true} {
			for _, readyExists := range []bool{false, true} {
				name := mediumName
				if dirExists {
					name += "/dir exists"
				}
				if readyExists {
					name += "/ready exists"
				}
				t.Run(name, func(t *testing.T) {
					mounter := mount.NewFakeMounter(nil)
					p, host := newTestPlugin(t, mounter)
					b, err := p.NewBuilder(emptyDirSpec("vol1", m.medium, ""), testPod(), volume.VolumeOptions{})
					if err != nil {
						t.Fatal(err)
					}
					wantPath := filepath.Join(host.GetPodVolumeDir("pod-uid", PluginName, "vol1"))
					if b.GetPath() != wantPath || filepath.Base(filepath.Dir(wantPath)) != "kubernetes.io~empty-dir" {
						t.Fatalf("GetPath() = %q, want %q under kubernetes.io~empty-dir", b.GetPath(), wantPath)
					}
					metaDir := filepath.Join(host.GetPodPluginDir("pod-uid", PluginName), "vol1")
					if dirExists {
						mustNoErr(t, os.MkdirAll(b.GetPath(), 0o750))
					}
					if readyExists {
						mustNoErr(t, util.SetReady(metaDir))
					}

					mustNoErr(t, b.SetUp(nil))

					info, err := os.Stat(b.GetPath())
					mustNoErr(t, err)
					// A volume already ready is left as it is: SetUp is a no-op.
					alreadySetUp := dirExists && readyExists && m.wantMounts == 0
					if !alreadySetUp && info.Mode().Perm() != 0o777 {
						t.Errorf("volume mode = %v, want 0777", info.Mode().Perm())
					}
					if !util.IsReady(metaDir) {
						t.Error("ready marker missing after SetUp")
					}
					log := mounter.GetLog()
					if len(log) != m.wantMounts {
						t.Fatalf("mount actions = %v, want %d mount", log, m.wantMounts)
					}
					if m.wantMounts == 1 && log[0].FSType != m.wantType {
						t.Errorf("mounted %q, want %q", log[0].FSType, m.wantType)
					}

					cleaner, err := p.NewCleaner("vol1", "pod-uid")
					mustNoErr(t, err)
					mustNoErr(t, cleaner.TearDown())
					if _, err := os.Stat(b.GetPath()); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("volume dir left after TearDown: %v", err)
					}
					if util.IsReady(metaDir) {
						t.Error("ready marker left after TearDown")
					}
					if mps, _ := mounter.List(); len(mps) != 0 {
						t.Errorf("mounts left after TearDown: %v", mps)
					}
				})
			}
		}
	}
}

func TestSetUpMountsAgainWhenMountIsGone(t *testing.T) {
	mounter := mount.NewFakeMounter(nil)
	p, _ := newTestPlugin(t, mounter)
	b, err := p.NewBuilder(emptyDirSpec("vol1", v1.StorageMediumMemory, "10Mi"), testPod(), volume.VolumeOptions{})
	mustNoErr(t, err)
	mustNoErr(t, b.SetUp(nil))
	mustNoErr(t, b.SetUp(nil))
	if got := len(mounter.GetLog()); got != 1 {
		t.Fatalf("SetUp on a ready, mounted volume mounted again: %v", mounter.GetLog())
	}
	mustNoErr(t, mounter.Unmount(b.GetPath()))
	mounter.ResetLog()
	mustNoErr(t, b.SetUp(nil))
	log := mounter.GetLog()
	if len(log) != 1 || log[0].Action != mount.FakeActionMount {
		t.Fatalf("SetUp after the mount went away: actions %v, want one mount", log)
	}
}

func TestTmpfsOptions(t *testing.T) {
	withLimit := func(limit string) *v1.Pod {
		pod := testPod()
		c := v1.Container{Name: "c"}
		if limit != "" {
			c.Resources.Limits = v1.ResourceList{v1.ResourceMemory: resource.MustParse(limit)}
		}
		pod.Spec.Containers = []v1.Container{c}
		return pod
	}
	tests := map[string]struct {
		sizeLimit string
		pod       *v1.Pod
		wantOpts  []string
	}{
		"no limits":         {pod: withLimit(""), wantOpts: []string{"mode=0777"}},
		"sizeLimit only":    {sizeLimit: "10Mi", pod: withLimit(""), wantOpts: []string{"size=10485760", "mode=0777"}},
		"pod limit only":    {pod: withLimit("64Mi"), wantOpts: []string{"size=67108864", "mode=0777"}},
		"sizeLimit smaller": {sizeLimit: "10Mi", pod: withLimit("64Mi"), wantOpts: []string{"size=10485760", "mode=0777"}},
		"pod limit smaller": {sizeLimit: "1Gi", pod: withLimit("64Mi"), wantOpts: []string{"size=67108864", "mode=0777"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mounter := mount.NewFakeMounter(nil)
			p, _ := newTestPlugin(t, mounter)
			b, err := p.NewBuilder(emptyDirSpec("vol1", v1.StorageMediumMemory, tc.sizeLimit), tc.pod, volume.VolumeOptions{})
			mustNoErr(t, err)
			mustNoErr(t, b.SetUp(nil))
			mps, _ := mounter.List()
			if len(mps) != 1 || !slices.Equal(mps[0].Opts, tc.wantOpts) {
				t.Errorf("mounts = %+v, want options %v", mps, tc.wantOpts)
			}
		})
	}
}

func TestInvalidMedium(t *testing.T) {
	p, host := newTestPlugin(t, mount.NewFakeMounter(nil))
	for _, medium := range []v1.StorageMedium{"Floppy", "HugePages-", "HugePages-abc", "memory"} {
		t.Run(string(medium), func(t *testing.T) {
			_, err := p.NewBuilder(emptyDirSpec("vol1", medium, ""), testPod(), volume.VolumeOptions{})
			if !volume.IsFinal(err) {
				t.Fatalf("NewBuilder() error = %v, want a final error", err)
			}
			if !strings.Contains(err.Error(), "emptyDir.medium") || !strings.Contains(err.Error(), string(medium)) {
				t.Errorf("error %q does not name the field and the value", err)
			}
			if util.IsReady(filepath.Join(host.GetPodPluginDir("pod-uid", PluginName), "vol1")) {
				t.Error("a ready marker was written")
			}
		})
	}
}

func TestHugePageSize(t *testing.T) {
	pod := func(resources ...string) *v1.Pod {
		p := testPod()
		for i, r := range resources {
			p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: string(rune('a' + i)), Resources: v1.ResourceRequirements{
				Requests: v1.ResourceList{v1.ResourceName(r): resource.MustParse("2Mi")},
			}})
		}
		return p
	}
	tests := map[string]struct {
		medium  v1.StorageMedium
		pod     *v1.Pod
		want    string
		wantErr bool
	}{
		"size in medium":          {medium: "HugePages-2Mi", pod: pod(), want: "2Mi"},
		"size from request":       {medium: "HugePages", pod: pod("hugepages-2Mi"), want: "2Mi"},
		"no request":              {medium: "HugePages", pod: pod(), wantErr: true},
		"mixed sizes":             {medium: "HugePages", pod: pod("hugepages-2Mi", "hugepages-1Gi"), wantErr: true},
		"mixed sizes, size given": {medium: "HugePages-1Gi", pod: pod("hugepages-2Mi", "hugepages-1Gi"), want: "1Gi"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, _ := newTestPlugin(t, mount.NewFakeMounter(nil))
			b, err := p.NewBuilder(emptyDirSpec("vol1", tc.medium, ""), tc.pod, volume.VolumeOptions{})
			if tc.wantErr {
				if !volume.IsFinal(err) {
					t.Fatalf("NewBuilder() error = %v, want a final error", err)
				}
				return
			}
			mustNoErr(t, err)
			if got := b.(*builder).pageSize; got != tc.want {
				t.Errorf("page size = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConformanceFakeMounter(t *testing.T) {
	for _, medium := range []v1.StorageMedium{"", v1.StorageMediumMemory} {
		t.Run("medium="+string(medium), func(t *testing.T) {
			volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
				PluginName: PluginName,
				Plugins:    func() []volume.VolumePlugin { return []volume.VolumePlugin{&plugin{detector: fakeDetector{}}} },
				Spec:       func() *volume.Spec { return emptyDirSpec("vol1", medium, "") },
			})
		})
	}
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

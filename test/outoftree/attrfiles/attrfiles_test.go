package attrfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

func spec(name string, files map[string]string) *volume.Spec {
	return volume.NewSpecFromVolume(&v1.Volume{Name: name, VolumeSource: v1.VolumeSource{
		CSI: &v1.CSIVolumeSource{Driver: PluginName, VolumeAttributes: files},
	}})
}

// TestConformance runs volume-agent's plugin conformance suite on the
// out-of-tree plugin.
func TestConformance(t *testing.T) {
	volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
		PluginName: PluginName,
		Plugins:    ProbeVolumePlugins,
		Spec:       func() *volume.Spec { return spec("settings", map[string]string{"motd.txt": "hello\n", "mode": "fast"}) },
	})
}

func TestSetUpWritesOneFilePerAttribute(t *testing.T) {
	_, mgr := volumetesting.NewFakeVolumeHost(t, t.TempDir(), ProbeVolumePlugins(), volumetesting.FakeHostOptions{})
	s := spec("settings", map[string]string{"motd.txt": "hello\n", "mode": "fast"})
	plugin, err := mgr.FindPluginBySpec(s)
	if err != nil {
		t.Fatal(err)
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "pod-uid"}}
	builder, err := plugin.NewBuilder(s, pod, volume.VolumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := builder.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"motd.txt": "hello\n", "mode": "fast"} {
		got, err := os.ReadFile(filepath.Join(builder.GetPath(), name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestValidateSpec(t *testing.T) {
	p := &plugin{}
	fldPath := field.NewPath("spec", "volumes").Index(0).Child("csi")
	for name, tc := range map[string]struct {
		files map[string]string
		want  string
	}{
		"plain names":   {files: map[string]string{"a.txt": "x", "B-2_c": ""}},
		"path":          {files: map[string]string{"dir/file": "x"}, want: `spec.volumes[0].csi.volumeAttributes[dir/file]: Invalid value: "dir/file": must be a file name`},
		"parent":        {files: map[string]string{"..": "x"}, want: `volumeAttributes[..]: Invalid value`},
		"hidden":        {files: map[string]string{".env": "x"}, want: `volumeAttributes[.env]: Invalid value`},
		"too much data": {files: map[string]string{"big": strings.Repeat("x", maxFileSize+1)}, want: "volumeAttributes[big]: Too long"},
	} {
		t.Run(name, func(t *testing.T) {
			errs := p.ValidateSpec(spec("v", tc.files), fldPath)
			if tc.want == "" {
				if len(errs) > 0 {
					t.Errorf("ValidateSpec() = %v, want no error", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Errorf("ValidateSpec() = %v, want one error containing %q", errs, tc.want)
			}
		})
	}
}

package volume

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// csiPlugin supports the csi volumes of one driver, or of every driver.
type csiPlugin struct {
	name, driver string
	fallback     bool
}

func (p *csiPlugin) Init(VolumeHost) error { return nil }
func (p *csiPlugin) Name() string          { return p.name }
func (p *csiPlugin) CanSupport(spec *Spec) bool {
	return spec.Volume != nil && spec.Volume.CSI != nil && (p.driver == "" || spec.Volume.CSI.Driver == p.driver)
}
func (p *csiPlugin) NewBuilder(*Spec, *v1.Pod, VolumeOptions) (Builder, error) { return nil, nil }
func (p *csiPlugin) NewCleaner(string, types.UID) (Cleaner, error)             { return nil, nil }

type fallbackCSIPlugin struct{ csiPlugin }

func (p *fallbackCSIPlugin) IsFallback() bool { return true }

func TestFindPluginBySpecPrefersNonFallback(t *testing.T) {
	csiSpec := func(driver string) *Spec {
		return NewSpecFromVolume(&v1.Volume{Name: "v", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: driver}}})
	}
	for name, tc := range map[string]struct {
		plugins []VolumePlugin
		driver  string
		want    string
		wantErr string
	}{
		"fallback alone":           {plugins: []VolumePlugin{&fallbackCSIPlugin{csiPlugin{name: "a.io/csi"}}}, driver: "x.io", want: "a.io/csi"},
		"specific plugin wins":     {plugins: []VolumePlugin{&fallbackCSIPlugin{csiPlugin{name: "a.io/csi"}}, &csiPlugin{name: "x.io/files", driver: "x.io"}}, driver: "x.io", want: "x.io/files"},
		"other drivers":            {plugins: []VolumePlugin{&fallbackCSIPlugin{csiPlugin{name: "a.io/csi"}}, &csiPlugin{name: "x.io/files", driver: "x.io"}}, driver: "y.io", want: "a.io/csi"},
		"two specific still clash": {plugins: []VolumePlugin{&fallbackCSIPlugin{csiPlugin{name: "a.io/csi"}}, &csiPlugin{name: "x.io/one"}, &csiPlugin{name: "x.io/two"}}, driver: "x.io", wantErr: "multiple volume plugins matched: x.io/one,x.io/two"},
		"two fallbacks clash":      {plugins: []VolumePlugin{&fallbackCSIPlugin{csiPlugin{name: "a.io/csi"}}, &fallbackCSIPlugin{csiPlugin{name: "b.io/csi"}}}, driver: "x.io", wantErr: "multiple volume plugins matched: a.io/csi,b.io/csi"},
	} {
		t.Run(name, func(t *testing.T) {
			var mgr VolumePluginMgr
			if err := mgr.InitPlugins(tc.plugins, nil); err != nil {
				t.Fatal(err)
			}
			got, err := mgr.FindPluginBySpec(csiSpec(tc.driver))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsFinal(err) || errors.Is(err, ErrNoPluginMatched) {
					t.Fatalf("FindPluginBySpec() = %v, %v; want a final error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Name() != tc.want {
				t.Fatalf("FindPluginBySpec() = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

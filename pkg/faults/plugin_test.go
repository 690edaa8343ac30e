package faults

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

var testPod = &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "pod-uid"}}

func emptyDirSpec(name string) *volume.Spec {
	return volume.NewSpecFromVolume(&v1.Volume{Name: name, VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}})
}

// newWrappedEmptyDir loads the emptyDir plugin wrapped with ic over a temp
// root and returns it as the registry has it.
func newWrappedEmptyDir(t *testing.T, ic Interceptor) volume.VolumePlugin {
	t.Helper()
	_, mgr := volumetesting.NewFakeVolumeHost(t, t.TempDir(), WrapPlugins(emptydir.ProbeVolumePlugins(), ic), volumetesting.FakeHostOptions{})
	plugin, err := mgr.FindPluginBySpec(emptyDirSpec("data"))
	if err != nil {
		t.Fatal(err)
	}
	return plugin
}

func setUp(t *testing.T, plugin volume.VolumePlugin, volName string) (volume.Builder, error) {
	t.Helper()
	builder, err := plugin.NewBuilder(emptyDirSpec(volName), testPod, volume.VolumeOptions{Context: t.Context()})
	if err != nil {
		t.Fatalf("NewBuilder() error = %v", err)
	}
	return builder, builder.SetUp(nil)
}

func tearDown(t *testing.T, plugin volume.VolumePlugin, volName string) error {
	t.Helper()
	cleaner, err := plugin.NewCleaner(volName, testPod.UID)
	if err != nil {
		t.Fatalf("NewCleaner() error = %v", err)
	}
	return cleaner.TearDown()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestWrappedPluginPassesConformance shows that wrapping changes nothing when
// the interceptor injects nothing.
func TestWrappedPluginPassesConformance(t *testing.T) {
	var mu sync.Mutex
	var seen []Operation
	record := Interceptor{
		Pre: func(_ context.Context, op Operation) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, op)
			return nil
		},
		Post: func(_ context.Context, _ Operation, result error) error { return result },
	}
	volumetesting.RunConformance(t, volumetesting.ConformanceConfig{
		PluginName: emptydir.PluginName,
		Plugins:    func() []volume.VolumePlugin { return WrapPlugins(emptydir.ProbeVolumePlugins(), record) },
		Spec:       func() *volume.Spec { return emptyDirSpec("data") },
	})
	mu.Lock()
	defer mu.Unlock()
	var setUps, tearDowns int
	for _, op := range seen {
		switch op.Name {
		case OpSetUp:
			setUps++
		case OpTearDown:
			tearDowns++
		}
		if op.Plugin != emptydir.PluginName || op.Volume != "data" || op.PodUID == "" || op.Stage != Start {
			t.Errorf("Pre saw %+v, want the data volume of the emptyDir plugin at Start", op)
		}
	}
	if setUps == 0 || tearDowns == 0 {
		t.Errorf("Pre saw %d set-ups and %d tear-downs, want both", setUps, tearDowns)
	}
}

func TestPreHookFailsTheFirstTwoSetUps(t *testing.T) {
	plugin := newWrappedEmptyDir(t, PreHook(OpSetUp, func(call int) error {
		if call <= 2 {
			return volume.NewTransientError(errors.New("backend busy"))
		}
		return nil
	}))
	for call := 1; call <= 2; call++ {
		builder, err := setUp(t, plugin, "data")
		if err == nil || volume.ClassOf(err) != volume.Transient {
			t.Fatalf("SetUp %d = %v, want a transient error", call, err)
		}
		if exists(builder.GetPath()) {
			t.Fatalf("SetUp %d ran although Pre failed it: %s exists", call, builder.GetPath())
		}
	}
	builder, err := setUp(t, plugin, "data")
	if err != nil {
		t.Fatalf("third SetUp = %v, want success", err)
	}
	if !exists(builder.GetPath()) {
		t.Errorf("third SetUp did not make %s", builder.GetPath())
	}
	if err := tearDown(t, plugin, "data"); err != nil {
		t.Errorf("TearDown is not intercepted by a set-up hook, yet failed: %v", err)
	}
}

func TestPostMayReplaceTheResult(t *testing.T) {
	plugin := newWrappedEmptyDir(t, Interceptor{Post: func(_ context.Context, op Operation, result error) error {
		if op.Name == OpSetUp && op.Stage == End && result == nil {
			return volume.NewUncertainError(errors.New("lost the reply"))
		}
		return result
	}})
	builder, err := setUp(t, plugin, "data")
	if !volume.IsUncertain(err) {
		t.Fatalf("SetUp = %v, want the uncertain error Post returned", err)
	}
	if !exists(builder.GetPath()) {
		t.Errorf("the set-up did not happen before Post replaced its result")
	}
	if err := tearDown(t, plugin, "data"); err != nil || exists(builder.GetPath()) {
		t.Errorf("TearDown after an uncertain set-up = %v, volume left: %v", err, exists(builder.GetPath()))
	}
}

// fakePlugin is a plugin with none of the optional interfaces.
type fakePlugin struct{}

func (fakePlugin) Init(volume.VolumeHost) error { return nil }
func (fakePlugin) Name() string                 { return "example.com/fake" }
func (fakePlugin) CanSupport(*volume.Spec) bool { return true }
func (fakePlugin) GetAccessModes() []v1.PersistentVolumeAccessMode {
	return []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
}
func (fakePlugin) ValidateSpec(*volume.Spec, *field.Path) field.ErrorList {
	return field.ErrorList{field.Invalid(field.NewPath("fake"), "x", "always invalid")}
}
func (fakePlugin) CheckHealth(context.Context) volume.Health {
	return volume.Health{Message: "fake health"}
}
func (fakePlugin) NewBuilder(*volume.Spec, *v1.Pod, volume.VolumeOptions) (volume.Builder, error) {
	return nil, errors.New("not used")
}
func (fakePlugin) NewCleaner(string, types.UID) (volume.Cleaner, error) {
	return nil, errors.New("not used")
}

// Plugins with each combination of the optional interfaces.
type (
	basic          struct{ f fakePlugin }
	pvOnly         struct{ basic }
	validatingOnly struct{ basic }
	checkingOnly   struct{ basic }
	pvValidating   struct{ pvOnly }
	pvChecking     struct{ pvOnly }
	validChecking  struct{ validatingOnly }
	all            struct{ pvValidating }
)

func (b basic) Init(h volume.VolumeHost) error { return b.f.Init(h) }
func (b basic) Name() string                   { return b.f.Name() }
func (b basic) CanSupport(s *volume.Spec) bool { return b.f.CanSupport(s) }
func (b basic) NewBuilder(s *volume.Spec, p *v1.Pod, o volume.VolumeOptions) (volume.Builder, error) {
	return b.f.NewBuilder(s, p, o)
}
func (b basic) NewCleaner(n string, u types.UID) (volume.Cleaner, error) { return b.f.NewCleaner(n, u) }
func (p pvOnly) GetAccessModes() []v1.PersistentVolumeAccessMode         { return p.f.GetAccessModes() }
func (p validatingOnly) ValidateSpec(s *volume.Spec, f *field.Path) field.ErrorList {
	return p.f.ValidateSpec(s, f)
}
func (p checkingOnly) CheckHealth(ctx context.Context) volume.Health { return p.f.CheckHealth(ctx) }
func (p pvValidating) ValidateSpec(s *volume.Spec, f *field.Path) field.ErrorList {
	return p.f.ValidateSpec(s, f)
}
func (p pvChecking) CheckHealth(ctx context.Context) volume.Health    { return p.f.CheckHealth(ctx) }
func (p validChecking) CheckHealth(ctx context.Context) volume.Health { return p.f.CheckHealth(ctx) }
func (p all) CheckHealth(ctx context.Context) volume.Health           { return p.f.CheckHealth(ctx) }

func TestWrapPluginKeepsOptionalInterfaces(t *testing.T) {
	for name, p := range map[string]volume.VolumePlugin{
		"none": basic{}, "persistent": pvOnly{}, "validating": validatingOnly{}, "checking": checkingOnly{},
		"persistent+validating": pvValidating{}, "persistent+checking": pvChecking{},
		"validating+checking": validChecking{}, "all": all{},
	} {
		t.Run(name, func(t *testing.T) {
			wrapped := WrapPlugin(p, Interceptor{})
			if wrapped.Name() != p.Name() {
				t.Errorf("Name() = %q, want %q", wrapped.Name(), p.Name())
			}
			_, wantPV := p.(volume.PersistentVolumePlugin)
			_, wantValidating := p.(volume.SpecValidatingPlugin)
			_, wantChecking := p.(volume.HealthCheckingPlugin)
			pv, isPV := wrapped.(volume.PersistentVolumePlugin)
			validating, isValidating := wrapped.(volume.SpecValidatingPlugin)
			checking, isChecking := wrapped.(volume.HealthCheckingPlugin)
			if isPV != wantPV || isValidating != wantValidating || isChecking != wantChecking {
				t.Fatalf("wrapper is persistent=%v validating=%v checking=%v, want %v %v %v",
					isPV, isValidating, isChecking, wantPV, wantValidating, wantChecking)
			}
			if isPV && len(pv.GetAccessModes()) != 1 {
				t.Errorf("GetAccessModes() = %v, not the plugin's", pv.GetAccessModes())
			}
			if isValidating && len(validating.ValidateSpec(nil, nil)) != 1 {
				t.Errorf("ValidateSpec() is not the plugin's")
			}
			if isChecking && checking.CheckHealth(t.Context()).Message != "fake health" {
				t.Errorf("CheckHealth() is not the plugin's")
			}
			if unwrapped := wrapped.(interface{ Unwrap() volume.VolumePlugin }).Unwrap(); unwrapped != p {
				t.Errorf("Unwrap() = %v, want the plugin", unwrapped)
			}
		})
	}
}

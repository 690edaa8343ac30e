package testing

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// ConformanceConfig describes the plugin a conformance run tests.
type ConformanceConfig struct {
	// PluginName is the plugin under test.
	PluginName string
	// Plugins returns fresh instances of the plugin under test and of every
	// plugin it builds on (gitRepo needs emptyDir). It is called once per
	// simulated agent start.
	Plugins func() []volume.VolumePlugin
	// Spec returns the spec of the volume to set up; its name is the volume's.
	Spec func() *volume.Spec
	// Pod is the pod the volume belongs to; nil gets a plain pod.
	Pod *v1.Pod
	// NewMounter returns the mounter for one test; nil gets a FakeMounter.
	// Pass one returning mount.New("") to run the suite on real mounts.
	NewMounter func() mount.Interface
	// HostOptions are passed to NewFakeVolumeHost (Mounter is overridden by
	// NewMounter).
	HostOptions FakeHostOptions
	// StopHalfWay leaves the volume as a set-up that crashed half-way would:
	// whatever the plugin makes before its ready marker. Nil gets a generic
	// version: the volume dir with a file in it, and no marker.
	StopHalfWay func(t *testing.T, builder volume.Builder)
}

// RunConformance checks the contract every plugin keeps: SetUp twice is a
// no-op that keeps the volume's files, TearDown twice succeeds, TearDown after
// a set-up that stopped half-way leaves nothing, and a Cleaner built from disk
// alone, by a plugin loaded afresh as after a restart, tears the volume down.
func RunConformance(t *testing.T, cfg ConformanceConfig) {
	t.Helper()
	pod := cfg.Pod
	if pod == nil {
		pod = &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "conformance", Namespace: "default", UID: types.UID("conformance-uid")}}
	}

	t.Run("SetUp twice is a no-op", func(t *testing.T) {
		env := newConformanceEnv(t, cfg)
		builder := env.builder(t, pod)
		mustSucceed(t, "SetUp", builder.SetUp(nil))
		marker := filepath.Join(builder.GetPath(), "written-by-pod")
		if err := os.WriteFile(marker, []byte("data"), 0o644); err != nil {
			t.Fatalf("failed to write into the volume: %v", err)
		}
		mustSucceed(t, "second SetUp", env.builder(t, pod).SetUp(nil))
		if got, err := os.ReadFile(marker); err != nil || string(got) != "data" {
			t.Errorf("second SetUp lost the volume's file: %q, %v", got, err)
		}
		env.tearDown(t, pod.UID)
	})

	t.Run("TearDown twice succeeds", func(t *testing.T) {
		env := newConformanceEnv(t, cfg)
		builder := env.builder(t, pod)
		mustSucceed(t, "SetUp", builder.SetUp(nil))
		env.tearDown(t, pod.UID)
		env.tearDown(t, pod.UID)
		env.assertGone(t, pod.UID, builder.GetPath())
	})

	t.Run("TearDown after a set-up that stopped half-way leaves nothing", func(t *testing.T) {
		env := newConformanceEnv(t, cfg)
		builder := env.builder(t, pod)
		if cfg.StopHalfWay != nil {
			cfg.StopHalfWay(t, builder)
		} else {
			if err := os.MkdirAll(builder.GetPath(), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(builder.GetPath(), "partial"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		env.tearDown(t, pod.UID)
		env.assertGone(t, pod.UID, builder.GetPath())
	})

	t.Run("Cleaner works from disk alone after a restart", func(t *testing.T) {
		env := newConformanceEnv(t, cfg)
		builder := env.builder(t, pod)
		mustSucceed(t, "SetUp", builder.SetUp(nil))
		env.restart(t)
		env.tearDown(t, pod.UID)
		env.assertGone(t, pod.UID, builder.GetPath())
		// And the volume can be set up again afterwards.
		mustSucceed(t, "SetUp after TearDown", env.builder(t, pod).SetUp(nil))
		env.tearDown(t, pod.UID)
	})
}

type conformanceEnv struct {
	cfg     ConformanceConfig
	root    string
	mounter mount.Interface
	host    volume.VolumeHost
	plugins *volume.VolumePluginMgr
}

func newConformanceEnv(t *testing.T, cfg ConformanceConfig) *conformanceEnv {
	env := &conformanceEnv{cfg: cfg, root: t.TempDir(), mounter: mount.NewFakeMounter(nil)}
	if cfg.NewMounter != nil {
		env.mounter = cfg.NewMounter()
	}
	env.restart(t)
	t.Cleanup(func() { UnmountAllBeneath(t, env.mounter, env.root) })
	return env
}

// restart loads fresh plugins over the same root dir and mounts, as an agent
// restart does.
func (e *conformanceEnv) restart(t *testing.T) {
	opts := e.cfg.HostOptions
	opts.Mounter = e.mounter
	e.host, e.plugins = NewFakeVolumeHost(t, e.root, e.cfg.Plugins(), opts)
}

func (e *conformanceEnv) plugin(t *testing.T) volume.VolumePlugin {
	plugin, err := e.plugins.FindPluginByName(e.cfg.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return plugin
}

func (e *conformanceEnv) builder(t *testing.T, pod *v1.Pod) volume.Builder {
	builder, err := e.plugin(t).NewBuilder(e.cfg.Spec(), pod, volume.VolumeOptions{Context: t.Context()})
	if err != nil {
		t.Fatalf("NewBuilder() error = %v", err)
	}
	return builder
}

func (e *conformanceEnv) tearDown(t *testing.T, podUID types.UID) {
	cleaner, err := e.plugin(t).NewCleaner(e.cfg.Spec().Name(), podUID)
	if err != nil {
		t.Fatalf("NewCleaner() error = %v", err)
	}
	mustSucceed(t, "TearDown", cleaner.TearDown())
}

// assertGone checks that neither the volume dir, its ready marker, nor a
// mount at it is left.
func (e *conformanceEnv) assertGone(t *testing.T, podUID types.UID, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("volume dir %s still exists after TearDown (%v)", path, err)
	}
	metaDir := filepath.Join(e.host.GetPodPluginDir(podUID, e.cfg.PluginName), e.cfg.Spec().Name())
	if util.IsReady(metaDir) {
		t.Errorf("ready marker in %s still exists after TearDown", metaDir)
	}
	mountPoints, err := e.mounter.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mountPoints {
		if mp.Path == path {
			t.Errorf("volume %s is still mounted after TearDown", path)
		}
	}
}

func mustSucceed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s error = %v", what, err)
	}
}

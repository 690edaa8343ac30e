package volumemanager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// verifyingFake is the fake plugin with a scripted VerifyVolume.
type verifyingFake struct {
	*fakePlugin
	mu  sync.Mutex
	err error
}

func (v *verifyingFake) VerifyVolume(*volume.Spec, types.UID, string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

func (v *verifyingFake) setErr(err error) {
	v.mu.Lock()
	v.err = err
	v.mu.Unlock()
}

func (e *testEnv) eventCount(reason string) int {
	n := 0
	for _, ev := range e.m.Events() {
		if ev.Reason == reason {
			n++
		}
	}
	return n
}

func TestManagerVerifiesReadyVolumes(t *testing.T) {
	fake := &verifyingFake{fakePlugin: newFakePlugin(fakePluginName)}
	e := newTestEnv(t, func(c *Config) {
		_, c.Plugins = volumetesting.NewFakeVolumeHost(t, c.Layout.Root, []volume.VolumePlugin{fake},
			volumetesting.FakeHostOptions{Mounter: c.Mounter, Clock: c.Clock})
	})
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	e.waitFor("ready", e.stateIs("uid-1", "v", StateReady))
	ctx := context.Background()

	// Whole: nothing happens.
	e.m.VerifyVolumes(ctx)
	if n := fake.count(OperationSetUp, "v"); n != 1 || e.eventCount(ReasonVolumeLost) != 0 {
		t.Fatalf("a whole volume: %d set-ups, %d VolumeLost events; want 1 and 0", n, e.eventCount(ReasonVolumeLost))
	}

	// Lost and restorable: set up again, with an event.
	fake.setErr(volume.NewTransientError(errors.New("tmpfs is gone")))
	e.m.VerifyVolumes(ctx)
	fake.setErr(nil)
	e.waitFor("set up again", func() bool { return fake.count(OperationSetUp, "v") == 2 && e.stateIs("uid-1", "v", StateReady)() })
	if n := e.eventCount(ReasonVolumeLost); n != 1 {
		t.Errorf("%d VolumeLost events, want 1", n)
	}

	// Lost for good: reported, once, and not set up again.
	fake.setErr(volume.Finalf("the checkout is gone"))
	e.m.VerifyVolumes(ctx)
	e.m.VerifyVolumes(ctx)
	v := e.volume("uid-1", "v")
	if v.State != StateFailed || v.Reason != ReasonVolumeLost || !strings.Contains(v.Message, "the checkout is gone") {
		t.Errorf("a volume lost for good: %+v, want failed with reason %s", v, ReasonVolumeLost)
	}
	if n := e.eventCount(ReasonVolumeLost); n != 2 {
		t.Errorf("%d VolumeLost events, want 2", n)
	}
	e.never("a set-up of a volume that cannot be restored", func() bool { return fake.count(OperationSetUp, "v") > 2 })

	// Whole again: ready again.
	fake.setErr(nil)
	e.m.VerifyVolumes(ctx)
	if v := e.volume("uid-1", "v"); v.State != StateReady {
		t.Errorf("a volume whole again: %+v, want ready", v)
	}
}

// TestManagerRemountsALostTmpfs is the user's case on real mounts: a
// Memory emptyDir unmounted behind the agent's back is mounted again within
// a verify period, so the pod's writes do not go to the root disk.
func TestManagerRemountsALostTmpfs(t *testing.T) {
	volumetesting.RequiresRoot(t)
	root := t.TempDir()
	mounter := util.NewMounter()
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, mounter, root) })
	_, plugins := volumetesting.NewFakeVolumeHost(t, root, emptydir.ProbeVolumePlugins(),
		volumetesting.FakeHostOptions{Mounter: mounter, Clock: clock.RealClock{}})
	m, err := New(Config{Plugins: plugins, Layout: volume.Layout{Root: root}, Mounter: mounter, VerifyPeriod: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = m.Run(ctx)
	}()
	defer func() {
		teardown, cancelTeardown := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelTeardown()
		if err := m.TearDownAll(teardown); err != nil {
			t.Error(err)
		}
		cancel()
		<-stopped
	}()
	m.MarkSourcesSynced()
	vol := emptyDirVolume("cache")
	vol.EmptyDir.Medium = v1.StorageMediumMemory
	m.UpdateSources(SourceUpdate{Source: "s", Bundle: &manifest.Bundle{Pods: []*v1.Pod{testPod("uid-1", "p", vol)}}})
	path := filepath.Join(root, "pods", "uid-1", "volumes", "kubernetes.io~empty-dir", "cache")
	isTmpfs := func() bool {
		var st unix.Statfs_t
		mounted, err := mount.New("").IsMountPoint(path)
		return err == nil && mounted && unix.Statfs(path, &st) == nil && st.Type == 0x01021994
	}
	waitUntil(t, "the tmpfs mounted", isTmpfs)
	waitUntil(t, "ready", func() bool { pod, _ := m.Pod("uid-1"); return pod.State == PodReady })

	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the tmpfs mounted again", isTmpfs)
	waitUntil(t, "ready again", func() bool { pod, _ := m.Pod("uid-1"); return pod.State == PodReady })
	var lost []Event
	for _, ev := range m.Events() {
		if ev.Reason == ReasonVolumeLost {
			lost = append(lost, ev)
		}
	}
	if len(lost) != 1 || lost[0].Volume != "cache" || !strings.Contains(lost[0].Message, path) {
		t.Errorf("VolumeLost events = %+v, want one for cache naming %s", lost, path)
	}
	if _, err := os.Stat(path); err != nil {
		t.Error(err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package volumemanager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/hooks"
	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

type testEnv struct {
	t        *testing.T
	root     string
	layout   volume.Layout
	clock    *testingclock.FakeClock
	plugin   *fakePlugin
	pvPlugin *fakePlugin
	mounter  *mount.FakeMounter
	m        *Manager
	cancel   context.CancelFunc
	stopped  chan struct{}
}

func newTestEnv(t *testing.T, configure ...func(*Config)) *testEnv {
	t.Helper()
	root := t.TempDir()
	e := &testEnv{
		t:        t,
		root:     root,
		layout:   volume.Layout{Root: root},
		clock:    testingclock.NewFakeClock(testStart),
		plugin:   newFakePlugin(fakePluginName),
		pvPlugin: newFakePlugin(fakePVPluginName),
		mounter:  mount.NewFakeMounter(nil),
	}
	_, plugins := volumetesting.NewFakeVolumeHost(t, root, []volume.VolumePlugin{e.plugin, e.pvPlugin}, volumetesting.FakeHostOptions{Mounter: e.mounter, Clock: e.clock})
	cfg := Config{Plugins: plugins, Layout: e.layout, Mounter: e.mounter, Clock: e.clock, Executor: ExecutorConfig{Workers: 2}}
	for _, c := range configure {
		c(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

// start runs the Manager until the test ends.
func (e *testEnv) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.stopped = make(chan struct{})
	go func() {
		defer close(e.stopped)
		if err := e.m.Run(ctx); err != nil {
			e.t.Errorf("Run() = %v", err)
		}
	}()
	e.t.Cleanup(e.stop)
}

func (e *testEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.stopped
	e.cancel = nil
}

func (e *testEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 2*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		e.t.Fatalf("timed out waiting for %s; pods: %+v", what, e.m.Pods())
	}
}

// never checks that cond stays false for a while.
func (e *testEnv) never(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		if cond() {
			e.t.Fatalf("%s happened", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *testEnv) volume(uid types.UID, name string) VolumeStatus {
	pod, ok := e.m.Pod(uid)
	if !ok {
		return VolumeStatus{}
	}
	for _, v := range pod.Volumes {
		if v.Volume == name {
			return v
		}
	}
	return VolumeStatus{}
}

func (e *testEnv) stateIs(uid types.UID, name string, state VolumeState) func() bool {
	return func() bool { return e.volume(uid, name).State == state }
}

func (e *testEnv) setPods(source string, pods ...*v1.Pod) {
	e.m.UpdateSources(SourceUpdate{Source: source, Bundle: &manifest.Bundle{Pods: pods}})
}

func (e *testEnv) volumeDir(uid types.UID, name string) string {
	return e.layout.PodVolumeDir(uid, fakePluginName, name)
}

// makeVolumeOnDisk lays a set-up fake volume out on disk, as a previous run
// would have left it.
func (e *testEnv) makeVolumeOnDisk(uid types.UID, name string, ready bool) {
	e.t.Helper()
	if err := os.MkdirAll(e.volumeDir(uid, name), 0o750); err != nil {
		e.t.Fatal(err)
	}
	if ready {
		meta := e.layout.VolumeMetadataDir(uid, fakePluginName, name)
		if err := os.MkdirAll(meta, 0o750); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(meta, "ready"), nil, 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
}

func testPod(uid types.UID, name string, volumes ...v1.Volume) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: uid, Namespace: "default", Name: name},
		Spec:       v1.PodSpec{Volumes: volumes},
	}
}

func emptyDirVolume(name string) v1.Volume {
	return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestManagerSetsUpAndTearsDownInOrder(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.Executor.Workers = 1 })
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("a", testPod("uid-a", "a", emptyDirVolume("a1"), emptyDirVolume("a2")))
	e.waitFor("a ready", func() bool {
		pod, _ := e.m.Pod("uid-a")
		return pod.State == PodReady
	})
	if !exists(e.volumeDir("uid-a", "a1")) || !exists(e.volumeDir("uid-a", "a2")) {
		t.Fatal("volume dirs of pod a missing")
	}
	e.waitFor("ready", e.m.Ready)

	// Replace pod a by pod b in one update: a's volumes go first.
	e.m.UpdateSources(SourceUpdate{Source: "a", Removed: true}, SourceUpdate{Source: "b", Bundle: &manifest.Bundle{Pods: []*v1.Pod{testPod("uid-b", "b", emptyDirVolume("b1"))}}})
	e.waitFor("b ready and a gone", func() bool {
		_, aKnown := e.m.Pod("uid-a")
		return !aKnown && e.volume("uid-b", "b1").State == StateReady
	})
	var order []string
	for _, c := range e.plugin.callLog() {
		order = append(order, string(c.op)+" "+c.name)
	}
	want := []string{"setUp a1", "setUp a2", "tearDown a1", "tearDown a2", "setUp b1"}
	slices.Sort(order[:2])
	slices.Sort(order[2:4])
	if !slices.Equal(order, want) {
		t.Errorf("calls = %q, want %q", order, want)
	}
	e.waitFor("pod dir of a removed", func() bool { return !exists(e.layout.PodDir("uid-a")) })
	if !exists(e.volumeDir("uid-b", "b1")) {
		t.Error("volume b1 missing")
	}
	var reasons []string
	for _, ev := range e.m.Events() {
		reasons = append(reasons, ev.Reason+" "+ev.Volume)
	}
	for _, r := range []string{"SetUp a1", "TornDown a1", "SetUp b1"} {
		if !slices.Contains(reasons, r) {
			t.Errorf("events %q lack %q", reasons, r)
		}
	}
}

func TestManagerNeverOverlapsOperationsOnAVolume(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.Executor.Workers = 4 })
	e.m.MarkSourcesSynced()
	block := make(chan struct{})
	defer close(block)
	e.plugin.script("v", &fakeBehavior{block: block, leaveDir: true})
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	e.waitFor("set-up to start", func() bool { return e.plugin.count(OperationSetUp, "v") == 1 })
	if got := e.volume("uid-1", "v").State; got != StateSettingUp {
		t.Errorf("state while setting up = %s", got)
	}
	// The pod goes away while its set-up runs: the set-up is cancelled, and
	// the tear-down of what it left starts only once it has returned.
	e.setPods("s")
	e.waitFor("tear-down", func() bool { _, known := e.m.Pod("uid-1"); return !known })
	if n := e.plugin.count(OperationTearDown, "v"); n != 1 {
		t.Errorf("%d tear-downs, want 1", n)
	}
	if e.plugin.overlaps != 0 {
		t.Errorf("%d operations overlapped on one volume", e.plugin.overlaps)
	}
}

func TestManagerRetriesWithBackoff(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	boom := errors.New("backend busy")
	e.plugin.script("v", &fakeBehavior{setUpErrs: []error{boom, boom, volume.NewTransientError(boom)}})
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))

	for i, delay := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		attempt := i + 1
		e.waitFor("failed attempt", func() bool { v := e.volume("uid-1", "v"); return v.State == StateFailed && v.Attempts == attempt })
		v := e.volume("uid-1", "v")
		if got := v.NextRetry.Sub(e.clock.Now()); got != delay {
			t.Errorf("attempt %d: next retry in %s, want %s", attempt, got, delay)
		}
		if v.ErrorClass != "transient" || !strings.Contains(v.LastError, "backend busy") {
			t.Errorf("attempt %d: error %q (%s)", attempt, v.LastError, v.ErrorClass)
		}
		e.clock.Step(delay - 10*time.Millisecond)
		e.never("an early retry", func() bool { return e.plugin.count(OperationSetUp, "v") > attempt })
		e.clock.Step(10 * time.Millisecond)
		e.waitFor("the retry", func() bool { return e.plugin.count(OperationSetUp, "v") > attempt })
	}
	e.waitFor("ready", e.stateIs("uid-1", "v", StateReady))
	if v := e.volume("uid-1", "v"); v.Attempts != 0 || v.LastError != "" || !v.NextRetry.IsZero() {
		t.Errorf("after success: %+v; want attempts, error and retry cleared", v)
	}
}

func TestManagerFinalErrorWaitsForSpecChange(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.plugin.script("v", &fakeBehavior{setUpErrs: []error{volume.Finalf("unsupported medium %q", "Tape")}})
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	e.waitFor("failed", e.stateIs("uid-1", "v", StateFailed))
	v := e.volume("uid-1", "v")
	if v.ErrorClass != "final" || !v.NextRetry.IsZero() {
		t.Errorf("final failure: class %s, next retry %s", v.ErrorClass, v.NextRetry)
	}
	pod, _ := e.m.Pod("uid-1")
	if pod.State != PodFailed {
		t.Errorf("pod state %s, want failed", pod.State)
	}
	e.clock.Step(10 * time.Minute)
	e.never("a retry of a final error", func() bool { return e.plugin.count(OperationSetUp, "v") > 1 })

	// The same spec again: still no retry. A changed spec: retried at once.
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	e.never("a retry of the same spec", func() bool { return e.plugin.count(OperationSetUp, "v") > 1 })
	changed := emptyDirVolume("v")
	changed.EmptyDir.SizeLimit = resource.NewQuantity(1<<20, resource.BinarySI)
	e.setPods("s", testPod("uid-1", "p", changed))
	e.waitFor("ready after the spec changed", e.stateIs("uid-1", "v", StateReady))
}

func TestManagerTearsDownOnlyWhatMayBeSetUp(t *testing.T) {
	tests := map[string]struct {
		behavior     fakeBehavior
		wantTearDown bool
	}{
		"uncertain":                {behavior: fakeBehavior{setUpErrs: []error{volume.NewUncertainError(errors.New("mount may have happened"))}}, wantTearDown: true},
		"transient, nothing left":  {behavior: fakeBehavior{setUpErrs: []error{errors.New("no")}}, wantTearDown: false},
		"final, nothing left":      {behavior: fakeBehavior{setUpErrs: []error{volume.Finalf("no")}}, wantTearDown: false},
		"final, left a directory":  {behavior: fakeBehavior{setUpErrs: []error{volume.Finalf("no")}, leaveDir: true}, wantTearDown: true},
		"transient, left a folder": {behavior: fakeBehavior{setUpErrs: []error{errors.New("no")}, leaveDir: true}, wantTearDown: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			e.m.MarkSourcesSynced()
			b := tc.behavior
			e.plugin.script("v", &b)
			e.start()
			e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
			e.waitFor("failure", e.stateIs("uid-1", "v", StateFailed))
			e.setPods("s")
			e.waitFor("pod forgotten", func() bool { _, known := e.m.Pod("uid-1"); return !known })
			if got := e.plugin.count(OperationTearDown, "v") > 0; got != tc.wantTearDown {
				t.Errorf("torn down: %v, want %v", got, tc.wantTearDown)
			}
			e.waitFor("pod dir removed", func() bool { return !exists(e.layout.PodDir("uid-1")) })
		})
	}
}

func TestManagerTimesOutOperations(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.Executor.Timeout = time.Minute })
	e.m.MarkSourcesSynced()
	e.plugin.script("v", &fakeBehavior{block: make(chan struct{})})
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	e.waitFor("set-up to start", func() bool { return e.plugin.count(OperationSetUp, "v") == 1 })
	e.clock.Step(59 * time.Second)
	e.never("a timeout before a minute", func() bool { return e.volume("uid-1", "v").State != StateSettingUp })
	e.clock.Step(time.Second)
	e.waitFor("timeout", e.stateIs("uid-1", "v", StateFailed))
	v := e.volume("uid-1", "v")
	if v.ErrorClass != "uncertain" || !strings.Contains(v.LastError, "timed out after 1m0s") {
		t.Errorf("after a timeout: %q (%s)", v.LastError, v.ErrorClass)
	}
	e.plugin.mu.Lock()
	ctx := e.plugin.contexts["v"]
	e.plugin.mu.Unlock()
	if !errors.Is(context.Cause(ctx), ErrOperationTimeout) {
		t.Errorf("the plugin's context ended with %v, want ErrOperationTimeout", context.Cause(ctx))
	}
	// A timed-out set-up is uncertain: it is torn down when the pod goes.
	e.setPods("s")
	e.waitFor("tear-down", func() bool { return e.plugin.count(OperationTearDown, "v") == 1 })
}

func TestManagerStopCancelsAndLeavesVolumes(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	block := make(chan struct{})
	defer close(block)
	e.plugin.script("slow", &fakeBehavior{block: block})
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("fast"), emptyDirVolume("slow")))
	e.waitFor("fast ready, slow started", func() bool {
		return e.volume("uid-1", "fast").State == StateReady && e.plugin.count(OperationSetUp, "slow") == 1
	})
	e.stop()
	e.plugin.mu.Lock()
	ctx := e.plugin.contexts["slow"]
	e.plugin.mu.Unlock()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("the running set-up's context: %v, want cancelled", ctx.Err())
	}
	if n := len(e.plugin.callLog()); n != 2 {
		t.Errorf("%d calls, want the two set-ups only: %+v", n, e.plugin.callLog())
	}
	if !exists(e.volumeDir("uid-1", "fast")) {
		t.Error("stopping removed a ready volume")
	}
}

func TestManagerReconstructsFromDisk(t *testing.T) {
	e := newTestEnv(t)
	e.makeVolumeOnDisk("kept", "v", true)
	e.makeVolumeOnDisk("gone", "v", true)
	e.makeVolumeOnDisk("gone", "half", false)
	// A tear-down that stopped after removing the volume dir.
	if err := os.MkdirAll(e.layout.VolumeMetadataDir("meta-only", fakePluginName, "v"), 0o750); err != nil {
		t.Fatal(err)
	}
	// An empty pod dir, and one with something mounted in it.
	if err := os.MkdirAll(filepath.Join(e.layout.PodDir("empty"), "volumes"), 0o750); err != nil {
		t.Fatal(err)
	}
	// The fake mount holds a file, as a file system mounted there would
	// show (an empty real mount point: TestManagerKeepsAPodDirWithAMountInIt).
	mounted := filepath.Join(e.layout.PodDir("mounted"), "other")
	if err := os.MkdirAll(mounted, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mounted, "data"), []byte("not the agent's"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mounter.MountPoints = append(e.mounter.MountPoints, mount.MountPoint{Device: "tmpfs", Path: mounted, Type: "tmpfs"})

	e.setPods("s", testPod("kept", "kept", emptyDirVolume("v")))
	e.start()
	e.waitFor("kept set up again", e.stateIs("kept", "v", StateReady))
	// Sources not yet read in full: nothing is torn down.
	e.never("a tear-down before the sources synced", func() bool { return len(e.plugin.callLog()) > 1 })
	if got := e.volume("gone", "v"); got.State != StatePending || got.Reason != ReasonWaitingForSources || got.Desired {
		t.Errorf("undesired volume before sync: %+v", got)
	}
	if e.m.Ready() {
		t.Error("Ready() before the sources synced")
	}

	e.m.MarkSourcesSynced()
	e.waitFor("undesired torn down", func() bool {
		return !exists(e.layout.PodDir("gone")) && !exists(e.layout.PodDir("meta-only")) && !exists(e.layout.PodDir("empty"))
	})
	e.waitFor("ready", e.m.Ready)
	for _, name := range []string{"v", "half"} {
		if n := e.plugin.count(OperationTearDown, name); n < 1 {
			t.Errorf("volume %s of the undesired pod not torn down", name)
		}
	}
	if n := e.plugin.count(OperationTearDown, "v"); n != 2 {
		t.Errorf("%d tear-downs of volumes called v, want 2 (gone and meta-only)", n)
	}
	if !exists(e.volumeDir("kept", "v")) {
		t.Error("the desired volume was removed")
	}
	if !exists(filepath.Join(mounted, "data")) {
		t.Error("a pod dir with a mount in it was removed")
	}
	var kept bool
	for _, ev := range e.m.Events() {
		kept = kept || (ev.Reason == ReasonPodDirKept && ev.PodUID == "mounted" && strings.Contains(ev.Message, "still mounted"))
	}
	if !kept {
		t.Errorf("no PodDirKept event for the pod dir with a mount: %+v", e.m.Events())
	}
}

// A manifest that has failed to load since the start may declare pods whose
// volumes are on disk: nothing undesired is torn down, and the Manager is not
// ready, until it loads (or is removed), even after MarkSourcesSynced.
func TestManagerWaitsForEverySourceToLoadBeforeTearingDown(t *testing.T) {
	e := newTestEnv(t)
	e.makeVolumeOnDisk("in-bad-file", "v", true)
	e.m.UpdateSources(SourceUpdate{Source: "file:bad.yaml", Err: errors.New("yaml: line 3: mapping values are not allowed")})
	e.setPods("file:good.yaml", testPod("new", "new", emptyDirVolume("v")))
	e.m.MarkSourcesSynced()
	e.start()
	e.waitFor("the good file's volume set up meanwhile", e.stateIs("new", "v", StateReady))
	e.never("a tear-down while a source never loaded", func() bool { return e.plugin.count(OperationTearDown, "v") > 0 })
	if got := e.volume("in-bad-file", "v"); got.State != StatePending || got.Reason != ReasonWaitingForSources {
		t.Errorf("volume of the file that failed to load: %+v", got)
	}
	if e.m.Ready() || e.m.Summary().SourcesSynced {
		t.Error("ready or synced while a source never loaded")
	}
	if s := e.m.Summary().SourceErrors; len(s) != 1 || s[0].Name != "file:bad.yaml" || !strings.Contains(s[0].Error, "line 3") {
		t.Errorf("source errors = %+v", s)
	}

	// The file is fixed and still declares the pod: its volume is kept.
	e.setPods("file:bad.yaml", testPod("in-bad-file", "p", emptyDirVolume("v")))
	e.waitFor("ready", e.m.Ready)
	if n := e.plugin.count(OperationTearDown, "v"); n != 0 {
		t.Errorf("%d tear-downs of a volume the fixed file still wants", n)
	}
	if !exists(e.volumeDir("in-bad-file", "v")) {
		t.Error("the volume of the fixed file was removed")
	}
	// Once synced, a later failure keeps the file's pods; removing them
	// tears down.
	e.m.UpdateSources(SourceUpdate{Source: "file:bad.yaml", Err: errors.New("truncated")})
	e.never("a tear-down after a later failure", func() bool { return e.plugin.count(OperationTearDown, "v") > 0 })
	e.setPods("file:bad.yaml")
	e.waitFor("torn down once undesired", func() bool { return !exists(e.layout.PodDir("in-bad-file")) })
}

// countingMounter counts the reads of the mount table.
type countingMounter struct {
	*mount.FakeMounter
	lists int
}

func (c *countingMounter) List() ([]mount.MountPoint, error) {
	c.lists++
	return c.FakeMounter.List()
}

// Reconstruction reads the volume and metadata dirs only: the plugins'
// SetUp and TearDown check ready markers and mounts themselves.
func TestReconstructDoesNotReadTheMountTable(t *testing.T) {
	counting := &countingMounter{FakeMounter: mount.NewFakeMounter(nil)}
	e := newTestEnv(t, func(c *Config) { c.Mounter = counting })
	e.makeVolumeOnDisk("uid-1", "v", true)
	if err := e.m.Reconstruct(context.Background()); err != nil {
		t.Fatal(err)
	}
	if counting.lists != 0 {
		t.Errorf("Reconstruct read the mount table %d times", counting.lists)
	}
	if got := e.volume("uid-1", "v"); got.Volume != "v" || got.Desired {
		t.Errorf("reconstructed volume: %+v", got)
	}
}

func TestManagerTearDownAll(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("a"), emptyDirVolume("b")))
	e.waitFor("ready", func() bool { pod, _ := e.m.Pod("uid-1"); return pod.State == PodReady })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.m.TearDownAll(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(e.layout.PodDir("uid-1")) {
		t.Error("pod dir left after TearDownAll")
	}
}

func TestManagerKeepsSourceContentOnError(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("file:a.yaml", testPod("uid-a", "a", emptyDirVolume("v")))
	e.setPods("file:b.yaml", testPod("uid-b", "b", emptyDirVolume("v")))
	e.waitFor("both ready", func() bool {
		return e.volume("uid-a", "v").State == StateReady && e.volume("uid-b", "v").State == StateReady
	})
	e.m.UpdateSources(SourceUpdate{Source: "file:a.yaml", Err: errors.New("yaml: line 3: mapping values are not allowed")})
	e.never("a tear-down after a source error", func() bool { return e.plugin.count(OperationTearDown, "v") > 0 })
	sources := e.m.Sources()
	if len(sources) != 2 || !strings.Contains(sources[0].Error, "line 3") || sources[0].Pods != 1 || sources[1].Error != "" {
		t.Errorf("sources = %+v", sources)
	}
	found := false
	for _, ev := range e.m.Events() {
		found = found || (ev.Reason == ReasonSourceError && ev.Source == "file:a.yaml")
	}
	if !found {
		t.Error("no SourceError event")
	}
	// A second source declaring the same UID loses to the first.
	e.setPods("file:c.yaml", testPod("uid-a", "other", emptyDirVolume("w")))
	if s := e.m.Sources(); !strings.Contains(s[2].Error, `already declares`) {
		t.Errorf("conflicting source: %+v", s[2])
	}
	if got := e.m.SourceOf("uid-a"); got != "file:a.yaml" {
		t.Errorf("SourceOf(uid-a) = %q", got)
	}
}

func TestManagerResolvesClaims(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	claimVolume := func(name, claim string) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1"},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:            []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/data"}},
			ClaimRef:               &v1.ObjectReference{Namespace: "default", Name: "bound"},
		},
	}
	claim := func(name string) *v1.PersistentVolumeClaim {
		return &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       v1.PersistentVolumeClaimSpec{AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}},
		}
	}
	pod := testPod("uid-1", "p", claimVolume("data", "bound"), claimVolume("later", "unbound"))
	// The claims and the volume come from another source than the pod.
	e.m.UpdateSources(
		SourceUpdate{Source: "pod", Bundle: &manifest.Bundle{Pods: []*v1.Pod{pod}}},
		SourceUpdate{Source: "storage", Bundle: &manifest.Bundle{PersistentVolumes: []*v1.PersistentVolume{pv}, PersistentVolumeClaims: []*v1.PersistentVolumeClaim{claim("bound"), claim("unbound")}}},
	)
	e.waitFor("claim volume ready", e.stateIs("uid-1", "data", StateReady))
	data := e.volume("uid-1", "data")
	if data.PersistentVolume != "pv-1" || data.Plugin != fakePVPluginName || data.Path != e.layout.PodVolumeDir("uid-1", fakePVPluginName, "pv-1") {
		t.Errorf("bound claim: %+v", data)
	}
	later := e.volume("uid-1", "later")
	if later.State != StatePending || later.Reason != string(manifest.ReasonClaimNotBound) {
		t.Errorf("unbound claim: %+v", later)
	}
	if pod, _ := e.m.Pod("uid-1"); pod.State != PodPending {
		t.Errorf("pod with a pending claim: %s", pod.State)
	}
	if s := e.m.Summary(); s.Pods != 1 || s.Volumes[StateReady] != 1 || s.Volumes[StatePending] != 1 || len(s.Volumes) != 2 {
		t.Errorf("Summary() = %+v, want 1 pod, 1 ready and 1 pending volume", s)
	}
}

// A ready volume whose claim stops resolving while its pod is still desired
// stays set up (shown pending with the claim's reason); it goes with the pod.
func TestManagerKeepsAReadyVolumeWhoseClaimStopsResolving(t *testing.T) {
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1"},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:            []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/data"}},
			ClaimRef:               &v1.ObjectReference{Namespace: "default", Name: "data"},
		},
	}
	claim := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "data"},
		Spec:       v1.PersistentVolumeClaimSpec{AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}},
	}
	pod := testPod("uid-1", "p", v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}})
	tests := map[string]struct {
		storage *manifest.Bundle
		reason  string
	}{
		"volume and claim removed": {storage: &manifest.Bundle{}, reason: string(manifest.ReasonClaimNotFound)},
		"volume removed":           {storage: &manifest.Bundle{PersistentVolumeClaims: []*v1.PersistentVolumeClaim{claim}}, reason: string(manifest.ReasonClaimNotBound)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t)
			e.m.MarkSourcesSynced()
			e.start()
			e.m.UpdateSources(
				SourceUpdate{Source: "pod", Bundle: &manifest.Bundle{Pods: []*v1.Pod{pod}}},
				SourceUpdate{Source: "storage", Bundle: &manifest.Bundle{PersistentVolumes: []*v1.PersistentVolume{pv}, PersistentVolumeClaims: []*v1.PersistentVolumeClaim{claim}}},
			)
			e.waitFor("claim volume ready", e.stateIs("uid-1", "data", StateReady))
			dir := e.layout.PodVolumeDir("uid-1", fakePVPluginName, "pv-1")

			e.m.UpdateSources(SourceUpdate{Source: "storage", Bundle: tc.storage})
			e.never("a tear-down of a volume whose pod is still desired", func() bool { return e.pvPlugin.count(OperationTearDown, "pv-1") > 0 })
			if !exists(dir) {
				t.Error("the volume dir was removed")
			}
			pod, _ := e.m.Pod("uid-1")
			if len(pod.Volumes) != 1 {
				t.Fatalf("volumes = %+v, want one", pod.Volumes)
			}
			if v := pod.Volumes[0]; v.State != StatePending || v.Reason != tc.reason || !v.Desired || v.Path != dir || !strings.Contains(v.Message, "kept as set up") {
				t.Errorf("volume whose claim stopped resolving: %+v", v)
			}
			if s := e.m.Summary(); s.Volumes[StatePending] != 1 || len(s.Volumes) != 1 {
				t.Errorf("Summary().Volumes = %v, want 1 pending", s.Volumes)
			}

			// The claim resolves again: ready, without a new set-up.
			e.m.UpdateSources(SourceUpdate{Source: "storage", Bundle: &manifest.Bundle{PersistentVolumes: []*v1.PersistentVolume{pv}, PersistentVolumeClaims: []*v1.PersistentVolumeClaim{claim}}})
			e.waitFor("ready again", e.stateIs("uid-1", "data", StateReady))
			if n := e.pvPlugin.count(OperationSetUp, "pv-1"); n != 1 {
				t.Errorf("%d set-ups, want 1", n)
			}

			// The claim goes again, then the pod: the volume goes with the pod.
			e.m.UpdateSources(SourceUpdate{Source: "storage", Bundle: tc.storage})
			e.setPods("pod")
			e.waitFor("torn down with its pod", func() bool { return !exists(e.layout.PodDir("uid-1")) })
			if n := e.pvPlugin.count(OperationTearDown, "pv-1"); n != 1 {
				t.Errorf("%d tear-downs, want 1", n)
			}
		})
	}
}

// The names of pods that are gone are forgotten once their volumes and
// directory are, so that the Manager does not grow with every pod it saw.
func TestManagerForgetsThePodNamesOfPodsThatAreGone(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	unbound := v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "missing"}}}
	e.setPods("s", testPod("with-volume", "a", emptyDirVolume("v")), testPod("unresolved", "b", unbound), testPod("kept", "k", emptyDirVolume("v")))
	e.waitFor("ready", e.stateIs("with-volume", "v", StateReady))
	e.setPods("s", testPod("kept", "k", emptyDirVolume("v")))
	e.waitFor("pod dir removed", func() bool { return !exists(e.layout.PodDir("with-volume")) })
	e.waitFor("names of the pods that are gone forgotten", func() bool {
		e.m.mu.Lock()
		defer e.m.mu.Unlock()
		_, kept := e.m.podNames["kept"]
		return len(e.m.podNames) == 1 && kept && e.m.removing.Len() == 0
	})
	var named bool
	for _, ev := range e.m.Events() {
		named = named || (ev.Reason == ReasonTornDown && ev.PodUID == "with-volume" && ev.Pod == "default/a")
	}
	if !named {
		t.Errorf("the tear-down event does not name the pod: %+v", e.m.Events())
	}
}

func TestManagerBoundsEvents(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.MaxEvents = 3 })
	for i := range 8 {
		e.m.UpdateSources(SourceUpdate{Source: "s", Err: errors.New(string(rune('a' + i)))})
	}
	events := e.m.Events()
	if len(events) != 3 || events[0].Message != "f" || events[1].Message != "g" || events[2].Message != "h" {
		t.Errorf("events = %+v, want the last three", events)
	}
}

type fakeHooks struct {
	mu     sync.Mutex
	stages []hooks.Stage
	fail   map[hooks.Stage]int
}

func (h *fakeHooks) Run(_ context.Context, stage hooks.Stage, state hooks.VolumeState) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stages = append(h.stages, stage)
	if h.fail[stage] > 0 {
		h.fail[stage]--
		return volume.NewTransientError(errors.New(string(stage) + " hook failed for " + state.PodName + "/" + state.Volume))
	}
	return nil
}

func TestManagerRunsHooks(t *testing.T) {
	h := &fakeHooks{fail: map[hooks.Stage]int{hooks.PreSetUp: 1, hooks.PostSetUp: 1}}
	e := newTestEnv(t, func(c *Config) { c.Hooks = h })
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	e.waitFor("pre-hook failure", e.stateIs("uid-1", "v", StateFailed))
	if n := e.plugin.count(OperationSetUp, "v"); n != 0 {
		t.Errorf("SetUp ran %d times despite the failed pre-hook", n)
	}
	e.clock.Step(DefaultInitialBackoff)
	e.waitFor("ready", e.stateIs("uid-1", "v", StateReady))
	e.setPods("s")
	e.waitFor("torn down", func() bool { _, known := e.m.Pod("uid-1"); return !known })
	h.mu.Lock()
	got := slices.Clone(h.stages)
	h.mu.Unlock()
	want := []hooks.Stage{hooks.PreSetUp, hooks.PreSetUp, hooks.PostSetUp, hooks.PreTearDown, hooks.PostTearDown}
	if !slices.Equal(got, want) {
		t.Errorf("stages = %v, want %v", got, want)
	}
	var postFailed bool
	for _, ev := range e.m.Events() {
		postFailed = postFailed || (ev.Reason == "postSetUpHookFailed" && ev.Type == EventWarning)
	}
	if !postFailed {
		t.Errorf("no event for the failed post-hook: %+v", e.m.Events())
	}
}

func TestManagerChecksSizeLimits(t *testing.T) {
	e := newTestEnv(t)
	e.m.MarkSourcesSynced()
	e.start()
	vol := emptyDirVolume("v")
	vol.EmptyDir.SizeLimit = resource.NewQuantity(64<<10, resource.BinarySI)
	e.setPods("s", testPod("uid-1", "p", vol))
	e.waitFor("ready", e.stateIs("uid-1", "v", StateReady))
	big := filepath.Join(e.volumeDir("uid-1", "v"), "big")
	if err := os.WriteFile(big, make([]byte, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	e.m.CheckSizeLimits(context.Background())
	v := e.volume("uid-1", "v")
	if !v.SizeLimitExceeded || v.Reason != ReasonSizeLimitExceeded || v.Usage < 256<<10 || !strings.Contains(v.Message, "exceeds the limit \"64Ki\"") {
		t.Errorf("over the limit: %+v", v)
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	e.m.CheckSizeLimits(context.Background())
	if v := e.volume("uid-1", "v"); v.SizeLimitExceeded || v.Reason != "" {
		t.Errorf("under the limit again: %+v", v)
	}
}

func TestManagerChecksPluginHealth(t *testing.T) {
	e := newTestEnv(t)
	e.m.CheckPluginHealth(context.Background())
	plugins := e.m.Plugins()
	if len(plugins) != 2 {
		t.Fatalf("plugins = %+v", plugins)
	}
	byName := map[string]PluginStatus{}
	for _, p := range plugins {
		byName[p.Name] = p
	}
	if p := byName[fakePluginName]; !p.Checked || !p.Usable || p.Message != "checked test.io/fake" {
		t.Errorf("healthy plugin: %+v", p)
	}
	if p := byName[fakePVPluginName]; !p.Checked || p.Usable || !slices.Equal(p.AccessModes, []string{"ReadWriteOnce"}) {
		t.Errorf("unhealthy plugin: %+v", p)
	}
	if ev := e.m.Events(); len(ev) != 1 || ev[0].Reason != ReasonPluginUnhealthy {
		t.Errorf("events = %+v", ev)
	}
}

func TestRunOnceSetUp(t *testing.T) {
	e := newTestEnv(t)
	boom := errors.New("backend unavailable")
	e.plugin.script("final", &fakeBehavior{setUpErrs: []error{volume.Finalf("bad medium")}})
	e.plugin.script("flaky", &fakeBehavior{setUpErrs: []error{boom, boom, boom, boom}})
	pending := v1.Volume{Name: "claim", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "missing"}}}
	e.setPods("file", testPod("uid-1", "p", emptyDirVolume("ok"), emptyDirVolume("final"), emptyDirVolume("flaky"), pending))
	// A volume of the pod from an earlier run that the file no longer has.
	e.makeVolumeOnDisk("uid-1", "old", true)

	var reported []VolumeResult
	done := make(chan struct{})
	var results []VolumeResult
	var err error
	go func() {
		defer close(done)
		results, err = e.m.RunOnce(context.Background(), OneShotOptions{Report: func(r VolumeResult) { reported = append(reported, r) }})
	}()
	// Drive the fake clock through the backoffs.
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case <-time.After(5 * time.Millisecond):
			e.clock.Step(100 * time.Millisecond)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(results, reported, func(a, b VolumeResult) bool { return a == b }) {
		t.Errorf("reported %+v, returned %+v", reported, results)
	}
	byVolume := map[string]VolumeResult{}
	for _, r := range results {
		byVolume[r.Volume] = r
	}
	if len(results) != 5 {
		t.Errorf("%d results, want 5: %+v", len(results), results)
	}
	if r := byVolume["ok"]; !r.Ready || r.State != ResultReady || r.Pod != "default/p" || r.Plugin != fakePluginName || r.Path != e.volumeDir("uid-1", "ok") {
		t.Errorf("ok: %+v", r)
	}
	if r := byVolume["final"]; r.Ready || !r.Failed() || !strings.Contains(r.Error, "bad medium") {
		t.Errorf("final: %+v", r)
	}
	if r := byVolume["flaky"]; !r.Failed() || !strings.Contains(r.Error, "backend unavailable") {
		t.Errorf("flaky: %+v", r)
	}
	if n := e.plugin.count(OperationSetUp, "flaky"); n != DefaultOneShotAttempts {
		t.Errorf("flaky tried %d times, want %d", n, DefaultOneShotAttempts)
	}
	if n := e.plugin.count(OperationSetUp, "final"); n != 1 {
		t.Errorf("final tried %d times, want 1", n)
	}
	if r := byVolume["claim"]; !r.Failed() || !strings.Contains(r.Error, "ClaimNotFound") {
		t.Errorf("claim: %+v", r)
	}
	if r := byVolume["old"]; r.State != ResultTornDown || exists(e.volumeDir("uid-1", "old")) {
		t.Errorf("old: %+v", r)
	}
	if slices.IndexFunc(reported, func(r VolumeResult) bool { return r.Volume == "flaky" }) < slices.IndexFunc(reported, func(r VolumeResult) bool { return r.Volume == "final" }) {
		t.Errorf("flaky was reported before final, which settled first: %+v", reported)
	}

	// Tear it all down in another run scoped to the pod.
	e2 := newTestEnvAt(t, e, func(c *Config) { c.PodScope = func(uid types.UID) bool { return uid == "uid-1" } })
	e2.makeVolumeOnDisk("other-pod", "v", true)
	results, err = e2.m.RunOnce(context.Background(), OneShotOptions{Mode: OneShotTearDown})
	if err != nil {
		t.Fatal(err)
	}
	var tornDown []string
	for _, r := range results {
		if r.State != ResultTornDown {
			t.Errorf("teardown result %+v", r)
		}
		tornDown = append(tornDown, r.Volume)
	}
	// The failed volumes left nothing on disk: only ok is found to tear down.
	if !slices.Equal(tornDown, []string{"ok"}) {
		t.Errorf("torn down %q", tornDown)
	}
	if exists(e.layout.PodDir("uid-1")) {
		t.Error("pod dir left after teardown")
	}
	if !exists(e.volumeDir("other-pod", "v")) {
		t.Error("teardown of one pod touched another")
	}
}

// newTestEnvAt returns a new env over the same root and plugins as e.
func newTestEnvAt(t *testing.T, e *testEnv, configure ...func(*Config)) *testEnv {
	cfg := Config{Plugins: e.m.cfg.Plugins, Layout: e.layout, Mounter: e.mounter, Clock: e.clock}
	for _, c := range configure {
		c(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e2 := *e
	e2.m = m
	return &e2
}

// TestManagerCancelsTheSetUpOfARemovedPod removes a pod while its volume's
// set-up is blocked: the set-up's context is cancelled at once (long before
// the operation timeout, which the fake clock never reaches) and the volume
// is torn down.
func TestManagerCancelsTheSetUpOfARemovedPod(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.Executor.Timeout = 10 * time.Minute })
	e.m.MarkSourcesSynced()
	block := make(chan struct{})
	defer close(block)
	e.plugin.script("slow", &fakeBehavior{block: block, leaveDir: true})
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("slow")))
	e.waitFor("set-up to start", func() bool { return e.plugin.count(OperationSetUp, "slow") == 1 })
	e.setPods("s")
	e.waitFor("the set-up's context to end", func() bool {
		e.plugin.mu.Lock()
		defer e.plugin.mu.Unlock()
		return e.plugin.contexts["slow"].Err() != nil
	})
	e.plugin.mu.Lock()
	ctx := e.plugin.contexts["slow"]
	e.plugin.mu.Unlock()
	if !errors.Is(context.Cause(ctx), ErrNoLongerDesired) {
		t.Errorf("the set-up's context ended with %v, want ErrNoLongerDesired", context.Cause(ctx))
	}
	e.waitFor("the volume to be forgotten", func() bool {
		_, ok := e.m.Pod("uid-1")
		return !ok
	})
	if n := e.plugin.count(OperationSetUp, "slow"); n != 1 {
		t.Errorf("%d set-ups, want 1 (no retry after the cancel)", n)
	}
	if n := e.plugin.count(OperationTearDown, "slow"); n != 1 {
		t.Errorf("%d tear-downs of what the cancelled set-up left, want 1", n)
	}
}

// A source's Target places a volume outside the root dir; the target is
// kept on disk so that a restarted Manager, to which no source declares the
// volume any more, tears it down there.
func TestManagerSetsUpAtATargetAndTearsItDownAfterARestart(t *testing.T) {
	e := newTestEnv(t)
	target := filepath.Join(t.TempDir(), "kubelet", "mount")
	e.m.UpdateSources(SourceUpdate{
		Source:  "csi",
		Bundle:  &manifest.Bundle{Pods: []*v1.Pod{testPod("p", "web", emptyDirVolume("v"))}},
		Targets: map[types.UID]map[string]Target{"p": {"v": {Path: target}}},
	})
	e.m.MarkSourcesSynced()
	e.start()
	e.waitFor("set up at the target", e.stateIs("p", "v", StateReady))
	if got := e.volume("p", "v").Path; got != target {
		t.Errorf("status path = %q, want the target %q", got, target)
	}
	if !exists(target) || exists(e.volumeDir("p", "v")) {
		t.Errorf("target exists: %v, dir under the root exists: %v; want the target only", exists(target), exists(e.volumeDir("p", "v")))
	}

	// The agent dies; the source's record of the volume is gone when it
	// comes back.
	e.stop()
	m, err := New(e.m.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	e.start()
	e.m.MarkSourcesSynced()
	e.waitFor("torn down at the target and the pod dir removed", func() bool {
		return !exists(target) && !exists(e.layout.PodDir("p"))
	})
	if n := e.plugin.count(OperationTearDown, "v"); n != 1 {
		t.Errorf("%d tear-downs, want 1", n)
	}
}

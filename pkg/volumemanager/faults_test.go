package volumemanager

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/mount-utils"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/faults"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// These tests drive the Manager with the real emptyDir plugin, on a fake
// mounter, wrapped by a fault script (pkg/faults) as --fault-hooks-file
// does in the agent. The script and the Manager share one fake clock, so
// nothing sleeps for real.

// newFaultEnv returns a testEnv whose only plugin is emptyDir wrapped by ic.
func newFaultEnv(t *testing.T, clock *testingclock.FakeClock, ic faults.Interceptor, workers int) *testEnv {
	t.Helper()
	root := t.TempDir()
	e := &testEnv{t: t, root: root, layout: volume.Layout{Root: root}, clock: clock, mounter: mount.NewFakeMounter(nil)}
	_, plugins := volumetesting.NewFakeVolumeHost(t, root, faults.WrapPlugins(emptydir.ProbeVolumePlugins(), ic),
		volumetesting.FakeHostOptions{Mounter: e.mounter, Clock: clock})
	m, err := New(Config{Plugins: plugins, Layout: e.layout, Mounter: e.mounter, Clock: clock, Executor: ExecutorConfig{Workers: workers}})
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

func parseFaultScript(t *testing.T, clock *testingclock.FakeClock, src string) *faults.Script {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	script, err := faults.ParseScript(ctx, t.Name()+".yaml", []byte(src), faults.ScriptOptions{Clock: clock})
	if err != nil {
		t.Fatalf("ParseScript() error = %v", err)
	}
	return script
}

func (e *testEnv) emptyDirPath(uid types.UID, name string) string {
	return e.layout.PodVolumeDir(uid, emptydir.PluginName, name)
}

// stepAndPass steps the clock by d and waits for a reconciler pass at the
// new time. Trigger makes that pass certain: a step that lands while the
// loop re-arms its timer would otherwise wait for a step that never comes.
// (The Manager's own wake-up at a retry time is TestManagerRetriesWithBackoff's.)
func (e *testEnv) stepAndPass(d time.Duration) {
	e.t.Helper()
	e.clock.Step(d)
	now := e.clock.Now()
	e.m.Trigger()
	e.waitFor("a reconciler pass at "+now.Sub(testStart).String(), func() bool { return !e.m.Summary().LastPass.Before(now) })
}

func (e *testEnv) podIs(uid types.UID, state PodState) func() bool {
	return func() bool { pod, ok := e.m.Pod(uid); return ok && pod.State == state }
}

func (e *testEnv) podGone(uid types.UID) func() bool {
	return func() bool { _, known := e.m.Pod(uid); return !known && !exists(e.layout.PodDir(uid)) }
}

// faultCall is one operation an opRecorder saw.
type faultCall struct {
	op faults.Operation
	// at is the fake clock's time when the operation started.
	at time.Time
	// result is what the caller got: the fault, or the operation's result.
	result error
	done   bool
}

// opRecorder wraps an Interceptor (the script's) and records every
// operation that goes through it, the faulted ones included, so that a test
// sees each attempt the Manager made, when, and how it ended.
type opRecorder struct {
	clock *testingclock.FakeClock
	inner faults.Interceptor
	// gate, when set, is called in Pre before the inner interceptor.
	gate func()

	mu    sync.Mutex
	calls []faultCall
	// open indexes the call running on each volume.
	open               map[string]int
	inFlight, maxFlown int
	// overlaps counts operations started on a volume while another ran.
	overlaps int
}

func newOpRecorder(clock *testingclock.FakeClock, inner faults.Interceptor) *opRecorder {
	return &opRecorder{clock: clock, inner: inner, open: map[string]int{}}
}

func callKey(op faults.Operation) string { return string(op.PodUID) + "/" + op.Volume }

func (r *opRecorder) interceptor() faults.Interceptor {
	return faults.Interceptor{
		Pre: func(ctx context.Context, op faults.Operation) error {
			r.mu.Lock()
			if _, running := r.open[callKey(op)]; running {
				r.overlaps++
			}
			r.open[callKey(op)] = len(r.calls)
			r.calls = append(r.calls, faultCall{op: op, at: r.clock.Now()})
			r.inFlight++
			r.maxFlown = max(r.maxFlown, r.inFlight)
			r.mu.Unlock()
			if r.gate != nil {
				r.gate()
			}
			var err error
			if r.inner.Pre != nil {
				err = r.inner.Pre(ctx, op)
			}
			if err != nil {
				r.finish(op, err)
			}
			return err
		},
		Post: func(ctx context.Context, op faults.Operation, result error) error {
			if r.inner.Post != nil {
				result = r.inner.Post(ctx, op, result)
			}
			r.finish(op, result)
			return result
		},
	}
}

func (r *opRecorder) finish(op faults.Operation, result error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.open[callKey(op)]
	delete(r.open, callKey(op))
	r.calls[i].result, r.calls[i].done = result, true
	r.inFlight--
}

// of returns the calls of the operation name on one volume.
func (r *opRecorder) of(name string, uid types.UID, volName string) []faultCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []faultCall
	for _, c := range r.calls {
		if c.op.Name == name && c.op.PodUID == uid && c.op.Volume == volName {
			out = append(out, c)
		}
	}
	return out
}

func (r *opRecorder) count(name string, uid types.UID, volName string) int {
	return len(r.of(name, uid, volName))
}

// TestFaultScriptFailingTheFirstTwoSetUpsRetriesWithBackoff runs the example
// script examples/faults/fail-first-two-setups.yaml: the first two set-ups
// fail with a transient error, the Manager retries them 500ms after the
// first failure and 1s after the second, never earlier, and the third
// attempt sets the volume up.
func TestFaultScriptFailingTheFirstTwoSetUpsRetriesWithBackoff(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	clock := testingclock.NewFakeClock(testStart)
	script, err := faults.LoadScript(ctx, filepath.Join("..", "..", "examples", "faults", "fail-first-two-setups.yaml"), faults.ScriptOptions{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	rec := newOpRecorder(clock, script.Interceptor())
	e := newFaultEnv(t, clock, rec.interceptor(), 2)
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	setUps := func() int { return rec.count(faults.OpSetUp, "uid-1", "v") }

	backoffs := []time.Duration{DefaultInitialBackoff, 2 * DefaultInitialBackoff}
	for i, backoff := range backoffs {
		attempt := i + 1
		e.waitFor(fmt.Sprintf("failure of attempt %d", attempt), func() bool {
			v := e.volume("uid-1", "v")
			return v.State == StateFailed && v.Attempts == attempt
		})
		v := e.volume("uid-1", "v")
		wantErr := fmt.Sprintf("injected fault: set-up %d of default/p volume v fails on purpose", attempt)
		if v.ErrorClass != "transient" || !strings.Contains(v.LastError, wantErr) {
			t.Errorf("attempt %d: error %q (%s), want the script's transient error %q", attempt, v.LastError, v.ErrorClass, wantErr)
		}
		if got := v.NextRetry.Sub(clock.Now()); got != backoff {
			t.Errorf("attempt %d: next retry in %s, want %s", attempt, got, backoff)
		}
		if exists(e.emptyDirPath("uid-1", "v")) {
			t.Errorf("attempt %d: the volume dir exists although the script failed the set-up before it ran", attempt)
		}

		e.stepAndPass(backoff - time.Millisecond)
		e.never(fmt.Sprintf("a retry before %s", backoff), func() bool { return setUps() > attempt })
		if v := e.volume("uid-1", "v"); v.State != StateFailed || v.Attempts != attempt {
			t.Errorf("1ms before the retry: state %s, attempts %d; want failed, %d", v.State, v.Attempts, attempt)
		}
		e.stepAndPass(time.Millisecond)
		e.waitFor(fmt.Sprintf("retry %d", attempt), func() bool { return setUps() > attempt })
	}
	e.waitFor("ready", e.stateIs("uid-1", "v", StateReady))

	calls := rec.of(faults.OpSetUp, "uid-1", "v")
	if len(calls) != 3 {
		t.Fatalf("%d set-ups, want 3", len(calls))
	}
	for i, c := range calls[:2] {
		if !c.done || c.result == nil || !strings.Contains(c.result.Error(), "fails on purpose") || volume.ClassOf(c.result) != volume.Transient {
			t.Errorf("set-up %d ended with %v, want the script's transient error", i+1, c.result)
		}
	}
	if !calls[2].done || calls[2].result != nil {
		t.Errorf("set-up 3 ended with %v, want success", calls[2].result)
	}
	for i, want := range backoffs {
		if got := calls[i+1].at.Sub(calls[i].at); got != want {
			t.Errorf("set-up %d started %s after set-up %d, want %s (the agent's backoff)", i+2, got, i+1, want)
		}
	}
	if v := e.volume("uid-1", "v"); v.Attempts != 0 || v.LastError != "" || !exists(v.Path) || v.Path != e.emptyDirPath("uid-1", "v") {
		t.Errorf("after the third set-up: %+v; want the volume at %s and no error", v, e.emptyDirPath("uid-1", "v"))
	}
	var reasons []string
	for _, ev := range e.m.Events() {
		reasons = append(reasons, ev.Reason)
	}
	if want := []string{ReasonSetUpFailed, ReasonSetUpFailed, ReasonSetUp}; !slices.Equal(reasons, want) {
		t.Errorf("events %q, want %q", reasons, want)
	}
}

// TestFaultScriptFinalErrorStopsRetries: a final error from the script is
// not retried however long the clock runs, although a retry would succeed;
// the status says failed with the script's error. A changed spec is tried
// again at once.
func TestFaultScriptFinalErrorStopsRetries(t *testing.T) {
	clock := testingclock.NewFakeClock(testStart)
	script := parseFaultScript(t, clock, `
globals: |
  var setUps = 0;
setUpStart: |
  setUps++;
  setUps === 1 ? ({error: FINAL, message: "medium Tape is not supported"}) : OK;
`)
	rec := newOpRecorder(clock, script.Interceptor())
	e := newFaultEnv(t, clock, rec.interceptor(), 2)
	e.m.MarkSourcesSynced()
	e.start()
	e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
	setUps := func() int { return rec.count(faults.OpSetUp, "uid-1", "v") }

	e.waitFor("failure", e.stateIs("uid-1", "v", StateFailed))
	v := e.volume("uid-1", "v")
	if v.ErrorClass != "final" || !strings.Contains(v.LastError, "injected fault: medium Tape is not supported") ||
		v.Reason != ReasonSetUpFailed || v.Message != v.LastError || v.Attempts != 1 || !v.NextRetry.IsZero() {
		t.Errorf("after a final error: %+v; want failed with the script's final error, attempt 1 and no next retry", v)
	}
	if pod, _ := e.m.Pod("uid-1"); pod.State != PodFailed {
		t.Errorf("pod state %s, want failed", pod.State)
	}

	// Run the clock well past the longest backoff, with a reconciler pass
	// at every step.
	for range 10 {
		e.stepAndPass(25 * time.Second)
		if n := setUps(); n != 1 {
			t.Fatalf("%s after a final error: %d set-ups, want 1", clock.Since(testStart), n)
		}
	}
	if clock.Since(testStart) <= 2*DefaultMaxBackoff {
		t.Fatalf("the clock ran %s, not well past the max backoff %s", clock.Since(testStart), DefaultMaxBackoff)
	}
	e.never("a retry of a final error", func() bool { return setUps() > 1 })
	if v := e.volume("uid-1", "v"); v.State != StateFailed || v.ErrorClass != "final" {
		t.Errorf("after %s: state %s (%s), want still failed (final)", clock.Since(testStart), v.State, v.ErrorClass)
	}

	// The script would let a second set-up succeed: a changed spec gets it at once.
	changed := emptyDirVolume("v")
	changed.EmptyDir.SizeLimit = resource.NewQuantity(1<<20, resource.BinarySI)
	e.setPods("s", testPod("uid-1", "p", changed))
	e.waitFor("ready after the spec changed", e.stateIs("uid-1", "v", StateReady))
	if n := setUps(); n != 2 {
		t.Errorf("%d set-ups, want 2", n)
	}
}

// TestFaultScriptUncertainSetUpIsTornDownWhenThePodGoes: an uncertain error
// leaves the volume uncertain (the agent cannot know what the set-up did),
// so when the pod is removed the Manager tears it down, whether the fault
// replaced the set-up (Start) or its result (End, the set-up done).
func TestFaultScriptUncertainSetUpIsTornDownWhenThePodGoes(t *testing.T) {
	tests := map[string]struct {
		script string
		// setUpRan says whether the set-up happened before the fault.
		setUpRan bool
	}{
		"at Start, the set-up not run": {
			script:   `setUpStart: '({error: UNCERTAIN, message: "backend did not answer"})'`,
			setUpRan: false,
		},
		"at End, the set-up done": {
			script:   `setUpEnd: 'op.error === null ? ({error: UNCERTAIN, message: "lost the reply"}) : OK'`,
			setUpRan: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			clock := testingclock.NewFakeClock(testStart)
			rec := newOpRecorder(clock, parseFaultScript(t, clock, tc.script).Interceptor())
			e := newFaultEnv(t, clock, rec.interceptor(), 2)
			e.m.MarkSourcesSynced()
			e.start()
			e.setPods("s", testPod("uid-1", "p", emptyDirVolume("v")))
			path := e.emptyDirPath("uid-1", "v")

			e.waitFor("failure", e.stateIs("uid-1", "v", StateFailed))
			if v := e.volume("uid-1", "v"); v.ErrorClass != "uncertain" {
				t.Errorf("after the fault: %q (%s), want an uncertain error", v.LastError, v.ErrorClass)
			}
			e.m.mu.Lock()
			actual := e.m.volumes[VolumeKey{PodUID: "uid-1", Plugin: emptydir.PluginName, Name: "v"}].actual
			e.m.mu.Unlock()
			if actual != actualUncertain {
				t.Errorf("actual state %d, want uncertain (%d)", actual, actualUncertain)
			}
			if exists(path) != tc.setUpRan {
				t.Errorf("volume dir exists: %v, want %v", exists(path), tc.setUpRan)
			}
			e.never("a tear-down while the pod is desired", func() bool { return rec.count(faults.OpTearDown, "uid-1", "v") > 0 })

			e.setPods("s")
			e.waitFor("pod torn down and forgotten", e.podGone("uid-1"))
			tearDowns := rec.of(faults.OpTearDown, "uid-1", "v")
			if len(tearDowns) != 1 || !tearDowns[0].done || tearDowns[0].result != nil {
				t.Errorf("tear-downs %+v, want one that succeeded", tearDowns)
			}
			if exists(path) {
				t.Errorf("volume dir %s left after the tear-down", path)
			}
			if n := rec.count(faults.OpSetUp, "uid-1", "v"); n != 1 {
				t.Errorf("%d set-ups, want 1 (the clock never reached the retry)", n)
			}
		})
	}
}

// TestFaultScriptUnderConcurrentOperations sets up many pods' volumes at
// once, with several workers, through one script whose JavaScript state
// every operation updates. Run with -race: the script's VM must be shared
// safely. The first `workers` set-ups are held until all of them are in
// flight, so that they reach the script together.
func TestFaultScriptUnderConcurrentOperations(t *testing.T) {
	const (
		workers       = 4
		pods          = 6
		volumesPerPod = 2
		volumes       = pods * volumesPerPod
	)
	clock := testingclock.NewFakeClock(testStart)
	script := parseFaultScript(t, clock, `
globals: |
  var calls = 0;      // set-ups, of every volume
  var attempts = {};  // set-ups, per pod and volume
setUpStart: |
  calls++;
  var key = op.podUID + "/" + op.volume;
  attempts[key] = (attempts[key] || 0) + 1;
  attempts[key] === 1 ? ({error: TRANSIENT, message: "first set-up of " + key}) : OK;
setUpEnd: |
  var key = op.podUID + "/" + op.volume;
  attempts[key] === 2 ? OK : ({error: FINAL, message: "set-up of " + key + " ran at attempt " + attempts[key]});
tallyStart: |
  ({error: FINAL, message: "calls=" + calls});
`)
	rec := newOpRecorder(clock, script.Interceptor())
	allIn := make(chan struct{})
	arrived := 0
	var gateMu sync.Mutex
	var gateTimedOut bool
	rec.gate = func() {
		gateMu.Lock()
		if arrived >= workers {
			gateMu.Unlock()
			return
		}
		arrived++
		if arrived == workers {
			close(allIn)
		}
		gateMu.Unlock()
		select {
		case <-allIn:
		case <-time.After(10 * time.Second):
			gateMu.Lock()
			gateTimedOut = true
			gateMu.Unlock()
		}
	}
	e := newFaultEnv(t, clock, rec.interceptor(), workers)
	e.m.MarkSourcesSynced()
	e.start()

	var podList []*v1.Pod
	for i := range pods {
		var vols []v1.Volume
		for j := range volumesPerPod {
			vols = append(vols, emptyDirVolume(fmt.Sprintf("v%d", j)))
		}
		podList = append(podList, testPod(types.UID(fmt.Sprintf("uid-%d", i)), fmt.Sprintf("p%d", i), vols...))
	}
	e.setPods("s", podList...)

	allVolumes := func(pred func(VolumeStatus) bool) func() bool {
		return func() bool {
			vols := e.m.Volumes()
			return len(vols) == volumes && !slices.ContainsFunc(vols, func(v VolumeStatus) bool { return !pred(v) })
		}
	}
	e.waitFor("every first set-up failed", allVolumes(func(v VolumeStatus) bool { return v.State == StateFailed && v.Attempts == 1 }))
	gateMu.Lock()
	if gateTimedOut {
		t.Errorf("%d set-ups were never in flight at once", workers)
	}
	gateMu.Unlock()
	e.stepAndPass(DefaultInitialBackoff)
	e.waitFor("every pod ready", func() bool {
		for _, pod := range podList {
			if !e.podIs(pod.UID, PodReady)() {
				return false
			}
		}
		return true
	})

	for _, pod := range podList {
		for _, vol := range pod.Spec.Volumes {
			calls := rec.of(faults.OpSetUp, pod.UID, vol.Name)
			wantFirst := fmt.Sprintf("injected fault: first set-up of %s/%s", pod.UID, vol.Name)
			if len(calls) != 2 || calls[0].result == nil || !strings.Contains(calls[0].result.Error(), wantFirst) ||
				volume.ClassOf(calls[0].result) != volume.Transient || !calls[1].done || calls[1].result != nil {
				t.Errorf("%s/%s: set-ups %+v, want a transient failure %q then a success", pod.UID, vol.Name, calls, wantFirst)
			}
			if !exists(e.emptyDirPath(pod.UID, vol.Name)) {
				t.Errorf("%s/%s: volume dir missing", pod.UID, vol.Name)
			}
		}
	}

	// The script counted every set-up exactly once.
	_, ctx := ktesting.NewTestContext(t)
	tally := script.Evaluate(ctx, faults.Operation{Name: "tally", Stage: faults.Start}, nil)
	if want := fmt.Sprintf("calls=%d", 2*volumes); tally.Err == nil || !strings.HasSuffix(tally.Err.Error(), want) {
		t.Errorf("the script's tally: %v, want %s", tally.Err, want)
	}
	rec.mu.Lock()
	maxFlown, overlaps := rec.maxFlown, rec.overlaps
	rec.mu.Unlock()
	if maxFlown != workers {
		t.Errorf("at most %d set-ups in flight, want %d (the workers)", maxFlown, workers)
	}
	if overlaps != 0 {
		t.Errorf("%d operations overlapped on one volume", overlaps)
	}
	for _, ev := range e.m.Events() {
		if strings.Contains(ev.Message, "fault script snippet") {
			t.Errorf("the script failed: %s", ev.Message)
		}
	}
}

package volumemanager

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

var testStart = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestExecutor(t *testing.T, workers int, timeout time.Duration) (*operationExecutor, *testingclock.FakeClock) {
	t.Helper()
	fakeClock := testingclock.NewFakeClock(testStart)
	e := newOperationExecutor(ExecutorConfig{Workers: workers, Timeout: timeout, Clock: fakeClock})
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)
	t.Cleanup(func() {
		cancel()
		e.Wait()
	})
	return e, fakeClock
}

// runAndWait runs op on e and returns its result.
func runAndWait(t *testing.T, e *operationExecutor, key VolumeKey, kind OperationKind, fn func(context.Context) error) OperationResult {
	t.Helper()
	results := make(chan OperationResult, 1)
	if err := e.Run(&Operation{Key: key, Kind: kind, Run: fn, Done: func(r OperationResult) { results <- r }}); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("operation %s on %s did not finish", kind, key)
	}
	return OperationResult{}
}

func testKey(name string) VolumeKey {
	return VolumeKey{PodUID: "pod-1", Plugin: "test/fake", Name: name}
}

func TestExecutorNeverOverlapsOperationsOnOneVolume(t *testing.T) {
	e, _ := newTestExecutor(t, 4, time.Minute)
	key := testKey("vol")
	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan OperationResult, 1)
	if err := e.Run(&Operation{Key: key, Kind: OperationSetUp, Run: func(context.Context) error {
		close(started)
		<-release
		return nil
	}, Done: func(r OperationResult) { done <- r }}); err != nil {
		t.Fatalf("first Run() = %v", err)
	}
	<-started
	for _, kind := range []OperationKind{OperationSetUp, OperationTearDown} {
		if err := e.Run(&Operation{Key: key, Kind: kind, Run: func(context.Context) error { return nil }}); !errors.Is(err, ErrOperationPending) {
			t.Errorf("Run(%s) while another runs = %v, want ErrOperationPending", kind, err)
		}
	}
	if !e.IsPending(key) {
		t.Errorf("IsPending() = false while the operation runs")
	}
	// Another volume runs meanwhile.
	other := runAndWait(t, e, testKey("other"), OperationSetUp, func(context.Context) error { return nil })
	if other.Err != nil {
		t.Errorf("operation on another volume failed: %v", other.Err)
	}
	close(release)
	<-done
	if e.IsPending(key) {
		t.Errorf("IsPending() = true after the operation finished")
	}
	if r := runAndWait(t, e, key, OperationTearDown, func(context.Context) error { return nil }); r.Err != nil {
		t.Errorf("tear-down after set-up finished = %v", r.Err)
	}
}

func TestExecutorBoundsParallelism(t *testing.T) {
	const workers = 3
	e, _ := newTestExecutor(t, workers, time.Minute)
	var running, maxRunning atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := range 10 {
		wg.Add(1)
		err := e.Run(&Operation{Key: testKey(string(rune('a' + i))), Kind: OperationSetUp, Run: func(context.Context) error {
			n := running.Add(1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			return nil
		}, Done: func(OperationResult) { wg.Done() }})
		if err != nil {
			t.Fatalf("Run() = %v", err)
		}
	}
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return running.Load() == workers, nil
	}); err != nil {
		t.Fatalf("never saw %d operations running at once: %d", workers, running.Load())
	}
	close(release)
	wg.Wait()
	if got := maxRunning.Load(); got != workers {
		t.Errorf("at most %d operations ran at once, want %d", got, workers)
	}
}

func TestExecutorBackoff(t *testing.T) {
	e, fakeClock := newTestExecutor(t, 1, time.Minute)
	key := testKey("vol")
	failing := func(context.Context) error { return errors.New("boom") }

	want := []time.Duration{
		500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, 64 * time.Second, 122 * time.Second, 122 * time.Second,
	}
	for i, wantDelay := range want {
		r := runAndWait(t, e, key, OperationSetUp, failing)
		if r.Attempt != i+1 {
			t.Errorf("failure %d: Attempt = %d", i+1, r.Attempt)
		}
		if got := r.NextRetry.Sub(r.Finished); got != wantDelay {
			t.Errorf("failure %d: backoff = %s, want %s", i+1, got, wantDelay)
		}
		if r.Class != volume.Transient {
			t.Errorf("failure %d: class = %s, want transient", i+1, r.Class)
		}
		// Too early: refused with the retry time.
		fakeClock.Step(wantDelay - time.Millisecond)
		var backoffErr *BackoffError
		if err := e.Run(&Operation{Key: key, Kind: OperationSetUp, Run: failing}); !errors.As(err, &backoffErr) || !backoffErr.NextRetry.Equal(r.NextRetry) {
			t.Fatalf("failure %d: Run() before the retry time = %v, want a BackoffError until %s", i+1, err, r.NextRetry)
		}
		// A tear-down of the same volume is not held back by the set-up's backoff.
		if i == 0 {
			if td := runAndWait(t, e, key, OperationTearDown, func(context.Context) error { return errors.New("td") }); td.Err == nil {
				t.Fatal("tear-down should have failed")
			}
		}
		fakeClock.Step(time.Millisecond)
	}
	if next, failures := e.NextRetry(key, OperationSetUp); failures != len(want) || next.IsZero() {
		t.Errorf("NextRetry() = %s, %d; want a time and %d", next, failures, len(want))
	}

	// Success resets the backoff.
	if r := runAndWait(t, e, key, OperationSetUp, func(context.Context) error { return nil }); r.Err != nil || r.Attempt != len(want)+1 {
		t.Fatalf("success: err %v, attempt %d; want nil, %d", r.Err, r.Attempt, len(want)+1)
	}
	r := runAndWait(t, e, key, OperationSetUp, failing)
	if got := r.NextRetry.Sub(r.Finished); got != 500*time.Millisecond || r.Attempt != 1 {
		t.Errorf("after success: backoff %s at attempt %d, want 500ms at 1", got, r.Attempt)
	}
	e.ResetBackoff(key, OperationSetUp)
	if err := e.Run(&Operation{Key: key, Kind: OperationSetUp, Run: func(context.Context) error { return nil }}); err != nil {
		t.Errorf("Run() after ResetBackoff = %v", err)
	}
}

func TestExecutorKeepsErrorClasses(t *testing.T) {
	e, _ := newTestExecutor(t, 1, time.Minute)
	tests := map[string]struct {
		err  error
		want volume.ErrorClass
	}{
		"plain":     {err: errors.New("x"), want: volume.Transient},
		"transient": {err: volume.NewTransientError(errors.New("x")), want: volume.Transient},
		"final":     {err: volume.Finalf("bad medium %q", "Tape"), want: volume.Final},
		"uncertain": {err: volume.NewUncertainError(errors.New("x")), want: volume.Uncertain},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := runAndWait(t, e, testKey(name), OperationSetUp, func(context.Context) error { return tc.err })
			if r.Class != tc.want || !errors.Is(r.Err, tc.err) {
				t.Errorf("got class %s, err %v; want %s, %v", r.Class, r.Err, tc.want, tc.err)
			}
		})
	}
}

func TestExecutorTimeout(t *testing.T) {
	const timeout = 30 * time.Second
	for _, tc := range []struct {
		kind OperationKind
		want volume.ErrorClass
	}{
		{OperationSetUp, volume.Uncertain},
		{OperationTearDown, volume.Transient},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			e, fakeClock := newTestExecutor(t, 1, timeout)
			results := make(chan OperationResult, 1)
			var sawCause atomic.Value
			err := e.Run(&Operation{Key: testKey("slow"), Kind: tc.kind, Run: func(ctx context.Context) error {
				<-ctx.Done()
				sawCause.Store(context.Cause(ctx))
				return ctx.Err()
			}, Done: func(r OperationResult) { results <- r }})
			if err != nil {
				t.Fatal(err)
			}
			if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				return fakeClock.HasWaiters(), nil
			}); err != nil {
				t.Fatal("the operation's timer was never set")
			}
			fakeClock.Step(timeout - time.Second)
			select {
			case r := <-results:
				t.Fatalf("operation ended before its timeout: %+v", r)
			case <-time.After(50 * time.Millisecond):
			}
			fakeClock.Step(time.Second)
			r := <-results
			if !r.TimedOut || r.Cancelled || !errors.Is(r.Err, ErrOperationTimeout) || r.Class != tc.want {
				t.Errorf("got TimedOut %v, Cancelled %v, err %v, class %s; want a timeout of class %s", r.TimedOut, r.Cancelled, r.Err, r.Class, tc.want)
			}
			if cause, _ := sawCause.Load().(error); !errors.Is(cause, ErrOperationTimeout) {
				t.Errorf("the operation's context cause = %v, want ErrOperationTimeout", cause)
			}
			if got := r.NextRetry.Sub(r.Finished); got != DefaultInitialBackoff {
				t.Errorf("backoff after a timeout = %s, want %s", got, DefaultInitialBackoff)
			}
		})
	}
}

func TestExecutorCancellation(t *testing.T) {
	fakeClock := testingclock.NewFakeClock(testStart)
	e := newOperationExecutor(ExecutorConfig{Workers: 1, Clock: fakeClock})
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)

	results := make(chan OperationResult, 2)
	started := make(chan struct{})
	done := func(r OperationResult) { results <- r }
	if err := e.Run(&Operation{Key: testKey("running"), Kind: OperationSetUp, Run: func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}, Done: done}); err != nil {
		t.Fatal(err)
	}
	<-started
	var queuedRan atomic.Bool
	if err := e.Run(&Operation{Key: testKey("queued"), Kind: OperationSetUp, Run: func(context.Context) error {
		queuedRan.Store(true)
		return nil
	}, Done: done}); err != nil {
		t.Fatal(err)
	}
	cancel()
	e.Wait()
	got := map[string]OperationResult{}
	for range 2 {
		r := <-results
		got[r.Key.Name] = r
	}
	if r := got["running"]; !r.Cancelled || r.TimedOut || !errors.Is(r.Err, context.Canceled) || !r.NextRetry.IsZero() {
		t.Errorf("running operation: %+v; want cancelled with no backoff", r)
	}
	if r := got["queued"]; !r.Cancelled || queuedRan.Load() {
		t.Errorf("queued operation: ran %v, result %+v; want dropped as cancelled", queuedRan.Load(), r)
	}
	if err := e.Run(&Operation{Key: testKey("late"), Kind: OperationSetUp, Run: func(context.Context) error { return nil }}); err == nil {
		t.Error("Run() after stop = nil, want an error")
	}
}

func TestExecutorRecoversFromPanics(t *testing.T) {
	e, _ := newTestExecutor(t, 1, time.Minute)
	r := runAndWait(t, e, testKey("panic"), OperationSetUp, func(context.Context) error { panic("plugin bug") })
	if r.Err == nil || r.Class != volume.Transient {
		t.Errorf("got %v (%s), want a transient error", r.Err, r.Class)
	}
	if r := runAndWait(t, e, testKey("after"), OperationSetUp, func(context.Context) error { return nil }); r.Err != nil {
		t.Errorf("executor broken after a panic: %v", r.Err)
	}
}

func TestLockRoot(t *testing.T) {
	root := t.TempDir() + "/root"
	unlock, err := LockRoot(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockRoot(root, 50*time.Millisecond); !errors.Is(err, ErrRootLocked) {
		t.Errorf("second LockRoot() = %v, want ErrRootLocked", err)
	}
	unlock()
	unlock2, err := LockRoot(root, 0)
	if err != nil {
		t.Errorf("LockRoot() after unlock = %v", err)
	} else {
		unlock2()
	}
}

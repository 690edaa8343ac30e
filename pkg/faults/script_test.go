package faults

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2/ktesting"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
)

func parse(t *testing.T, src string, opts ScriptOptions) *Script {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	script, err := ParseScript(ctx, "test.yaml", []byte(src), opts)
	if err != nil {
		t.Fatalf("ParseScript() error = %v", err)
	}
	return script
}

var setUpOp = Operation{Name: OpSetUp, Plugin: emptydir.PluginName, Volume: "data", PodUID: "pod-uid", Stage: Start}

// TestExampleScriptFailsTheFirstTwoSetUps runs examples/faults against the
// wrapped emptyDir plugin.
func TestExampleScriptFailsTheFirstTwoSetUps(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	clock := testingclock.NewFakeClock(time.Now())
	script, err := LoadScript(ctx, filepath.Join("..", "..", "examples", "faults", "fail-first-two-setups.yaml"), ScriptOptions{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	plugin := newWrappedEmptyDir(t, script.Interceptor())

	for call := 1; call <= 2; call++ {
		builder, err := setUp(t, plugin, "data")
		if err == nil || volume.ClassOf(err) != volume.Transient {
			t.Fatalf("SetUp %d = %v, want a transient error", call, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("injected fault: set-up %d of default/web volume data fails on purpose", call)) {
			t.Errorf("SetUp %d error %q does not say which call and volume it failed", call, err)
		}
		if exists(builder.GetPath()) {
			t.Fatalf("SetUp %d ran although the script failed it", call)
		}
	}
	builder, err := setUp(t, plugin, "data")
	if err != nil || !exists(builder.GetPath()) {
		t.Fatalf("third SetUp = %v (volume made: %v), want success", err, exists(builder.GetPath()))
	}
	// Another volume has its own count.
	if _, err := setUp(t, plugin, "other"); err == nil {
		t.Errorf("first SetUp of another volume succeeded, want it failed")
	}

	// The tear-down waits out the script's delay on the clock.
	done := make(chan error, 1)
	go func() { done <- tearDown(t, plugin, "data") }()
	if err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return clock.HasWaiters(), nil
	}); err != nil {
		t.Fatal("TearDown did not wait on the clock")
	}
	select {
	case err := <-done:
		t.Fatalf("TearDown returned %v before its delay", err)
	default:
	}
	clock.Step(100 * time.Millisecond)
	if err := <-done; err != nil || exists(builder.GetPath()) {
		t.Errorf("TearDown after the delay = %v, volume left: %v", err, exists(builder.GetPath()))
	}
}

func TestOutcomes(t *testing.T) {
	tests := map[string]struct {
		snippet   string
		wantClass *volume.ErrorClass
		wantDelay time.Duration
		wantMsg   string
	}{
		"undefined": {snippet: "var x = 1;"},
		"null":      {snippet: "null"},
		"OK":        {snippet: "OK"},
		"ok string": {snippet: `"ok"`},
		"transient": {snippet: "TRANSIENT", wantClass: ptrTo(volume.Transient), wantMsg: `injected fault: setUpStart returned "transient"`},
		"final":     {snippet: `"final"`, wantClass: ptrTo(volume.Final)},
		"uncertain": {snippet: "UNCERTAIN", wantClass: ptrTo(volume.Uncertain)},
		"object with message": {
			snippet:   `({error: FINAL, message: "bad " + op.volume + " in " + op.podUID + " of " + op.plugin})`,
			wantClass: ptrTo(volume.Final), wantMsg: "injected fault: bad data in pod-uid of kubernetes.io/empty-dir",
		},
		"delay string":        {snippet: `({delay: "1500ms"})`, wantDelay: 1500 * time.Millisecond},
		"delay milliseconds":  {snippet: `({delay: 250})`, wantDelay: 250 * time.Millisecond},
		"delay then an error": {snippet: `({delay: "1s", error: "uncertain"})`, wantDelay: time.Second, wantClass: ptrTo(volume.Uncertain)},
		"last value of an if": {
			snippet:   "if (op.name === 'setUp') { 'final' } else { 'ok' }",
			wantClass: ptrTo(volume.Final),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			script := parse(t, "setUpStart: "+quote(tc.snippet), ScriptOptions{})
			outcome := script.Evaluate(ctx, setUpOp, nil)
			if outcome.Delay != tc.wantDelay {
				t.Errorf("delay = %s, want %s", outcome.Delay, tc.wantDelay)
			}
			if tc.wantClass == nil {
				if outcome.Err != nil {
					t.Errorf("error = %v, want none", outcome.Err)
				}
				return
			}
			if outcome.Err == nil || volume.ClassOf(outcome.Err) != *tc.wantClass {
				t.Fatalf("error = %v, want a %s error", outcome.Err, *tc.wantClass)
			}
			if errors.As(outcome.Err, new(*ScriptError)) {
				t.Errorf("error %v is a script error, want an injected fault", outcome.Err)
			}
			if tc.wantMsg != "" && outcome.Err.Error() != tc.wantMsg {
				t.Errorf("error = %q, want %q", outcome.Err, tc.wantMsg)
			}
		})
	}
}

func ptrTo(c volume.ErrorClass) *volume.ErrorClass { return &c }

// quote makes src a YAML double-quoted string.
func quote(src string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(src) + `"`
}

func TestValuesThatSelectNothingFailTheOperation(t *testing.T) {
	for name, tc := range map[string]struct {
		snippet string
		want    string
	}{
		"a number":                 {snippet: "4", want: "returned 4"},
		"an unknown class":         {snippet: `"flaky"`, want: `returned "flaky"`},
		"an unknown field":         {snippet: `({error: "final", code: 3})`, want: `unknown field "code"`},
		"an unknown error class":   {snippet: `({error: "fatal"})`, want: `returned error: "fatal"`},
		"a message with no error":  {snippet: `({message: "hi"})`, want: "returned a message but no error"},
		"a bad delay":              {snippet: `({delay: "soon"})`, want: `invalid duration "soon"`},
		"a negative delay":         {snippet: `({delay: -5})`, want: "is negative"},
		"a function":               {snippet: "(function() {})", want: "returned function"},
		"an error that is no text": {snippet: `({error: 2})`, want: "not a string"},
	} {
		t.Run(name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			script := parse(t, "setUpStart: "+quote(tc.snippet), ScriptOptions{})
			err := script.Evaluate(ctx, setUpOp, nil).Err
			var scriptErr *ScriptError
			if !errors.As(err, &scriptErr) || volume.ClassOf(err) != volume.Transient {
				t.Fatalf("error = %v, want a transient *ScriptError", err)
			}
			if scriptErr.Snippet != "setUpStart" || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to name setUpStart and contain %q", err, tc.want)
			}
		})
	}
}

func TestThrowingSnippetReportsItsLineAndFailsOnlyThatOperation(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	script := parse(t, `
globals: |
  var calls = 0;
  function check(v) {
    if (v === "boom") {
      throw new Error("helper refused " + v);
    }
    return OK;
  }
setUpStart: |
  calls++;
  if (calls === 1) {
    notDefined();
  }
  check(op.volume)
tearDownStart: |
  calls
`, ScriptOptions{})

	err := script.Evaluate(ctx, setUpOp, nil).Err
	var scriptErr *ScriptError
	if !errors.As(err, &scriptErr) || volume.ClassOf(err) != volume.Transient {
		t.Fatalf("first set-up error = %v, want a transient *ScriptError", err)
	}
	if scriptErr.Location != "setUpStart line 3" || !strings.Contains(scriptErr.Message, "notDefined is not defined") {
		t.Errorf("script error = %+v, want ReferenceError at setUpStart line 3", scriptErr)
	}
	if !strings.Contains(err.Error(), "setUpStart line 3") {
		t.Errorf("error %q does not show the line", err)
	}

	// The VM goes on: the counter kept counting, and the next call passes.
	if err := script.Evaluate(ctx, setUpOp, nil).Err; err != nil {
		t.Errorf("second set-up error = %v, want none", err)
	}

	boom := setUpOp
	boom.Volume = "boom"
	err = script.Evaluate(ctx, boom, nil).Err
	if !errors.As(err, &scriptErr) || scriptErr.Location != "globals line 4" || !strings.Contains(scriptErr.Message, "helper refused boom") {
		t.Errorf("error = %v (%+v), want the throw at globals line 4", err, scriptErr)
	}

	// tearDownStart returns the counter, a number: it selects nothing, but
	// shows the state persisted across snippets.
	tearDownOp := setUpOp
	tearDownOp.Name = OpTearDown
	if err := script.Evaluate(ctx, tearDownOp, nil).Err; err == nil || !strings.Contains(err.Error(), "returned 3") {
		t.Errorf("tearDownStart error = %v, want it to have seen 3 set-ups", err)
	}
}

func TestRunawaySnippetIsStopped(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	script := parse(t, "setUpStart: |\n  while (op.volume === 'loop') {}\n  OK\n", ScriptOptions{EvalTimeout: 50 * time.Millisecond})
	loop := setUpOp
	loop.Volume = "loop"
	err := script.Evaluate(ctx, loop, nil).Err
	if !errors.As(err, new(*ScriptError)) || !strings.Contains(err.Error(), "stopped after 50ms") {
		t.Fatalf("error = %v, want the snippet stopped after 50ms", err)
	}
	if err := script.Evaluate(ctx, setUpOp, nil).Err; err != nil {
		t.Errorf("the VM is not usable after a stopped snippet: %v", err)
	}
}

func TestEndSnippetSeesTheResult(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	script := parse(t, `
setUpEnd: |
  op.error === null ? {error: UNCERTAIN, message: "succeeded but reported lost"} : {error: FINAL, message: op.errorClass + ": " + op.error}
`, ScriptOptions{})
	ic := script.Interceptor()
	end := setUpOp
	end.Stage = End

	err := ic.Post(ctx, end, nil)
	if !volume.IsUncertain(err) || !strings.Contains(err.Error(), "succeeded but reported lost") {
		t.Errorf("Post(success) = %v, want the uncertain fault", err)
	}
	err = ic.Post(ctx, end, volume.NewTransientError(errors.New("disk full")))
	if !volume.IsFinal(err) || !strings.Contains(err.Error(), "transient: disk full") {
		t.Errorf("Post(transient failure) = %v, want a final error naming the original", err)
	}

	passThrough := parse(t, "setUpEnd: OK\n", ScriptOptions{}).Interceptor()
	original := volume.NewFinalError(errors.New("real failure"))
	if err := passThrough.Post(ctx, end, original); err != original {
		t.Errorf("Post with OK = %v, want the operation's own result", err)
	}
}

func TestDelayStopsWithTheContext(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	clock := testingclock.NewFakeClock(time.Now())
	ic := parse(t, `setUpStart: '({delay: "1h"})'`, ScriptOptions{Clock: clock}).Interceptor()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ic.Pre(ctx, setUpOp) }()
	if err := wait.PollUntilContextTimeout(t.Context(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return clock.HasWaiters(), nil
	}); err != nil {
		t.Fatal("Pre did not wait on the clock")
	}
	cancel()
	err := <-done
	if volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), "injected delay of 1h0m0s interrupted: context canceled") {
		t.Errorf("Pre = %v, want a transient error for the interrupted delay", err)
	}

	// With the context already done, either the snippet is stopped or, if it
	// finished first, its delay is: both fail the operation, transiently.
	err = ic.Pre(ctx, setUpOp)
	if err == nil || volume.ClassOf(err) != volume.Transient || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Pre with a done context = %v, want a transient error naming the cancellation", err)
	}
}

func TestParseScriptErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		src  string
		want []string
	}{
		"not a map":         {src: "- setUpStart", want: []string{"cannot unmarshal"}},
		"key without stage": {src: "setUp: OK\n", want: []string{`key "setUp": must be "globals", or an operation in lower camel case followed by Start or End`}},
		"capitalised key":   {src: "SetUpStart: OK\n", want: []string{`key "SetUpStart"`}},
		"syntax error": {
			src:  "tearDownEnd: |\n  var a = 1;\n  if (a {\n",
			want: []string{`key "tearDownEnd"`, "tearDownEnd: Line 2"},
		},
		"globals throw": {
			src:  "globals: |\n  var a = 1;\n  a.b.c = 2;\n",
			want: []string{"fault script snippet globals failed at globals line 2", "TypeError"},
		},
		"every bad key at once": {src: "a: x\nb: y\n", want: []string{`key "a"`, `key "b"`}},
	} {
		t.Run(name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			_, err := ParseScript(ctx, "faults.yaml", []byte(tc.src), ScriptOptions{})
			if err == nil {
				t.Fatal("ParseScript() succeeded, want an error")
			}
			if !strings.Contains(err.Error(), `invalid fault script "faults.yaml"`) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestSnippetsForOtherOperationsAreAccepted(t *testing.T) {
	script := parse(t, "globals: var n = 0;\ngitCloneStart: OK\nsnapshotEnd: OK\n", ScriptOptions{})
	if got := strings.Join(script.Snippets(), ","); got != "gitCloneStart,globals,snapshotEnd" {
		t.Errorf("Snippets() = %s", got)
	}
}

// TestConcurrentEvaluation runs many operations at once through one script;
// with -race it proves the VM is locked, and the count proves no call was lost.
func TestConcurrentEvaluation(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	script := parse(t, `
globals: |
  var calls = 0;
setUpStart: |
  calls++;
  calls % 3 === 0 ? TRANSIENT : OK
tearDownStart: |
  calls
`, ScriptOptions{})
	ic := script.Interceptor()
	const workers, perWorker = 8, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := 0
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := setUpOp
			op.Volume = fmt.Sprintf("vol-%d", w)
			for range perWorker {
				if err := ic.around(ctx, op, func() error { return nil }); err != nil {
					mu.Lock()
					failures++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if want := workers * perWorker / 3; failures != want {
		t.Errorf("%d of %d set-ups failed, want exactly %d", failures, workers*perWorker, want)
	}
	tearDownOp := setUpOp
	tearDownOp.Name = OpTearDown
	if err := script.Evaluate(ctx, tearDownOp, nil).Err; err == nil || !strings.Contains(err.Error(), fmt.Sprintf("returned %d", workers*perWorker)) {
		t.Errorf("counter = %v, want %d calls counted", err, workers*perWorker)
	}
}

func TestConsoleLog(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	script := parse(t, "setUpStart: console.log('setting up', op.volume, 3); OK\n", ScriptOptions{})
	if err := script.Evaluate(ctx, setUpOp, nil).Err; err != nil {
		t.Errorf("Evaluate() = %v", err)
	}
}

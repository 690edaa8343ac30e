package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// writeHook writes def as the hook file dir/name.
func writeHook(t *testing.T, dir, name string, def File) {
	t.Helper()
	data, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// recordingHook returns a hook that appends "<tag> <stdin>" as one line to log.
func recordingHook(program, tag, log string, stages ...Stage) File {
	return File{
		Version: Version,
		Hook:    Command{Path: program, Args: []string{"record", tag}, Env: []string{"LOG=" + log}},
		When:    When{Always: ptr.To(true)},
		Stages:  stages,
	}
}

const recordScript = `printf '%s ' "$1" >> "$LOG"
/bin/cat >> "$LOG"
echo >> "$LOG"
`

// loggedTags returns the tags that recording hooks wrote to log, in order.
func loggedTags(t *testing.T, log string) []string {
	t.Helper()
	data, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		tag, _, _ := strings.Cut(line, " ")
		tags = append(tags, tag)
	}
	return tags
}

func hookNames(status Status) []string {
	var names []string
	for _, hook := range status.Hooks {
		names = append(names, hook.Name)
	}
	return names
}

var testState = VolumeState{
	PodNamespace: "default",
	PodName:      "web",
	PodUID:       "0b7d4c1e-1111-2222-3333-444455556666",
	Volume:       "data",
	Plugin:       "kubernetes.io/empty-dir",
	Path:         "/var/lib/volume-agent/pods/0b7d4c1e-1111-2222-3333-444455556666/volumes/kubernetes.io~empty-dir/data",
	Annotations:  map[string]string{"example.com/backup": "true"},
}

func TestLoadOrderOverrideMaskAndProblems(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	program := writeScript(t, root, "hook.sh", "exit 0\n")
	vendor := filepath.Join(root, "usr")
	admin := filepath.Join(root, "etc")
	missing := filepath.Join(root, "missing")
	hook := recordingHook(program, "x", "/dev/null", PreSetUp)

	writeHook(t, vendor, "10-a.json", hook)
	writeHook(t, vendor, "20-b.json", hook)
	writeHook(t, vendor, "30-c.json", hook)
	writeHook(t, admin, "05-z.json", hook)
	adminB := hook
	adminB.Stages = []Stage{PostSetUp}
	writeHook(t, admin, "20-b.json", adminB)
	// An empty file masks the vendor's hook of the same name.
	if err := os.WriteFile(filepath.Join(admin, "30-c.json"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// An invalid file among valid ones is skipped and reported.
	if err := os.WriteFile(filepath.Join(admin, "15-bad.json"), []byte(`{"version": "1.0.0", "hook": {"path": "relative"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(admin, "README"), []byte("not a hook"), 0o644); err != nil {
		t.Fatal(err)
	}

	var loads []Status
	m := New(ctx, Options{Directories: []string{vendor, admin, missing}, OnLoad: func(s Status) { loads = append(loads, s) }})
	status := m.Status()

	if want := []string{"05-z.json", "10-a.json", "20-b.json"}; !slices.Equal(hookNames(status), want) {
		t.Errorf("hooks = %v, want %v", hookNames(status), want)
	}
	for _, h := range status.Hooks {
		if h.Name == "20-b.json" {
			if h.Source != filepath.Join(admin, "20-b.json") || !slices.Equal(h.Definition.Stages, []Stage{PostSetUp}) {
				t.Errorf("20-b.json was read from %s with stages %v, want the override in %s", h.Source, h.Definition.Stages, admin)
			}
		}
	}
	if len(status.Problems) != 1 || status.Problems[0].Path != filepath.Join(admin, "15-bad.json") {
		t.Fatalf("problems = %+v, want one for 15-bad.json", status.Problems)
	}
	for _, want := range []string{`hook.path: Invalid value: "relative"`, "when: Required value", "stages: Required value"} {
		if !strings.Contains(status.Problems[0].Message, want) {
			t.Errorf("problem %q does not contain %q", status.Problems[0].Message, want)
		}
	}
	if want := []string{filepath.Join(admin, "README")}; !slices.Equal(status.Ignored, want) {
		t.Errorf("ignored = %v, want %v", status.Ignored, want)
	}
	if want := []string{filepath.Join(admin, "30-c.json")}; !slices.Equal(status.Masked, want) {
		t.Errorf("masked = %v, want %v", status.Masked, want)
	}
	if len(loads) != 1 || len(loads[0].Problems) != 1 {
		t.Errorf("OnLoad saw %d loads (%+v), want one with the problem", len(loads), loads)
	}
	if !slices.Equal(status.Directories, []string{vendor, admin, missing}) {
		t.Errorf("directories = %v", status.Directories)
	}
}

func TestRunOrderAndStdin(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	program := writeScript(t, root, "record.sh", recordScript)
	dir := filepath.Join(root, "hooks.d")
	log := filepath.Join(root, "log")
	writeHook(t, dir, "20-second.json", recordingHook(program, "second", log, PreSetUp, PostSetUp))
	writeHook(t, dir, "10-first.json", recordingHook(program, "first", log, PreSetUp))
	other := recordingHook(program, "other-plugin", log, PreSetUp)
	other.When = When{Plugins: []string{`kubernetes\.io/git-repo`}}
	writeHook(t, dir, "15-other.json", other)
	m := New(ctx, Options{Directories: []string{dir}})

	if err := m.Run(ctx, PreSetUp, testState); err != nil {
		t.Fatalf("Run(preSetUp) failed: %v", err)
	}
	if got, want := loggedTags(t, log), []string{"first", "second"}; !slices.Equal(got, want) {
		t.Fatalf("hooks ran as %v, want %v", got, want)
	}

	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	firstLine := strings.SplitN(string(data), "\n", 2)[0]
	var got StdinState
	if err := json.Unmarshal([]byte(strings.TrimPrefix(firstLine, "first ")), &got); err != nil {
		t.Fatalf("stdin %q is not JSON: %v", firstLine, err)
	}
	want := StdinState{Version: Version, Stage: PreSetUp, VolumeState: testState}
	if got.Version != want.Version || got.Stage != want.Stage || got.PodNamespace != "default" || got.PodName != "web" ||
		got.PodUID != testState.PodUID || got.Volume != "data" || got.Plugin != testState.Plugin ||
		got.Path != testState.Path || got.Annotations["example.com/backup"] != "true" {
		t.Errorf("stdin = %+v, want %+v", got, want)
	}
	for _, key := range []string{`"podNamespace"`, `"podName"`, `"podUID"`, `"volume"`, `"plugin"`, `"path"`, `"stage"`, `"annotations"`} {
		if !strings.Contains(firstLine, key) {
			t.Errorf("stdin %s lacks %s", firstLine, key)
		}
	}

	if err := m.Run(ctx, PostTearDown, testState); err != nil {
		t.Fatalf("Run(postTearDown) with no hooks failed: %v", err)
	}
	if err := m.Run(ctx, Stage("prestart"), testState); err == nil || !strings.Contains(err.Error(), `unknown stage "prestart"`) {
		t.Errorf("Run(prestart) = %v, want an unknown stage error", err)
	}
}

func TestRunEnvironmentIsOnlyTheHooks(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	t.Setenv("AGENT_SECRET", "do-not-leak")
	root := t.TempDir()
	out := filepath.Join(root, "env")
	program := writeScript(t, root, "env.sh", `/usr/bin/env > "$OUT"`+"\n")
	dir := filepath.Join(root, "hooks.d")
	writeHook(t, dir, "10-env.json", File{
		Version: Version,
		Hook:    Command{Path: program, Env: []string{"OUT=" + out, "HOOK_SETTING=on"}},
		When:    When{Always: ptr.To(true)},
		Stages:  []Stage{PostSetUp},
	})
	m := New(ctx, Options{Directories: []string{dir}})
	if err := m.Run(ctx, PostSetUp, testState); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimSpace(string(data)), "\n")
	if !slices.Contains(env, "HOOK_SETTING=on") {
		t.Errorf("hook env %v lacks HOOK_SETTING=on", env)
	}
	for _, entry := range env {
		if strings.HasPrefix(entry, "AGENT_SECRET=") || strings.HasPrefix(entry, "HOME=") {
			t.Errorf("hook got the agent's %s", entry)
		}
	}
}

func TestRunPreStageFailureIsTransientAndStops(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	log := filepath.Join(root, "log")
	failing := writeScript(t, root, "fail.sh", "echo checking >&2\necho backup service unreachable >&2\nexit 3\n")
	recorder := writeScript(t, root, "record.sh", recordScript)
	dir := filepath.Join(root, "hooks.d")
	writeHook(t, dir, "10-fail.json", File{
		Version: Version, Hook: Command{Path: failing},
		When: When{Always: ptr.To(true)}, Stages: []Stage{PreSetUp, PreTearDown},
	})
	writeHook(t, dir, "20-after.json", recordingHook(recorder, "after", log, PreSetUp, PreTearDown))
	m := New(ctx, Options{Directories: []string{dir}})

	for _, stage := range []Stage{PreSetUp, PreTearDown} {
		t.Run(string(stage), func(t *testing.T) {
			err := m.Run(ctx, stage, testState)
			if err == nil {
				t.Fatal("Run succeeded, want the hook's failure")
			}
			if volume.ClassOf(err) != volume.Transient || !errors.As(err, new(*volume.OperationError)) {
				t.Errorf("error %v is not a transient operation error", err)
			}
			var hookErr *HookError
			if !errors.As(err, &hookErr) || hookErr.Hook != "10-fail.json" || hookErr.Stage != stage {
				t.Errorf("error %v does not name hook 10-fail.json at %s", err, stage)
			}
			for _, want := range []string{"exit status 3", "backup service unreachable"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tags := loggedTags(t, log); len(tags) != 0 {
				t.Errorf("hooks after the failing one ran: %v", tags)
			}
		})
	}
}

func TestRunPostStageFailureIsReportedAndOthersRun(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	log := filepath.Join(root, "log")
	failing := writeScript(t, root, "fail.sh", "echo notify failed >&2\nexit 1\n")
	recorder := writeScript(t, root, "record.sh", recordScript)
	dir := filepath.Join(root, "hooks.d")
	for _, name := range []string{"10-fail.json", "30-fail.json"} {
		writeHook(t, dir, name, File{
			Version: Version, Hook: Command{Path: failing},
			When: When{Always: ptr.To(true)}, Stages: []Stage{PostSetUp},
		})
	}
	writeHook(t, dir, "20-ok.json", recordingHook(recorder, "ok", log, PostSetUp))
	m := New(ctx, Options{Directories: []string{dir}})

	err := m.Run(ctx, PostSetUp, testState)
	if err == nil {
		t.Fatal("Run succeeded, want the hooks' failures")
	}
	if errors.As(err, new(*volume.OperationError)) {
		t.Errorf("post-stage error %v carries an operation error class; it must only be reported", err)
	}
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) || len(agg.Errors()) != 2 {
		t.Fatalf("error %v is not an aggregate of the two failures", err)
	}
	for i, want := range []string{"10-fail.json", "30-fail.json"} {
		var hookErr *HookError
		if !errors.As(agg.Errors()[i], &hookErr) || hookErr.Hook != want || hookErr.Stage != PostSetUp {
			t.Errorf("failure %d = %v, want hook %s at postSetUp", i, agg.Errors()[i], want)
		}
	}
	if got := loggedTags(t, log); !slices.Equal(got, []string{"ok"}) {
		t.Errorf("hooks that ran after the failure: %v, want [ok]", got)
	}
}

// processGone reports whether pid has exited (a zombie counts as exited).
func processGone(pid string) bool {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

func TestRunTimeoutKillsTheProcessGroup(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	pidFile := filepath.Join(root, "child.pid")
	// The hook starts a child that holds its stdout, then blocks.
	program := writeScript(t, root, "hang.sh", `/bin/sleep 300 &
echo $! > "$PIDFILE"
exec /bin/sleep 300
`)
	dir := filepath.Join(root, "hooks.d")
	writeHook(t, dir, "10-hang.json", File{
		Version: Version, Hook: Command{Path: program, Env: []string{"PIDFILE=" + pidFile}, Timeout: ptr.To(1)},
		When: When{Always: ptr.To(true)}, Stages: []Stage{PreSetUp},
	})
	m := New(ctx, Options{Directories: []string{dir}})

	err := m.Run(ctx, PreSetUp, testState)
	if err == nil || !strings.Contains(err.Error(), "timed out after 1s and was killed") {
		t.Fatalf("Run = %v, want a timeout", err)
	}
	if volume.ClassOf(err) != volume.Transient {
		t.Errorf("timeout of a pre-stage hook is %s, want transient", volume.ClassOf(err))
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the hook did not record its child: %v", err)
	}
	pid := strings.TrimSpace(string(data))
	t.Cleanup(func() {
		// Leave nothing behind even when the kill under test failed.
		if n, err := strconv.Atoi(pid); err == nil && !processGone(pid) {
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
	})
	// SIGKILL is delivered asynchronously; give it a bounded moment.
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		return processGone(pid), nil
	}); err != nil {
		t.Errorf("the hook's child %s survived the timeout", pid)
	}
}

func TestRunStopsWhenContextIsCancelled(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	program := writeScript(t, root, "hang.sh", "exec /bin/sleep 300\n")
	dir := filepath.Join(root, "hooks.d")
	writeHook(t, dir, "10-hang.json", File{
		Version: Version, Hook: Command{Path: program},
		When: When{Always: ptr.To(true)}, Stages: []Stage{PostTearDown},
	})
	m := New(ctx, Options{Directories: []string{dir}})
	runCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := m.Run(runCtx, PostTearDown, testState)
	if err == nil || !strings.Contains(err.Error(), "was stopped: context deadline exceeded") {
		t.Errorf("Run = %v, want it stopped with its context", err)
	}
}

func TestWatchReloadsOnChange(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	root := t.TempDir()
	program := writeScript(t, root, "hook.sh", "exit 0\n")
	vendor := filepath.Join(root, "usr")
	// The admin directory does not exist yet: its creation must be seen.
	admin := filepath.Join(root, "etc")
	writeHook(t, vendor, "10-a.json", recordingHook(program, "a", "/dev/null", PreSetUp))

	var mu sync.Mutex
	loads := 0
	m := New(ctx, Options{Directories: []string{vendor, admin}, OnLoad: func(Status) { mu.Lock(); loads++; mu.Unlock() }})
	done, err := m.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })

	waitFor := func(what string, cond func(Status) bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return cond(m.Status()), nil
		}); err != nil {
			t.Fatalf("%s: status stayed %+v", what, m.Status())
		}
	}
	hasHooks := func(names ...string) func(Status) bool {
		return func(s Status) bool { return slices.Equal(hookNames(s), names) }
	}

	writeHook(t, vendor, "20-b.json", recordingHook(program, "b", "/dev/null", PreSetUp))
	waitFor("a new file is loaded", hasHooks("10-a.json", "20-b.json"))

	if err := os.WriteFile(filepath.Join(vendor, "20-b.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("a file that became invalid is reported and skipped", func(s Status) bool {
		return hasHooks("10-a.json")(s) && len(s.Problems) == 1 && s.Problems[0].Path == filepath.Join(vendor, "20-b.json")
	})

	if err := os.Remove(filepath.Join(vendor, "20-b.json")); err != nil {
		t.Fatal(err)
	}
	waitFor("a removed file is dropped", func(s Status) bool { return hasHooks("10-a.json")(s) && len(s.Problems) == 0 })

	override := recordingHook(program, "a2", "/dev/null", PostTearDown)
	writeHook(t, admin, "10-a.json", override)
	waitFor("a file in a directory created later overrides", func(s Status) bool {
		return hasHooks("10-a.json")(s) && s.Hooks[0].Source == filepath.Join(admin, "10-a.json")
	})

	writeHook(t, admin, "30-c.json", recordingHook(program, "c", "/dev/null", PreSetUp))
	waitFor("a file added to the new directory is loaded", hasHooks("10-a.json", "30-c.json"))

	mu.Lock()
	defer mu.Unlock()
	if loads < 5 {
		t.Errorf("OnLoad was called %d times, want one per reload (at least 5)", loads)
	}
}

// BenchmarkRunNoMatchingHook measures what hooks cost a volume operation when
// 50 hooks are loaded and none applies to it.
func BenchmarkRunNoMatchingHook(b *testing.B) {
	_, ctx := ktesting.NewTestContext(b)
	root := b.TempDir()
	program := filepath.Join(root, "hook.sh")
	if err := os.WriteFile(program, []byte("#!/bin/sh\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(root, "hooks.d")
	for i := range 50 {
		data, err := json.Marshal(File{
			Version: Version, Hook: Command{Path: program},
			When:   When{Plugins: []string{`example\.com/other`}, Annotations: map[string]string{`backup\..*`: "true"}},
			Stages: []Stage{PreSetUp},
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)+".json"), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	m := New(ctx, Options{Directories: []string{dir}})
	if n := len(m.Status().Hooks); n != 50 {
		b.Fatalf("loaded %d hooks, want 50", n)
	}
	for b.Loop() {
		if err := m.Run(ctx, PreSetUp, testState); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHugeTimeoutIsSkippedAndSetUpRuns pins down that a timeout too large for a
// duration is a bad hook file like any other: reported, skipped, and the other
// hooks still run instead of every set-up failing at once.
func TestHugeTimeoutIsSkippedAndSetUpRuns(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	log := filepath.Join(root, "log")
	recorder := writeScript(t, root, "record.sh", recordScript)
	dir := filepath.Join(root, "hooks.d")
	huge := recordingHook(recorder, "huge", log, PreSetUp)
	huge.Hook.Timeout = ptr.To(10000000000)
	writeHook(t, dir, "10-huge.json", huge)
	writeHook(t, dir, "20-ok.json", recordingHook(recorder, "ok", log, PreSetUp))
	m := New(ctx, Options{Directories: []string{dir}})

	status := m.Status()
	if len(status.Problems) != 1 || status.Problems[0].Path != filepath.Join(dir, "10-huge.json") {
		t.Fatalf("problems = %+v, want one for 10-huge.json", status.Problems)
	}
	if want := "hook.timeout: Invalid value: 10000000000: must be at most 3600 seconds"; !strings.Contains(status.Problems[0].Message, want) {
		t.Errorf("problem %q does not contain %q", status.Problems[0].Message, want)
	}
	if err := m.Run(ctx, PreSetUp, testState); err != nil {
		t.Fatalf("Run() failed: %v", err)
	}
	if tags := loggedTags(t, log); !slices.Equal(tags, []string{"ok"}) {
		t.Errorf("hooks run = %v, want [ok]", tags)
	}
}

package source

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

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// fakeSink keeps what each source says, as the volume manager would.
type fakeSink struct {
	mu      sync.Mutex
	calls   int
	bundles map[string]*manifest.Bundle
	errs    map[string]error
}

func newFakeSink() *fakeSink {
	return &fakeSink{bundles: map[string]*manifest.Bundle{}, errs: map[string]error{}}
}

func (s *fakeSink) UpdateSources(updates ...volumemanager.SourceUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	for _, u := range updates {
		switch {
		case u.Removed:
			delete(s.bundles, u.Source)
			delete(s.errs, u.Source)
		case u.Err != nil:
			s.errs[u.Source] = u.Err
		default:
			s.bundles[u.Source] = u.Bundle
			delete(s.errs, u.Source)
		}
	}
}

func (s *fakeSink) SourceOf(uid types.UID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, b := range s.bundles {
		for _, pod := range b.Pods {
			if pod.UID == uid {
				return name
			}
		}
	}
	return ""
}

// podNames returns "source: ns/name" of every pod, sorted.
func (s *fakeSink) podNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, b := range s.bundles {
		for _, pod := range b.Pods {
			out = append(out, filepath.Base(strings.TrimPrefix(name, "file:"))+": "+pod.Namespace+"/"+pod.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (s *fakeSink) errorOf(source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs[source]
}

func podManifest(name string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + "}\nspec:\n  volumes:\n  - name: v\n    emptyDir: {}\n"
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDirSync(t *testing.T) {
	dir := t.TempDir()
	sink := newFakeSink()
	d, err := NewDir(dir, sink, DirOptions{Prefix: "file:"})
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "a.yaml", podManifest("a"))
	write(t, dir, "b.json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{}}`)
	write(t, dir, ".hidden.yaml", podManifest("hidden"))
	write(t, dir, "notes.txt", "not a manifest")
	write(t, dir, "a.yaml.swp", "junk")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := sink.podNames(), []string{"a.yaml: default/a", "b.json: default/b"}; !slices.Equal(got, want) {
		t.Errorf("pods = %q, want %q", got, want)
	}

	// Unchanged files are not sent again.
	calls := sink.calls
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if sink.calls != calls {
		t.Error("a sync without changes updated the sink")
	}

	// A broken file keeps its pods and reports the error; the others change freely.
	aPath := write(t, dir, "a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a\n")
	write(t, dir, "b.json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b2"},"spec":{}}`)
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := sink.podNames(), []string{"a.yaml: default/a", "b.json: default/b2"}; !slices.Equal(got, want) {
		t.Errorf("after a bad write: pods = %q, want %q", got, want)
	}
	if err := sink.errorOf("file:" + aPath); err == nil || !strings.Contains(err.Error(), "a.yaml") {
		t.Errorf("error of a.yaml = %v", err)
	}
	// An invalid (not only undecodable) file is refused the same way.
	write(t, dir, "c.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec:\n  volumes:\n  - name: Bad_Name\n    emptyDir: {}\n")
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sink.errorOf("file:" + filepath.Join(dir, "c.yaml")); err == nil || !strings.Contains(err.Error(), "spec.volumes[0].name") {
		t.Errorf("error of c.yaml = %v", err)
	}

	// Fixed, and removed.
	write(t, dir, "a.yaml", podManifest("a3"))
	if err := os.Remove(filepath.Join(dir, "b.json")); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := sink.podNames(), []string{"a.yaml: default/a3"}; !slices.Equal(got, want) {
		t.Errorf("after fix and removal: pods = %q, want %q", got, want)
	}
	if err := sink.errorOf("file:" + aPath); err != nil {
		t.Errorf("error of a.yaml after the fix = %v", err)
	}
}

func TestDirMissingPathAndSingleFile(t *testing.T) {
	dir := t.TempDir()
	sink := newFakeSink()
	missing := filepath.Join(dir, "missing")
	d, _ := NewDir(missing, sink, DirOptions{Prefix: "file:"})
	if err := d.Sync(context.Background()); err == nil || sink.errorOf("file:"+missing) == nil {
		t.Errorf("Sync() of a missing dir = %v, source error %v", err, sink.errorOf("file:"+missing))
	}
	if err := os.Mkdir(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(context.Background()); err != nil || sink.errorOf("file:"+missing) != nil {
		t.Errorf("after the dir appeared: %v, %v", err, sink.errorOf("file:"+missing))
	}

	file := write(t, dir, "one.yaml", podManifest("one"))
	write(t, dir, "other.yaml", podManifest("other"))
	single, _ := NewDir(file, sink, DirOptions{Prefix: "file:"})
	if err := single.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sink.podNames(); !slices.Equal(got, []string{"one.yaml: default/one"}) {
		t.Errorf("pods = %q", got)
	}
}

// runDir runs d, without resyncs, until the test ends, and returns a
// function that waits for the sink to hold the pods want (as podNames).
func runDir(t *testing.T, path string, sink *fakeSink) func(want ...string) {
	t.Helper()
	d, err := NewDir(path, sink, DirOptions{Prefix: "file:", ResyncPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return func(want ...string) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return slices.Equal(sink.podNames(), want), nil
		}); err != nil {
			t.Fatalf("pods = %q, want %q", sink.podNames(), want)
		}
	}
}

func TestDirRunFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	waitPods := runDir(t, dir, newFakeSink())
	// Run watches, then reads: a file written before or after the watch
	// is in place is seen either way.
	write(t, dir, "a.yaml", podManifest("a"))
	waitPods("a.yaml: default/a")
	// An atomic rename, as editors and config managers write.
	tmp := write(t, dir, ".a.yaml.tmp", podManifest("a2"))
	if err := os.Rename(tmp, filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitPods("a.yaml: default/a2")
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitPods()
}

func TestAPIApplyAndDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "api")
	sink := newFakeSink()
	api, err := NewAPI(dir, sink, manifest.Options{NodeName: "node"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := api.Sync(ctx); err != nil {
		t.Fatalf("Sync() of a missing dir = %v", err)
	}

	_, err = api.Apply(ctx, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  volumes:\n  - {name: a, emptyDir: {}}\n  - {name: a, emptyDir: {}}\n"))
	var invalid *InvalidManifestError
	if !errors.As(err, &invalid) || !strings.Contains(err.Error(), "spec.volumes[1].name") {
		t.Errorf("Apply(invalid) = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Error("an invalid apply created the API dir")
	}

	applied, err := api.Apply(ctx, []byte(podManifest("web")))
	if err != nil || len(applied.Pods) != 1 || applied.Pods[0].Name != "web" || applied.Pods[0].UID == "" {
		t.Fatalf("Apply() = %+v, %v", applied, err)
	}
	uid := applied.Pods[0].UID
	if got := sink.SourceOf(uid); !strings.HasPrefix(got, APIPrefix) {
		t.Errorf("SourceOf(%s) = %q", uid, got)
	}
	again, err := api.Apply(ctx, []byte(podManifest("web")))
	if err != nil || again.Pods[0].UID != uid {
		t.Errorf("applying the same pod again gave %+v, %v; want UID %s", again, err, uid)
	}

	// A restarted agent finds the pod again, with the same UID.
	sink2 := newFakeSink()
	api2, _ := NewAPI(dir, sink2, manifest.Options{NodeName: "node"})
	if err := api2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sink2.SourceOf(uid); got == "" {
		t.Errorf("after a restart the pod %s is not declared", uid)
	}

	// Pods of other sources are not the API's to change.
	sink.UpdateSources(volumemanager.SourceUpdate{Source: "file:/etc/pods/x.yaml", Bundle: mustLoad(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: filed, uid: filed-uid}\nspec: {}\n")})
	if err := api.Delete(ctx, "filed-uid"); !errors.Is(err, ErrPodNotFromAPI) {
		t.Errorf("Delete(pod of a file) = %v", err)
	}
	if _, err := api.Apply(ctx, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: filed, uid: filed-uid}\nspec: {}\n")); !errors.Is(err, ErrPodNotFromAPI) {
		t.Errorf("Apply(pod of a file) = %v", err)
	}
	if err := api.Delete(ctx, "nope"); !errors.Is(err, ErrPodNotFound) {
		t.Errorf("Delete(unknown) = %v", err)
	}
	if err := api.Delete(ctx, uid); err != nil {
		t.Fatal(err)
	}
	if got := sink.SourceOf(uid); got != "" {
		t.Errorf("after Delete the pod comes from %q", got)
	}
}

func mustLoad(t *testing.T, content string) *manifest.Bundle {
	t.Helper()
	b, err := manifest.Load(strings.NewReader(content), "test", manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A manifest rewritten in place is empty for a moment: read then, it must
// not make its pods go.
func TestDirKeepsThePodsOfAFileThatHoldsNoObject(t *testing.T) {
	for name, content := range map[string]string{
		"empty":         "",
		"comments only": "# being rewritten\n",
		"empty docs":    "---\n---\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			sink := newFakeSink()
			d, _ := NewDir(dir, sink, DirOptions{Prefix: "file:"})
			path := write(t, dir, "a.yaml", podManifest("a"))
			ctx := context.Background()
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			write(t, dir, "a.yaml", content)
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got := sink.podNames(); !slices.Equal(got, []string{"a.yaml: default/a"}) {
				t.Errorf("pods after the file was emptied = %q, want a kept", got)
			}
			if err := sink.errorOf("file:" + path); err == nil || !strings.Contains(err.Error(), "holds no object") {
				t.Errorf("error of the emptied file = %v", err)
			}
			write(t, dir, "a.yaml", podManifest("a2"))
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got := sink.podNames(); !slices.Equal(got, []string{"a.yaml: default/a2"}) || sink.errorOf("file:"+path) != nil {
				t.Errorf("after the rewrite: pods %q, error %v", got, sink.errorOf("file:"+path))
			}
		})
	}
}

func TestDebouncerWaitsForQuietWithACap(t *testing.T) {
	fired := func(b *debouncer) bool {
		select {
		case <-b.C():
			b.fired()
			return true
		default:
			return false
		}
	}
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := &debouncer{clock: clk, delay: 20 * time.Millisecond, maxDelay: time.Second}
	defer b.stop()
	if b.C() != nil {
		t.Fatal("C() is set before any event")
	}
	// Events 15 ms apart: no read while they keep coming.
	b.event()
	for range 3 {
		clk.Step(15 * time.Millisecond)
		if fired(b) {
			t.Fatal("fired 15 ms after an event")
		}
		b.event()
	}
	clk.Step(19 * time.Millisecond)
	if fired(b) {
		t.Fatal("fired 19 ms after the last event")
	}
	clk.Step(time.Millisecond)
	if !fired(b) {
		t.Fatal("not fired 20 ms after the last event")
	}
	if b.C() != nil {
		t.Fatal("C() is set after the burst ended")
	}

	// A file written without pause is still read, maxDelay after the first
	// event, and a new burst starts after that.
	b.event()
	for i := 0; ; i++ {
		if i*10 > 1000 {
			t.Fatal("never fired while events kept coming")
		}
		clk.Step(10 * time.Millisecond)
		if fired(b) {
			if i*10 < 990 {
				t.Fatalf("fired after %d ms, before the cap", (i+1)*10)
			}
			break
		}
		b.event()
	}
	b.event()
	clk.Step(20 * time.Millisecond)
	if !fired(b) {
		t.Fatal("the next burst did not fire")
	}
}

// A change made between the initial Sync and Run, before the watch is in
// place, is seen at once, not at the next resync.
func TestDirRunSeesChangesMadeBeforeItStarted(t *testing.T) {
	dir := t.TempDir()
	sink := newFakeSink()
	d, _ := NewDir(dir, sink, DirOptions{Prefix: "file:", ResyncPeriod: time.Hour})
	write(t, dir, "a.yaml", podManifest("a"))
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "a.yaml", podManifest("a2"))
	write(t, dir, "b.yaml", podManifest("b"))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	want := []string{"a.yaml: default/a2", "b.yaml: default/b"}
	if err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return slices.Equal(sink.podNames(), want), nil
	}); err != nil {
		t.Fatalf("pods = %q, want %q", sink.podNames(), want)
	}
}

// A manifest path that is a symlink to a directory, whose target is swapped
// (as `ln -sfn` and config managers do): the new target is read at once,
// and watched, without waiting for the resync.
func TestDirRunFollowsASymlinkSwap(t *testing.T) {
	base := t.TempDir()
	first, second := filepath.Join(base, "v1"), filepath.Join(base, "v2")
	for _, dir := range []string{first, second} {
		if err := os.Mkdir(dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	write(t, first, "a.yaml", podManifest("a"))
	write(t, second, "b.yaml", podManifest("b"))
	link := filepath.Join(base, "pods")
	if err := os.Symlink(first, link); err != nil {
		t.Fatal(err)
	}
	waitPods := runDir(t, link, newFakeSink())
	waitPods("a.yaml: default/a")

	// Swap the link atomically.
	tmp := filepath.Join(base, ".pods.tmp")
	if err := os.Symlink(second, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	waitPods("b.yaml: default/b")
	// The new target is watched.
	write(t, second, "c.yaml", podManifest("c"))
	waitPods("b.yaml: default/b", "c.yaml: default/c")
}

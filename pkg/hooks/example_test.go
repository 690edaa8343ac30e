package hooks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"
)

// TestExampleHook installs examples/hooks.d the way its comments say, with the
// program and log moved into a temp dir, and runs it.
func TestExampleHook(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	examples, err := filepath.Abs("../../examples/hooks.d")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(examples, "50-record-volume.json"))
	if err != nil {
		t.Fatal(err)
	}
	var def File
	if err := json.Unmarshal(data, &def); err != nil {
		t.Fatal(err)
	}
	if def.Hook.Path != "/usr/local/libexec/volume-agent/record-volume.sh" {
		t.Fatalf("the example's hook.path changed to %s; update this test", def.Hook.Path)
	}
	root := t.TempDir()
	log := filepath.Join(root, "log", "volumes.log")
	def.Hook.Path = filepath.Join(examples, "record-volume.sh")
	logArg := slices.Index(def.Hook.Args, "--log")
	if logArg < 0 || logArg+1 >= len(def.Hook.Args) {
		t.Fatalf("the example's args %v have no --log FILE", def.Hook.Args)
	}
	def.Hook.Args[logArg+1] = log
	dir := filepath.Join(root, "hooks.d")
	writeHook(t, dir, "50-record-volume.json", def)

	m := New(ctx, Options{Directories: []string{dir}})
	if status := m.Status(); len(status.Hooks) != 1 || len(status.Problems) != 0 {
		t.Fatalf("the example did not load: %+v", status)
	}
	for _, stage := range Stages {
		if err := m.Run(ctx, stage, testState); err != nil {
			t.Fatalf("Run(%s) failed: %v", stage, err)
		}
	}
	flocker := testState
	flocker.Plugin = "kubernetes.io/flocker"
	if err := m.Run(ctx, PostSetUp, flocker); err != nil {
		t.Fatal(err)
	}

	out, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var stages []Stage
	for _, line := range lines {
		var state StdinState
		if err := json.Unmarshal([]byte(line), &state); err != nil {
			t.Fatalf("logged line %q is not the volume state: %v", line, err)
		}
		if state.Plugin != testState.Plugin || state.Path != testState.Path || state.PodUID != testState.PodUID {
			t.Errorf("logged state %+v is not the empty-dir volume's", state)
		}
		stages = append(stages, state.Stage)
	}
	if want := []Stage{PostSetUp, PreTearDown}; !slices.Equal(stages, want) {
		t.Errorf("the example ran at %v, want %v (and never for flocker)", stages, want)
	}
}

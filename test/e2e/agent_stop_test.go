package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// failingTearDowns is a fault script under which every tear-down fails.
const failingTearDowns = `tearDownStart: |
  ({error: TRANSIENT, message: "tear-down fails on purpose"})
`

// TestTeardownOnExitIsBoundedAndASecondSignalStops pins down the shutdown of
// --teardown-on-exit when tear-downs keep failing: the first signal's
// tear-down ends at --teardown-on-exit-timeout, a second signal ends it at
// once, and either way the agent exits 1 and names the volumes it left in
// place, which are still set up.
func TestTeardownOnExitIsBoundedAndASecondSignalStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		stop func(t *testing.T, a *agent) error
	}{
		{
			name: "second signal",
			// A bound far longer than the test waits: only the second
			// signal can end the tear-down in time.
			args: []string{"--teardown-on-exit-timeout=10m"},
			stop: func(t *testing.T, a *agent) error {
				_ = a.cmd.Process.Signal(syscall.SIGTERM)
				waitFor(t, "the tear-down to start", 30*time.Second, func(_ context.Context) (bool, error) {
					return strings.Contains(a.printed(), "tear-down fails on purpose"), nil
				})
				return a.stop(syscall.SIGINT, 15*time.Second)
			},
		},
		{
			name: "bound",
			args: []string{"--teardown-on-exit-timeout=2s"},
			stop: func(t *testing.T, a *agent) error { return a.stop(syscall.SIGTERM, 30*time.Second) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			faults := filepath.Join(e.dir, "faults.yaml")
			if err := os.WriteFile(faults, []byte(failingTearDowns), 0o644); err != nil {
				t.Fatal(err)
			}
			e.writeManifest("web.yaml", podManifest("web", "web-1"))
			a := e.start(append([]string{"--teardown-on-exit", "--fault-hooks-file", faults, "--hook-dir", e.dir}, tc.args...)...)
			waitFor(t, "web ready", 30*time.Second, podReady(a, "default/web"))

			err := tc.stop(t, a)
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
				t.Errorf("agent exit = %v, want exit status 1", err)
			}
			cache := filepath.Join(e.root, "pods", "web-1", "volumes", "kubernetes.io~empty-dir", "cache")
			if !isTmpfsMount(t, cache) {
				t.Errorf("the volume that could not be torn down is not left in place at %s", cache)
			}
			out := a.output()
			for _, want := range []string{"default/web", "cache", cache, "scratch"} {
				if !strings.Contains(out, want) {
					t.Errorf("the agent's error does not name %q among the volumes left in place:\n%s", want, out)
				}
			}
		})
	}
}

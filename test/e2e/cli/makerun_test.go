package cli

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/test/testbin"
)

// TestMakeRun runs what `make run` runs (hack/run-examples.sh) on the bundled
// examples: every example volume, the gitRepo one from the loopback git
// server, the Flocker ones from the emulator and the CSI one from a second
// agent in CSI driver mode, becomes ready; on SIGINT
// everything is torn down and every server stops.
func TestMakeRun(t *testing.T) {
	volumetesting.RequiresRoot(t)
	repo := testbin.RepoRoot()
	runDir := t.TempDir()
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, util.NewMounter(), runDir) })

	cmd := exec.Command(filepath.Join(repo, "hack", "run-examples.sh"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "RUN_DIR="+runDir, "BINARY="+binary)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	lines := make(chan string)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()
	// The CSI driver runs in a session of its own; kill it if the script
	// could not.
	t.Cleanup(func() {
		if pid, err := os.ReadFile(filepath.Join(runDir, "csi-driver.pid")); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil && syscall.Kill(n, 0) == nil {
				_ = syscall.Kill(n, syscall.SIGKILL)
			}
		}
	})
	want := map[string]bool{"volume=scratch": false, "volume=cache": false, "volume=site": false, "volume=uploads": false, "volume=data": false, "volume=notes": false}
	deadline := time.After(2 * time.Minute)
	for ready := 0; ready < len(want); {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("make run ended before every example volume was ready")
			}
			t.Log(line)
			for key, seen := range want {
				if !seen && strings.Contains(line, key+":") && strings.Contains(line, "volume is ready") {
					want[key] = true
					ready++
				}
			}
		case <-deadline:
			t.Fatalf("example volumes not ready within 2 minutes: %v", want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for line := range lines {
			t.Log(line)
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("make run did not stop within a minute of SIGINT")
	}
	if left := mountsUnder(t, runDir); len(left) > 0 {
		t.Errorf("mounts left after make run stopped: %v", left)
	}
	if out, err := exec.Command("pgrep", "-f", runDir).Output(); err == nil {
		t.Errorf("processes left after make run stopped: %s", out)
	}
}

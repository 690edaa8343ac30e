// Package cli drives the built volume-agent binary through the one-shot
// commands, as a user or a script would, on real mounts.
package cli

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/volume-agent/volume-agent/test/testbin"
)

// binary is the volume-agent built for this test run.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// result is what one run of the binary gave.
type result struct {
	stdout, stderr string
	code           int
}

// run runs volume-agent with args and stdin.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = bytes.NewBufferString(stdin)
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if exitErr, ok := err.(*exec.ExitError); ok {
		res.code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("failed to run volume-agent %v: %v", args, err)
	}
	t.Logf("volume-agent %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, res.code, res.stdout, res.stderr)
	return res
}

// testdata returns the path of a file under test/testdata.
func testdata(parts ...string) string {
	return filepath.Join(append([]string{testbin.RepoRoot(), "test", "testdata"}, parts...)...)
}

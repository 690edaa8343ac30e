package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
)

// TestNonRoot: without root privileges a disk emptyDir works, and a Memory
// one fails with an error that names the missing privilege.
func TestNonRoot(t *testing.T) {
	volumetesting.RequiresRoot(t) // to hand the root dir and the binary to uid 1001
	const uid = 1001
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir, filepath.Dir(binary)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(root, uid, uid); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "pod.yaml")
	writeFile(t, manifest, `apiVersion: v1
kind: Pod
metadata: {name: unprivileged, uid: unprivileged-uid}
spec:
  containers: [{name: c, image: busybox}]
  volumes:
  - {name: disk, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
`)
	runAs := func(args ...string) (string, int) {
		cmd := exec.Command(binary, append(args, "--root-dir", root, "--hook-dir", filepath.Join(dir, "no-hooks"))...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Logf("volume-agent %v as uid %d: %v\nstdout:\n%s\nstderr:\n%s", args, uid, err, stdout.String(), stderr.String())
		code := 0
		if exitErr, ok := err.(*exec.ExitError); ok {
			code = exitErr.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), code
	}

	out, code := runAs("setup", "-f", manifest, "-o", "json")
	if code != 1 {
		t.Errorf("setup exit %d, want 1 (one volume failed)", code)
	}
	var results []volumeResult
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("no JSON output: %v", err)
	}
	for _, r := range results {
		switch r.Volume {
		case "disk":
			if !r.Ready {
				t.Errorf("disk emptyDir not ready as non-root: %+v", r)
			}
		case "mem":
			if r.Ready || !strings.Contains(r.Error, "needs root (CAP_SYS_ADMIN)") {
				t.Errorf("Memory emptyDir as non-root: %+v, want an error naming the missing privilege", r)
			}
		}
	}
	if _, code := runAs("teardown", "-f", manifest); code != 0 {
		t.Errorf("teardown exit %d, want 0", code)
	}
}

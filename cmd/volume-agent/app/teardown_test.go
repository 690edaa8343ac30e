package app

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTeardownOfAManifestThatNoLongerValidates pins down that a tear-down
// needs only the pods' identity: a gitRepo volume set up with a protocol the
// configuration no longer allows is torn down, with a warning about the spec.
func TestTeardownOfAManifestThatNoLongerValidates(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	for _, args := range [][]string{
		{"init", "-q", "-b", "main", repo},
		{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "first"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	root := filepath.Join(dir, "root")
	file := writeFile(t, dir, "pod.yaml", `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: git-uid}
spec:
  volumes:
  - name: src
    gitRepo: {repository: "file://`+repo+`"}
  - name: scratch
    emptyDir: {}
`)
	code, _, stderr := runApp(t, "", "setup", "-f", file, "--root-dir", root, "--git-allowed-protocols", "file", "--hook-dir", dir)
	if code != ExitOK {
		t.Fatalf("setup exit %d, stderr:\n%s", code, stderr)
	}
	podDir := filepath.Join(root, "pods", "git-uid")
	if _, err := os.Stat(podDir); err != nil {
		t.Fatalf("setup made no pod dir: %v", err)
	}

	// The default configuration does not allow file:// any more.
	code, out, stderr := runApp(t, "", "teardown", "-f", file, "--root-dir", root, "--hook-dir", dir)
	if code != ExitOK {
		t.Fatalf("teardown exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, ExitOK, out, stderr)
	}
	if !strings.Contains(stderr, "Warning") || !strings.Contains(stderr, "spec.volumes[0].gitRepo.repository") {
		t.Errorf("teardown did not warn about the spec; stderr:\n%s", stderr)
	}
	if strings.Count(out, "state=tornDown") != 2 {
		t.Errorf("teardown output does not show two volumes torn down:\n%s", out)
	}
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Errorf("pod dir still there after teardown: %v", err)
	}

	// A file that does not decode names no pod: that is still invalid input.
	garbage := writeFile(t, dir, "garbage.yaml", "kind: Pod\nmetadata: [\n")
	if code, _, stderr := runApp(t, "", "teardown", "-f", garbage, "--root-dir", root, "--hook-dir", dir); code != ExitInvalid {
		t.Errorf("teardown of an undecodable file: exit %d (%s), want %d", code, stderr, ExitInvalid)
	}
}

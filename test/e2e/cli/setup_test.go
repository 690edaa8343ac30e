package cli

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// volumeResult is one element of `setup -o json`.
type volumeResult struct {
	PodUID string `json:"podUID"`
	Pod    string `json:"pod"`
	Volume string `json:"volume"`
	Plugin string `json:"plugin"`
	Path   string `json:"path"`
	Ready  bool   `json:"ready"`
	Error  string `json:"error"`
}

func setupJSON(t *testing.T, root, manifest string) ([]volumeResult, result) {
	t.Helper()
	res := run(t, "", "setup", "-f", manifest, "--root-dir", root, "-o", "json")
	var results []volumeResult
	if err := json.Unmarshal([]byte(res.stdout), &results); err != nil {
		t.Fatalf("setup -o json printed no JSON array: %v", err)
	}
	return results, res
}

// mountsUnder returns the mount points in /proc/self/mountinfo at or under
// dir. Other test packages mount concurrently, so only dir's count.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	var under []string
	for _, mp := range mountInfo(t) {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			under = append(under, mp)
		}
	}
	return under
}

func mountInfo(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 {
			points = append(points, fields[4])
		}
	}
	return points
}

// cleanRoot returns a root dir whose mounts are all gone when the test ends.
func cleanRoot(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "root")
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, util.NewMounter(), root) })
	return root
}

// TestSetUpAndTearDownEmptyDirs is the foundation's end-to-end check: an
// emptyDir on disk, a Memory emptyDir of 10Mi whose df shows 10240
// 1K-blocks, and fsGroup; then teardown leaves no mount and no pod dir.
func TestSetUpAndTearDownEmptyDirs(t *testing.T) {
	volumetesting.RequiresRoot(t)
	root := cleanRoot(t)
	manifest := testdata("valid", "pod-emptydir.yaml")
	results, res := setupJSON(t, root, manifest)
	if res.code != 0 || len(results) != 2 {
		t.Fatalf("setup exit %d with %d results, want 0 and 2", res.code, len(results))
	}
	byName := map[string]volumeResult{}
	for _, r := range results {
		byName[r.Volume] = r
		if !r.Ready || r.Error != "" || r.Plugin != "kubernetes.io/empty-dir" || r.Pod != "default/emptydir-demo" || r.PodUID == "" {
			t.Errorf("result %+v, want ready emptyDir of default/emptydir-demo", r)
		}
		wantPath := filepath.Join(root, "pods", r.PodUID, "volumes", "kubernetes.io~empty-dir", r.Volume)
		if r.Path != wantPath {
			t.Errorf("path %s, want %s", r.Path, wantPath)
		}
		info, err := os.Stat(r.Path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o777 || info.Mode()&os.ModeSetgid == 0 || info.Sys().(*syscall.Stat_t).Gid != 1234 {
			t.Errorf("%s: mode %v group %d, want 0777 setgid group 1234", r.Volume, info.Mode(), info.Sys().(*syscall.Stat_t).Gid)
		}
	}
	df, err := exec.Command("df", "-k", "--output=size,fstype", byName["cache"].Path).CombinedOutput()
	if err != nil {
		t.Fatalf("df: %v: %s", err, df)
	}
	if fields := strings.Fields(string(df)); len(fields) < 4 || fields[2] != "10240" || fields[3] != "tmpfs" {
		t.Errorf("df of the Memory volume = %q, want 10240 1K-blocks of tmpfs", df)
	}

	// Setting up again is a no-op that keeps files.
	keep := filepath.Join(byName["scratch"].Path, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := run(t, "", "setup", "-f", manifest, "--root-dir", root); res.code != 0 {
		t.Fatalf("second setup exit %d", res.code)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("second setup lost a file: %v", err)
	}
	if got := mountsUnder(t, root); len(got) != 1 {
		t.Errorf("after two setups mounts under the root: %v, want one tmpfs", got)
	}

	if res := run(t, "", "teardown", "-f", manifest, "--root-dir", root); res.code != 0 {
		t.Fatalf("teardown exit %d", res.code)
	}
	if got := mountsUnder(t, root); len(got) != 0 {
		t.Errorf("mounts left after teardown: %v", got)
	}
	if _, err := os.Stat(filepath.Join(root, "pods", results[0].PodUID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod dir left after teardown: %v", err)
	}
}

// TestTearDownByPodUID tears down from what is on disk alone.
func TestTearDownByPodUID(t *testing.T) {
	volumetesting.RequiresRoot(t)
	root := cleanRoot(t)
	results, res := setupJSON(t, root, testdata("valid", "pod-emptydir.yaml"))
	if res.code != 0 || len(results) == 0 {
		t.Fatalf("setup exit %d", res.code)
	}
	if got := mountsUnder(t, root); len(got) != 1 {
		t.Fatalf("mounts under the root after setup: %v, want one tmpfs", got)
	}
	if res := run(t, "", "teardown", "--pod-uid", results[0].PodUID, "--root-dir", root); res.code != 0 {
		t.Fatalf("teardown --pod-uid exit %d", res.code)
	}
	if got := mountsUnder(t, root); len(got) != 0 {
		t.Errorf("mounts left after teardown: %v", got)
	}
	if _, err := os.Stat(filepath.Join(root, "pods", results[0].PodUID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod dir left after teardown: %v", err)
	}
}

// TestUnsupportedVolumeFailsAlone: a volume no plugin supports fails with
// "no volume plugin matched"; the pod's other volume is set up; exit 1.
func TestUnsupportedVolumeFailsAlone(t *testing.T) {
	volumetesting.RequiresRoot(t)
	root := cleanRoot(t)
	manifest := filepath.Join(t.TempDir(), "pod.yaml")
	writeFile(t, manifest, `apiVersion: v1
kind: Pod
metadata: {name: mixed, uid: mixed-uid}
spec:
  containers: [{name: c, image: busybox}]
  volumes:
  - name: host
    hostPath: {path: /etc}
  - name: scratch
    emptyDir: {}
`)
	results, res := setupJSON(t, root, manifest)
	if res.code != 1 {
		t.Errorf("setup exit %d, want 1", res.code)
	}
	for _, r := range results {
		switch r.Volume {
		case "host":
			if r.Ready || !strings.Contains(r.Error, "no volume plugin matched") {
				t.Errorf("host volume: %+v, want the error no volume plugin matched", r)
			}
		case "scratch":
			if !r.Ready {
				t.Errorf("scratch volume not ready: %+v", r)
			}
		}
	}
	if res := run(t, "", "teardown", "-f", manifest, "--root-dir", root); res.code != 0 {
		t.Errorf("teardown exit %d", res.code)
	}
}

// TestTearDownSafety plants a symlink to a file outside and a bind mount
// inside an emptyDir: teardown reports the nested mount, exits 1, and leaves
// both targets intact.
func TestTearDownSafety(t *testing.T) {
	volumetesting.RequiresRoot(t)
	root := cleanRoot(t)
	results, res := setupJSON(t, root, testdata("valid", "pod-emptydir.yaml"))
	if res.code != 0 {
		t.Fatalf("setup exit %d", res.code)
	}
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	writeFile(t, secret, "keep")
	vol := results[0].Path
	if err := os.Symlink(secret, filepath.Join(vol, "link")); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(vol, "planted")
	if err := os.Mkdir(planted, 0o755); err != nil {
		t.Fatal(err)
	}
	volumetesting.Mount(t, outside, planted, "", []string{"bind"})

	res = run(t, "", "teardown", "--pod-uid", results[0].PodUID, "--root-dir", root)
	if res.code != 1 || !strings.Contains(res.stdout+res.stderr, planted) {
		t.Errorf("teardown exit %d, want 1 with the nested mount %s named", res.code, planted)
	}
	if content, err := os.ReadFile(secret); err != nil || string(content) != "keep" {
		t.Errorf("symlink target changed: %q, %v", content, err)
	}
	if content, err := os.ReadFile(filepath.Join(planted, "secret")); err != nil || string(content) != "keep" {
		t.Errorf("bind-mounted dir changed: %q, %v", content, err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

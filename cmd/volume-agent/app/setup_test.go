package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// runApp runs volume-agent in-process and returns its exit code and output.
func runApp(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

const diskPods = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: web-uid}
spec:
  volumes:
  - name: scratch
    emptyDir: {}
  - name: logs
    emptyDir: {}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod}
spec:
  volumes:
  - name: data
    emptyDir: {}
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func decodeResults(t *testing.T, out string) []volumemanager.VolumeResult {
	t.Helper()
	var results []volumemanager.VolumeResult
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("output is not one JSON array: %v\n%s", err, out)
	}
	return results
}

func TestSetupAndTeardownOnDisk(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	file := writeFile(t, dir, "pods.yaml", diskPods)

	code, out, stderr := runApp(t, "", "setup", "-f", file, "--root-dir", root, "-o", "json")
	if code != ExitOK {
		t.Fatalf("setup exit %d, stderr:\n%s", code, stderr)
	}
	results := decodeResults(t, out)
	if len(results) != 3 {
		t.Fatalf("results = %+v", results)
	}
	var dbUID string
	for _, r := range results {
		if !r.Ready || r.Error != "" || r.Plugin != "kubernetes.io/empty-dir" || r.State != "ready" {
			t.Errorf("result %+v", r)
		}
		info, err := os.Stat(r.Path)
		if err != nil || !info.IsDir() || info.Mode().Perm() != 0o777 {
			t.Errorf("volume %s at %s: %v %v", r.Volume, r.Path, info, err)
		}
		if r.Pod == "prod/db" {
			dbUID = string(r.PodUID)
		}
	}
	if dbUID == "" {
		t.Fatal("no result for prod/db")
	}

	// Text output, and a second run is a no-op that keeps files.
	keep := filepath.Join(root, "pods", "web-uid", "volumes", "kubernetes.io~empty-dir", "scratch", "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runApp(t, "", "setup", "-f", file, "--root-dir", root)
	if code != ExitOK || strings.Count(out, "state=ready") != 3 || !strings.Contains(out, "pod=default/web uid=web-uid volume=scratch plugin=kubernetes.io/empty-dir path=") {
		t.Errorf("second setup: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a second setup lost a file: %v", err)
	}

	// Teardown by UID touches that pod only.
	code, out, stderr = runApp(t, "", "teardown", "--pod-uid", dbUID, "--root-dir", root)
	if code != ExitOK || strings.Count(out, "state=tornDown") != 1 {
		t.Fatalf("teardown --pod-uid: exit %d\n%s%s", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "pods", dbUID)); !os.IsNotExist(err) {
		t.Errorf("pod dir of db left: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("teardown of db touched web: %v", err)
	}

	// Teardown from the file: what is left goes, and the pod dirs with it.
	code, out, stderr = runApp(t, "", "teardown", "-f", file, "--root-dir", root, "-o", "json")
	if code != ExitOK {
		t.Fatalf("teardown -f: exit %d\n%s", code, stderr)
	}
	for _, r := range decodeResults(t, out) {
		if r.State != "tornDown" || r.Ready || r.Error != "" {
			t.Errorf("teardown result %+v", r)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "pods"))
	if len(entries) != 0 {
		t.Errorf("pod dirs left: %v", entries)
	}
}

func TestSetupReportsFailedVolumesAlone(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	file := writeFile(t, dir, "pod.yaml", `apiVersion: v1
kind: Pod
metadata: {name: mixed, uid: mixed-uid}
spec:
  volumes:
  - name: good
    emptyDir: {}
  - name: host
    hostPath: {path: /etc}
`)
	code, out, stderr := runApp(t, "", "setup", "-f", file, "--root-dir", root, "-o", "json")
	if code != ExitFailed {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitFailed, stderr)
	}
	byVolume := map[string]volumemanager.VolumeResult{}
	for _, r := range decodeResults(t, out) {
		byVolume[r.Volume] = r
	}
	if r := byVolume["good"]; !r.Ready {
		t.Errorf("good: %+v", r)
	}
	if r := byVolume["host"]; r.Ready || !strings.Contains(r.Error, "no volume plugin matched") {
		t.Errorf("host: %+v", r)
	}
	if !strings.Contains(stderr, "1 of 2 volumes failed") {
		t.Errorf("stderr: %s", stderr)
	}
	runApp(t, "", "teardown", "--pod-uid", "mixed-uid", "--root-dir", root)
}

func TestSetupRefusesInvalidInputWithoutTouchingDisk(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	bad := writeFile(t, dir, "bad.yaml", `apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  volumes:
  - name: Bad_Name
    emptyDir: {}
`)
	garbage := writeFile(t, dir, "garbage.yaml", "kind: Pod\nmetadata: [\n")
	tests := map[string][]string{
		"invalid manifest":       {"setup", "-f", bad},
		"missing file":           {"setup", "-f", filepath.Join(dir, "missing.yaml")},
		"bad output":             {"setup", "-f", bad, "-o", "yaml"},
		"teardown without input": {"teardown"},
		"teardown with both":     {"teardown", "-f", bad, "--pod-uid", "x"},
		"teardown bad uid":       {"teardown", "--pod-uid", "../etc"},
		// A spec that does not validate is torn down with a warning (see
		// TestTeardownOfAManifestThatNoLongerValidates); a file that does
		// not decode names no pod.
		"teardown undecodable manifest": {"teardown", "-f", garbage},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "root")
			code, _, stderr := runApp(t, "", append(args, "--root-dir", root)...)
			if code != ExitInvalid {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitInvalid, stderr)
			}
			if _, err := os.Stat(root); !os.IsNotExist(err) {
				var created []string
				_ = filepath.WalkDir(root, func(path string, _ os.DirEntry, _ error) error {
					created = append(created, path)
					return nil
				})
				t.Errorf("root dir touched on invalid input: %q", created)
			}
		})
	}
	code, _, stderr := runApp(t, "", "setup", "-f", bad, "--root-dir", root)
	if code != ExitInvalid || !strings.Contains(stderr, "spec.volumes[0].name") || !strings.Contains(stderr, "bad.yaml") {
		t.Errorf("the error should name the file and the field: %s", stderr)
	}
}

func TestSetupReadsStdin(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	code, out, stderr := runApp(t, diskPods, "setup", "-f", "-", "--root-dir", root)
	if code != ExitOK || strings.Count(out, "state=ready") != 3 {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	if code, _, stderr := runApp(t, diskPods, "teardown", "-f", "-", "--root-dir", root); code != ExitOK {
		t.Errorf("teardown exit %d: %s", code, stderr)
	}
}

func TestSetupFailsWhileAnotherAgentHoldsTheRoot(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	unlock, err := volumemanager.LockRoot(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	code, _, stderr := runApp(t, "", "setup", "-f", writeFile(t, dir, "p.yaml", diskPods), "--root-dir", root)
	if code != ExitFailed || !strings.Contains(stderr, "another volume-agent is using this root dir") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "pods")); !os.IsNotExist(err) {
		t.Errorf("pods dir created while locked: %v", err)
	}
}

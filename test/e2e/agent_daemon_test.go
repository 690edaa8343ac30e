package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volume-agent/volume-agent/pkg/server"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// isTmpfsMount reports whether path is a tmpfs mount point.
func isTmpfsMount(t *testing.T, path string) bool {
	for _, mp := range mountsUnder(t, path) {
		if mp.Path == path && mp.Type == "tmpfs" {
			return true
		}
	}
	return false
}

func podReady(a *agent, name string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		pods, err := a.podsByName(ctx)
		return err == nil && pods[name].State == volumemanager.PodReady, nil
	}
}

func TestAgentFollowsManifests(t *testing.T) {
	e := newEnv(t)
	e.writeManifest("web.yaml", podManifest("web", "web-1"))
	port := freePort(t)
	a := e.start("--metrics-address", fmt.Sprintf(":%d", port))
	ctx := context.Background()

	waitFor(t, "web ready", 30*time.Second, podReady(a, "default/web"))
	waitFor(t, "readyz", 10*time.Second, func(ctx context.Context) (bool, error) { return a.client.Readyz(ctx) == nil, nil })
	pod, err := a.client.Pod(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, v := range pod.Volumes {
		paths[v.Volume] = v.Path
	}
	if info, err := os.Stat(paths["scratch"]); err != nil || info.Mode().Perm() != 0o777 {
		t.Errorf("scratch at %s: %v, %v", paths["scratch"], info, err)
	}
	if !isTmpfsMount(t, paths["cache"]) {
		t.Errorf("cache at %s is not a tmpfs mount", paths["cache"])
	}
	if !strings.Contains(a.printed(), "SetUp pod=default/web volume=cache") {
		t.Errorf("the agent did not print the volume as it became ready:\n%s", a.printed())
	}

	// A bad file next to the good one: reported on its source, web untouched.
	e.writeManifest("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  volumes:\n  - {name: v, emptyDir: {medium: Tape}}\n")
	waitFor(t, "the bad file's error", 10*time.Second, func(ctx context.Context) (bool, error) {
		status, err := a.client.Status(ctx)
		if err != nil {
			return false, nil
		}
		for _, s := range status.SourceErrors {
			if strings.HasSuffix(s.Name, "bad.yaml") && strings.Contains(s.Error, "spec.volumes[0].emptyDir.medium") {
				return true, nil
			}
		}
		return false, nil
	})
	// Fixed, it brings its pod.
	e.writeManifest("bad.yaml", podManifest("fixed", "fixed-1"))
	waitFor(t, "fixed ready", 30*time.Second, podReady(a, "default/fixed"))

	// A change of a pod's volumes: the new one is set up, the old one torn down.
	e.writeManifest("web.yaml", strings.Replace(podManifest("web", "web-1"), "name: scratch", "name: scratch2", 1))
	waitFor(t, "scratch2 ready and scratch gone", 30*time.Second, func(ctx context.Context) (bool, error) {
		pod, err := a.client.Pod(ctx, "web-1")
		if err != nil {
			return false, nil
		}
		names := map[string]volumemanager.VolumeState{}
		for _, v := range pod.Volumes {
			names[v.Volume] = v.State
		}
		_, old := names["scratch"]
		return names["scratch2"] == volumemanager.StateReady && !old, nil
	})
	if _, err := os.Stat(paths["scratch"]); !os.IsNotExist(err) {
		t.Errorf("the removed volume's dir is still there: %v", err)
	}
	if !isTmpfsMount(t, paths["cache"]) {
		t.Error("the unchanged tmpfs volume was unmounted")
	}

	// Metrics.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`volume_agent_volumes{state="ready"} 4`,
		`volume_agent_operation_duration_seconds_count{operation="tearDown",plugin="kubernetes.io/empty-dir",result="success"} 1`,
		`volume_agent_source_errors_total{source="file:` + filepath.Join(e.manifests, "bad.yaml") + `"} 1`,
		`volume_agent_reconcile_duration_seconds_bucket`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Removing the files tears everything down, pod dirs included.
	e.removeManifest("web.yaml")
	e.removeManifest("bad.yaml")
	waitFor(t, "everything torn down", 30*time.Second, func(ctx context.Context) (bool, error) {
		entries, err := os.ReadDir(filepath.Join(e.root, "pods"))
		return err == nil && len(entries) == 0, nil
	})
	if mps := mountsUnder(t, e.root); len(mps) != 0 {
		t.Errorf("mounts left: %+v", mps)
	}
	if err := a.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	if _, err := os.Lstat(e.socket); !os.IsNotExist(err) {
		t.Errorf("socket left after exit: %v", err)
	}
}

func TestAgentAPIAndCLI(t *testing.T) {
	e := newEnv(t)
	a := e.start()
	ctx := context.Background()
	waitFor(t, "readyz", 10*time.Second, func(ctx context.Context) (bool, error) { return a.client.Readyz(ctx) == nil, nil })

	manifest := filepath.Join(e.dir, "api.yaml")
	if err := os.WriteFile(manifest, []byte(podManifest("api-pod", "api-1")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, "apply", "-f", manifest, "--root-dir", e.root)
	if code != 0 || !strings.Contains(out, "pod default/api-pod applied (uid api-1)") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, stderr)
	}
	waitFor(t, "api-pod ready", 30*time.Second, podReady(a, "default/api-pod"))

	code, out, _ = cli(t, "get", "pods", "--root-dir", e.root)
	if code != 0 || !strings.Contains(out, "default/api-pod") || !strings.Contains(out, "ready") || !strings.Contains(out, "2/2") {
		t.Errorf("get pods: exit %d\n%s", code, out)
	}
	code, out, _ = cli(t, "get", "volumes", "-o", "json", "--root-dir", e.root)
	var volumes []volumemanager.VolumeStatus
	if err := json.Unmarshal([]byte(out), &volumes); code != 0 || err != nil || len(volumes) != 2 {
		t.Errorf("get volumes -o json: exit %d, %v\n%s", code, err, out)
	}
	code, out, _ = cli(t, "get", "events", "-o", "wide", "--root-dir", e.root)
	if code != 0 || !strings.Contains(out, "SetUp") {
		t.Errorf("get events: exit %d\n%s", code, out)
	}
	code, out, _ = cli(t, "status", "--root-dir", e.root)
	if code != 0 || !strings.Contains(out, ": ready") || !strings.Contains(out, "2 ready") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	code, out, _ = cli(t, "get", "plugins", "--root-dir", e.root)
	if code != 0 || !strings.Contains(out, "kubernetes.io/empty-dir") {
		t.Errorf("get plugins: exit %d\n%s", code, out)
	}

	// Invalid input is refused with the field, and exit 2.
	bad := filepath.Join(e.dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  volumes:\n  - {name: Bad, emptyDir: {}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "apply", "-f", bad, "--root-dir", e.root); code != 2 || !strings.Contains(stderr, "spec.volumes[0].name") {
		t.Errorf("apply bad: exit %d: %s", code, stderr)
	}

	// Pods added through the API survive a restart, and their volumes are not replaced.
	cache := filepath.Join(e.root, "pods", "api-1", "volumes", "kubernetes.io~empty-dir", "cache")
	if err := os.WriteFile(filepath.Join(cache, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "status", "--root-dir", e.root); code != 1 || !strings.Contains(stderr, "no volume-agent is running") {
		t.Errorf("status without agent: exit %d: %s", code, stderr)
	}
	a = e.start()
	waitFor(t, "api-pod ready after restart", 30*time.Second, podReady(a, "default/api-pod"))
	if data, err := os.ReadFile(filepath.Join(cache, "data")); err != nil || string(data) != "kept" {
		t.Errorf("file in the tmpfs after restart: %q, %v", data, err)
	}

	if code, out, stderr := cli(t, "delete", "--pod-uid", "api-1", "--root-dir", e.root); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: exit %d\n%s%s", code, out, stderr)
	}
	waitFor(t, "api-pod gone", 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := os.Stat(filepath.Join(e.root, "pods", "api-1"))
		return os.IsNotExist(err), nil
	})
	var statusErr *server.StatusError
	if _, err := a.client.Pod(ctx, "api-1"); !errors.As(err, &statusErr) || statusErr.Code != http.StatusNotFound {
		t.Errorf("Pod(api-1) after delete = %v", err)
	}
	if code, _, _ := cli(t, "delete", "--pod-uid", "api-1", "--root-dir", e.root); code != 1 {
		t.Errorf("delete of a deleted pod: exit %d, want 1", code)
	}
}

func TestAgentTearsDownOnExitWhenAsked(t *testing.T) {
	e := newEnv(t)
	e.writeManifest("web.yaml", podManifest("web", "web-1"))
	a := e.start()
	waitFor(t, "web ready", 30*time.Second, podReady(a, "default/web"))
	// By default, stopping leaves volumes in place.
	if err := a.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if mps := mountsUnder(t, e.root); len(mps) != 1 {
		t.Errorf("mounts after a plain stop: %+v, want the tmpfs", mps)
	}
	// A one-shot command refuses to run while an agent holds the root.
	a = e.start("--teardown-on-exit")
	waitFor(t, "web ready again", 30*time.Second, podReady(a, "default/web"))
	if code, _, stderr := cli(t, "teardown", "--pod-uid", "web-1", "--root-dir", e.root); code != 1 || !strings.Contains(stderr, "another volume-agent is using this root dir") {
		t.Errorf("teardown while the agent runs: exit %d: %s", code, stderr)
	}
	if err := a.stop(syscall.SIGINT, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if mps := mountsUnder(t, e.root); len(mps) != 0 {
		t.Errorf("mounts after --teardown-on-exit: %+v", mps)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.root, "pods")); len(entries) != 0 {
		t.Errorf("pod dirs after --teardown-on-exit: %v", entries)
	}
}

func TestAgentClaimBoundToFlockerVolume(t *testing.T) {
	e := newEnv(t)
	emulator, datasetID := e.startFlocker("db-data")
	claimOnly := `apiVersion: v1
kind: Pod
metadata: {name: db, uid: db-1}
spec:
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: db-data}
`
	e.writeManifest("db.yaml", claimOnly)
	a := e.start("--node-ip", "127.0.0.1", "--flocker-control-service-host", emulator.Host(), "--flocker-control-service-port", strconv.Itoa(emulator.Port()))
	waitFor(t, "the volume pending on its claim", 30*time.Second, func(ctx context.Context) (bool, error) {
		pod, err := a.client.Pod(ctx, "db-1")
		return err == nil && len(pod.Volumes) == 1 && pod.Volumes[0].State == volumemanager.StatePending && pod.Volumes[0].Reason == "ClaimNotFound", nil
	})

	storage := `apiVersion: v1
kind: PersistentVolume
metadata: {name: flocker-pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  claimRef: {namespace: default, name: db-data}
  flocker: {datasetName: db-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: db-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  volumeName: flocker-pv
`
	e.writeManifest("storage.yaml", storage)
	var path string
	waitFor(t, "the claim's volume ready", 60*time.Second, func(ctx context.Context) (bool, error) {
		pod, err := a.client.Pod(ctx, "db-1")
		if err != nil || len(pod.Volumes) != 1 {
			return false, nil
		}
		v := pod.Volumes[0]
		path = v.Path
		return v.State == volumemanager.StateReady && v.PersistentVolume == "flocker-pv" && v.Plugin == "kubernetes.io/flocker", nil
	})
	if err := os.WriteFile(filepath.Join(path, "row"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(emulator.BackingDir(datasetID), "row")); err != nil || string(data) != "1" {
		t.Errorf("a file written in the volume is not in the dataset: %q, %v", data, err)
	}
	e.removeManifest("db.yaml")
	waitFor(t, "the claim's volume torn down", 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := os.Stat(filepath.Join(e.root, "pods", "db-1"))
		return os.IsNotExist(err), nil
	})
	if data, err := os.ReadFile(filepath.Join(emulator.BackingDir(datasetID), "row")); err != nil || string(data) != "1" {
		t.Errorf("tear-down lost the dataset's data: %q, %v", data, err)
	}
}

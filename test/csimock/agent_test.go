package csimock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/volume-agent/volume-agent/pkg/server"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
	"github.com/volume-agent/volume-agent/test/testbin"
)

// binary is the volume-agent built for this test run.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// The values of the test's Secrets: none may show anywhere but in the
// driver's requests.
const (
	stageValue   = "stage-s3cret-4f1d"
	publishValue = "publish-s3cret-9a2c"
)

// agentProc is one `volume-agent run`, its output kept.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	out bytes.Buffer
}

func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{done: make(chan struct{})}
	a.cmd = exec.Command(binary, append([]string{"run"}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = a, a
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() { a.stop(syscall.SIGKILL) })
	return a
}

// Write keeps the agent's standard output and error, in one buffer.
func (a *agentProc) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.Write(p)
}

func (a *agentProc) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// stop signals the agent and waits, at most 30 s, for it to exit.
func (a *agentProc) stop(sig syscall.Signal) {
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// cliRun runs a volume-agent command and returns its exit code and output.
func cliRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestAgentSendsSecretsToExternalDriver runs the agent against the mock
// driver with a PersistentVolume whose stage Secret is in the manifest dir
// and whose publish Secret is applied through the API later: the volume
// waits with a transient error naming the missing reference, is set up once
// the Secret is applied, and the driver gets both Secrets' values. The
// values are in no log line, no CLI output and no file under the root dir.
// After a restart the applied Secret is gone (kept in memory only): the
// volume waits for it again. Tear-down needs no Secret.
func TestAgentSendsSecretsToExternalDriver(t *testing.T) {
	dir, err := os.MkdirTemp("", "csimock-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mock := startMock(t, filepath.Join(dir, "csi.sock"))
	root, manifests := filepath.Join(dir, "root"), filepath.Join(dir, "manifests")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	writeFile(t, config, fmt.Sprintf(`apiVersion: config.volumeagent.io/v1alpha1
kind: AgentConfiguration
csi:
  drivers:
  - {name: %s, endpoint: "unix://%s"}
volumeManager:
  initialBackoff: 200ms
  maxBackoff: 1s
`, driverName, mock.sock))
	writeFile(t, filepath.Join(manifests, "storage.yaml"), `apiVersion: v1
kind: Secret
metadata: {name: stage-creds, namespace: storage}
stringData:
  secretKey: `+stageValue+`
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: mock-1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  claimRef: {namespace: default, name: data}
  csi:
    driver: `+driverName+`
    volumeHandle: "1"
    nodeStageSecretRef: {namespace: storage, name: stage-creds}
    nodePublishSecretRef: {namespace: storage, name: publish-creds}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  volumeName: mock-1
`)
	writeFile(t, filepath.Join(manifests, "pod.yaml"), `apiVersion: v1
kind: Pod
metadata: {name: app, namespace: default, uid: app-uid}
spec:
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
`)
	publishSecret := filepath.Join(dir, "publish-secret.yaml")
	// data, base64 of publishValue, as kubectl writes a Secret.
	writeFile(t, publishSecret, `apiVersion: v1
kind: Secret
metadata: {name: publish-creds, namespace: storage}
data:
  secretKey: cHVibGlzaC1zM2NyZXQtOWEyYw==
`)
	args := []string{"--config", config, "--root-dir", root, "--pod-manifest-path", manifests, "-v", "6"}
	agent := startAgent(t, args...)
	client := server.NewClient(filepath.Join(root, "volume-agent.sock"), 10*time.Second)
	var outputs []string
	cli := func(wantCode int, args ...string) string {
		t.Helper()
		code, out := cliRun(t, append(args, "--root-dir", root)...)
		if code != wantCode {
			t.Fatalf("volume-agent %s exited %d, want %d:\n%s", strings.Join(args, " "), code, wantCode, out)
		}
		outputs = append(outputs, out)
		return out
	}
	volume := func() volumemanager.VolumeStatus {
		pod, err := client.Pod(context.Background(), "app-uid")
		if err != nil || len(pod.Volumes) != 1 {
			return volumemanager.VolumeStatus{}
		}
		return pod.Volumes[0]
	}
	waitFor := func(what string, cond func(volumemanager.VolumeStatus) bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
			return cond(volume()), nil
		}); err != nil {
			t.Fatalf("timed out waiting for %s: volume %+v\nagent output:\n%s", what, volume(), agent.output())
		}
	}
	waitsForPublishSecret := func(v volumemanager.VolumeStatus) bool {
		return v.State == volumemanager.StateFailed && v.ErrorClass == "transient" &&
			strings.Contains(v.LastError, `failed to get Secret "storage/publish-creds" of spec.csi.nodePublishSecretRef`)
	}

	waitFor("the volume to wait for its publish Secret", waitsForPublishSecret)
	// It waits, retried, never final; nothing reached the driver.
	time.Sleep(time.Second)
	if v := volume(); !waitsForPublishSecret(v) || v.Attempts < 2 {
		t.Errorf("volume = %+v, want it retried, still waiting for the Secret", v)
	}
	mock.assertCalls(t)
	if out := cli(0, "get", "volumes", "-o", "wide"); !strings.Contains(out, "storage/publish-creds") {
		t.Errorf("get volumes does not name the missing Secret:\n%s", out)
	}

	// A Secret that does not decode: the problem names the field, not the value.
	bad := filepath.Join(dir, "bad-secret.yaml")
	writeFile(t, bad, "apiVersion: v1\nkind: Secret\nmetadata: {name: bad, namespace: storage}\ndata:\n  secretKey: "+publishValue+"\n")
	if out := cli(2, "apply", "-f", bad); !strings.Contains(out, "data[secretKey]: Invalid value: illegal base64 data") {
		t.Errorf("apply of a bad Secret:\n%s", out)
	}
	if out := cli(0, "apply", "-f", publishSecret); !strings.Contains(out, "secret storage/publish-creds applied") {
		t.Errorf("apply printed:\n%s", out)
	}
	waitFor("the volume to be ready once the Secret is applied", func(v volumemanager.VolumeStatus) bool { return v.State == volumemanager.StateReady })
	mock.assertCalls(t, "NodeStageVolume 1", "NodePublishVolume 1")
	mock.assertSecrets(t, "NodeStageVolume", map[string]string{"secretKey": stageValue})
	mock.assertSecrets(t, "NodePublishVolume", map[string]string{"secretKey": publishValue})

	// After a restart the applied Secret is gone: publishing again waits
	// for it, and goes on once it is applied again.
	agent.stop(syscall.SIGKILL)
	logs := agent.output()
	agent = startAgent(t, args...)
	waitFor("the volume to wait for its publish Secret after a restart", waitsForPublishSecret)
	cli(0, "apply", "-f", publishSecret)
	waitFor("the volume to be ready again", func(v volumemanager.VolumeStatus) bool { return v.State == volumemanager.StateReady })
	mock.assertCalls(t, "NodePublishVolume 1")
	mock.assertSecrets(t, "NodePublishVolume", map[string]string{"secretKey": publishValue})

	for _, what := range []string{"pods", "volumes", "events", "plugins"} {
		cli(0, "get", what, "-o", "json")
		cli(0, "get", what, "-o", "wide")
	}
	cli(0, "status")
	if out := cli(0, "delete", "secret", "publish-creds", "-n", "storage"); !strings.Contains(out, `Secret "storage/publish-creds" deleted`) {
		t.Errorf("delete printed:\n%s", out)
	}
	cli(1, "delete", "secret", "publish-creds", "-n", "storage")

	// Tear-down needs no Secret: the stage Secret goes first.
	writeFile(t, filepath.Join(manifests, "storage.yaml"), strings.SplitN(readFile(t, filepath.Join(manifests, "storage.yaml")), "---\n", 2)[1])
	if err := os.Remove(filepath.Join(manifests, "pod.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Lstat(filepath.Join(root, "pods", "app-uid"))
		return errors.Is(err, fs.ErrNotExist), nil
	}); err != nil {
		t.Fatalf("the pod's volume was not torn down: %v\nagent output:\n%s", err, agent.output())
	}
	mock.assertCalls(t, "NodeUnpublishVolume 1", "NodeUnstageVolume 1")
	agent.stop(syscall.SIGTERM)
	logs += agent.output()

	// The values are nowhere: not in the agents' output (at -v 6, which
	// logs each publish), the CLI's, or a file under the root dir.
	if !strings.Contains(logs, "Published CSI volume") {
		t.Errorf("the agents did not log at -v 6:\n%s", logs)
	}
	for _, value := range []string{stageValue, publishValue, "cHVibGlzaC1zM2NyZXQtOWEyYw"} {
		if strings.Contains(logs, value) {
			t.Errorf("the agents' output shows %q", value)
		}
		for _, out := range outputs {
			if strings.Contains(out, value) {
				t.Errorf("a CLI output shows %q:\n%s", value, out)
			}
		}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			if strings.Contains(readFile(t, path), value) {
				t.Errorf("%s holds %q", path, value)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// assertSecrets checks the secrets of the last call of method, and forgets
// them.
func (m *mockDriver) assertSecrets(t *testing.T, method string, want map[string]string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.secrets[method]; !maps.Equal(got, want) {
		t.Errorf("%s got secrets with keys %v, want those of %v", method, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	delete(m.secrets, method)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

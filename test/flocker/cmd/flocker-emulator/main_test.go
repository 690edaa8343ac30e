package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	flockerclient "github.com/clusterhq/flocker-go"
	"k8s.io/mount-utils"
)

// TestCommandServesAndCleansUpOnSIGTERM builds the command, runs it as a user would, talks to it
// with flocker-go and stops it with SIGTERM.
func TestCommandServesAndCleansUpOnSIGTERM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the emulator's bind mounts need root")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: no go tool to build the command")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "flocker-emulator")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stateDir, envFile := filepath.Join(dir, "state"), filepath.Join(dir, "flocker.env")
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--state-dir", stateDir, "--env-file", envFile,
		"--move-delay", "10ms", "--remote-node", "10.0.0.2", "--dataset", "here", "--remote-dataset", "there")
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(waited)
		exited <- err
	}()
	t.Cleanup(func() {
		select {
		case <-waited:
		default:
			_ = cmd.Process.Kill()
			<-waited
		}
	})

	env := waitForEnvFile(t, envFile, exited, &stderr)
	port, err := strconv.Atoi(env["FLOCKER_CONTROL_SERVICE_PORT"])
	if err != nil {
		t.Fatalf("bad port in env file: %v", env)
	}
	for _, key := range []string{"FLOCKER_CONTROL_SERVICE_CA_FILE", "FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE", "FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE"} {
		if !strings.HasPrefix(env[key], filepath.Join(stateDir, "certs")+"/") {
			t.Errorf("%s=%q, want a file under the state dir's certs", key, env[key])
		}
		if !strings.Contains(stdout.String(), env[key]) {
			t.Errorf("stdout does not print %s", key)
		}
	}
	client, err := flockerclient.NewClient(env["FLOCKER_CONTROL_SERVICE_HOST"], port, "127.0.0.1",
		env["FLOCKER_CONTROL_SERVICE_CA_FILE"], env["FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE"], env["FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	client.Timeout = 30 * time.Second
	nodes, err := client.ListNodes()
	if err != nil || len(nodes) != 2 {
		t.Fatalf("ListNodes: %+v, %v", nodes, err)
	}
	id, err := client.GetDatasetID("here")
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.GetDatasetState(id)
	if err != nil || st.Path != filepath.Join(stateDir, "flocker", id) {
		t.Fatalf("state of the seeded dataset: %+v, %v", st, err)
	}
	if mounted, err := mount.New("").IsMountPoint(st.Path); err != nil || !mounted {
		t.Fatalf("%s is not mounted: %v", st.Path, err)
	}
	if _, err := client.GetDatasetID("there"); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the emulator did not stop after SIGTERM")
	}
	if mounted, _ := mount.New("").IsMountPoint(st.Path); mounted {
		t.Fatalf("%s still mounted after the emulator stopped", st.Path)
	}
}

func waitForEnvFile(t *testing.T, path string, exited <-chan error, stderr *lockedBuffer) map[string]string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if data, err := os.ReadFile(path); err == nil && bytes.HasSuffix(data, []byte("\n")) {
			env := map[string]string{}
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), "="); ok {
					env[k] = v
				}
			}
			return env
		}
		select {
		case err := <-exited:
			t.Fatalf("the emulator exited early: %v\n%s", err, stderr.String())
		case <-deadline:
			t.Fatal("the emulator never wrote its env file")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lockedBuffer is a bytes.Buffer the child process and the test can use at the same time.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Package e2e drives the built volume-agent daemon (`volume-agent run`)
// through its manifest directory, its API socket and its CLI, on real
// mounts, including SIGKILLs at random moments.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/server"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
	"github.com/volume-agent/volume-agent/test/flocker"
	"github.com/volume-agent/volume-agent/test/gitserver"
	"github.com/volume-agent/volume-agent/test/testbin"
)

// binary is the volume-agent built for this test run.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// env is one test's root dir and manifest dir, cleaned up when the test
// ends: agents killed, volumes torn down, mounts gone.
type env struct {
	t         *testing.T
	dir       string
	root      string
	manifests string
	socket    string
	agents    []*agent
	// agentEnv is added to the agents' environment.
	agentEnv []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	volumetesting.RequiresRoot(t)
	// A short path: unix socket addresses are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "va-e2e")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, root: filepath.Join(dir, "root"), manifests: filepath.Join(dir, "manifests")}
	e.socket = filepath.Join(e.root, config.DefaultSocketName)
	if err := os.MkdirAll(e.manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) cleanup() {
	for _, a := range e.agents {
		a.kill()
	}
	// Tear down what is left through the agent itself, then make sure.
	if entries, err := os.ReadDir(filepath.Join(e.root, "pods")); err == nil && len(entries) > 0 {
		args := []string{"teardown", "--root-dir", e.root}
		for _, entry := range entries {
			args = append(args, "--pod-uid", entry.Name())
		}
		if out, err := exec.Command(binary, args...).CombinedOutput(); err != nil {
			e.t.Logf("cleanup teardown: %v\n%s", err, out)
		}
	}
	volumetesting.UnmountAllBeneath(e.t, mount.New(""), e.dir)
	if err := os.RemoveAll(e.dir); err != nil {
		e.t.Errorf("cleanup: %v", err)
	}
}

// startFlocker starts a Flocker emulator holding one dataset named name, and
// gives the agents started after it its client certificates. It returns
// the emulator and the dataset's ID.
func (e *env) startFlocker(name string) (*flocker.Emulator, string) {
	e.t.Helper()
	emulator := flocker.StartForTest(e.t, flocker.Config{StateDir: filepath.Join(e.dir, "flocker"), MoveDelay: 100 * time.Millisecond})
	datasetID, err := emulator.AddDataset(flocker.DatasetSpec{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	certs := emulator.Certs()
	e.agentEnv = append(e.agentEnv,
		"FLOCKER_CONTROL_SERVICE_CA_FILE="+certs.CACert,
		"FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE="+certs.ClientCert,
		"FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE="+certs.ClientKey,
	)
	return emulator, datasetID
}

// writeManifest writes a manifest file atomically, as a config manager would.
func (e *env) writeManifest(name, content string) {
	e.t.Helper()
	tmp := filepath.Join(e.manifests, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.manifests, name)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) removeManifest(name string) {
	e.t.Helper()
	if err := os.Remove(filepath.Join(e.manifests, name)); err != nil {
		e.t.Fatal(err)
	}
}

// agent is one run of `volume-agent run`.
type agent struct {
	t      *testing.T
	cmd    *exec.Cmd
	client *server.Client
	done   chan struct{}
	err    error
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// start starts the agent on the env's root and manifests, with args added,
// and waits until its API answers.
func (e *env) start(args ...string) *agent {
	e.t.Helper()
	a := e.startNoWait(args...)
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case <-a.done:
			return false, fmt.Errorf("agent exited: %v", a.err)
		default:
		}
		return a.client.Healthz(ctx) == nil, nil
	}); err != nil {
		e.t.Fatalf("agent did not come up: %v\nstderr:\n%s\nholders: %s", err, a.output(), lockHolders(filepath.Join(e.root, volumemanager.LockFileName)))
	}
	return a
}

func (e *env) startNoWait(args ...string) *agent {
	e.t.Helper()
	return e.startBare(append([]string{"run", "--root-dir", e.root, "--pod-manifest-path", e.manifests}, args...)...)
}

// startBare starts the binary with args alone, and does not wait.
func (e *env) startBare(args ...string) *agent {
	e.t.Helper()
	a := &agent{t: e.t, client: server.NewClient(e.socket, 10*time.Second), done: make(chan struct{})}
	a.cmd = exec.Command(binary, args...)
	a.cmd.Env = append(os.Environ(), e.agentEnv...)
	stdout, _ := a.cmd.StdoutPipe()
	stderr, _ := a.cmd.StderrPipe()
	if err := a.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	var copies sync.WaitGroup
	for _, c := range []struct {
		r   *bufio.Scanner
		buf *bytes.Buffer
	}{{bufio.NewScanner(stdout), &a.stdout}, {bufio.NewScanner(stderr), &a.stderr}} {
		copies.Go(func() {
			for c.r.Scan() {
				a.mu.Lock()
				c.buf.WriteString(c.r.Text() + "\n")
				a.mu.Unlock()
			}
		})
	}
	go func() {
		copies.Wait()
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	e.agents = append(e.agents, a)
	return a
}

func (a *agent) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.String()
}

func (a *agent) printed() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stdout.String()
}

// kill SIGKILLs the agent and waits for it.
func (a *agent) kill() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Kill()
	<-a.done
}

// stop sends sig and waits for the agent to exit, at most timeout.
func (a *agent) stop(sig syscall.Signal, timeout time.Duration) error {
	a.t.Helper()
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
		return a.err
	case <-time.After(timeout):
		a.kill()
		a.t.Fatalf("agent did not stop within %s after %s\nstderr:\n%s", timeout, sig, a.output())
		return nil
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
	}
}

// podsByName returns the agent's pods by namespace/name.
func (a *agent) podsByName(ctx context.Context) (map[string]volumemanager.PodStatus, error) {
	pods, err := a.client.Pods(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]volumemanager.PodStatus{}
	for _, p := range pods {
		out[p.Namespace+"/"+p.Name] = p
	}
	return out, nil
}

// cli runs a one-shot volume-agent command and returns its exit code,
// stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("failed to run volume-agent %v: %v", args, err)
	}
	return code, stdout.String(), stderr.String()
}

// mountsUnder returns the mount points at or under dir.
func mountsUnder(t *testing.T, dir string) []mount.MountPoint {
	t.Helper()
	mps, err := mount.New("").List()
	if err != nil {
		t.Fatal(err)
	}
	var out []mount.MountPoint
	for _, mp := range mps {
		if mp.Path == dir || strings.HasPrefix(mp.Path, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// podManifest returns a pod with a disk emptyDir "scratch" and a tmpfs
// emptyDir "cache", and a fixed UID.
func podManifest(name, uid string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
  uid: %s
spec:
  volumes:
  - name: scratch
    emptyDir: {}
  - name: cache
    emptyDir:
      medium: Memory
      sizeLimit: 4Mi
`, name, uid)
}

// waitForErr polls cond until it holds or timeout passes.
func waitForErr(timeout time.Duration, cond func(ctx context.Context) (bool, error)) error {
	return wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, cond)
}

func lockHolders(path string) string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, _ := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); target == path {
				cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
				status, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "status"))
				out = append(out, p.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " ")+" "+strings.Join(strings.Split(string(status), "\n")[:8], "|"))
			}
		}
	}
	return strings.Join(out, "\n")
}

// gitRepoForTest serves the repository name on a loopback git server for t,
// with one commit of files on the default branch.
func gitRepoForTest(t *testing.T, name string, files ...gitserver.Entry) *gitserver.Server {
	t.Helper()
	srv := gitserver.StartForTest(t)
	repo, err := srv.NewRepo(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(gitserver.DefaultBranch, "initial", files...); err != nil {
		t.Fatal(err)
	}
	return srv
}

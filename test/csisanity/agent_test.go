package csisanity

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"

	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

// newTestDir returns a new dir for a test, and unmounts everything beneath
// it and removes it when the test ends, even when it fails. It needs root.
func newTestDir(t *testing.T) (string, mount.Interface) {
	t.Helper()
	volumetesting.RequiresRoot(t)
	// A short path: unix socket addresses are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "va-csi")
	if err != nil {
		t.Fatal(err)
	}
	mounter := mount.New("")
	t.Cleanup(func() {
		volumetesting.UnmountAllBeneath(t, mounter, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("failed to remove %s: %v", dir, err)
		}
	})
	return dir, mounter
}

// agent is a running `volume-agent run` in CSI mode alone.
type agent struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}
	logs bytes.Buffer
}

// startAgent runs `volume-agent run` in CSI mode alone, with its root dir
// in dir and its Flocker client pointed at emu, and waits until it accepts
// connections on socket. It is stopped at the end of the test.
func startAgent(t *testing.T, dir, socket string, emu *emulator.Emulator) *agent {
	t.Helper()
	certs := emu.Certs()
	a := &agent{t: t, done: make(chan struct{})}
	a.cmd = exec.Command(binary, "run",
		"--root-dir", filepath.Join(dir, "root"),
		"--csi-endpoint", "unix://"+socket,
		"--node-ip", emu.LocalNode().Host,
		"--flocker-control-service-host", emu.Host(),
		"--flocker-control-service-port", strconv.Itoa(emu.Port()),
		"-v", "2",
	)
	a.cmd.Env = append(os.Environ(),
		"FLOCKER_CONTROL_SERVICE_CA_FILE="+certs.CACert,
		"FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE="+certs.ClientCert,
		"FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE="+certs.ClientKey,
	)
	a.cmd.Stdout, a.cmd.Stderr = &a.logs, &a.logs
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() { a.stop() })

	// A socket left by a killed agent exists but refuses connections.
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case <-a.done:
			return false, fmt.Errorf("volume-agent exited: %v\n%s", a.cmd.ProcessState, a.logs.String())
		default:
		}
		conn, err := net.Dial("unix", socket)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
	if err != nil {
		t.Fatalf("the agent does not serve CSI on %s: %v", socket, err)
	}
	return a
}

// stop stops the agent with SIGTERM, which leaves volumes in place, and
// returns its output.
func (a *agent) stop() string { return a.end(syscall.SIGTERM) }

// kill kills the agent with SIGKILL and returns its output.
func (a *agent) kill() string { return a.end(syscall.SIGKILL) }

func (a *agent) end(sig syscall.Signal) string {
	select {
	case <-a.done:
		return a.logs.String()
	default:
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	if a.t.Failed() {
		a.t.Logf("volume-agent log:\n%s", a.logs.String())
	}
	return a.logs.String()
}

// waitReady waits until the agent reports itself ready: its state rebuilt
// from disk, the CSI records read, and every volume tried once.
func (a *agent) waitReady(root string) {
	a.t.Helper()
	var out []byte
	err := wait.PollUntilContextTimeout(a.t.Context(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		out, _ = exec.Command(binary, "status", "--root-dir", root).CombinedOutput()
		return strings.Contains(string(out), ": ready ("), nil
	})
	if err != nil {
		a.t.Fatalf("the agent is not ready: %v; status:\n%s", err, out)
	}
}

package app

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunReturnsOnStartUpError: an agent that cannot start (here, its
// metrics address is taken) exits with the error instead of hanging with the
// root locked.
func TestRunReturnsOnStartUpError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	root := filepath.Join(t.TempDir(), "root")
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Run(t.Context(), []string{"run", "--root-dir", root, "--hook-dir", t.TempDir(), "--metrics-address", busy.Addr().String()}, nil, &stdout, &stderr)
	}()
	select {
	case code := <-done:
		if code != ExitInvalid || !strings.Contains(stderr.String(), "address already in use") {
			t.Errorf("run exit %d, stderr %q; want %d and the listen error", code, stderr.String(), ExitInvalid)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after failing to start")
	}
}

package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientCommandsWithoutAgent(t *testing.T) {
	dir, err := os.MkdirTemp("", "va")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "none.sock")
	manifest := writeFile(t, dir, "p.yaml", diskPods)
	for _, args := range [][]string{
		{"status"},
		{"get", "pods"},
		{"get", "volumes", "-o", "wide"},
		{"get", "events", "-o", "json"},
		{"apply", "-f", manifest},
		{"delete", "--pod-uid", "x"},
	} {
		code, _, stderr := runApp(t, "", append(args, "--socket", socket)...)
		if code != ExitFailed || !strings.Contains(stderr, "no volume-agent is running") || !strings.Contains(stderr, socket) {
			t.Errorf("%v: exit %d, stderr %q; want %d and a message naming the socket", args, code, stderr, ExitFailed)
		}
	}
	for _, args := range [][]string{
		{"get", "nodes"},
		{"get", "pods", "-o", "yaml"},
		{"apply", "-f", filepath.Join(dir, "missing.yaml")},
		{"delete", "--pod-uid", "../x"},
	} {
		if code, _, stderr := runApp(t, "", append(args, "--socket", socket)...); code != ExitInvalid {
			t.Errorf("%v: exit %d (%s), want %d", args, code, stderr, ExitInvalid)
		}
	}
}

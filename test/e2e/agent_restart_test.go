package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/mount-utils"
)

// mountIDs returns the mount ids of the mounts at path, from the kernel's
// mount table.
func mountIDs(t *testing.T, path string) []int {
	t.Helper()
	infos, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, info := range infos {
		if info.MountPoint == path {
			ids = append(ids, info.ID)
		}
	}
	return ids
}

// TestAgentRestartKeepsVolumesInUse: a file held open in a ready tmpfs
// emptyDir stays intact across agent restarts, after a SIGKILL and after a
// SIGTERM, and the mount is neither replaced nor stacked.
func TestAgentRestartKeepsVolumesInUse(t *testing.T) {
	e := newEnv(t)
	e.writeManifest("web.yaml", podManifest("web", "web-1"))
	a := e.start()
	waitFor(t, "web ready", 30*time.Second, podReady(a, "default/web"))

	cache := filepath.Join(e.root, "pods", "web-1", "volumes", "kubernetes.io~empty-dir", "cache")
	scratch := filepath.Join(e.root, "pods", "web-1", "volumes", "kubernetes.io~empty-dir", "scratch")
	before := mountIDs(t, cache)
	if len(before) != 1 {
		t.Fatalf("mounts at %s: %v, want one", cache, before)
	}
	file, err := os.OpenFile(filepath.Join(cache, "db"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteString("before;"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(scratch, "notes"), []byte("disk"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, restart := range []struct {
		name string
		stop func()
	}{
		{"SIGKILL", func() { a.kill() }},
		{"SIGTERM", func() {
			if err := a.stop(syscall.SIGTERM, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		restart.stop()
		a = e.start()
		waitFor(t, "web ready after "+restart.name, 30*time.Second, podReady(a, "default/web"))
		waitFor(t, "readyz after "+restart.name, 10*time.Second, func(ctx context.Context) (bool, error) { return a.client.Readyz(ctx) == nil, nil })
		if after := mountIDs(t, cache); len(after) != 1 || after[0] != before[0] {
			t.Errorf("after %s: mounts at the tmpfs volume %v, want the same single mount %v", restart.name, after, before)
		}
		if _, err := file.WriteString("after " + restart.name + ";"); err != nil {
			t.Fatalf("writing through the open file after %s: %v", restart.name, err)
		}
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	viaFd, _ := io.ReadAll(file)
	viaPath, err := os.ReadFile(filepath.Join(cache, "db"))
	want := "before;after SIGKILL;after SIGTERM;"
	if err != nil || string(viaPath) != want || string(viaFd) != want {
		t.Errorf("file content: by path %q (%v), by fd %q; want %q", viaPath, err, viaFd, want)
	}
	if data, err := os.ReadFile(filepath.Join(scratch, "notes")); err != nil || string(data) != "disk" {
		t.Errorf("disk volume file after restarts: %q, %v", data, err)
	}
	// No volume operation failed across the restarts.
	events, err := a.client.Events(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.PodUID != "" && ev.Type != "Normal" {
			t.Errorf("unexpected event after restart: %+v", ev)
		}
	}
}

// TestAgentRestartKeepsTheVolumesOfAManifestThatFailsToLoad: a manifest broken
// while the agent was stopped declares no pods after the restart; its
// volumes found on disk are kept (and the agent not ready) until it loads.
func TestAgentRestartKeepsTheVolumesOfAManifestThatFailsToLoad(t *testing.T) {
	e := newEnv(t)
	e.writeManifest("web.yaml", podManifest("web", "web-1"))
	a := e.start()
	waitFor(t, "web ready", 30*time.Second, podReady(a, "default/web"))
	notes := filepath.Join(e.root, "pods", "web-1", "volumes", "kubernetes.io~empty-dir", "scratch", "notes")
	if err := os.WriteFile(notes, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	e.writeManifest("web.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: web\n  uid: web-1\n")
	a = e.start()
	waitFor(t, "the broken file's error", 10*time.Second, func(ctx context.Context) (bool, error) {
		status, err := a.client.Status(ctx)
		return err == nil && len(status.SourceErrors) == 1 && strings.HasSuffix(status.SourceErrors[0].Name, "web.yaml"), nil
	})
	// Give the agent time to act on what it found.
	if err := waitForErr(time.Second, func(ctx context.Context) (bool, error) {
		_, err := os.Stat(notes)
		return err != nil, nil
	}); err == nil {
		t.Fatalf("the volume of the broken file was torn down; agent log:\n%s", a.output())
	}
	if err := a.client.Readyz(t.Context()); err == nil {
		t.Error("readyz is ok while a manifest never loaded")
	}

	e.writeManifest("web.yaml", podManifest("web", "web-1"))
	waitFor(t, "web ready once fixed", 30*time.Second, podReady(a, "default/web"))
	waitFor(t, "readyz once fixed", 10*time.Second, func(ctx context.Context) (bool, error) { return a.client.Readyz(ctx) == nil, nil })
	if data, err := os.ReadFile(notes); err != nil || string(data) != "keep me" {
		t.Errorf("file in the volume after the fix: %q, %v", data, err)
	}
}

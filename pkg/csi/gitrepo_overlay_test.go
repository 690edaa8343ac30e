package csi_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volume-agent/volume-agent/pkg/volume/gitrepo"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// overlayMagic is the file system type statfs reports for an overlay.
const overlayMagic = 0x794c7630

// TestEphemeralGitRepoOverlay publishes two gitRepo volumes of one revision
// with the cache in overlay mode: each target path is an overlay mount, a
// write in one shows neither in the other nor in a third published later,
// and unpublishing leaves nothing mounted or on disk.
func TestEphemeralGitRepoOverlay(t *testing.T) {
	cfg := gitConfig()
	cfg.Cache = gitrepo.CacheConfig{Enabled: true, Mode: gitrepo.CacheModeOverlay}
	e := newEnv(t, cfg)
	srv := startGitServer(t)
	repo, err := srv.NewRepo("site.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(gitserver.DefaultBranch, "v1", gitserver.File("index.html", "v1\n")); err != nil {
		t.Fatal(err)
	}
	attrs := map[string]string{"type": "gitRepo", "repository": srv.GitURL("site.git"), "revision": gitserver.DefaultBranch, "directory": "."}
	publish := func(id, pod string) string {
		target := e.target(pod, "site")
		e.mustPublish(t, e.request(id, target, pod, attrs))
		var st unix.Statfs_t
		if err := unix.Statfs(target, &st); err != nil || st.Type != overlayMagic {
			t.Errorf("target %s is not an overlay mount: type %#x, %v", target, st.Type, err)
		}
		return target
	}
	a, b := publish("csi-a", "pod-a"), publish("csi-b", "pod-b")
	if err := os.WriteFile(filepath.Join(a, "index.html"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := publish("csi-c", "pod-c")
	for _, target := range []string{b, c} {
		if data, err := os.ReadFile(filepath.Join(target, "index.html")); err != nil || string(data) != "v1\n" {
			t.Errorf("%s: index.html = %q, %v; a write to another volume shows", target, data, err)
		}
	}
	for id, target := range map[string]string{"csi-a": a, "csi-b": b} {
		if err := e.unpublish(id, target); err != nil {
			t.Fatalf("NodeUnpublishVolume(%s) = %v", id, err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s left: %v", target, err)
		}
		assertNoMountsBeneath(t, target)
	}
	// The last one checks that nothing at all is left.
	e.mustUnpublish(t, "csi-c", c)
}

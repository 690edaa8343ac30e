package gitrepo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// overlayConfig is realConfig with the cache making overlay volumes.
func overlayConfig(t *testing.T) Config {
	t.Helper()
	requireOverlay(t)
	cfg := realConfig(true)
	cfg.Cache.Mode = CacheModeOverlay
	return cfg
}

// lowerOf returns the lower layer the overlay volume of pod uid uses.
func (e *realEnv) lowerOf(t *testing.T, uid string) string {
	t.Helper()
	lower, err := newOverlayVolume(e.metaDir(uid)).lower()
	if err != nil || lower == "" {
		t.Fatalf("volume %s has no overlay record: %q, %v", uid, lower, err)
	}
	return lower
}

// treeDigest returns a digest of the tree at dir: every path, mode, owner,
// symlink target and file content.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	sum := sha256.New()
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		fmt.Fprintf(sum, "%s %v %d %d\n", path, info.Mode(), st.Uid, st.Gid)
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum.Write(data)
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			fmt.Fprintln(sum, target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(sum.Sum(nil))
}

func commitAs(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return userGit(t, dir, append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid"}, args...)...)
}

// TestOverlayVolumesArePrivate makes two overlay volumes of one revision:
// writes, deletes and renames in one show neither in the other nor in the
// lower layer; git status is clean in both; a commit and a pull work inside
// one; and an unmodified volume takes almost no disk.
func TestOverlayVolumesArePrivate(t *testing.T) {
	env := newRealEnv(t, overlayConfig(t))
	s := newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git")}
	a := filepath.Join(env.mustSetUp(t, "a", src), "sample")
	b := filepath.Join(env.mustSetUp(t, "b", src), "sample")
	lower := env.lowerOf(t, "a")
	if got := env.lowerOf(t, "b"); got != lower {
		t.Fatalf("two volumes of one revision have lower layers %s and %s, want one", lower, got)
	}
	before := treeDigest(t, lower)

	for _, work := range []string{a, b} {
		if got := userGit(t, work, "status", "--porcelain"); got != "" {
			t.Errorf("%s: status not clean:\n%s", work, got)
		}
	}
	if err := os.WriteFile(filepath.Join(a, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(a, "a.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(a, "b.txt"), filepath.Join(a, "renamed.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(a, ".git", "refs"), filepath.Join(a, ".git", "refs.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(a, ".git", "refs.moved"), filepath.Join(a, ".git", "refs")); err != nil {
		t.Fatal(err)
	}
	commitAs(t, a, "add", "--all")
	commitAs(t, a, "commit", "--quiet", "-m", "in the volume")
	if got := userGit(t, a, "log", "--format=%s", "-1"); got != "in the volume" {
		t.Errorf("log after a commit shows %q", got)
	}
	moved, err := s.repo.Commit("main", "upstream", gitserver.File("up.txt", "up\n"))
	if err != nil {
		t.Fatal(err)
	}
	userGit(t, b, "pull", "--quiet", "--ff-only")
	if got := userGit(t, b, "rev-parse", "HEAD"); got != moved {
		t.Errorf("after a pull, HEAD = %s, want %s", got, moved)
	}

	if got := treeDigest(t, lower); got != before {
		t.Error("writing to overlay volumes changed their lower layer")
	}
	for name, want := range map[string]string{"a.txt": "a\n", "b.txt": "b\n", "README.md": "# sample\n"} {
		if data, err := os.ReadFile(filepath.Join(b, name)); err != nil || string(data) != want {
			t.Errorf("volume b's %s = %q, %v; want %q as cloned", name, data, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(b, "new.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file written in volume a shows in volume b: %v", err)
	}

	// An unmodified volume's upper layer holds next to nothing.
	c := env.mustSetUp(t, "c", src)
	userGit(t, filepath.Join(c, "sample"), "status", "--porcelain")
	if used, err := diskUsage(newOverlayVolume(env.metaDir("c")).dir); err != nil || used > 1<<20 {
		t.Errorf("an unmodified overlay volume takes %d bytes (%v), want at most 1 MB", used, err)
	}
	for _, uid := range []string{"a", "b", "c"} {
		env.tearDown(t, uid)
	}
	if !exists(lower) {
		t.Error("tear-down removed a lower layer")
	}
}

// TestOverlayFsGroupAndReadOnly checks that fsGroup applies through the
// overlay without changing the lower layer, and that a read-only volume
// refuses writes.
func TestOverlayFsGroupAndReadOnly(t *testing.T) {
	env := newRealEnv(t, overlayConfig(t))
	newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Directory: "."}
	group := int64(4321)
	path, err := env.setUp("g", src, &group)
	if err != nil {
		t.Fatal(err)
	}
	lower := env.lowerOf(t, "g")
	for _, p := range []string{path, filepath.Join(path, "a.txt"), filepath.Join(path, ".git", "HEAD")} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if gid := info.Sys().(*syscall.Stat_t).Gid; gid != uint32(group) {
			t.Errorf("%s has group %d, want %d", p, gid, group)
		}
	}
	if info, err := os.Stat(filepath.Join(lower, "a.txt")); err != nil || info.Sys().(*syscall.Stat_t).Gid == uint32(group) {
		t.Errorf("fsGroup changed the lower layer (%v)", err)
	}
	if env.plugin().overlay.metacopy {
		// Only metadata was copied up: far less than the files' data.
		if used, err := diskUsage(newOverlayVolume(env.metaDir("g")).upper()); err != nil || used > 1<<20 {
			t.Errorf("fsGroup took %d bytes of the upper layer (%v)", used, err)
		}
	}

	b, err := env.plugin().NewBuilder(&volume.Spec{Volume: gitRepoSpec("vol", src).Volume, ReadOnly: true}, testPod("ro"), volume.VolumeOptions{Context: t.Context()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetUp(nil); err != nil {
		t.Fatal(err)
	}
	if !b.GetAttributes().ReadOnly {
		t.Error("a read-only volume's attributes say it is writable")
	}
	if err := os.WriteFile(filepath.Join(b.GetPath(), "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing to a read-only volume: %v, want EROFS", err)
	}
	env.tearDown(t, "ro")
	env.tearDown(t, "g")
}

// TestOverlayEvictionUnderUse runs the cache with a bound so small that
// every pass evicts all it may: a lower layer a mounted volume uses is kept,
// and the volume keeps working; a moved branch makes a new lower layer and
// leaves the old one as it was; once no volume uses a layer, it goes.
func TestOverlayEvictionUnderUse(t *testing.T) {
	cfg := overlayConfig(t)
	cfg.Cache.MaxBytes = 1
	env := newRealEnv(t, cfg)
	s := newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Revision: "dev"}
	old := filepath.Join(env.mustSetUp(t, "old", src), "sample")
	oldLower := env.lowerOf(t, "old")
	oldDigest := treeDigest(t, oldLower)

	moved, err := s.repo.Commit("dev", "more", gitserver.File("more.txt", "more\n"))
	if err != nil {
		t.Fatal(err)
	}
	// A volume of another repository makes the cache grow and evict.
	newSampleRepo(t, env.srv, "other.git")
	env.mustSetUp(t, "other", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("other.git")})
	newer := filepath.Join(env.mustSetUp(t, "new", src), "sample")
	newLower := env.lowerOf(t, "new")
	if newLower == oldLower {
		t.Fatal("a moved branch reused the old lower layer")
	}
	if got := userGit(t, newer, "rev-parse", "HEAD"); got != moved {
		t.Errorf("the new volume's HEAD = %s, want the moved branch's %s", got, moved)
	}
	if !exists(oldLower) || treeDigest(t, oldLower) != oldDigest {
		t.Fatal("the lower layer of a mounted volume was removed or changed")
	}
	if got := userGit(t, old, "rev-parse", "HEAD"); got != s.devCommit {
		t.Errorf("the old volume's HEAD = %s, want %s", got, s.devCommit)
	}
	if got := userGit(t, old, "status", "--porcelain"); got != "" {
		t.Errorf("the old volume is not clean after evictions: %s", got)
	}

	env.tearDown(t, "old")
	env.mustSetUp(t, "another", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("other.git"), Revision: "dev"})
	if exists(oldLower) {
		t.Error("a lower layer no volume uses survived an eviction")
	}
	if !exists(newLower) {
		t.Error("the lower layer of a mounted volume was evicted")
	}
}

// TestOverlayRestart restarts the plugin with overlay volumes mounted: the
// users of each lower layer are counted again from disk, so eviction keeps
// them; a volume whose mount is gone (a reboot) is mounted again with what
// was written to it; and both tear down.
func TestOverlayRestart(t *testing.T) {
	cfg := overlayConfig(t)
	cfg.Cache.MaxBytes = 1
	env := newRealEnv(t, cfg)
	newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Directory: "."}
	a := env.mustSetUp(t, "a", src)
	b := env.mustSetUp(t, "b", src)
	if err := os.WriteFile(filepath.Join(b, "kept.txt"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lower := env.lowerOf(t, "a")

	env.start()
	if _, err := env.builder("any", src); err != nil {
		t.Fatal(err)
	}
	if !env.plugin().cache.inUse(lower) {
		t.Fatal("after a restart, the cache does not know the lower layer is in use")
	}
	// The mount of b is lost, as in a reboot.
	if err := syscall.Unmount(b, 0); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"a", "b"} {
		env.mustSetUp(t, uid, src)
	}
	if data, err := os.ReadFile(filepath.Join(b, "kept.txt")); err != nil || string(data) != "kept\n" {
		t.Errorf("a volume mounted again lost what was written to it: %q, %v", data, err)
	}
	newSampleRepo(t, env.srv, "other.git")
	env.mustSetUp(t, "other", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("other.git")})
	if !exists(lower) {
		t.Fatal("a lower layer in use was evicted after a restart")
	}
	if got := userGit(t, a, "status", "--porcelain"); got != "" {
		t.Errorf("volume not clean after a restart: %s", got)
	}
	for _, uid := range []string{"a", "b"} {
		env.tearDown(t, uid)
		if _, err := os.Lstat(newOverlayVolume(env.metaDir(uid)).dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("tear-down left the overlay dir of %s: %v", uid, err)
		}
	}
	if env.plugin().cache.inUse(lower) {
		t.Error("the lower layer is still counted as in use after both tear-downs")
	}
}

// TestOverlayInterruptedSetUp: a set-up killed after its overlay was mounted
// and before the ready marker was written is set up again with one overlay
// at the volume's path, not a second one stacked on the first.
func TestOverlayInterruptedSetUp(t *testing.T) {
	env := newRealEnv(t, overlayConfig(t))
	newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Directory: "."}
	dir := env.mustSetUp(t, "a", src)
	lower := env.lowerOf(t, "a")
	// The kill: the overlay is mounted, the ready marker not yet written.
	if err := removeReadyMarker(env.metaDir("a")); err != nil {
		t.Fatal(err)
	}
	env.start()
	env.mustSetUp(t, "a", src)
	if n := overlayMountsAt(t, dir); n != 1 {
		t.Fatalf("%d overlay mounts at %s after the set-up was done again; want 1", n, dir)
	}
	env.tearDown(t, "a")
	if n := overlayMountsAt(t, dir); n != 0 {
		t.Errorf("%d overlay mounts left at %s after the tear-down", n, dir)
	}
	if env.plugin().cache.inUse(lower) {
		t.Error("the lower layer is still counted as in use after the tear-down")
	}
}

// overlayMountsAt counts the overlay mounts whose mount point is dir.
func overlayMountsAt(t *testing.T, dir string) int {
	t.Helper()
	mounts, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range mounts {
		if m.MountPoint == dir && m.FsType == "overlay" {
			n++
		}
	}
	return n
}

// TestOverlayTearDownSafety plants a mount inside an overlay volume, and a
// symlink to a dir outside it in its upper layer: the tear-down refuses to
// cross the mount and removes nothing, and never follows the symlink.
func TestOverlayTearDownSafety(t *testing.T) {
	env := newRealEnv(t, overlayConfig(t))
	newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Directory: "."}

	t.Run("nested mount", func(t *testing.T) {
		path := env.mustSetUp(t, "nested", src)
		inner := filepath.Join(path, "inner")
		if err := os.Mkdir(inner, 0o755); err != nil {
			t.Fatal(err)
		}
		volumetesting.Mount(t, "tmpfs", inner, "tmpfs", []string{"size=1m"})
		if err := os.WriteFile(filepath.Join(inner, "data"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := env.plugin().NewCleaner("vol", types.UID("nested"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.TearDown(); err == nil {
			t.Fatal("TearDown() with a mount inside the overlay succeeded")
		}
		if _, err := os.Stat(filepath.Join(inner, "data")); err != nil {
			t.Errorf("the nested mount's data is gone: %v", err)
		}
		if _, err := os.Stat(filepath.Join(path, "a.txt")); err != nil {
			t.Errorf("the volume's files are gone: %v", err)
		}
		if err := syscall.Unmount(inner, 0); err != nil {
			t.Fatal(err)
		}
		env.tearDown(t, "nested")
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("volume left after the tear-down: %v", err)
		}
	})

	t.Run("symlink in the upper layer", func(t *testing.T) {
		outside := t.TempDir()
		if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("p"), 0o644); err != nil {
			t.Fatal(err)
		}
		path := env.mustSetUp(t, "link", src)
		if err := os.Symlink(outside, filepath.Join(path, "escape")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(newOverlayVolume(env.metaDir("link")).upper(), "planted")); err != nil {
			t.Fatal(err)
		}
		env.tearDown(t, "link")
		if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
			t.Errorf("tear-down followed a symlink out of the volume: %v", err)
		}
		if _, err := os.Lstat(newOverlayVolume(env.metaDir("link")).dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("tear-down left the overlay dir: %v", err)
		}
	})
}

// refusingMounter refuses overlay mounts, as a kernel without overlay or a
// root file system overlay cannot sit on does.
type refusingMounter struct {
	mount.Interface
}

func (m refusingMounter) Mount(source, target, fstype string, options []string) error {
	if fstype == "overlay" {
		return errors.New("mount: unknown filesystem type 'overlay'")
	}
	return m.Interface.Mount(source, target, fstype, options)
}

// TestOverlayRefused checks the modes where overlay mounts are refused:
// auto falls back to copies and says why in the health check; overlay makes
// the plugin unusable, naming the setting.
func TestOverlayRefused(t *testing.T) {
	requireOverlay(t)
	for _, mode := range []string{CacheModeAuto, CacheModeOverlay} {
		t.Run(mode, func(t *testing.T) {
			cfg := realConfig(true)
			cfg.Cache.Mode = mode
			env := &realEnv{t: t, root: t.TempDir(), srv: gitserver.StartForTest(t), cfg: cfg, mounter: refusingMounter{mount.New("")}}
			t.Cleanup(func() { unmountAllUnder(t, env.root) })
			env.start()
			newSampleRepo(t, env.srv, "sample.git")
			path, err := env.setUp("pod", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git")}, nil)
			health := env.plugin().CheckHealth(t.Context())
			mountDetail := health.Details["cacheMode"]
			if mode == CacheModeOverlay {
				if err == nil || !strings.Contains(err.Error(), "gitRepo.cache.mode") {
					t.Errorf("SetUp() error = %v, want one naming gitRepo.cache.mode", err)
				}
				if health.Usable || !strings.Contains(health.Message, "unknown filesystem type") {
					t.Errorf("health = %+v, want unusable, saying why", health)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if mounted, err := isOverlayMount(path); err != nil || mounted {
				t.Errorf("a volume is an overlay although overlay mounts are refused (%v)", err)
			}
			if got := userGit(t, filepath.Join(path, "sample"), "status", "--porcelain"); got != "" {
				t.Errorf("copied volume not clean: %s", got)
			}
			if !health.Usable || !strings.HasPrefix(mountDetail, "copy (auto)") || !strings.Contains(mountDetail, "unknown filesystem type") {
				t.Errorf("health = %+v, want usable, in copy mode, saying why", health)
			}
			if !util.IsReady(env.metaDir("pod")) {
				t.Error("volume not ready")
			}
			env.tearDown(t, "pod")
		})
	}
}

// TestOverlayProbeCleanUpOutlastsABusyMount mounts a probe's overlays for
// real and keeps a file in one open, as a process forked beside the probe
// does until it execs: the clean-up waits it out, and leaves neither a
// mount nor the probe's dir.
func TestOverlayProbeCleanUpOutlastsABusyMount(t *testing.T) {
	requireOverlay(t)
	mounter := mount.New("")
	dir := filepath.Join(t.TempDir(), ".overlay-probe")
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, mounter, filepath.Dir(dir)) })
	if err := tryOverlay(mounter, dir, false); err != nil {
		t.Fatalf("tryOverlay = %v", err)
	}
	held, err := os.Open(filepath.Join(dir, "a", "merged", "file"))
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(2 * probeUnmountBackoff)
		held.Close()
	}()
	if err := cleanProbe(mounter, dir); err != nil {
		t.Errorf("cleanProbe with a file open for a moment = %v", err)
	}
	<-released
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the probe's dir is left: %v", err)
	}
}

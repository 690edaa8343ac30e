package gitrepo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// mirrors returns the mirrors in the cache.
func (e *realEnv) mirrors() []string {
	matches, _ := filepath.Glob(filepath.Join(e.cacheDir(), "*", mirrorDirName))
	return matches
}

// TestConcurrentVolumesShareOneFetch sets two volumes of one repository up
// at the same time, on a cold cache and then on a warm one with a branch
// (which is always fetched again): each time the server sees one fetch.
func TestConcurrentVolumesShareOneFetch(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "sample.git")
	url := env.srv.GitURL("sample.git")

	setUpTwo := func(round, rev string) []string {
		release := env.srv.Hold()
		defer release()
		paths := make([]string, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				paths[i], errs[i] = env.setUp(fmt.Sprintf("%s-%d", round, i), v1.GitRepoVolumeSource{Repository: url, Revision: rev}, nil)
			})
		}
		if !waitFor(10*time.Second, func() bool { return env.srv.Waiting() > 0 }) {
			t.Fatal("no fetch reached the server")
		}
		// Give the second volume the time to reach the cache.
		time.Sleep(300 * time.Millisecond)
		release()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: SetUp %d error = %v", round, i, err)
			}
		}
		return paths
	}

	setUpTwo("cold", "")
	if got := env.srv.Fetches("sample.git"); got != 1 {
		t.Errorf("two volumes on a cold cache made %d fetches, want 1", got)
	}
	third, err := s.repo.Commit("main", "third", gitserver.File("c.txt", "c\n"))
	if err != nil {
		t.Fatal(err)
	}
	paths := setUpTwo("warm", "main")
	if got := env.srv.Fetches("sample.git"); got != 2 {
		t.Errorf("two volumes of a branch on a warm cache made %d more fetches, want 1", got-1)
	}
	for _, path := range paths {
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != third {
			t.Errorf("HEAD = %s, want the moved branch's %s", got, third)
		}
	}
}

// TestCacheRevisions checks when the cache goes to the network: a branch is
// always fetched again, so a moved branch is seen; a full commit id the
// mirror has is not, and works with the server down.
func TestCacheRevisions(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "sample.git")
	url := env.srv.HTTPURL("sample.git")

	// Two volumes each time: the second is copied from a finished checkout,
	// which must follow the branch too.
	for _, uid := range []string{"a1", "a2"} {
		path := env.mustSetUp(t, uid, v1.GitRepoVolumeSource{Repository: url, Revision: "dev"})
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != s.devCommit {
			t.Fatalf("%s: HEAD = %s, want %s", uid, got, s.devCommit)
		}
	}
	moved, err := s.repo.Commit("dev", "more dev work", gitserver.File("dev2.txt", "dev2\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"b1", "b2", "b3"} {
		path := env.mustSetUp(t, uid, v1.GitRepoVolumeSource{Repository: url, Revision: "dev"})
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != moved {
			t.Errorf("%s: after the branch moved, HEAD = %s, want %s", uid, got, moved)
		}
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "origin/dev"); got != moved {
			t.Errorf("%s: origin/dev = %s, want %s", uid, got, moved)
		}
	}

	fetches := env.srv.Fetches("sample.git")
	env.srv.Down()
	for _, uid := range []string{"c1", "c2", "c3"} {
		path := env.mustSetUp(t, uid, v1.GitRepoVolumeSource{Repository: url, Revision: s.first})
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != s.first {
			t.Errorf("%s: HEAD = %s, want %s", uid, got, s.first)
		}
	}
	if err := env.srv.Up(); err != nil {
		t.Fatal(err)
	}
	if got := env.srv.Fetches("sample.git"); got != fetches {
		t.Errorf("a full commit id in the mirror made %d fetches, want none", got-fetches)
	}
}

// TestVolumeOutlivesItsMirror deletes the mirror: the volumes made from it
// still work, and the next volume makes a new mirror.
func TestVolumeOutlivesItsMirror(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "sample.git")
	url := env.srv.GitURL("sample.git")
	path := env.mustSetUp(t, "a", v1.GitRepoVolumeSource{Repository: url, Directory: "."})
	mirrors := env.mirrors()
	if len(mirrors) != 1 {
		t.Fatalf("found mirrors %v, want one", mirrors)
	}
	if err := os.RemoveAll(mirrors[0]); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"fsck", "--no-progress", "--full"}, {"log", "--oneline", "--all"}, {"diff", "HEAD~1"}, {"status"}, {"checkout", "--quiet", "v1"}} {
		userGit(t, path, args...)
	}
	if got := userGit(t, path, "rev-parse", "HEAD"); got != s.first {
		t.Errorf("HEAD after checking v1 out = %s, want %s", got, s.first)
	}
	env.mustSetUp(t, "b", v1.GitRepoVolumeSource{Repository: url})
	if len(env.mirrors()) != 1 {
		t.Errorf("no new mirror after the old one was deleted: %v", env.mirrors())
	}
}

// fileState is what a pod could change about a file.
type fileState struct {
	mode  fs.FileMode
	hash  string
	inode uint64
}

// snapshot returns the state of every file under dir.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: info.Mode(), inode: info.Sys().(*syscall.Stat_t).Ino}
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			st.hash = hex.EncodeToString(sum[:])
		}
		rel, _ := filepath.Rel(dir, path)
		out[rel] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWritingToAVolumeTouchesNothingElse writes everywhere in one volume,
// objects and refs included, and checks that the cache (mirror and finished
// checkouts) and another volume of the same repository are unchanged, and
// share no inode with it.
func TestWritingToAVolumeTouchesNothingElse(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	newSampleRepo(t, env.srv, "sample.git")
	url := env.srv.GitURL("sample.git")
	writer := env.mustSetUp(t, "writer", v1.GitRepoVolumeSource{Repository: url, Directory: "."})
	other := env.mustSetUp(t, "other", v1.GitRepoVolumeSource{Repository: url, Directory: "."})
	mirror := env.mirrors()[0]
	cache := env.cacheDir()
	cacheBefore, otherBefore := snapshot(t, cache), snapshot(t, other)

	inodes := map[uint64]string{}
	for _, dir := range []string{cache, other} {
		for rel, st := range snapshot(t, dir) {
			if st.mode.IsRegular() {
				inodes[st.inode] = filepath.Join(dir, rel)
			}
		}
	}
	err := filepath.WalkDir(writer, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || !entry.Type().IsRegular() {
			return err
		}
		info, _ := entry.Info()
		if shared, ok := inodes[info.Sys().(*syscall.Stat_t).Ino]; ok {
			t.Errorf("%s shares its inode with %s", path, shared)
		}
		// A pod running as root can write to read-only files too.
		if err := os.Chmod(path, 0o644); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString("written by the pod\n")
		f.Close()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(writer, ".git", "objects", "info", "alternates"), []byte(mirror+"/objects\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for name, check := range map[string]struct {
		dir    string
		before map[string]fileState
	}{"cache": {cache, cacheBefore}, "other volume": {other, otherBefore}} {
		after := snapshot(t, check.dir)
		if len(after) != len(check.before) {
			t.Errorf("%s has %d files after the writes, %d before", name, len(after), len(check.before))
		}
		for rel, st := range check.before {
			if after[rel] != st {
				t.Errorf("%s: %s changed: %+v -> %+v", name, rel, st, after[rel])
			}
		}
	}
	if out, err := runUserGit(other, "fsck", "--no-progress", "--full"); err != nil {
		t.Errorf("other volume broken: %v: %s", err, out)
	}
}

// TestCacheEviction bounds the cache below two mirrors: after a third
// repository is used, the least recently used mirror is gone, the newest is
// kept, and a mirror in use is never evicted.
func TestCacheEviction(t *testing.T) {
	cfg := realConfig(true)
	env := newRealEnv(t, cfg)
	for _, name := range []string{"r1.git", "r2.git", "r3.git"} {
		randomRepo(t, env.srv, name, 256<<10)
	}
	entryOf := func(name string) cacheEntry {
		e, err := env.plugin().cache.entry(env.srv.GitURL(name))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	env.mustSetUp(t, "a", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("r1.git")})
	mirrorSize, err := diskUsage(entryOf("r1.git").dir)
	if err != nil {
		t.Fatal(err)
	}
	// Restart with room for a bit more than two mirrors.
	env.cfg.Cache.MaxBytes = mirrorSize*2 + mirrorSize/2
	env.start()
	time.Sleep(10 * time.Millisecond) // distinct last-used times
	env.mustSetUp(t, "b", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("r2.git")})
	if !exists(entryOf("r1.git").mirror()) || !exists(entryOf("r2.git").mirror()) {
		t.Fatal("a mirror was evicted while the cache was under its bound")
	}
	time.Sleep(10 * time.Millisecond)
	env.mustSetUp(t, "c", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("r3.git")})
	if exists(entryOf("r1.git").mirror()) {
		t.Error("the least recently used mirror r1 was not evicted")
	}
	if !exists(entryOf("r2.git").mirror()) || !exists(entryOf("r3.git").mirror()) {
		t.Error("a recently used mirror was evicted")
	}
	if total, _ := diskUsage(env.cacheDir()); total > env.cfg.Cache.MaxBytes {
		t.Errorf("cache takes %d bytes, over its bound of %d", total, env.cfg.Cache.MaxBytes)
	}

	// r2 is now the oldest, but in use: r3 goes instead.
	unlock, err := lockFile(context.Background(), entryOf("r2.git").path(lockFileName), syscall.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	env.mustSetUp(t, "d", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("r1.git")})
	unlock()
	if !exists(entryOf("r2.git").mirror()) {
		t.Error("a mirror in use was evicted")
	}
	if exists(entryOf("r3.git").mirror()) {
		t.Error("r3 was kept though the cache is over its bound and r2 was in use")
	}
	if !exists(entryOf("r1.git").mirror()) {
		t.Error("the mirror just used was evicted")
	}
}

// TestCacheRepair leaves the cache as crashes would, and corrupts a mirror:
// the next volume repairs or rebuilds it, or falls back to a direct clone.
func TestCacheRepair(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "sample.git")
	url := env.srv.HTTPURL("sample.git")
	env.mustSetUp(t, "a", v1.GitRepoVolumeSource{Repository: url})
	e, err := env.plugin().cache.entry(url)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("interrupted fetch and half-made mirror", func(t *testing.T) {
		for _, dir := range []string{e.path(newMirrorPrefix + "123"), e.path(oldMirrorPrefix + "456/mirror.git")} {
			if err := os.MkdirAll(filepath.Join(dir, "objects"), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{e.path(fetchingFileName), filepath.Join(e.mirror(), "packed-refs.lock"), filepath.Join(e.mirror(), "refs", "heads", "main.lock")} {
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		path := env.mustSetUp(t, "b", v1.GitRepoVolumeSource{Repository: url, Revision: "main"})
		if got := userGit(t, filepath.Join(path, "sample"), "rev-parse", "HEAD"); got != s.second {
			t.Errorf("HEAD = %s, want %s", got, s.second)
		}
		assertNoCacheLeftovers(t, env)
		for _, f := range []string{"packed-refs.lock", "refs/heads/main.lock"} {
			if exists(filepath.Join(e.mirror(), f)) {
				t.Errorf("stale %s left in the mirror", f)
			}
		}
	})

	t.Run("corrupt mirror", func(t *testing.T) {
		packs, _ := filepath.Glob(filepath.Join(e.mirror(), "objects", "pack", "*"))
		loose, _ := filepath.Glob(filepath.Join(e.mirror(), "objects", "??"))
		if len(packs)+len(loose) == 0 {
			t.Fatal("mirror has no objects to corrupt")
		}
		for _, p := range append(packs, loose...) {
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
		}
		path := env.mustSetUp(t, "c", v1.GitRepoVolumeSource{Repository: url, Revision: "dev", Directory: "."})
		if got := userGit(t, path, "rev-parse", "HEAD"); got != s.devCommit {
			t.Errorf("HEAD = %s, want %s", got, s.devCommit)
		}
		userGit(t, path, "fsck", "--no-progress")
		// The mirror was repaired by the fetch, or dropped and made anew.
		env.mustSetUp(t, "d", v1.GitRepoVolumeSource{Repository: url, Revision: "dev"})
		if out, err := runUserGit("/", "--git-dir="+e.mirror(), "fsck", "--no-progress"); err != nil {
			t.Errorf("mirror still broken: %v: %s", err, out)
		}
	})
}

// TestCacheErrorsUnderASizeLimit checks that the size watch does not change
// how the cache's errors are told apart: a fetch that git ended itself
// leaves no "fetching" marker (the mirror is consistent), and a mirror
// refused by git's object checks is final, so no direct clone follows.
func TestCacheErrorsUnderASizeLimit(t *testing.T) {
	cfg := realConfig(true)
	cfg.MaxSizeBytes = 1 << 30
	env := newRealEnv(t, cfg)
	newSampleRepo(t, env.srv, "sample.git")
	newHostileRepo(t, env.srv)

	t.Run("failed fetch leaves no marker", func(t *testing.T) {
		src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Revision: "main"}
		env.mustSetUp(t, "warm", src)
		env.srv.Down()
		_, err := env.setUp("down", src, nil)
		if upErr := env.srv.Up(); upErr != nil {
			t.Fatal(upErr)
		}
		if err == nil {
			t.Fatal("SetUp() with the server down succeeded")
		}
		markers, _ := filepath.Glob(filepath.Join(env.cacheDir(), "*", fetchingFileName))
		if len(markers) != 0 {
			t.Errorf("a fetch that git ended itself left its marker: %v", markers)
		}
	})

	t.Run("object check refusal is final", func(t *testing.T) {
		_, err := env.setUp("refused", v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("dotgit.git"), Revision: "main"}, nil)
		if !volume.IsFinal(err) || !strings.Contains(err.Error(), "transfer.fsckObjects") {
			t.Errorf("SetUp() error = %v, want a final error from git's object checks", err)
		}
		if n := env.srv.Fetches("dotgit.git"); n != 1 {
			t.Errorf("server saw %d fetches of a refused repository, want 1 (no direct clone after a final error)", n)
		}
	})
}

// randomBlobs returns n files of 64 KiB of random (incompressible) content.
func randomBlobs(prefix string, n int) []gitserver.Entry {
	var entries []gitserver.Entry
	for i := range n {
		data := make([]byte, 64<<10)
		rand.Read(data)
		entries = append(entries, gitserver.Entry{Path: fmt.Sprintf("%s%03d.bin", prefix, i), Content: data})
	}
	return entries
}

// TestMirrorPastSizeLimit grows a mirror past MaxSizeBytes with branches
// that upstream deletes again (a mirror never collects its garbage): a
// volume that fits is then cloned directly, not failed, and the mirror is
// dropped.
func TestMirrorPastSizeLimit(t *testing.T) {
	cfg := realConfig(true)
	cfg.MaxSizeBytes = 1 << 20
	env := newRealEnv(t, cfg)
	s := newSampleRepo(t, env.srv, "grow.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("grow.git"), Revision: "main"}
	env.mustSetUp(t, "first", src)
	// Each branch fits in a volume, but not both in the mirror.
	for i, branch := range []string{"big1", "big2"} {
		if i > 0 {
			if _, err := s.repo.Git("branch", "-D", "big1"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.repo.Branch(branch, s.second); err != nil {
			t.Fatal(err)
		}
		if _, err := s.repo.Commit(branch, branch, randomBlobs(branch, 9)...); err != nil {
			t.Fatal(err)
		}
		path := env.mustSetUp(t, branch, src)
		if got := userGit(t, filepath.Join(path, "grow"), "rev-parse", "HEAD"); got != s.second {
			t.Errorf("HEAD = %s, want %s", got, s.second)
		}
	}
	if mirrors := env.mirrors(); len(mirrors) != 0 {
		t.Errorf("the mirror past the size limit was kept: %v", mirrors)
	}
	assertNoCacheLeftovers(t, env)
}

// TestMirrorAfterDefaultBranchRename renames upstream's default branch after
// the mirror is made: a volume without a revision still gets the new
// default branch checked out, not an empty work tree.
func TestMirrorAfterDefaultBranchRename(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "rename.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("rename.git")}
	env.mustSetUp(t, "before", src)
	if _, err := s.repo.Git("branch", "-m", "main", "trunk"); err != nil {
		t.Fatal(err)
	}
	if err := s.repo.SetHead("trunk"); err != nil {
		t.Fatal(err)
	}
	// The first volume after the rename and the next, from a checkout.
	for _, uid := range []string{"after", "again", "third"} {
		work := filepath.Join(env.mustSetUp(t, uid, src), "rename")
		if got := userGit(t, work, "rev-parse", "HEAD"); got != s.second {
			t.Errorf("%s: HEAD = %s, want %s", uid, got, s.second)
		}
		if _, err := os.Stat(filepath.Join(work, "README.md")); err != nil {
			t.Errorf("%s: work tree not checked out: %v", uid, err)
		}
	}
}

// TestCopiedCheckoutNamesItsOwnURL sets volumes of one repository up, spelt
// two ways that share a mirror: each names its own spelling as its origin
// and in its reflog, also when copied from a checkout another spelling made.
func TestCopiedCheckoutNamesItsOwnURL(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "spelt.git")
	plain := env.srv.HTTPURL("spelt.git")
	for i, repo := range []string{plain, plain, plain + "/", plain + "/"} {
		uid := fmt.Sprintf("pod%d", i)
		work := env.mustSetUp(t, uid, v1.GitRepoVolumeSource{Repository: repo, Revision: s.first, Directory: "."})
		if got := userGit(t, work, "config", "remote.origin.url"); got != repo {
			t.Errorf("%s: remote.origin.url = %q, want %q", uid, got, repo)
		}
		if got := userGit(t, work, "reflog", "--format=%gs"); !strings.Contains(got+"\n", "clone: from "+repo+"\n") {
			t.Errorf("%s: reflog = %q, want a clone from %q", uid, got, repo)
		}
	}
	if len(env.mirrors()) != 1 {
		t.Errorf("mirrors = %v, want one shared", env.mirrors())
	}
}

// recordingRunner runs commands through processGroupRunner and records
// their arguments.
type recordingRunner struct {
	mu   sync.Mutex
	args [][]string
}

func (r *recordingRunner) Run(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	r.args = append(r.args, args)
	r.mu.Unlock()
	return processGroupRunner{}.Run(ctx, dir, env, name, args...)
}

// TestMirrorCloneRunsInAProcessGroup checks that a volume's clone of the
// mirror, which starts git-upload-pack, runs in a process group of its own
// that a timeout kills whole.
func TestMirrorCloneRunsInAProcessGroup(t *testing.T) {
	env := &realEnv{t: t, root: t.TempDir(), srv: gitserver.StartForTest(t), cfg: realConfig(true)}
	network := &recordingRunner{}
	env.host, env.mgr = volumetesting.NewFakeVolumeHost(t, env.root,
		append([]volume.VolumePlugin{newPlugin(env.cfg, network)}, emptydir.ProbeVolumePlugins()...),
		volumetesting.FakeHostOptions{Mounter: mount.New(""), Exec: utilexec.New(), Clock: clock.RealClock{}})
	newSampleRepo(t, env.srv, "sample.git")
	env.mustSetUp(t, "pod", v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL("sample.git"), Revision: "main"})
	network.mu.Lock()
	defer network.mu.Unlock()
	for _, args := range network.args {
		if slices.Contains(args, "clone") && len(env.mirrors()) == 1 && slices.Contains(args, env.mirrors()[0]) {
			return
		}
	}
	t.Errorf("no clone of the mirror %v ran in a process group; those that did: %q", env.mirrors(), network.args)
}

// TestMirrorFollowsTheDefaultBranch changes upstream's default branch to
// another that exists beside the old one: a volume without a revision gets
// the new default branch, as a clone would, also from a warm cache.
func TestMirrorFollowsTheDefaultBranch(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	s := newSampleRepo(t, env.srv, "head.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("head.git")}
	for _, uid := range []string{"before-1", "before-2"} {
		if got := userGit(t, filepath.Join(env.mustSetUp(t, uid, src), "head"), "rev-parse", "HEAD"); got != s.second {
			t.Fatalf("%s: HEAD = %s, want main's %s", uid, got, s.second)
		}
	}
	if err := s.repo.SetHead("dev"); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"after-1", "after-2", "after-3"} {
		work := filepath.Join(env.mustSetUp(t, uid, src), "head")
		if got := userGit(t, work, "rev-parse", "HEAD"); got != s.devCommit {
			t.Errorf("%s: HEAD = %s, want the new default branch's %s", uid, got, s.devCommit)
		}
		if got := userGit(t, work, "symbolic-ref", "--short", "HEAD"); got != "dev" {
			t.Errorf("%s: HEAD's branch = %s, want dev", uid, got)
		}
	}
}

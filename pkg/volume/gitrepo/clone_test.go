package gitrepo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// TestRealClones sets volumes up from a repository served over git:// and
// smart HTTP, with and without the cache, at every kind of revision, and
// checks what a user of the volume would: the files, HEAD, the branch, the
// origin, a clean status, full history, and that the volume's refs are
// exactly those of a plain git clone.
func TestRealClones(t *testing.T) {
	for _, protocol := range []string{"git", "http"} {
		for _, mode := range []string{"direct", CacheModeCopy, CacheModeOverlay} {
			t.Run(protocol+"/"+mode, func(t *testing.T) {
				t.Parallel()
				cfg := realConfig(mode != "direct")
				if mode == CacheModeOverlay {
					requireOverlay(t)
					cfg.Cache.Mode = mode
				}
				env := newRealEnv(t, cfg)
				s := newSampleRepo(t, env.srv, "sample.git")
				url := env.url(protocol, "sample.git")
				plainClone := filepath.Join(t.TempDir(), "plain")
				userGit(t, "/", "clone", "--quiet", url, plainClone)
				wantRefs := userGit(t, plainClone, "for-each-ref", "--format=%(refname) %(objectname)", "refs/remotes", "refs/tags")
				plainInfo, err := os.Stat(plainClone)
				if err != nil {
					t.Fatal(err)
				}

				cases := []cloneCase{
					{name: "default branch", subdir: "sample", head: s.second, branch: "main", files: []string{"README.md", "a.txt", "b.txt"}},
					{name: "branch", revision: "dev", directory: "src", subdir: "src", head: s.devCommit, branch: "dev", files: []string{"a.txt", "dev.txt"}},
					{name: "annotated tag", revision: "v1", directory: "src", subdir: "src", head: s.first, files: []string{"a.txt"}},
					{name: "lightweight tag", revision: "light", subdir: "sample", head: s.second, files: []string{"b.txt"}},
					{name: "full commit id", revision: s.first, directory: ".", subdir: ".", head: s.first, files: []string{"README.md", "a.txt"}},
					{name: "abbreviated commit id", revision: s.devCommit[:8], directory: "./.", subdir: ".", head: s.devCommit, files: []string{"dev.txt"}},
					{name: "ancestor", revision: "main~1", subdir: "sample", head: s.first, files: []string{"a.txt"}},
					{name: "parent of HEAD", revision: "HEAD^", subdir: "sample", head: s.first, files: []string{"a.txt"}},
					{name: "peeled tag", revision: "v1^{commit}", directory: "src", subdir: "src", head: s.first, files: []string{"a.txt"}},
				}
				for i, tc := range cases {
					// The second volume of a revision is made another way by
					// the cache (copied from a finished checkout): check both.
					for n := range 2 {
						uid := fmt.Sprintf("%c%d", 'a'+i, n)
						checkVolume(t, env, url, uid, tc, wantRefs, plainInfo.Mode())
					}
				}
			})
		}
	}
}

// cloneCase is a volume of TestRealClones and what it must hold.
type cloneCase struct {
	name, revision, directory string
	// subdir is where the clone lands in the volume.
	subdir string
	head   string
	// branch is HEAD's branch; empty for a detached HEAD.
	branch string
	files  []string
}

// checkVolume sets volume uid up and checks it as a user would.
// cloneMode is the mode of the dir of a plain git clone.
func checkVolume(t *testing.T, env *realEnv, url, uid string, tc cloneCase, wantRefs string, cloneMode fs.FileMode) {
	t.Helper()
	path, err := env.setUp(uid, v1.GitRepoVolumeSource{Repository: url, Revision: tc.revision, Directory: tc.directory}, nil)
	if err != nil {
		t.Fatalf("%s: SetUp error = %v", tc.name, err)
	}
	work := filepath.Join(path, tc.subdir)
	wantOverlay := env.cfg.Cache.Enabled && env.cfg.Cache.Mode == CacheModeOverlay
	if mounted, err := isOverlayMount(path); err != nil || mounted != wantOverlay {
		t.Errorf("%s: volume is an overlay mount: %v (%v), want %v", tc.name, mounted, err, wantOverlay)
	}
	if tc.subdir != "." {
		if info, err := os.Stat(work); err != nil || info.Mode() != cloneMode {
			t.Errorf("%s: clone dir mode = %v (%v), want %v as a plain clone's", tc.name, info.Mode(), err, cloneMode)
		}
	}
	// The index's stat data matches the files, as after a
	// checkout: diff-files (which does not refresh) sees
	// nothing. Checked first, as status refreshes the index.
	if out := userGit(t, work, "diff-files", "--name-only"); out != "" {
		t.Errorf("%s: index stat data does not match the files: %s", tc.name, out)
	}
	for _, f := range tc.files {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("%s: %s missing: %v", tc.name, f, err)
		}
	}
	if got := userGit(t, work, "rev-parse", "HEAD"); got != tc.head {
		t.Errorf("%s: HEAD = %s, want %s", tc.name, got, tc.head)
	}
	branch, _ := runUserGit(work, "symbolic-ref", "--quiet", "--short", "HEAD")
	if strings.TrimSpace(branch) != tc.branch {
		t.Errorf("%s: HEAD's branch = %q, want %q", tc.name, strings.TrimSpace(branch), tc.branch)
	}
	if got := userGit(t, work, "remote", "get-url", "origin"); got != url {
		t.Errorf("%s: origin = %q, want %q", tc.name, got, url)
	}
	if got := userGit(t, work, "status", "--porcelain"); got != "" {
		t.Errorf("%s: status not clean:\n%s", tc.name, got)
	}
	if got := userGit(t, work, "log", "--format=%H", "--all"); len(strings.Fields(got)) != 3 {
		t.Errorf("%s: log --all shows %d commits, want the full history of 3", tc.name, len(strings.Fields(got)))
	}
	if got := userGit(t, work, "for-each-ref", "--format=%(refname) %(objectname)", "refs/remotes", "refs/tags"); got != wantRefs {
		t.Errorf("%s: refs differ from a plain clone's:\n%s\nwant:\n%s", tc.name, got, wantRefs)
	}
	assertSelfContained(t, env, work)
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o777 {
		t.Errorf("%s: volume root mode = %v, %v; want 0777", tc.name, info.Mode(), err)
	}
	if _, err := os.Lstat(stagingDir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: staging dir left after SetUp: %v", tc.name, err)
	}
}

// assertSelfContained checks that the clone at work needs nothing outside
// it and names no path of the cache.
func assertSelfContained(t *testing.T, env *realEnv, work string) {
	t.Helper()
	gitDir := filepath.Join(work, ".git")
	if _, err := os.Stat(filepath.Join(gitDir, "objects", "info", "alternates")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s has alternates (%v)", gitDir, err)
	}
	if out, err := runUserGit(work, "fsck", "--no-progress", "--no-dangling"); err != nil {
		t.Errorf("git fsck in %s failed: %v: %s", work, err, out)
	}
	cacheDir := env.cacheDir()
	_ = filepath.WalkDir(gitDir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || !entry.Type().IsRegular() || strings.Contains(path, "/objects/") {
			return err
		}
		if data, _ := os.ReadFile(path); strings.Contains(string(data), cacheDir) {
			t.Errorf("%s names the cache: %s", path, data)
		}
		return nil
	})
}

func TestRealTearDown(t *testing.T) {
	env := newRealEnv(t, realConfig(true))
	newSampleRepo(t, env.srv, "sample.git")
	path := env.mustSetUp(t, "pod", v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git")})
	wrappedMeta := filepath.Join(env.host.GetPodPluginDir(types.UID("pod"), "kubernetes.io/empty-dir"), volume.WrappedVolumeName("vol"))
	if _, err := os.Stat(wrappedMeta); err != nil {
		t.Errorf("wrapped emptyDir metadata %s missing after SetUp: %v", wrappedMeta, err)
	}
	if !strings.HasSuffix(path, "/pods/pod/volumes/kubernetes.io~git-repo/vol") {
		t.Errorf("volume path = %s", path)
	}
	env.tearDown(t, "pod")
	for _, p := range []string{path, env.metaDir("pod"), wrappedMeta, stagingDir(path)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after TearDown (%v)", p, err)
		}
	}
	env.tearDown(t, "pod")
}

// TestSetUpAfterCrashBeforeReady sets a volume up again after a set-up that
// renamed its clone into place but died before writing the ready marker:
// what is there is replaced by a fresh clone.
func TestSetUpAfterCrashBeforeReady(t *testing.T) {
	env := newRealEnv(t, realConfig(false))
	s := newSampleRepo(t, env.srv, "sample.git")
	src := v1.GitRepoVolumeSource{Repository: env.srv.GitURL("sample.git"), Revision: "dev", Directory: "."}
	path := env.mustSetUp(t, "pod", src)
	if err := os.Remove(filepath.Join(env.metaDir("pod"), "ready")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "left-over"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	path = env.mustSetUp(t, "pod", src)
	if _, err := os.Lstat(filepath.Join(path, "left-over")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file of the unfinished volume survived: %v", err)
	}
	if got := userGit(t, path, "rev-parse", "HEAD"); got != s.devCommit {
		t.Errorf("HEAD = %s, want %s", got, s.devCommit)
	}
	if out := userGit(t, path, "status", "--porcelain"); out != "" {
		t.Errorf("status not clean: %s", out)
	}
}

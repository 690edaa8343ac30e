package gitrepo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/test/gitserver"
)

// hostileRepo is a repository on the test server whose tree is built to run
// a payload on whatever checks it out carelessly. Any payload that runs
// creates marker.
type hostileRepo struct {
	marker string
	// outside is a dir outside every volume that the tree's symlinks point at.
	outside string
	// local is a repository on the host that .gitmodules points at.
	local string
}

func newHostileRepo(t *testing.T, srv *gitserver.Server) *hostileRepo {
	t.Helper()
	h := &hostileRepo{marker: filepath.Join(t.TempDir(), "pwned"), outside: t.TempDir(), local: filepath.Join(t.TempDir(), "local.git")}
	if err := os.WriteFile(filepath.Join(h.outside, "secret"), []byte("host data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	local, err := gitserver.Init(h.local)
	if err != nil {
		t.Fatal(err)
	}
	localCommit, err := local.Commit("main", "local", gitserver.File("from-local-repo", "should never be copied\n"))
	if err != nil {
		t.Fatal(err)
	}

	payload := "touch " + h.marker
	script := []byte("#!/bin/sh\n" + payload + "\n")
	entries := []gitserver.Entry{
		// The tree is a crafted git dir (CVE-2024-10220): HEAD, config,
		// objects/, refs/ and hooks/ at its root.
		gitserver.File("HEAD", "ref: refs/heads/main\n"),
		gitserver.File("config", fmt.Sprintf("[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfsmonitor = %s\n\thooksPath = hooks\n\tsshCommand = %s\n"+
			"[filter \"pwn\"]\n\tsmudge = %s\n\tclean = %s\n\trequired = true\n[uploadpack]\n\tpackObjectsHook = %s\n", payload, payload, payload, payload, payload)),
		gitserver.File("objects/info/.keep", ""),
		gitserver.File("refs/heads/.keep", ""),
		gitserver.File(".gitattributes", "* filter=pwn\n"),
		gitserver.File(".gitmodules", fmt.Sprintf("[submodule \"sub\"]\n\tpath = sub\n\turl = %s\n", h.local)),
		{Path: "sub", Mode: gitserver.Gitlink, Commit: localCommit},
		{Path: "escape", Mode: gitserver.Symlink, Content: []byte(h.outside)},
		{Path: "escape-file", Mode: gitserver.Symlink, Content: []byte(filepath.Join(h.outside, "secret"))},
		gitserver.File("README.md", "nothing to see\n"),
	}
	for _, hook := range []string{"post-checkout", "post-merge", "post-rewrite", "reference-transaction", "pre-commit", "fsmonitor-watchman", "pre-auto-gc"} {
		entries = append(entries, gitserver.Entry{Path: "hooks/" + hook, Mode: gitserver.Executable, Content: script})
	}
	repo, err := srv.NewRepo("hostile.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "crafted", entries...); err != nil {
		t.Fatal(err)
	}

	// A repository whose tree has a .GIT dir: git's object checks refuse it.
	dotgit, err := srv.NewRepo("dotgit.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dotgit.Commit("main", "dotgit", gitserver.Entry{Path: ".GIT/hooks/post-checkout", Mode: gitserver.Executable, Content: script}); err != nil {
		t.Fatal(err)
	}
	// A repository whose .gitmodules runs a command on update: refused too.
	update, err := srv.NewRepo("update.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := update.Commit("main", "update", gitserver.File(".gitmodules", fmt.Sprintf("[submodule \"sub\"]\n\tpath = sub\n\turl = %s\n\tupdate = !%s\n", h.local, payload)),
		gitserver.Entry{Path: "sub", Mode: gitserver.Gitlink, Commit: localCommit}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *hostileRepo) assertNothingRan(t *testing.T) {
	t.Helper()
	if _, err := os.Lstat(h.marker); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a payload of the hostile repository ran: %s exists (%v)", h.marker, err)
	}
}

func TestHostileRepositories(t *testing.T) {
	for _, cacheOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", cacheOn), func(t *testing.T) {
			t.Parallel()
			env := newRealEnv(t, realConfig(cacheOn))
			h := newHostileRepo(t, env.srv)
			url := env.srv.HTTPURL("hostile.git")

			t.Run("CVE-2024-10220 directory x/.git is refused before git runs", func(t *testing.T) {
				_, err := env.builder("cve", v1.GitRepoVolumeSource{Repository: url, Revision: "main", Directory: "x/.git"})
				if !volume.IsFinal(err) || !strings.Contains(err.Error(), "gitRepo.directory") {
					t.Errorf("NewBuilder() error = %v, want a final error naming gitRepo.directory", err)
				}
				h.assertNothingRan(t)
			})

			for _, dir := range []string{"x", "."} {
				t.Run("crafted git dir in the tree, directory "+dir, func(t *testing.T) {
					uid := "crafted-" + strings.Trim(dir, ".")
					path := env.mustSetUp(t, uid, v1.GitRepoVolumeSource{Repository: url, Revision: "main", Directory: dir})
					work := filepath.Join(path, dir)
					h.assertNothingRan(t)
					// The crafted files are plain files of the work tree.
					for _, f := range []string{"HEAD", "config", "hooks/post-checkout"} {
						if info, err := os.Lstat(filepath.Join(work, f)); err != nil || !info.Mode().IsRegular() {
							t.Errorf("%s: %v, %v; want a regular file", f, info, err)
						}
					}
					// The real git dir is git's own, not the crafted one.
					config, err := os.ReadFile(filepath.Join(work, ".git", "config"))
					if err != nil || strings.Contains(string(config), "fsmonitor") || strings.Contains(string(config), "hooksPath") {
						t.Errorf(".git/config = %q, %v", config, err)
					}
					// The submodule is not cloned.
					if entries, err := os.ReadDir(filepath.Join(work, "sub")); err != nil || len(entries) != 0 {
						t.Errorf("submodule dir holds %v, %v; want it empty", entries, err)
					}
					// Symlinks stay symlinks, pointing where they did.
					if target, err := os.Readlink(filepath.Join(work, "escape")); err != nil || target != h.outside {
						t.Errorf("escape -> %q, %v", target, err)
					}
					// Control: the payload is live. Git pointed at the crafted
					// dir, as the kubelet's checkout was, runs it.
					if dir == "x" {
						_, _ = runUserGit(work, "--git-dir="+work, "--work-tree="+work, "status")
						if _, err := os.Stat(h.marker); err != nil {
							t.Errorf("control: the crafted git dir's payload did not run when git used it: %v", err)
						}
						os.Remove(h.marker)
					}
					env.tearDown(t, uid)
					if data, err := os.ReadFile(filepath.Join(h.outside, "secret")); err != nil || string(data) != "host data\n" {
						t.Errorf("TearDown reached through a symlink: secret = %q, %v", data, err)
					}
					h.assertNothingRan(t)
				})
			}

			t.Run("symlinks out of the volume are not followed by fsGroup", func(t *testing.T) {
				volumetesting.RequiresRoot(t)
				group := int64(4321)
				before, err := os.Stat(filepath.Join(h.outside, "secret"))
				if err != nil {
					t.Fatal(err)
				}
				path, err := env.setUp("fsgroup", v1.GitRepoVolumeSource{Repository: url, Directory: "x"}, &group)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range []string{h.outside, filepath.Join(h.outside, "secret")} {
					info, err := os.Stat(p)
					if err != nil {
						t.Fatal(err)
					}
					if gid := info.Sys().(*syscall.Stat_t).Gid; gid != before.Sys().(*syscall.Stat_t).Gid {
						t.Errorf("%s got group %d through a symlink", p, gid)
					}
				}
				info, err := os.Stat(filepath.Join(path, "x", "README.md"))
				if err != nil || info.Sys().(*syscall.Stat_t).Gid != uint32(group) {
					t.Errorf("README.md not given fsGroup: %v", err)
				}
				env.tearDown(t, "fsgroup")
				h.assertNothingRan(t)
			})

			for _, name := range []string{"dotgit.git", "update.git"} {
				t.Run(name+" is refused by git's object checks", func(t *testing.T) {
					path, err := env.setUp("refused", v1.GitRepoVolumeSource{Repository: env.srv.HTTPURL(name), Revision: "main"}, nil)
					if !volume.IsFinal(err) || !strings.Contains(err.Error(), "transfer.fsckObjects") {
						t.Errorf("SetUp() error = %v, want a final error from git's object checks", err)
					}
					assertNothingLeft(t, env, "refused", path)
					h.assertNothingRan(t)
				})
			}

			refused := map[string]v1.GitRepoVolumeSource{
				"local path":                 {Repository: h.local},
				"file URL":                   {Repository: "file://" + h.local},
				"relative local path":        {Repository: "../../../../" + filepath.Base(h.local)},
				"leading dash in repository": {Repository: "--upload-pack=" + "touch%20" + h.marker},
				"leading dash in revision":   {Repository: url, Revision: "--orphan=x"},
				"leading dash in directory":  {Repository: url, Directory: "--template=" + h.outside},
				"ext transport":              {Repository: "ext::touch%20" + h.marker},
			}
			for name, src := range refused {
				t.Run(name+" is refused", func(t *testing.T) {
					_, err := env.builder("refused", src)
					if !volume.IsFinal(err) || !strings.Contains(err.Error(), "gitRepo.") {
						t.Errorf("NewBuilder() error = %v, want a final error naming a field", err)
					}
					h.assertNothingRan(t)
				})
			}
		})
	}
}

// assertNothingLeft checks that a failed set-up left no volume dir, staging
// dir or ready marker.
func assertNothingLeft(t *testing.T, env *realEnv, uid, path string) {
	t.Helper()
	for _, p := range []string{path, stagingDir(path)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left after a failed SetUp (%v)", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(env.metaDir(uid), "ready")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ready marker left after a failed SetUp (%v)", err)
	}
}

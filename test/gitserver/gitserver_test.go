package gitserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clone runs a plain git clone of url into dir with a deadline.
func clone(t *testing.T, url, dir string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "clone", "--quiet", "--", url, dir)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("git clone %s: %v: %s", url, err, out)
	}
	return err
}

func TestRepoCommitsBranchesAndTags(t *testing.T) {
	repo, err := Init(filepath.Join(t.TempDir(), "r.git"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := repo.Commit("main", "first", File("a.txt", "a\n"), Entry{Path: "run.sh", Mode: Executable, Content: []byte("#!/bin/sh\n")})
	if err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "second", Entry{Path: "link", Mode: Symlink, Content: []byte("/etc/passwd")})
	if err != nil {
		t.Fatal(err)
	}
	if parent, err := repo.RevParse(second + "^"); err != nil || parent != first {
		t.Errorf("parent of second commit = %q, %v; want %q", parent, err, first)
	}
	if err := repo.Tag("v1", first, true); err != nil {
		t.Fatal(err)
	}
	if err := repo.Branch("old", first); err != nil {
		t.Fatal(err)
	}
	tree, err := repo.Git("ls-tree", "-r", "main")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"100644 blob", "\ta.txt", "100755 blob", "\trun.sh", "120000 blob", "\tlink"} {
		if !strings.Contains(tree, want) {
			t.Errorf("tree of main lacks %q:\n%s", want, tree)
		}
	}
	if got, _ := repo.RevParse("v1"); got != first {
		t.Errorf("v1 = %q, want %q", got, first)
	}
	if kind, _ := repo.Git("cat-file", "-t", "v1"); kind != "tag" {
		t.Errorf("v1 is a %q, want an annotated tag", kind)
	}
	if got, _ := repo.RevParse("old"); got != first {
		t.Errorf("old = %q, want %q", got, first)
	}
}

func TestGenerate(t *testing.T) {
	for _, content := range []Content{Text, Random} {
		t.Run(content.String(), func(t *testing.T) {
			opts := GenerateOptions{Commits: 40, Files: 30, FileSize: 8 << 10, Content: content, Seed: 1}
			repo, err := Init(filepath.Join(t.TempDir(), "g.git"))
			if err != nil {
				t.Fatal(err)
			}
			head, err := repo.Generate(opts)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := repo.Git("rev-list", "--count", head); n != "40" {
				t.Errorf("history has %s commits, want 40", n)
			}
			if n, _ := repo.Git("ls-tree", "-r", "--name-only", head); len(strings.Fields(n)) != 30 {
				t.Errorf("tree has %d files, want 30", len(strings.Fields(n)))
			}
			if n, _ := repo.Git("cat-file", "-s", head+":"+generatedPath(0)); n < "8192" || len(n) != 4 {
				t.Errorf("a file has %s bytes, want about 8192", n)
			}
			// One pack with a bitmap, as a server's repository has.
			for pattern, want := range map[string]int{"*.pack": 1, "*.bitmap": 1} {
				if got, _ := filepath.Glob(filepath.Join(repo.Dir, "objects", "pack", pattern)); len(got) != want {
					t.Errorf("objects/pack has %d %s files, want %d", len(got), pattern, want)
				}
			}
			// The 39 edits are stored as deltas: the pack holds one copy
			// of the tree, compressed (Text) or not (Random), the first
			// version of each of the 4 runs' files, and trees; stored
			// whole, the edits would add 39 files.
			packs, _ := filepath.Glob(filepath.Join(repo.Dir, "objects", "pack", "*.pack"))
			if len(packs) == 1 {
				info, err := os.Stat(packs[0])
				if err != nil {
					t.Fatal(err)
				}
				tree := int64(opts.Files * opts.FileSize)
				if max := tree + 10*int64(opts.FileSize); info.Size() > max {
					t.Errorf("pack has %d bytes, want at most %d", info.Size(), max)
				}
				if content == Random && info.Size() < tree {
					t.Errorf("pack has %d bytes, less than the %d bytes of incompressible files", info.Size(), tree)
				}
			}
			again, err := Init(filepath.Join(t.TempDir(), "g.git"))
			if err != nil {
				t.Fatal(err)
			}
			if head2, err := again.Generate(opts); err != nil || head2 != head {
				t.Errorf("a second generation with the same options gave %q, %v; want %q", head2, err, head)
			}
		})
	}
}

func TestServerServesBothProtocolsAndCountsFetches(t *testing.T) {
	srv := StartForTest(t)
	repo, err := srv.NewRepo("r.git")
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.Commit("main", "first", File("hello.txt", "hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i, url := range []string{srv.GitURL("r.git"), srv.HTTPURL("r.git")} {
		dir := filepath.Join(t.TempDir(), "clone")
		if err := clone(t, url, dir); err != nil {
			t.Fatalf("clone of %s failed", url)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "hello.txt")); string(got) != "hello\n" {
			t.Errorf("clone of %s has hello.txt = %q", url, got)
		}
		out, _ := runGit(dir, nil, "rev-parse", "HEAD")
		if out != head {
			t.Errorf("clone of %s is at %s, want %s", url, out, head)
		}
		if got := srv.Fetches("r.git"); got != i+1 {
			t.Errorf("after %d clones Fetches = %d; requests: %+v", i+1, got, srv.Requests())
		}
	}
}

func TestServerHoldDownUpAndClose(t *testing.T) {
	srv := StartForTest(t)
	repo, err := srv.NewRepo("r.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit("main", "first", File("a", "a")); err != nil {
		t.Fatal(err)
	}

	srv.Down()
	if err := clone(t, srv.GitURL("r.git"), filepath.Join(t.TempDir(), "c")); err == nil {
		t.Error("clone succeeded while the server was down")
	}
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	if err := clone(t, srv.GitURL("r.git"), filepath.Join(t.TempDir(), "c")); err != nil {
		t.Error("clone failed after Up")
	}

	release := srv.Hold()
	done := make(chan error, 1)
	go func() { done <- clone(t, srv.HTTPURL("r.git"), filepath.Join(t.TempDir(), "held")) }()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Waiting() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.Waiting() == 0 {
		t.Fatal("no request waited on Hold")
	}
	select {
	case <-done:
		t.Fatal("clone finished while requests were held")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Error("held clone failed after release")
	}

	// A held git:// session is killed by Close: the clone fails, promptly.
	srv.Hold()
	go func() { done <- clone(t, srv.GitURL("r.git"), filepath.Join(t.TempDir(), "closed")) }()
	for srv.Waiting() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("clone still running 20s after Close")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

package gitrepo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCopyTree(t *testing.T) {
	src, outside := t.TempDir(), t.TempDir()
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{"a.txt", 0o644}, {"bin/run.sh", 0o755}, {"ro/readonly", 0o444}} {
		p := filepath.Join(src, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.path), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(src, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(t.TempDir(), "dst")
	if err := copyTree(context.Background(), src, dst); err != nil {
		t.Fatalf("copyTree() error = %v", err)
	}
	for path, want := range map[string]os.FileMode{"a.txt": 0o644, "bin/run.sh": 0o755, "ro/readonly": 0o444, "ro": os.ModeDir | 0o555} {
		info, err := os.Lstat(filepath.Join(dst, path))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != want {
			t.Errorf("%s mode = %v, want %v", path, info.Mode(), want)
		}
		if !info.IsDir() {
			if !info.ModTime().Equal(mtime) {
				t.Errorf("%s mtime = %v, want %v", path, info.ModTime(), mtime)
			}
			srcInfo, _ := os.Lstat(filepath.Join(src, path))
			if srcInfo.Sys().(*syscall.Stat_t).Ino == info.Sys().(*syscall.Stat_t).Ino {
				t.Errorf("%s is linked, not copied", path)
			}
			if data, _ := os.ReadFile(filepath.Join(dst, path)); string(data) != path {
				t.Errorf("%s content = %q", path, data)
			}
		}
	}
	if target, err := os.Readlink(filepath.Join(dst, "escape")); err != nil || target != outside {
		t.Errorf("escape -> %q, %v; want the same symlink", target, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("copy wrote through the symlink: %v", entries)
	}

	// Into an existing empty dir, as for directory ".".
	if err := copyTree(context.Background(), src, t.TempDir()); err != nil {
		t.Errorf("copyTree() into an empty dir error = %v", err)
	}
	// A fifo is refused.
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(context.Background(), src, filepath.Join(t.TempDir(), "d")); err == nil || !strings.Contains(err.Error(), "unsupported file type") {
		t.Errorf("copyTree() of a fifo error = %v", err)
	}
}

// TestProcessGroupRunner checks that a cancelled command is killed with
// everything it started, and that its output is kept.
func TestProcessGroupRunner(t *testing.T) {
	marker := fmt.Sprintf("%d.%d", os.Getpid(), time.Now().UnixNano()%1000)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	out, err := processGroupRunner{}.Run(ctx, t.TempDir(), []string{"PATH=" + os.Getenv("PATH")}, "sh", "-c",
		"echo started; sleep 3"+marker+" & sleep 30"+marker+"; echo never")
	if err == nil {
		t.Fatal("Run() of a cancelled command succeeded")
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("Run() returned after %v", elapsed)
	}
	if !strings.Contains(string(out), "started") || strings.Contains(string(out), "never") {
		t.Errorf("output = %q", out)
	}
	if !waitFor(2*time.Second, func() bool { return len(processesWith("sleep 3"+marker)) == 0 }) {
		t.Errorf("the command's child outlived it: %v", processesWith("sleep 3"+marker))
	}

	// Of a long output, the whole lines in the last outputLimit bytes are
	// kept: a partial first line could start inside a token.
	var full strings.Builder
	for i := 1; i <= 20000; i++ {
		fmt.Fprintf(&full, "%d\n", i)
	}
	out, err = processGroupRunner{}.Run(context.Background(), t.TempDir(), []string{"PATH=" + os.Getenv("PATH")}, "seq", "1", "20000")
	if err != nil || len(out) > outputLimit || len(out) < outputLimit-6 ||
		!strings.HasSuffix(full.String(), "\n"+string(out)) {
		t.Errorf("Run() kept %d bytes starting %q, %v; want the whole lines of the last %d", len(out), out[:min(len(out), 10)], err, outputLimit)
	}
}

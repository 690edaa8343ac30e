package main

import (
	"path/filepath"
	"testing"

	"github.com/volume-agent/volume-agent/test/gitserver"
)

func TestEnsureExample(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "example.git")
	if err := ensureExample(dir); err != nil {
		t.Fatal(err)
	}
	repo, err := gitserver.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	main, err := repo.RevParse("main")
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{"dev", "v1.0.0"} {
		if _, err := repo.RevParse(rev); err != nil {
			t.Errorf("example has no %s: %v", rev, err)
		}
	}
	if files, _ := repo.Git("ls-tree", "--name-only", "main"); files != "README.md\nindex.html" {
		t.Errorf("main holds %q", files)
	}
	// A second run keeps the repository.
	if err := ensureExample(dir); err != nil {
		t.Fatal(err)
	}
	if again, _ := repo.RevParse("main"); again != main {
		t.Errorf("main moved from %s to %s on a second run", main, again)
	}
}

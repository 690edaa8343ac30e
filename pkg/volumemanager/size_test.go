package volumemanager

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A file with several hard links is counted once, as du(1) does.
func TestDiskUsageCountsHardLinkedFilesOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if before < 1<<20 {
		t.Fatalf("diskUsage() = %d, want at least the 1 MiB written", before)
	}
	for _, name := range []string{"link1", "link2"} {
		if err := os.Link(file, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("diskUsage() with two more hard links = %d, want %d as without them", after, before)
	}
}

package testing

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/mount-utils"
)

// RequiresRoot skips t with a clear message unless the test runs as root,
// which real mounts need.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: this test makes real mounts and needs root (run `make test` as root)")
	}
}

// Mount mounts source at target for the test and unmounts it when the test
// ends, whether it passed or not. It needs root.
func Mount(t testing.TB, source, target, fstype string, options []string) {
	t.Helper()
	RequiresRoot(t)
	mounter := mount.New("")
	if err := mounter.Mount(source, target, fstype, options); err != nil {
		t.Fatalf("failed to mount %s on %s: %v", source, target, err)
	}
	t.Cleanup(func() {
		// Unmount every layer, in case the code under test mounted on top.
		for {
			isMnt, err := mounter.IsMountPoint(target)
			if err != nil || !isMnt {
				return
			}
			if err := mounter.Unmount(target); err != nil {
				t.Errorf("failed to unmount %s: %v", target, err)
				return
			}
		}
	})
}

// UnmountAllBeneath unmounts every mount at or under dir, deepest first, so
// that a test that failed half-way leaves no mount behind.
func UnmountAllBeneath(t testing.TB, mounter mount.Interface, dir string) {
	t.Helper()
	mountPoints, err := mounter.List()
	if err != nil {
		t.Errorf("failed to list mounts: %v", err)
		return
	}
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	var paths []string
	for _, mp := range mountPoints {
		if p := filepath.Clean(mp.Path); p == filepath.Clean(dir) || strings.HasPrefix(p, prefix) {
			paths = append(paths, p)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for _, p := range paths {
		if err := mounter.Unmount(p); err != nil {
			t.Errorf("failed to unmount %s: %v", p, err)
		}
	}
}

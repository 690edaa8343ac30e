package util_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"k8s.io/mount-utils"
	"k8s.io/utils/ptr"

	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

func TestReadyMarker(t *testing.T) {
	tests := map[string]struct {
		prepare func(t *testing.T, metaDir string)
		want    bool
	}{
		"missing dir":     {prepare: func(*testing.T, string) {}, want: false},
		"set ready":       {prepare: func(t *testing.T, d string) { mustNoErr(t, util.SetReady(d)) }, want: true},
		"set ready twice": {prepare: func(t *testing.T, d string) { mustNoErr(t, util.SetReady(d)); mustNoErr(t, util.SetReady(d)) }, want: true},
		"ready is a directory": {prepare: func(t *testing.T, d string) {
			mustNoErr(t, os.MkdirAll(filepath.Join(d, "ready"), 0o755))
		}, want: false},
		"ready is a symlink to a file": {prepare: func(t *testing.T, d string) {
			mustNoErr(t, os.MkdirAll(d, 0o755))
			target := filepath.Join(t.TempDir(), "f")
			mustNoErr(t, os.WriteFile(target, nil, 0o644))
			mustNoErr(t, os.Symlink(target, filepath.Join(d, "ready")))
		}, want: false},
		"removed": {prepare: func(t *testing.T, d string) {
			mustNoErr(t, util.SetReady(d))
			mustNoErr(t, util.RemoveMetadataDir(d))
		}, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			metaDir := filepath.Join(t.TempDir(), "plugins", "vol")
			tc.prepare(t, metaDir)
			if got := util.IsReady(metaDir); got != tc.want {
				t.Errorf("IsReady = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSetVolumeOwnership(t *testing.T) {
	volumetesting.RequiresRoot(t)
	tests := map[string]struct {
		readOnly     bool
		wantFileMode os.FileMode
		wantDirMode  os.FileMode
	}{
		"read-write": {wantFileMode: 0o660, wantDirMode: os.ModeDir | os.ModeSetgid | 0o770},
		"read-only":  {readOnly: true, wantFileMode: 0o640, wantDirMode: os.ModeDir | os.ModeSetgid | 0o750},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			mustNoErr(t, os.Chmod(dir, 0o700))
			file := filepath.Join(dir, "file")
			mustNoErr(t, os.WriteFile(file, []byte("x"), 0o600))
			outside := filepath.Join(t.TempDir(), "outside")
			mustNoErr(t, os.WriteFile(outside, []byte("x"), 0o600))
			mustNoErr(t, os.Symlink(outside, filepath.Join(dir, "link")))
			outsideDir := t.TempDir()
			mustNoErr(t, os.Chmod(outsideDir, 0o700))
			mustNoErr(t, os.Symlink(outsideDir, filepath.Join(dir, "dir-link")))
			// A fifo must not block the walk.
			fifo := filepath.Join(dir, "fifo")
			mustNoErr(t, syscall.Mkfifo(fifo, 0o600))

			mustNoErr(t, util.SetVolumeOwnership(dir, ptr.To[int64](1234), tc.readOnly))

			assertOwnership(t, dir, 1234, tc.wantDirMode)
			assertOwnership(t, file, 1234, tc.wantFileMode)
			assertOwnership(t, fifo, 1234, os.ModeNamedPipe|tc.wantFileMode)
			// The symlinks' targets are not touched.
			assertOwnership(t, outside, 0, 0o600)
			assertOwnership(t, outsideDir, 0, os.ModeDir|0o700)
		})
	}
	t.Run("nil fsGroup changes nothing", func(t *testing.T) {
		dir := t.TempDir()
		mustNoErr(t, os.Chmod(dir, 0o700))
		mustNoErr(t, util.SetVolumeOwnership(dir, nil, false))
		assertOwnership(t, dir, 0, os.ModeDir|0o700)
	})
}

func assertOwnership(t *testing.T, path string, gid uint32, mode os.FileMode) {
	t.Helper()
	info, err := os.Lstat(path)
	mustNoErr(t, err)
	if got := info.Sys().(*syscall.Stat_t).Gid; got != gid {
		t.Errorf("%s: gid = %d, want %d", path, got, gid)
	}
	if info.Mode() != mode {
		t.Errorf("%s: mode = %v, want %v", path, info.Mode(), mode)
	}
}

func TestRemoveVolumeDirWithFakeMounter(t *testing.T) {
	tests := map[string]struct {
		mounts    func(dir string) []mount.MountPoint
		wantErr   bool
		wantExist bool
	}{
		"no mounts": {mounts: func(string) []mount.MountPoint { return nil }},
		"mount elsewhere with the same prefix": {mounts: func(dir string) []mount.MountPoint {
			return []mount.MountPoint{{Path: dir + "-other"}}
		}},
		"nested mount the mounter knows": {mounts: func(dir string) []mount.MountPoint {
			return []mount.MountPoint{{Path: filepath.Join(dir, "sub", "mnt")}}
		}, wantErr: true, wantExist: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vol")
			mustNoErr(t, os.MkdirAll(filepath.Join(dir, "sub", "mnt"), 0o755))
			mustNoErr(t, os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("data"), 0o644))
			err := util.RemoveVolumeDir(mount.NewFakeMounter(tc.mounts(dir)), dir)
			var nested *util.NestedMountError
			if tc.wantErr != errors.As(err, &nested) {
				t.Fatalf("RemoveVolumeDir() error = %v, want nested mount error: %v", err, tc.wantErr)
			}
			_, statErr := os.Stat(filepath.Join(dir, "sub", "f"))
			if exists := statErr == nil; exists != tc.wantExist {
				t.Errorf("volume file exists = %v, want %v", exists, tc.wantExist)
			}
		})
	}
	t.Run("missing dir", func(t *testing.T) {
		mustNoErr(t, util.RemoveVolumeDir(mount.NewFakeMounter(nil), filepath.Join(t.TempDir(), "gone")))
	})
}

// TestRemoveVolumeDirRealMounts plants what a container could: a symlink to a
// file and to a dir outside, and a bind mount inside. Nothing outside is
// touched, and the nested mount stops the removal.
func TestRemoveVolumeDirRealMounts(t *testing.T) {
	volumetesting.RequiresRoot(t)
	outsideDir := t.TempDir()
	outsideFile := filepath.Join(outsideDir, "precious")
	mustNoErr(t, os.WriteFile(outsideFile, []byte("keep me"), 0o644))

	dir := filepath.Join(t.TempDir(), "vol")
	mustNoErr(t, os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	mustNoErr(t, os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("x"), 0o644))
	mustNoErr(t, os.Symlink(outsideFile, filepath.Join(dir, "file-link")))
	mustNoErr(t, os.Symlink(outsideDir, filepath.Join(dir, "a", "dir-link")))

	t.Run("symlinks are removed, not followed", func(t *testing.T) {
		mustNoErr(t, util.RemoveVolumeDir(mount.New(""), dir))
		if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("volume dir still exists: %v", err)
		}
		assertContent(t, outsideFile, "keep me")
	})

	t.Run("nested bind mount is reported and kept", func(t *testing.T) {
		mustNoErr(t, os.MkdirAll(filepath.Join(dir, "mnt"), 0o755))
		mustNoErr(t, os.WriteFile(filepath.Join(dir, "own"), []byte("x"), 0o644))
		volumetesting.Mount(t, outsideDir, filepath.Join(dir, "mnt"), "", []string{"bind"})

		err := util.RemoveVolumeDir(mount.New(""), dir)
		var nested *util.NestedMountError
		if !errors.As(err, &nested) || nested.Path != filepath.Join(dir, "mnt") {
			t.Fatalf("RemoveVolumeDir() error = %v, want a nested mount error naming %s", err, filepath.Join(dir, "mnt"))
		}
		assertContent(t, filepath.Join(dir, "mnt", "precious"), "keep me")
		assertContent(t, filepath.Join(dir, "own"), "x")
	})
}

// TestRemoveVolumeDirStopsAtMountNotInTable covers a mount the mounter does
// not know of: the mount ids the walk compares refuse to cross it.
func TestRemoveVolumeDirStopsAtMountNotInTable(t *testing.T) {
	volumetesting.RequiresRoot(t)
	outsideDir := t.TempDir()
	mustNoErr(t, os.WriteFile(filepath.Join(outsideDir, "precious"), []byte("keep me"), 0o644))
	dir := filepath.Join(t.TempDir(), "vol")
	mustNoErr(t, os.MkdirAll(filepath.Join(dir, "mnt"), 0o755))
	volumetesting.Mount(t, outsideDir, filepath.Join(dir, "mnt"), "", []string{"bind"})

	// A fake mount table that does not list the bind mount.
	err := util.RemoveVolumeDir(mount.NewFakeMounter(nil), dir)
	var nested *util.NestedMountError
	if !errors.As(err, &nested) {
		t.Fatalf("RemoveVolumeDir() error = %v, want a nested mount error", err)
	}
	assertContent(t, filepath.Join(outsideDir, "precious"), "keep me")
}

func TestRemoveEmptyParents(t *testing.T) {
	root := t.TempDir()
	leaf := filepath.Join(root, "pods", "uid", "volumes", "plugin")
	mustNoErr(t, os.MkdirAll(leaf, 0o755))
	mustNoErr(t, os.MkdirAll(filepath.Join(root, "pods", "uid", "plugins"), 0o755))
	mustNoErr(t, util.RemoveEmptyParents(leaf, filepath.Join(root, "pods")))
	if _, err := os.Stat(filepath.Join(root, "pods", "uid", "volumes")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty volumes dir not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "pods", "uid", "plugins")); err != nil {
		t.Errorf("non-empty pod dir must stay: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "pods")); err != nil {
		t.Errorf("stop dir must stay: %v", err)
	}
}

func assertContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Errorf("%s = %q, %v; want %q", path, got, err, want)
	}
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRemoveVolumeDirRefusesAMountPoint: a volume dir that is still mounted
// is refused, and what is mounted there is kept.
func TestRemoveVolumeDirRefusesAMountPoint(t *testing.T) {
	volumetesting.RequiresRoot(t)
	backing := t.TempDir()
	mustNoErr(t, os.WriteFile(filepath.Join(backing, "data"), []byte("keep me"), 0o644))
	dir := filepath.Join(t.TempDir(), "vol")
	mustNoErr(t, os.Mkdir(dir, 0o755))
	volumetesting.Mount(t, backing, dir, "", []string{"bind"})
	// A mounter that does not know of the mount, as a stale mount table.
	err := util.RemoveVolumeDir(mount.NewFakeMounter(nil), dir)
	var nested *util.NestedMountError
	if !errors.As(err, &nested) || nested.Path != dir {
		t.Fatalf("RemoveVolumeDir() error = %v, want a nested mount error naming %s", err, dir)
	}
	assertContent(t, filepath.Join(backing, "data"), "keep me")
}

// TestNewMounterOverlay mounts an overlay with NewMounter's system calls,
// writes through it, remounts it read-only and unmounts it.
func TestNewMounterOverlay(t *testing.T) {
	volumetesting.RequiresRoot(t)
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mounter := util.NewMounter()
	if err := mounter.Mount("overlay", merged, "overlay", []string{"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(merged, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(merged, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "f")); err != nil {
		t.Errorf("a write through the overlay is not in its upper dir: %v", err)
	}
	if err := mounter.Mount("overlay", merged, "overlay", []string{"remount", "ro"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(merged, "g"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing after a read-only remount: %v, want EROFS", err)
	}
	if err := mounter.Unmount(merged); err != nil {
		t.Fatal(err)
	}
	if notMnt, err := mounter.IsLikelyNotMountPoint(merged); err != nil || !notMnt {
		t.Errorf("still mounted after Unmount: %v", err)
	}
}

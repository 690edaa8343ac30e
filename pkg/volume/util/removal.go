package util

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// NestedMountError is returned when a mount is found inside a volume that is
// being removed. Nothing is deleted through it: the mount and the volume are
// left in place for an operator to look at.
type NestedMountError struct {
	// Path is the nested mount point.
	Path string
}

// Error names the nested mount.
func (e *NestedMountError) Error() string {
	return fmt.Sprintf("refusing to remove across mount point %q found inside the volume", e.Path)
}

// CheckNoMountsBeneath returns a *NestedMountError naming a mount point
// found strictly inside dir, and nil when there is none or dir is gone. It
// walks dir without following symlinks, asking mounter about each directory
// and comparing mount ids, so it costs one check per directory whatever the
// size of the node's mount table.
func CheckNoMountsBeneath(mounter mount.Interface, dir string) error {
	root, err := statAt(unix.AT_FDCWD, dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to stat %q: %w", dir, err)
	}
	err = filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !entry.IsDir() || path == dir {
			return nil
		}
		isMnt, err := mounter.IsMountPoint(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to check mount at %q: %w", path, err)
		}
		if isMnt {
			return &NestedMountError{Path: path}
		}
		if st, err := statAt(unix.AT_FDCWD, path); err == nil && !sameMount(st, root) {
			return &NestedMountError{Path: path}
		}
		return nil
	})
	if err != nil {
		var nested *NestedMountError
		if errors.As(err, &nested) {
			return nested
		}
		return fmt.Errorf("failed to look for mounts inside %q: %w", dir, err)
	}
	return nil
}

// RemoveVolumeDir removes dir and everything beneath it, which a container
// may have written. It never follows a symlink (a symlink is removed, its
// target is left alone) and never deletes across a mount boundary: a mount
// inside dir, found by CheckNoMountsBeneath before anything is deleted or by
// the walk itself, stops it with a *NestedMountError naming the mount. dir
// itself must not be a mount point: unmount it first; a dir that is still
// one is refused the same way. A missing dir is not an error. It is
// idempotent.
func RemoveVolumeDir(mounter mount.Interface, dir string) error {
	// An empty dir, the common case, goes with one rmdir(2), which removes
	// neither a mount point (EBUSY) nor anything inside the dir.
	err := unix.Rmdir(dir)
	switch {
	case err == nil || errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EBUSY):
		// dir itself is still a mount point: emptying it would delete
		// what is mounted there.
		return &NestedMountError{Path: dir}
	}
	if err := CheckNoMountsBeneath(mounter, dir); err != nil {
		return err
	}
	parent, err := unix.Open(filepath.Dir(dir), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open parent of %q: %w", dir, err)
	}
	defer unix.Close(parent)
	name := filepath.Base(dir)
	root, err := statAt(parent, name)
	if err != nil {
		return fmt.Errorf("failed to stat %q: %w", dir, err)
	}
	if root.Mode&unix.S_IFMT != unix.S_IFDIR {
		// A volume path that is not a directory holds nothing to walk.
		return unlinkAt(parent, name, 0, dir)
	}
	if err := removeChildren(parent, name, dir, root); err != nil {
		return err
	}
	return unlinkAt(parent, name, unix.AT_REMOVEDIR, dir)
}

// removeChildren empties the directory name, opened relative to parentFd,
// whose identity is want. path is used in errors only.
func removeChildren(parentFd int, name, path string, want unix.Statx_t) error {
	fd, err := unix.Openat(parentFd, name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open dir %q: %w", path, err)
	}
	dirFile := os.NewFile(uintptr(fd), path)
	defer dirFile.Close()
	got, err := statAt(fd, "")
	if err != nil {
		return fmt.Errorf("failed to stat dir %q: %w", path, err)
	}
	// The directory opened must be the one stat'ed, on the same mount: a
	// rename or a mount between the two is refused.
	if got.Ino != want.Ino || !sameMount(got, want) {
		return &NestedMountError{Path: path}
	}
	names, err := dirFile.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("failed to read dir %q: %w", path, err)
	}
	for _, child := range names {
		childPath := filepath.Join(path, child)
		st, err := statAt(fd, child)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to stat %q: %w", childPath, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := unlinkAt(fd, child, 0, childPath); err != nil {
				return err
			}
			continue
		}
		if !sameMount(st, got) {
			return &NestedMountError{Path: childPath}
		}
		if err := removeChildren(fd, child, childPath, st); err != nil {
			return err
		}
		if err := unlinkAt(fd, child, unix.AT_REMOVEDIR, childPath); err != nil {
			return err
		}
	}
	return nil
}

// statAt stats name relative to dirFd without following a symlink; an empty
// name stats dirFd itself.
func statAt(dirFd int, name string) (unix.Statx_t, error) {
	var st unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	err := unix.Statx(dirFd, name, flags, unix.STATX_TYPE|unix.STATX_INO|unix.STATX_MNT_ID, &st)
	return st, err
}

// sameMount reports whether a and b are on the same mount: by mount id where
// the kernel gives one (a bind mount of the same file system has the same
// device), else by device.
func sameMount(a, b unix.Statx_t) bool {
	if a.Mask&b.Mask&unix.STATX_MNT_ID != 0 {
		return a.Mnt_id == b.Mnt_id
	}
	return a.Dev_major == b.Dev_major && a.Dev_minor == b.Dev_minor
}

func unlinkAt(dirFd int, name string, flags int, path string) error {
	err := unix.Unlinkat(dirFd, name, flags)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if errors.Is(err, unix.EBUSY) {
		return &NestedMountError{Path: path}
	}
	return fmt.Errorf("failed to remove %q: %w", path, err)
}

func isNotEmpty(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && (errno == syscall.ENOTEMPTY || errno == syscall.EEXIST)
}

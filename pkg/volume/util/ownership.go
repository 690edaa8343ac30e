package util

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// SetVolumeOwnership gives fsGroup ownership of everything under dir, as the
// kubelet does: every entry gets group fsGroup and g+rw (g+r when readOnly),
// directories also get setgid and g+x, so that new files inherit the group.
// A nil fsGroup changes nothing. It is idempotent.
//
// A running container may be changing the tree, so the walk never goes by
// path: each entry is opened relative to its parent's file descriptor
// without following a symlink, checked, and changed through its own
// descriptor. A symlink, or an entry swapped for one, is left alone, and so is
// its target.
func SetVolumeOwnership(dir string, fsGroup *int64, readOnly bool) error {
	if fsGroup == nil {
		return nil
	}
	groupBits := uint32(0o060)
	if readOnly {
		groupBits = 0o040
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open %q to set its ownership: %w", dir, err)
	}
	w := ownershipWalk{gid: int(*fsGroup), groupBits: groupBits}
	if err := w.dir(fd, dir); err != nil {
		return fmt.Errorf("failed to set ownership of %q to group %d: %w", dir, *fsGroup, err)
	}
	return nil
}

type ownershipWalk struct {
	gid       int
	groupBits uint32
}

// dir changes the directory open at fd, then its entries. It closes fd.
func (w ownershipWalk) dir(fd int, path string) error {
	dirFile := os.NewFile(uintptr(fd), path)
	defer dirFile.Close()
	if err := w.change(fd, unix.S_IFDIR, path); err != nil {
		return err
	}
	names, err := dirFile.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("failed to read dir %q: %w", path, err)
	}
	for _, name := range names {
		if err := w.entry(fd, name, filepath.Join(path, name)); err != nil {
			return err
		}
	}
	return nil
}

// entry changes the entry name of the directory open at dirFd.
func (w ownershipWalk) entry(dirFd int, name, path string) error {
	// O_PATH opens any kind of file without side effects; O_NOFOLLOW opens a
	// symlink itself rather than its target.
	fd, err := unix.Openat(dirFd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to open %q: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("failed to stat %q: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		unix.Close(fd)
		return nil
	case unix.S_IFDIR:
		unix.Close(fd)
		dirFd2, err := unix.Openat(dirFd, name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("failed to open dir %q: %w", path, err)
		}
		var again unix.Stat_t
		if err := unix.Fstat(dirFd2, &again); err != nil || again.Ino != st.Ino || again.Dev != st.Dev {
			unix.Close(dirFd2)
			return fmt.Errorf("dir %q changed while its ownership was being set", path)
		}
		return w.dir(dirFd2, path)
	}
	defer unix.Close(fd)
	return w.change(fd, st.Mode&unix.S_IFMT, path)
}

// change sets the group and mode of the file open at fd, whose type is
// kind. It goes through /proc/self/fd, which names the open file itself, as
// fchmod(2) does not take an O_PATH descriptor.
func (w ownershipWalk) change(fd int, kind uint32, path string) error {
	if err := unix.Fchownat(fd, "", -1, w.gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("failed to chown %q: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("failed to stat %q: %w", path, err)
	}
	mode := st.Mode&0o7777 | w.groupBits
	if kind == unix.S_IFDIR {
		mode |= unix.S_ISGID | 0o010
	}
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode); err != nil {
		return fmt.Errorf("failed to chmod %q: %w", path, err)
	}
	return nil
}

package util

import (
	"fmt"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// MakeReadOnly makes dir a read-only mount, so that nothing can write to
// the volume through it: a dir that is already a mount point (a tmpfs) is
// remounted read-only, any other dir is first bind-mounted onto itself.
// It is idempotent: a dir already read-only is left alone. Tearing the
// volume down unmounts dir as it unmounts any volume that is a mount point.
func MakeReadOnly(mounter mount.Interface, dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("failed to check whether %q is read-only: %w", dir, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return nil
	}
	isMnt, err := mounter.IsMountPoint(dir)
	if err != nil {
		return fmt.Errorf("failed to check mount at %q: %w", dir, err)
	}
	if !isMnt {
		if err := mounter.Mount(dir, dir, "", []string{"bind"}); err != nil {
			return fmt.Errorf("failed to make %q read-only: %w", dir, err)
		}
	}
	if err := mounter.Mount(dir, dir, "", []string{"bind", "remount", "ro"}); err != nil {
		return fmt.Errorf("failed to make %q read-only: %w", dir, err)
	}
	return nil
}

package util

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SetVolumeOwnership gives fsGroup ownership of everything under dir, as the
// kubelet does: every entry gets group fsGroup and g+rw (g+r when readOnly),
// directories also get setgid and g+x, so that new files inherit the group.
// Symlinks are neither followed nor changed. A nil fsGroup changes nothing.
// It is idempotent.
func SetVolumeOwnership(dir string, fsGroup *int64, readOnly bool) error {
	if fsGroup == nil {
		return nil
	}
	gid := int(*fsGroup)
	groupBits := fs.FileMode(0o060)
	if readOnly {
		groupBits = 0o040
	}
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if entry.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
		mode := info.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) | groupBits
		if entry.IsDir() {
			mode |= fs.ModeSetgid | 0o010
		}
		return os.Chmod(path, mode)
	})
	if err != nil {
		return fmt.Errorf("failed to set ownership of %q to group %d: %w", dir, gid, err)
	}
	return nil
}

package util

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// readyFileName is the marker that a volume's set-up completed.
const readyFileName = "ready"

// IsReady reports whether metaDir holds a ready marker: a regular file named
// "ready". A symlink or a directory of that name is not a marker.
func IsReady(metaDir string) bool {
	info, err := os.Lstat(filepath.Join(metaDir, readyFileName))
	return err == nil && info.Mode().IsRegular()
}

// SetReady creates metaDir (mode 0750) and its ready marker. It is
// idempotent. Unlike the kubelet, which only logs, it returns the error, so
// that a volume whose marker could not be written is not reported ready.
func SetReady(metaDir string) error {
	if err := os.MkdirAll(metaDir, 0o750); err != nil {
		return fmt.Errorf("failed to create metadata dir %q: %w", metaDir, err)
	}
	path := filepath.Join(metaDir, readyFileName)
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("failed to create ready marker %q: %w", path, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("failed to close ready marker %q: %w", path, err)
	}
	return nil
}

// RemoveMetadataDir removes a volume's metadata dir and its ready marker. The
// agent alone writes there, so it holds no container data. A missing dir is
// not an error.
func RemoveMetadataDir(metaDir string) error {
	// The usual content is the marker alone: two system calls.
	if err := os.Remove(filepath.Join(metaDir, readyFileName)); err == nil || errors.Is(err, fs.ErrNotExist) {
		if err := os.Remove(metaDir); err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	if err := os.RemoveAll(metaDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove metadata dir %q: %w", metaDir, err)
	}
	return nil
}

// RemoveEmptyParents removes dir and then each of its parents while they are
// empty, stopping below stop (which is never removed). A dir that is missing
// or not empty ends the walk without an error.
func RemoveEmptyParents(dir, stop string) error {
	stop = filepath.Clean(stop)
	for d := filepath.Clean(dir); d != stop && len(d) > len(stop); d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if isNotEmpty(err) {
				return nil
			}
			return fmt.Errorf("failed to remove empty dir %q: %w", d, err)
		}
	}
	return nil
}

package volumemanager

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"
	utilstrings "k8s.io/utils/strings"
)

// targetsDirName is the dir of a pod dir that keeps the targets of its
// volumes set up elsewhere than under the root dir: a file per volume,
// targets/<escaped plugin>/<name>, holding the target path.
const targetsDirName = "targets"

func (m *Manager) targetsDir(uid types.UID) string {
	return filepath.Join(m.cfg.Layout.PodDir(uid), targetsDirName)
}

// targetFile returns ROOT/pods/<uid>/targets/<escaped plugin>/<name>.
func (m *Manager) targetFile(key VolumeKey) string {
	return filepath.Join(m.targetsDir(key.PodUID), utilstrings.EscapeQualifiedName(key.Plugin), key.Name)
}

// writeTarget records the target of key before anything is set up there,
// replacing the file atomically. It is not synced: it must survive the
// agent's death, which the page cache does, not the node's.
func (m *Manager) writeTarget(key VolumeKey, target string) error {
	file := m.targetFile(key)
	if data, err := os.ReadFile(file); err == nil && string(data) == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o750); err != nil {
		return fmt.Errorf("failed to record the target of volume %s: %w", key, err)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(target), 0o640); err != nil {
		return fmt.Errorf("failed to record the target of volume %s: %w", key, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("failed to record the target of volume %s: %w", key, err)
	}
	return nil
}

// removeTarget forgets the target of key once its volume is torn down.
func (m *Manager) removeTarget(key VolumeKey) error {
	if err := os.Remove(m.targetFile(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to forget the target of volume %s: %w", key, err)
	}
	return nil
}

// readTargets returns the targets recorded for the volumes of the pod uid,
// by key.
func (m *Manager) readTargets(uid types.UID) (map[VolumeKey]string, error) {
	dir := m.targetsDir(uid)
	targets := map[VolumeKey]string{}
	err := walkPluginDirs(dir, func(plugin string, entry os.DirEntry) error {
		if !entry.Type().IsRegular() || filepath.Ext(entry.Name()) == ".tmp" {
			return nil
		}
		key := VolumeKey{PodUID: uid, Plugin: plugin, Name: entry.Name()}
		data, err := os.ReadFile(m.targetFile(key))
		if err != nil {
			return fmt.Errorf("failed to read the target of volume %s: %w", key, err)
		}
		if target := string(data); filepath.IsAbs(target) {
			targets[key] = filepath.Clean(target)
		}
		return nil
	})
	return targets, err
}

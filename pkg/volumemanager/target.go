package volumemanager

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	utilstrings "k8s.io/utils/strings"
)

// targetSuffix ends the files of a pod dir that keep the targets of its
// volumes set up elsewhere than under the root dir: one file per volume,
// ROOT/pods/<uid>/<escaped plugin>~<name>.target, holding the target path.
// They sit in the pod dir itself, with no dir of their own: a directory
// costs a block allocated and freed, which on some file systems (ext4 with
// discard) is a synchronous discard on every removal (see
// docs/performance.md). Neither a plugin name nor a volume name holds "~",
// so the last "~" splits the two.
const targetSuffix = ".target"

// targetFile returns ROOT/pods/<uid>/<escaped plugin>~<name>.target.
func (m *Manager) targetFile(key VolumeKey) string {
	return filepath.Join(m.cfg.Layout.PodDir(key.PodUID), utilstrings.EscapeQualifiedName(key.Plugin)+"~"+key.Name+targetSuffix)
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
	dir := m.cfg.Layout.PodDir(uid)
	entries, err := readDirIfExists(dir)
	if err != nil {
		return nil, err
	}
	targets := map[VolumeKey]string{}
	for _, entry := range entries {
		base, ok := strings.CutSuffix(entry.Name(), targetSuffix)
		i := strings.LastIndex(base, "~")
		if !ok || i <= 0 || i == len(base)-1 || !entry.Type().IsRegular() {
			continue
		}
		key := VolumeKey{PodUID: uid, Plugin: utilstrings.UnescapeQualifiedName(base[:i]), Name: base[i+1:]}
		data, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			return nil, fmt.Errorf("failed to read the target of volume %s: %w", key, err)
		}
		if target := string(data); filepath.IsAbs(target) {
			targets[key] = filepath.Clean(target)
		}
	}
	return targets, nil
}

package volumemanager

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	utilstrings "k8s.io/utils/strings"

	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// wrappedPrefix starts the metadata dirs of wrapped volumes, which the
// outer volume's Cleaner removes (volume names cannot hold "_").
const wrappedPrefix = "wrapped_"

// foundVolume is a volume found on disk.
type foundVolume struct {
	key  VolumeKey
	path string
	// target is the recorded target of a volume set up elsewhere than
	// under the root dir (then also path), or "".
	target string
}

// Reconstruct rebuilds the actual state from the root dir, once: every
// volume dir (ROOT/pods/<uid>/volumes/<plugin>/<name>), every metadata
// dir without its volume dir (a tear-down that stopped half-way) and every
// recorded target (see Target) becomes an uncertain volume, to be set up again if a source wants it and torn down
// otherwise; pod dirs with no volume become candidates for removal. Neither
// ready markers nor the mount table are read: the plugins' SetUp and
// TearDown check those themselves. Run and RunOnce call it; calling it
// earlier lets status show the volumes found.
func (m *Manager) Reconstruct(ctx context.Context) error {
	m.mu.Lock()
	done := m.reconstructed
	m.mu.Unlock()
	if done {
		return nil
	}
	logger := klog.FromContext(ctx)
	entries, err := os.ReadDir(m.cfg.Layout.PodsDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to read pods dir: %w", err)
	}
	var uids []types.UID
	for _, entry := range entries {
		uid := types.UID(entry.Name())
		if entry.IsDir() && (m.cfg.PodScope == nil || m.cfg.PodScope(uid)) {
			uids = append(uids, uid)
		}
	}
	found, empty, err := m.scanPods(uids)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range found {
		m.addFoundLocked(f)
	}
	m.orphans.Insert(empty...)
	m.reconstructed = true
	logger.V(1).Info("Reconstructed volumes from disk", "rootDir", m.cfg.Layout.Root, "volumes", len(found), "emptyPodDirs", len(empty))
	return nil
}

func (m *Manager) addFoundLocked(f foundVolume) {
	rec := m.volumes[f.key]
	if rec == nil {
		rec = m.newRecordLocked(f.key, f.path)
	}
	if rec.actual == actualNone {
		rec.actual = actualUncertain
		if f.target != "" {
			rec.target, rec.path = f.target, f.target
		}
	}
	if _, err := m.cfg.Plugins.FindPluginByName(f.key.Plugin); err != nil {
		m.setStateLocked(rec, StateFailed, ReasonNoPluginMatched, fmt.Sprintf("found on disk, but no loaded plugin is called %q", f.key.Plugin))
	}
}

// scanPods scans the pods uids on as many goroutines as there are CPUs, and
// returns their volumes and the pods that have none.
func (m *Manager) scanPods(uids []types.UID) ([]foundVolume, []types.UID, error) {
	type scan struct {
		vols []foundVolume
		err  error
	}
	scans := make([]scan, len(uids))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(uids)) {
		wg.Go(func() {
			for i := range next {
				scans[i].vols, scans[i].err = m.scanPod(uids[i])
			}
		})
	}
	for i := range uids {
		next <- i
	}
	close(next)
	wg.Wait()
	var found []foundVolume
	var empty []types.UID
	for i, s := range scans {
		if s.err != nil {
			return nil, nil, s.err
		}
		if len(s.vols) == 0 {
			empty = append(empty, uids[i])
		}
		found = append(found, s.vols...)
	}
	return found, empty, nil
}

// scanPod lists the volumes of the pod uid that are on disk: volume dirs,
// metadata dirs whose volume dir is gone, and recorded targets.
func (m *Manager) scanPod(uid types.UID) ([]foundVolume, error) {
	targets, err := m.readTargets(uid)
	if err != nil {
		return nil, err
	}
	var found []foundVolume
	seen := map[VolumeKey]bool{}
	add := func(plugin, name string) {
		key := VolumeKey{PodUID: uid, Plugin: plugin, Name: name}
		if seen[key] {
			return
		}
		seen[key] = true
		f := foundVolume{key: key, path: m.cfg.Layout.PodVolumeDir(uid, plugin, name), target: targets[key]}
		if f.target != "" {
			f.path = f.target
		}
		found = append(found, f)
	}
	for key := range targets {
		add(key.Plugin, key.Name)
	}
	for _, dir := range []string{m.cfg.Layout.PodVolumesDir(uid), m.cfg.Layout.PodPluginsDir(uid)} {
		err := walkPluginDirs(dir, func(plugin string, entry os.DirEntry) error {
			// Wrapped volumes belong to their outer volume; names that
			// start with "." are a plugin's own files (gitRepo's staging
			// dirs), never volumes, whose names are DNS labels.
			if !strings.HasPrefix(entry.Name(), wrappedPrefix) && !strings.HasPrefix(entry.Name(), ".") {
				add(plugin, entry.Name())
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return found, nil
}

// walkPluginDirs calls fn with every entry of every plugin's dir in dir
// (dir/<escaped plugin>/<entry>), and the plugin's name.
func walkPluginDirs(dir string, fn func(plugin string, entry os.DirEntry) error) error {
	plugins, err := readDirIfExists(dir)
	if err != nil {
		return err
	}
	for _, pluginEntry := range plugins {
		if !pluginEntry.IsDir() {
			continue
		}
		entries, err := readDirIfExists(filepath.Join(dir, pluginEntry.Name()))
		if err != nil {
			return err
		}
		plugin := utilstrings.UnescapeQualifiedName(pluginEntry.Name())
		for _, entry := range entries {
			if err := fn(plugin, entry); err != nil {
				return err
			}
		}
	}
	return nil
}

func readDirIfExists(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("failed to read dir %q: %w", dir, err)
	}
	return entries, nil
}

// removePodDirs removes the directories of pods that are neither desired
// nor hold any volume, unless something is still mounted in them.
func (m *Manager) removePodDirs(ctx context.Context, uids []types.UID) {
	defer func() {
		m.mu.Lock()
		m.removing.Delete(uids...)
		for _, uid := range uids {
			m.prunePodNameLocked(uid)
		}
		m.wakeWaitersLocked()
		m.mu.Unlock()
		// Orphans left while this batch ran, and set-ups of these pods, wait
		// for the next pass.
		m.Trigger()
	}()
	listMounts := sync.OnceValues(m.cfg.Mounter.List)
	for _, uid := range uids {
		if err := m.removePodDir(ctx, uid, listMounts); err != nil {
			m.mu.Lock()
			m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonPodDirKept, PodUID: uid, Pod: m.podNameLocked(uid), Message: err.Error()})
			m.mu.Unlock()
		}
	}
}

// removePodDir removes the dir of the pod uid, which holds no volume. It
// removes the empty dirs first: rmdir(2) removes neither a mount point
// (EBUSY) nor a dir with anything in it, and it is all a torn-down pod
// leaves. Only when something is left is the mount table read (0.1-0.5 ms
// on the test VM with 20-220 mounts): a dir with a mount in it is kept;
// else what is left is removed without crossing a mount.
func (m *Manager) removePodDir(ctx context.Context, uid types.UID, listMounts func() ([]mount.MountPoint, error)) error {
	dir := m.cfg.Layout.PodDir(uid)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// A volume that appeared since is torn down first.
	found, err := m.scanPod(uid)
	if err != nil {
		return err
	}
	if len(found) > 0 {
		m.mu.Lock()
		for _, f := range found {
			m.addFoundLocked(f)
		}
		m.mu.Unlock()
		m.Trigger()
		return nil
	}
	logger := klog.FromContext(ctx)
	if removeEmptyDirs(dir) {
		logger.V(2).Info("Removed pod dir", "podUID", uid, "path", dir)
		return nil
	}
	mountPoints, err := listMounts()
	if err != nil {
		return fmt.Errorf("keeping pod dir %q: failed to list mount points: %w", dir, err)
	}
	prefix := dir + string(filepath.Separator)
	for _, mp := range mountPoints {
		if mp.Path == dir || strings.HasPrefix(mp.Path, prefix) {
			return fmt.Errorf("keeping pod dir %q: %q is still mounted in it", dir, mp.Path)
		}
	}
	// What else the agent left (files in the metadata dirs) goes without
	// crossing a mount.
	if err := util.RemoveVolumeDir(m.cfg.Mounter, dir); err != nil {
		return fmt.Errorf("failed to remove pod dir %q: %w", dir, err)
	}
	logger.V(2).Info("Removed pod dir", "podUID", uid, "path", dir)
	return nil
}

// removeEmptyDirs removes dir and the directories beneath it that are empty,
// bottom up, never leaving dir's device and never following a symlink. It
// reports whether dir is gone.
func removeEmptyDirs(dir string) bool {
	root, err := os.Lstat(dir)
	if err != nil || !root.IsDir() {
		return errors.Is(err, fs.ErrNotExist)
	}
	var walk func(string) bool
	walk = func(d string) bool {
		entries, err := os.ReadDir(d)
		if err != nil {
			return false
		}
		empty := true
		for _, entry := range entries {
			if !entry.IsDir() {
				empty = false
				continue
			}
			child := filepath.Join(d, entry.Name())
			info, err := os.Lstat(child)
			if err != nil || !sameDevice(root, info) || !walk(child) {
				empty = false
			}
		}
		// rmdir(2), not os.Remove, which tries unlink(2) first.
		return empty && syscall.Rmdir(d) == nil
	}
	return walk(dir)
}

func sameDevice(a, b os.FileInfo) bool {
	sa, okA := a.Sys().(*syscall.Stat_t)
	sb, okB := b.Sys().(*syscall.Stat_t)
	return okA && okB && sa.Dev == sb.Dev
}

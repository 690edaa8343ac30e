package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// Cache modes (CacheConfig.Mode).
const (
	// CacheModeOverlay makes a volume of a cached revision an overlay mount
	// over the cache's finished checkout of it.
	CacheModeOverlay = "overlay"
	// CacheModeCopy makes a volume of a cached revision a copy of the
	// cache's finished checkout of it.
	CacheModeCopy = "copy"
	// CacheModeAuto is CacheModeOverlay where a probe mount on ROOT's file
	// system works, and CacheModeCopy elsewhere.
	CacheModeAuto = "auto"
)

// Files of an overlay volume, in its metadata dir
// (ROOT/pods/<uid>/plugins/kubernetes.io~git-repo/<volume>/overlay/).
const (
	overlayDirName = "overlay"
	// lowerFileName names the lower layer, a dir of the cache: written
	// before the mount and removed only after the unmount, so that the
	// cache's reference counts can be rebuilt from disk.
	lowerFileName = "lower"
	upperDirName  = "upper"
	workDirName   = "work"
)

// overlayProbeFileName, in the cache dir, records the outcome of the last
// overlay probe, for health checks of processes that do not probe.
const overlayProbeFileName = "overlay-probe"

// overlaySupport is what the overlay probe found on ROOT's file system.
type overlaySupport struct {
	// usable is true when overlay volumes are made.
	usable bool
	// metacopy is true when the kernel copies up metadata only (an
	// fsGroup's chown copies no file data).
	metacopy bool
	// reason says why overlay volumes are not made, or how they are.
	reason string
}

// overlayVolume is where an overlay volume keeps its layers.
type overlayVolume struct {
	dir string
}

func newOverlayVolume(metaDir string) overlayVolume {
	return overlayVolume{dir: filepath.Join(metaDir, overlayDirName)}
}

func (o overlayVolume) lowerFile() string { return filepath.Join(o.dir, lowerFileName) }
func (o overlayVolume) upper() string     { return filepath.Join(o.dir, upperDirName) }
func (o overlayVolume) work() string      { return filepath.Join(o.dir, workDirName) }

// lower returns the lower layer the volume's record names, "" when there is
// no record.
func (o overlayVolume) lower() (string, error) {
	data, err := os.ReadFile(o.lowerFile())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("failed to read the overlay record: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// create records lower and makes the upper and work dirs; the upper dir's
// mode is the volume root's.
func (o overlayVolume) create(lower string) error {
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return fmt.Errorf("failed to create the overlay dir: %w", err)
	}
	if err := os.WriteFile(o.lowerFile(), []byte(lower+"\n"), 0o600); err != nil {
		return fmt.Errorf("failed to record the overlay's lower layer: %w", err)
	}
	for _, dir := range []string{o.upper(), o.work()} {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("failed to create %s: %w", dir, err)
		}
	}
	if err := os.Chmod(o.upper(), volumeMode); err != nil {
		return fmt.Errorf("failed to chmod %s: %w", o.upper(), err)
	}
	return nil
}

// remove removes the layers and the record, the record last, never
// following a symlink nor crossing a mount (util.RemoveVolumeDir): the upper
// dir holds what containers wrote. The overlay must be unmounted.
func (o overlayVolume) remove(mounter mount.Interface) error {
	for _, dir := range []string{o.upper(), o.work()} {
		if err := util.RemoveVolumeDir(mounter, dir); err != nil {
			return fmt.Errorf("failed to remove the overlay's %s dir: %w", filepath.Base(dir), err)
		}
	}
	return util.RemoveVolumeDir(mounter, o.dir)
}

// overlayOptions returns the mount options of an overlay of lower with
// upper and work.
func overlayOptions(lower, upper, work string, metacopy bool) ([]string, error) {
	for _, p := range []string{lower, upper, work} {
		if strings.ContainsAny(p, ",:\\") {
			return nil, fmt.Errorf("path %q holds a character overlay options cannot carry (',', ':' or '\\')", p)
		}
	}
	opts := []string{"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work}
	if metacopy {
		opts = append(opts, "metacopy=on")
	}
	return opts, nil
}

// probeOverlay mounts two overlays of one lower dir under dir, on ROOT's
// file system, and checks that they work as volumes need: a write shows in
// its overlay only, and the lower dir is unchanged. It tries metacopy=on
// first. Every mount is gone and dir removed when it returns.
func probeOverlay(mounter mount.Interface, dir string) overlaySupport {
	if err := cleanProbe(mounter, dir); err != nil {
		return overlaySupport{reason: "failed to remove a previous probe: " + err.Error()}
	}
	defer func() {
		if err := cleanProbe(mounter, dir); err != nil {
			klog.ErrorS(err, "Failed to remove the overlay probe; the next probe tries again", "dir", dir)
		}
	}()
	var firstErr error
	for _, metacopy := range []bool{true, false} {
		err := tryOverlay(mounter, dir, metacopy)
		if err == nil {
			how := "overlay mounts work on the root dir's file system"
			if metacopy {
				how += ", with metacopy (fsGroup copies no file data)"
			} else {
				how += ", without metacopy (fsGroup copies the files it changes up)"
			}
			return overlaySupport{usable: true, metacopy: metacopy, reason: how}
		}
		if firstErr == nil {
			firstErr = err
		}
		if err := cleanProbe(mounter, dir); err != nil {
			return overlaySupport{reason: "failed to remove a probe: " + err.Error()}
		}
	}
	return overlaySupport{reason: "overlay mounts do not work on the root dir's file system: " + firstErr.Error()}
}

func tryOverlay(mounter mount.Interface, dir string, metacopy bool) error {
	lower := filepath.Join(dir, "lower")
	if err := os.MkdirAll(lower, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lower, "file"), []byte("lower"), 0o600); err != nil {
		return err
	}
	for _, name := range []string{"a", "b"} {
		o := overlayVolume{dir: filepath.Join(dir, name)}
		merged := filepath.Join(dir, name, "merged")
		if err := o.create(lower); err != nil {
			return err
		}
		if err := os.Mkdir(merged, 0o700); err != nil {
			return err
		}
		opts, err := overlayOptions(lower, o.upper(), o.work(), metacopy)
		if err != nil {
			return err
		}
		if err := mounter.Mount("overlay", merged, "overlay", opts); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(merged, "file"), []byte(name), 0o600); err != nil {
			return fmt.Errorf("failed to write through an overlay: %w", err)
		}
	}
	for _, name := range []string{"a", "b"} {
		if data, err := os.ReadFile(filepath.Join(dir, name, "merged", "file")); err != nil || string(data) != name {
			return fmt.Errorf("an overlay shows %q (%v), not what was written through it", data, err)
		}
		if data, err := os.ReadFile(filepath.Join(dir, name, upperDirName, "file")); err != nil || string(data) != name {
			return fmt.Errorf("a write through an overlay is not in its upper dir (%v)", err)
		}
	}
	if data, err := os.ReadFile(filepath.Join(lower, "file")); err != nil || string(data) != "lower" {
		return fmt.Errorf("a write through an overlay changed its lower dir (%v)", err)
	}
	return nil
}

// cleanProbe unmounts and removes what a probe left in dir.
func cleanProbe(mounter mount.Interface, dir string) error {
	for _, name := range []string{"a", "b"} {
		if err := unmountProbe(mounter, filepath.Join(dir, name, "merged")); err != nil {
			return err
		}
	}
	return util.RemoveVolumeDir(mounter, dir)
}

// probeUnmountAttempts bounds the tries of unmountProbe, probeUnmountBackoff
// is the wait after the first failure (doubled after each).
const (
	probeUnmountAttempts = 5
	probeUnmountBackoff  = 10 * time.Millisecond
)

// unmountProbe unmounts a probe's overlay at merged, if mounted. An unmount
// that fails is tried again a few times: a process that another goroutine
// forks while the probe writes through the overlay holds the file open until
// it execs, and the unmount fails with EBUSY meanwhile.
func unmountProbe(mounter mount.Interface, merged string) error {
	var err error
	wait := probeUnmountBackoff
	for attempt := 1; ; attempt++ {
		notMnt, statErr := mounter.IsLikelyNotMountPoint(merged)
		if errors.Is(statErr, fs.ErrNotExist) || statErr == nil && notMnt {
			return nil
		}
		if statErr != nil {
			return fmt.Errorf("failed to check the probe's mount at %q: %w", merged, statErr)
		}
		if err = mounter.Unmount(merged); err == nil {
			return nil
		}
		if attempt == probeUnmountAttempts {
			return fmt.Errorf("failed to unmount the probe's overlay at %q after %d tries: %w", merged, attempt, err)
		}
		time.Sleep(wait)
		wait *= 2
	}
}

// recordProbe writes what a probe found where health checks of other
// processes read it (readProbe).
func recordProbe(cacheDir string, s overlaySupport, now time.Time) {
	state := "refused"
	if s.usable {
		state = "usable"
	}
	_ = os.WriteFile(filepath.Join(cacheDir, overlayProbeFileName),
		[]byte(fmt.Sprintf("%s %s\n%s\n", state, now.UTC().Format(time.RFC3339), s.reason)), 0o600)
}

// readProbe returns what the last probe recorded, and false when there is
// no record.
func readProbe(cacheDir string) (overlaySupport, bool) {
	data, err := os.ReadFile(filepath.Join(cacheDir, overlayProbeFileName))
	if err != nil {
		return overlaySupport{}, false
	}
	first, reason, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	state, when, _ := strings.Cut(first, " ")
	return overlaySupport{usable: state == "usable", reason: reason + " (probed " + when + ")"}, true
}

// overlayMagic is the file system type statfs reports for an overlay.
const overlayMagic = 0x794c7630

// setUpOverlay makes the volume at dir, the wrapped emptyDir, an overlay
// mount over the cache's lower layer of the volume's revision, with its
// upper and work dirs in the volume's metadata dir; applies fsGroup through
// it (metadata copied up only, where the kernel has metacopy); and makes it
// read-only if the volume is. On failure nothing of the overlay is left, or
// the error is Uncertain.
func (b *builder) setUpOverlay(ctx context.Context, dir string, fsGroup *int64) (err error) {
	cache, mounter := b.plugin.cache, b.plugin.host.GetMounter()
	lower, err := cache.lowerLayer(ctx, b.source.Repository, b.source.Revision, b.directory)
	if err != nil {
		return err
	}
	o := newOverlayVolume(b.MetadataDir)
	defer func() {
		if err == nil {
			return
		}
		recorded := exists(o.lowerFile())
		if cleanErr := b.tearDownOverlay(dir); cleanErr != nil {
			err = volume.NewUncertainError(fmt.Errorf("%w; failed to remove the overlay: %w", err, cleanErr))
		} else if !recorded {
			// tearDownOverlay releases only what a record names.
			cache.release(lower)
		}
	}()
	if err := o.create(lower); err != nil {
		return err
	}
	opts, err := overlayOptions(lower, o.upper(), o.work(), b.plugin.overlay.metacopy)
	if err != nil {
		return err
	}
	if err := mounter.Mount("overlay", dir, "overlay", opts); err != nil {
		return fmt.Errorf("failed to mount the overlay at %s: %w", dir, err)
	}
	if err := util.SetVolumeOwnership(dir, fsGroup, false); err != nil {
		return err
	}
	if b.readOnly {
		if err := mounter.Mount("overlay", dir, "overlay", []string{"remount", "ro"}); err != nil {
			return fmt.Errorf("failed to make the overlay at %s read-only: %w", dir, err)
		}
	}
	klog.FromContext(ctx).V(4).Info("Mounted overlay volume", "path", dir, "lower", lower)
	return nil
}

// remountOverlay checks a ready volume at dir: true when it is a copy, or an
// overlay that is mounted, or was mounted again from its record (the node
// restarted). When it cannot be, the overlay is removed, and the volume is
// to be set up again (false).
func (b *builder) remountOverlay(dir string) (bool, error) {
	o := newOverlayVolume(b.MetadataDir)
	lower, err := o.lower()
	if err != nil || lower == "" {
		return err == nil, err
	}
	mounter := b.plugin.host.GetMounter()
	if mounted, err := isOverlayMount(dir); err != nil || mounted {
		return mounted, err
	}
	logger := klog.Background().WithValues("volume", b.volName, "podUID", b.podUID, "path", dir)
	if exists(lower) {
		opts, err := overlayOptions(lower, o.upper(), o.work(), b.plugin.overlay.metacopy)
		if err == nil {
			err = mounter.Mount("overlay", dir, "overlay", opts)
		}
		if err == nil && b.readOnly {
			err = mounter.Mount("overlay", dir, "overlay", []string{"remount", "ro"})
		}
		if err == nil {
			logger.Info("Mounted a ready overlay volume again")
			return true, nil
		}
		logger.Info("Failed to mount a ready overlay volume again; setting it up afresh", "err", err)
	} else {
		logger.Info("The lower layer of a ready overlay volume is gone; setting it up afresh", "lower", lower)
	}
	if err := removeReadyMarker(b.MetadataDir); err != nil {
		return false, err
	}
	return false, b.tearDownOverlay(dir)
}

// tearDownOverlay unmounts the overlay at dir, if the volume is an overlay
// and it is mounted, removes its layers and record, and releases its lower
// layer. A mount at dir that is not an overlay is left alone, and so is an
// overlay with a mount inside it (the unmount fails): nothing is removed
// then. A volume that is no overlay is a success.
func (v gitRepoVolume) tearDownOverlay(dir string) error {
	o := newOverlayVolume(v.MetadataDir)
	if !exists(o.dir) {
		return nil
	}
	lower, err := o.lower()
	if err != nil {
		return err
	}
	mounter := v.plugin.host.GetMounter()
	mounted, err := isOverlayMount(dir)
	if err != nil {
		return err
	}
	if mounted {
		if err := mounter.Unmount(dir); err != nil {
			return fmt.Errorf("failed to unmount the overlay at %s: %w", dir, err)
		}
	}
	if err := o.remove(mounter); err != nil {
		return err
	}
	if cache := v.plugin.cache; cache != nil && lower != "" {
		cache.release(lower)
	}
	return nil
}

// isOverlayMount reports whether dir is the root of an overlay mount. A
// missing dir is not; another kind of mount at dir is an error, so that it
// is neither unmounted nor written through.
func isOverlayMount(dir string) (bool, error) {
	var dirStat, parentStat unix.Stat_t
	if err := unix.Lstat(dir, &dirStat); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("failed to stat %s: %w", dir, err)
	}
	if err := unix.Lstat(filepath.Dir(dir), &parentStat); err != nil {
		return false, fmt.Errorf("failed to stat %s: %w", filepath.Dir(dir), err)
	}
	if dirStat.Dev == parentStat.Dev {
		return false, nil
	}
	var fsStat unix.Statfs_t
	if err := unix.Statfs(dir, &fsStat); err != nil {
		return false, fmt.Errorf("failed to statfs %s: %w", dir, err)
	}
	if fsStat.Type != overlayMagic {
		return false, &util.NestedMountError{Path: dir}
	}
	return true, nil
}

// removeReadyMarker removes the volume's ready marker alone.
func removeReadyMarker(metaDir string) error {
	if err := os.Remove(filepath.Join(metaDir, "ready")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove the ready marker: %w", err)
	}
	return nil
}

package volumemanager

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
)

// sizeCheck is an emptyDir on disk with a sizeLimit, to be measured.
type sizeCheck struct {
	key   VolumeKey
	path  string
	limit resource.Quantity
}

// CheckSizeLimits measures every ready emptyDir on disk that has a
// sizeLimit, and marks the ones over their limit in their status (and in an
// event when they cross it). As the kubelet's eviction manager, it counts
// the blocks of every file beneath the volume, without following symlinks
// or crossing mounts; unlike the kubelet it evicts nothing.
func (m *Manager) CheckSizeLimits(ctx context.Context) {
	m.mu.Lock()
	var checks []sizeCheck
	for key, rec := range m.volumes {
		if rec.actual != actualReady || rec.want == nil || rec.want.spec == nil || rec.want.spec.Volume == nil {
			continue
		}
		emptyDir := rec.want.spec.Volume.EmptyDir
		if emptyDir == nil || emptyDir.Medium != v1.StorageMediumDefault || emptyDir.SizeLimit == nil || emptyDir.SizeLimit.IsZero() {
			continue
		}
		checks = append(checks, sizeCheck{key: key, path: rec.path, limit: *emptyDir.SizeLimit})
	}
	m.mu.Unlock()

	logger := klog.FromContext(ctx)
	for _, check := range checks {
		if ctx.Err() != nil {
			return
		}
		usage, err := diskUsage(check.path)
		if err != nil {
			logger.V(2).Info("Failed to measure volume usage", "volume", check.key.String(), "err", err)
			continue
		}
		m.mu.Lock()
		rec := m.volumes[check.key]
		if rec != nil && rec.actual == actualReady {
			over := usage > check.limit.Value()
			rec.usage = usage
			if over && !rec.sizeExceeded {
				msg := fmt.Sprintf("Usage of EmptyDir volume %q exceeds the limit %q.", rec.podVolume, check.limit.String())
				rec.message = msg
				m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonSizeLimitExceeded, PodUID: check.key.PodUID,
					Pod: m.podNameLocked(check.key.PodUID), Volume: rec.podVolume,
					Message: fmt.Sprintf("%s (usage %s)", msg, resource.NewQuantity(usage, resource.BinarySI).String())})
			} else if !over && rec.sizeExceeded {
				rec.message = ""
			}
			rec.sizeExceeded = over
		}
		m.mu.Unlock()
	}
}

// sizeLoop checks size limits every SizeCheckPeriod.
func (m *Manager) sizeLoop(ctx context.Context) {
	for sleep(ctx, m.cfg.Clock, m.cfg.SizeCheckPeriod) {
		m.CheckSizeLimits(ctx)
	}
}

// diskUsage returns the bytes of the blocks allocated to dir and everything
// beneath it on dir's file system, as du(1) counts them: a file with several
// hard links under dir is counted once.
func diskUsage(dir string) (int64, error) {
	root, err := os.Lstat(dir)
	if err != nil {
		return 0, err
	}
	rootStat, ok := root.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("failed to stat %q", dir)
	}
	var total int64
	type inode struct{ dev, ino uint64 }
	linked := map[inode]bool{}
	err = filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			// A file removed meanwhile is not counted.
			return nil
		}
		info, err := entry.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Dev != rootStat.Dev {
			if entry.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if st.Nlink > 1 && !entry.IsDir() {
			id := inode{dev: uint64(st.Dev), ino: st.Ino}
			if linked[id] {
				return nil
			}
			linked[id] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

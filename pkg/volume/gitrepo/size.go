package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// sizeCheckInterval is how often a growing clone's size is measured.
const sizeCheckInterval = 250 * time.Millisecond

// diskUsage returns the bytes that the files under dir take on disk, without
// following symlinks. Files that vanish during the walk are skipped.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := entry.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// watchSize returns a context that is cancelled with errSizeLimit as soon as
// dir takes more than limit bytes, and a stop function that ends the watch,
// measures dir once more and returns an error wrapping errSizeLimit when it
// is over the limit. stop cancels the context; it may be called more than
// once. A limit of 0 watches nothing.
func watchSize(ctx context.Context, clk clock.Clock, dir string, limit int64) (context.Context, func() error) {
	if limit <= 0 {
		return ctx, func() error { return nil }
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		timer := clk.NewTimer(sizeCheckInterval)
		defer timer.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-timer.C():
				if used, err := diskUsage(dir); err == nil && used > limit {
					cancel(errSizeLimit)
					return
				}
				timer.Reset(sizeCheckInterval)
			}
		}
	}()
	var once sync.Once
	var result error
	return ctx, func() error {
		once.Do(func() {
			close(done)
			<-stopped
			if errors.Is(context.Cause(ctx), errSizeLimit) {
				result = fmt.Errorf("%w: %s grew past %d bytes", errSizeLimit, dir, limit)
			} else if used, err := diskUsage(dir); err == nil && used > limit {
				cancel(errSizeLimit)
				result = fmt.Errorf("%w: %s takes %d bytes, more than %d", errSizeLimit, dir, used, limit)
			}
			cancel(nil)
		})
		return result
	}
}

package volumemanager

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockFileName is the lock file in the root dir that one volume-agent
// process at a time holds, so that two never reconcile the same volumes.
const LockFileName = "volume-agent.lock"

// ErrRootLocked is returned by LockRoot when another process holds the lock.
var ErrRootLocked = errors.New("another volume-agent is using this root dir")

// lockRetryInterval is how often LockRoot tries again while it waits.
const lockRetryInterval = 20 * time.Millisecond

// LockRoot takes the exclusive lock of the root dir root, creating root
// (mode 0750) and its lock file if needed. The lock is released by unlock or
// when the process dies, even by SIGKILL (the processes a dead agent was
// starting may hold it for a few more milliseconds: LockRoot waits up to
// wait for it). It fails, wrapping ErrRootLocked, when another process
// holds it longer.
func LockRoot(root string, wait time.Duration) (unlock func(), err error) {
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create root dir %q: %w", root, err)
	}
	path := filepath.Join(root, LockFileName)
	file, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open lock file %q: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(file.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(lockRetryInterval)
	}
	if err != nil {
		file.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %q is locked (is `volume-agent run` running? use `volume-agent apply` and `delete` to change its pods)", ErrRootLocked, path)
		}
		return nil, fmt.Errorf("failed to lock %q: %w", path, err)
	}
	return func() { file.Close() }, nil
}

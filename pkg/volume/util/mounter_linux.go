package util

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// NewMounter returns the mount.Interface the agent uses: mount-utils'
// Mounter, except that tmpfs, hugetlbfs, overlay and bind mounts, the ones
// the bundled plugins make, are made and unmade with the mount(2) and umount2(2) system
// calls rather than by running mount(8) and umount(8). That saves a fork and
// an exec per call, which is most of the cost of a memory-backed emptyDir.
// Other file system types still go through mount(8).
func NewMounter() mount.Interface {
	return &syscallMounter{Interface: mount.New("")}
}

type syscallMounter struct {
	mount.Interface
}

// flagOptions are the mount options that are flags of mount(2) rather than
// data for the file system.
var flagOptions = map[string]uintptr{
	"ro":         unix.MS_RDONLY,
	"rw":         0,
	"nosuid":     unix.MS_NOSUID,
	"nodev":      unix.MS_NODEV,
	"noexec":     unix.MS_NOEXEC,
	"noatime":    unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME,
	"relatime":   unix.MS_RELATIME,
	"sync":       unix.MS_SYNCHRONOUS,
}

// bySyscall reports whether a mount is one this mounter makes itself.
func bySyscall(fstype string, options []string) bool {
	return fstype == "tmpfs" || fstype == "hugetlbfs" || fstype == "overlay" || slices.Contains(options, "bind") || slices.Contains(options, "rbind")
}

func (m *syscallMounter) Mount(source, target, fstype string, options []string) error {
	return m.MountSensitive(source, target, fstype, options, nil)
}

func (m *syscallMounter) MountSensitive(source, target, fstype string, options, sensitiveOptions []string) error {
	if !bySyscall(fstype, options) {
		return m.Interface.MountSensitive(source, target, fstype, options, sensitiveOptions)
	}
	var flags uintptr
	var data []string
	bind, remount := false, false
	for _, opt := range append(slices.Clone(options), sensitiveOptions...) {
		switch opt {
		case "remount":
			remount = true
		case "bind":
			bind = true
		case "rbind":
			bind = true
			flags |= unix.MS_REC
		case "defaults":
		default:
			if flag, ok := flagOptions[opt]; ok {
				flags |= flag
			} else {
				data = append(data, opt)
			}
		}
	}
	// Options are not logged: they may hold secrets.
	if !bind {
		if remount {
			// "remount,<flags>" changes the flags of the file system at
			// target.
			flags |= unix.MS_REMOUNT
		}
		if err := unix.Mount(source, target, fstype, flags, strings.Join(data, ",")); err != nil {
			return fmt.Errorf("failed to mount %s at %s (type %s): %w", source, target, fstype, err)
		}
		return nil
	}
	if remount {
		// "bind,remount,<flags>" changes the flags of the mount at target.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags&^unix.MS_REC, ""); err != nil {
			return fmt.Errorf("failed to remount %s: %w", target, err)
		}
		return nil
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND|flags&unix.MS_REC, ""); err != nil {
		return fmt.Errorf("failed to bind-mount %s at %s: %w", source, target, err)
	}
	// A bind mount takes its flags only on a remount.
	if remountFlags := flags &^ unix.MS_REC; remountFlags != 0 {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|remountFlags, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return fmt.Errorf("failed to remount bind mount %s with its options: %w", target, err)
		}
	}
	return nil
}

func (m *syscallMounter) Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("failed to unmount %s: %w", target, err)
	}
	return nil
}

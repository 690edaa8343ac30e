package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

type cleaner struct {
	volumeRef
}

// TearDown tears the volume down at GetPath(); see TearDownAt.
func (c *cleaner) TearDown() error { return c.TearDownAt(c.GetPath()) }

// TearDownAt unpublishes the volume at dir and, once no other pod's volume
// claims it, unstages it, all from the vol_data.json files alone. The order
// makes it safe to stop at any point and run again: NodeUnpublishVolume; the
// target removed if it is an empty dir that is not a mount; the pod's claim
// removed; NodeUnstageVolume when no claim is left, then the staging dir
// removed; and last the pod's vol_data.json and volume dir, so that a
// restart after a kill anywhere before finds the volume and finishes.
//
// A volume with no vol_data.json never reached its driver: what is left of
// it is removed without calling one. A driver that is not registered is a
// Transient error. Nothing is deleted across a mount.
func (c *cleaner) TearDownAt(dir string) error {
	p := c.plugin
	ctx := context.Background()
	logger := klog.FromContext(ctx).WithValues("volumePath", dir)
	mounter := p.host.GetMounter()
	if err := util.RemoveMetadataDir(c.metadataDir); err != nil {
		return err
	}
	volDir := filepath.Dir(dir)
	var data volumeData
	found, err := readJSON(filepath.Join(volDir, volDataFileName), &data)
	if err != nil {
		return err
	}
	if found {
		d, err := p.drivers.get(ctx, data.DriverName)
		if err != nil {
			return err
		}
		req := &csipb.NodeUnpublishVolumeRequest{VolumeId: data.VolumeHandle, TargetPath: dir}
		if err := p.drivers.call(ctx, func(ctx context.Context) error { return d.client.NodeUnpublishVolume(ctx, req) }); err != nil {
			return callError(err, fmt.Sprintf("NodeUnpublishVolume of volume %q of driver %q", data.VolumeHandle, data.DriverName), false)
		}
		if err := removeMountDir(mounter, dir); err != nil {
			return err
		}
		if data.VolumeLifecycleMode != modeEphemeral {
			if err := c.unstageIfUnclaimed(ctx, d, data); err != nil {
				return err
			}
		}
		logger.V(1).Info("Unpublished CSI volume", "driver", data.DriverName, "volumeHandle", data.VolumeHandle)
	} else if err := removeMountDir(mounter, dir); err != nil {
		return err
	}
	return util.RemoveVolumeDir(mounter, volDir)
}

// unstageIfUnclaimed removes the pod's claim on the staged volume and
// unstages it when no claim is left. It holds the volume's stage lock, so
// that no pod claims the volume between the check and the unstage.
func (c *cleaner) unstageIfUnclaimed(ctx context.Context, d *driver, data volumeData) error {
	p := c.plugin
	sdir := p.stagingDir(data.DriverName, data.VolumeHandle)
	unlock := p.stageLocks.lock(sdir)
	defer unlock()
	if err := removeClaim(sdir, c.podUID, c.volName); err != nil {
		return err
	}
	claims, err := listClaims(sdir)
	if err != nil {
		return err
	}
	if len(claims) > 0 {
		klog.FromContext(ctx).V(2).Info("CSI volume stays staged for other pods", "stagingDir", sdir, "claims", claims)
		return nil
	}
	if _, err := os.Lstat(filepath.Join(sdir, volDataFileName)); errors.Is(err, fs.ErrNotExist) {
		// Never staged (the driver has no STAGE_UNSTAGE_VOLUME), or already
		// unstaged and cleaned up by another pod's tear-down.
		return nil
	}
	globalMount := filepath.Join(sdir, globalMountName)
	req := &csipb.NodeUnstageVolumeRequest{VolumeId: data.VolumeHandle, StagingTargetPath: globalMount}
	if err := p.drivers.call(ctx, func(ctx context.Context) error { return d.client.NodeUnstageVolume(ctx, req) }); err != nil {
		return callError(err, fmt.Sprintf("NodeUnstageVolume of volume %q of driver %q", data.VolumeHandle, data.DriverName), false)
	}
	mounter := p.host.GetMounter()
	if err := removeMountDir(mounter, globalMount); err != nil {
		return err
	}
	// The staged marker goes first: a kill from here on leaves the volume
	// unstaged in its record too.
	for _, name := range []string{stagedFileName, volDataFileName} {
		if err := os.Remove(filepath.Join(sdir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to remove %q: %w", filepath.Join(sdir, name), err)
		}
	}
	if err := util.RemoveVolumeDir(mounter, sdir); err != nil {
		return err
	}
	klog.FromContext(ctx).V(1).Info("Unstaged CSI volume", "driver", data.DriverName, "volumeHandle", data.VolumeHandle, "stagingPath", globalMount)
	return util.RemoveEmptyParents(filepath.Dir(sdir), filepath.Dir(filepath.Dir(sdir)))
}

// removeMountDir removes dir, a publish target or staging path, once the
// driver has unmounted it: a dir still mounted is an error naming it, and a
// dir with files in it is left alone with an error (the files are not the
// agent's to delete). A missing dir is a success.
func removeMountDir(mounter interface{ IsMountPoint(string) (bool, error) }, dir string) error {
	mounted, err := mounter.IsMountPoint(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to check mount at %q: %w", dir, err)
	}
	if mounted {
		return fmt.Errorf("failed to remove %q: still mounted after the driver unmounted it", dir)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove %q: %w", dir, err)
	}
	return nil
}

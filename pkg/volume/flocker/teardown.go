package flocker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// maxMountLayers bounds the unmounts of one volume dir: SetUp mounts once, but
// a dir mounted over more than once is unmounted layer by layer.
const maxMountLayers = 8

type cleaner struct {
	volumeRef
}

// TearDown tears the volume down at GetPath(); see TearDownAt.
func (c *cleaner) TearDown() error { return c.TearDownAt(c.Path) }

// TearDownAt removes the ready marker, unmounts the pod's bind mount at dir
// and removes the then empty dir. It never deletes or moves the dataset and
// never touches the dataset's own mount point, so another pod using the same
// dataset keeps working. A mount found inside the volume fails the tear-down
// with a *util.NestedMountError naming it. A volume already gone is a success.
func (c *cleaner) TearDownAt(dir string) error {
	if err := util.RemoveMetadataDir(c.MetadataDir); err != nil {
		return err
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	mounter := c.plugin.host.GetMounter()
	for layer := 0; ; layer++ {
		mounted, err := mounter.IsMountPoint(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to check mount at %q: %w", dir, err)
		}
		if !mounted {
			break
		}
		if layer == maxMountLayers {
			return fmt.Errorf("failed to unmount volume at %q: still mounted after %d unmounts", dir, maxMountLayers)
		}
		if err := util.CheckNoMountsBeneath(mounter, dir); err != nil {
			return err
		}
		if err := mounter.Unmount(dir); err != nil {
			return fmt.Errorf("failed to unmount volume at %q: %w", dir, err)
		}
	}
	// No longer a mount: what is left is the node's own empty mount point.
	return util.RemoveVolumeDir(mounter, dir)
}

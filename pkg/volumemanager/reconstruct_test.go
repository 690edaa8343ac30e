package volumemanager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// An undesired pod dir is removed without reading the mount table when
// rmdir(2) removes it all; an empty file system still mounted in one is not
// removed by rmdir, and is found in the mount table: the dir is kept, with
// a PodDirKept event, and the mount left alone.
func TestManagerKeepsAPodDirWithAMountInIt(t *testing.T) {
	volumetesting.RequiresRoot(t)
	root := t.TempDir()
	mounter := util.NewMounter()
	t.Cleanup(func() { volumetesting.UnmountAllBeneath(t, mounter, root) })
	layout := volume.Layout{Root: root}
	mounted := filepath.Join(layout.PodDir("mounted"), "volumes", "other")
	empty := filepath.Join(layout.PodDir("empty"), "plugins", "kubernetes.io~empty-dir", "v")
	for _, dir := range []string{mounted, empty} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", mounted, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	_, plugins := volumetesting.NewFakeVolumeHost(t, root, emptydir.ProbeVolumePlugins(),
		volumetesting.FakeHostOptions{Mounter: mounter, Clock: clock.RealClock{}})
	m, err := New(Config{Plugins: plugins, Layout: layout, Mounter: mounter})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = m.Run(ctx)
	}()
	defer func() {
		cancel()
		<-stopped
	}()
	m.MarkSourcesSynced()
	kept := func() bool {
		for _, ev := range m.Events() {
			if ev.Reason == ReasonPodDirKept && ev.PodUID == "mounted" && strings.Contains(ev.Message, "still mounted") {
				return true
			}
		}
		return false
	}
	waitUntil(t, "the empty pod dir removed and the other kept", func() bool {
		_, err := os.Lstat(layout.PodDir("empty"))
		return os.IsNotExist(err) && kept()
	})
	if isMount, err := mounter.IsMountPoint(mounted); err != nil || !isMount {
		t.Errorf("%s: mount point %v (%v), want the mount left in place", mounted, isMount, err)
	}
}

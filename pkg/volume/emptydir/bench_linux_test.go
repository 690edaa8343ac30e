package emptydir

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/volume-agent/volume-agent/pkg/volume"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// The benchmarks time one SetUp and TearDown of an emptyDir through the
// plugin next to the bare system calls that do the same work, in the same
// run, so docs/performance.md can report the ratio.

func benchmarkPlugin(b *testing.B, medium v1.StorageMedium) {
	volumetesting.RequiresRoot(b)
	root := b.TempDir()
	mounter := util.NewMounter()
	b.Cleanup(func() { volumetesting.UnmountAllBeneath(b, mounter, root) })
	_, mgr := volumetesting.NewFakeVolumeHost(b, root, ProbeVolumePlugins(), volumetesting.FakeHostOptions{Mounter: mounter})
	p, err := mgr.FindPluginByName(PluginName)
	if err != nil {
		b.Fatal(err)
	}
	spec := emptyDirSpec("vol", medium, "")
	pod := testPod()
	b.ResetTimer()
	for b.Loop() {
		builder, err := p.NewBuilder(spec, pod, volume.VolumeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := builder.SetUp(nil); err != nil {
			b.Fatal(err)
		}
		cleaner, err := p.NewCleaner("vol", pod.UID)
		if err != nil {
			b.Fatal(err)
		}
		if err := cleaner.TearDown(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetUpTearDown compares the plugin with two baselines of bare
// system calls: "syscalls" makes only the volume (mkdir, chmod, rmdir; plus
// mount and umount for tmpfs), "syscalls+marker" also makes and removes the
// metadata dir and ready marker that the kubelet's layout asks for, which is
// the same work the plugin does.
func BenchmarkSetUpTearDown(b *testing.B) {
	for _, tc := range []struct {
		name   string
		medium v1.StorageMedium
	}{{"disk", ""}, {"tmpfs", v1.StorageMediumMemory}} {
		b.Run(tc.name+"/plugin", func(b *testing.B) { benchmarkPlugin(b, tc.medium) })
		b.Run(tc.name+"/syscalls", func(b *testing.B) { benchmarkSyscalls(b, tc.medium == v1.StorageMediumMemory, false) })
		b.Run(tc.name+"/syscalls+marker", func(b *testing.B) { benchmarkSyscalls(b, tc.medium == v1.StorageMediumMemory, true) })
	}
}

func benchmarkSyscalls(b *testing.B, tmpfs, marker bool) {
	volumetesting.RequiresRoot(b)
	root := b.TempDir()
	dir := filepath.Join(root, "vol")
	metaDir := filepath.Join(root, "meta")
	ready := filepath.Join(metaDir, "ready")
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		must(unix.Mkdir(dir, 0o777))
		must(unix.Chmod(dir, 0o777))
		if tmpfs {
			must(unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0777"))
		}
		if marker {
			must(unix.Mkdir(metaDir, 0o750))
			fd, err := unix.Open(ready, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			must(err)
			must(unix.Close(fd))
			must(unix.Unlink(ready))
			must(unix.Rmdir(metaDir))
		}
		if tmpfs {
			must(unix.Unmount(dir, 0))
		}
		must(unix.Rmdir(dir))
	}
}

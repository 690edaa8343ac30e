// Package csi benchmarks the agent's CSI driver against the plugin it
// drives: NodePublishVolume plus NodeUnpublishVolume over a unix socket, for
// an emptyDir on disk and in memory, and the emptyDir plugin's own SetUp
// plus TearDown in the same process and run. The difference is what the CSI
// path costs: two gRPC calls, the publish record written and removed, the
// volume manager's source update, reconciler passes and executor, the
// target kept under the root dir, and the removal of the volume's pod dir
// there (which the plugin alone leaves to the kubelet). Run with `make
// bench` (root, real mounts); compare with benchstat -col /via.
package csi

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/csi"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// agent is a volume manager with the emptyDir plugin and the CSI driver on
// a unix socket, in one temporary dir on the node's disk.
type agent struct {
	dir     string
	layout  volume.Layout
	plugins *volume.VolumePluginMgr
	node    csipb.NodeClient
}

func newAgent(b *testing.B) *agent {
	volumetesting.RequiresRoot(b)
	dir, err := os.MkdirTemp("", "csi-bench")
	if err != nil {
		b.Fatal(err)
	}
	mounter := util.NewMounter()
	b.Cleanup(func() {
		volumetesting.UnmountAllBeneath(b, mounter, dir)
		os.RemoveAll(dir)
	})
	layout := volume.Layout{Root: filepath.Join(dir, "root")}
	a := &agent{dir: dir, layout: layout, plugins: &volume.VolumePluginMgr{}}
	host := volume.NewHost(volume.HostConfig{Layout: layout, Mounter: mounter, Exec: exec.New(), Clock: clock.RealClock{}, NodeName: "node-a"}, a.plugins)
	if err := a.plugins.InitPlugins(emptydir.ProbeVolumePlugins(), host); err != nil {
		b.Fatal(err)
	}
	m, err := volumemanager.New(volumemanager.Config{Plugins: a.plugins, Layout: layout, Mounter: mounter})
	if err != nil {
		b.Fatal(err)
	}
	// Silent: a log line would break the benchmark's output.
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logr.Discard()))
	managerDone := make(chan error, 1)
	go func() { managerDone <- m.Run(ctx) }()
	driver, err := csi.New(csi.Config{DriverName: "volume-agent.io", NodeID: "node-a", RootDir: layout.Root, Manager: m, Plugins: a.plugins})
	if err != nil {
		b.Fatal(err)
	}
	if err := driver.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	m.MarkSourcesSynced()
	sock := filepath.Join(dir, "csi.sock")
	listener, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- driver.Serve(ctx, listener) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	a.node = csipb.NewNodeClient(conn)
	b.Cleanup(func() {
		conn.Close()
		cancel()
		<-serveDone
		<-managerDone
	})
	return a
}

// BenchmarkEmptyDirSetUpTearDown sets an emptyDir up and tears it down,
// once per iteration: via=csi over the CSI socket as the kubelet calls it,
// via=plugin through the plugin's Builder and Cleaner directly, and
// via=plugin+podDir the same, then removes the pod's dir as the kubelet
// does once the pod is gone, and as the CSI path does after an unpublish.
func BenchmarkEmptyDirSetUpTearDown(b *testing.B) {
	for _, medium := range []v1.StorageMedium{v1.StorageMediumDefault, v1.StorageMediumMemory} {
		name := "disk"
		if medium == v1.StorageMediumMemory {
			name = "tmpfs"
		}
		b.Run("medium="+name+"/via=csi", func(b *testing.B) { benchCSI(b, medium) })
		b.Run("medium="+name+"/via=plugin", func(b *testing.B) { benchPlugin(b, medium, false) })
		b.Run("medium="+name+"/via=plugin+podDir", func(b *testing.B) { benchPlugin(b, medium, true) })
	}
}

// reportCPU starts counting the CPU time of the whole process (every
// goroutine: the gRPC client and server, the reconciler, the executor's
// workers, the removal of pod dirs) and returns the func that reports it
// per iteration as cpu-ns/op. Unlike the elapsed time, it hardly depends
// on what else runs on the machine.
func reportCPU(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchCSI(b *testing.B, medium v1.StorageMedium) {
	a := newAgent(b)
	target := a.target(b, "pod")
	i := 0
	defer reportCPU(b)()
	for b.Loop() {
		// A new volume each time, as a new pod's; the kubelet's target dir
		// is reused.
		id := fmt.Sprintf("csi-%d", i)
		i++
		a.publish(b, id, target, medium)
		a.unpublish(b, id, target)
	}
}

// BenchmarkPublishAmongOthers publishes and unpublishes one emptyDir on
// disk, as via=csi does, while `others` volumes published before stay.
func BenchmarkPublishAmongOthers(b *testing.B) {
	for _, others := range []int{0, 100, 400} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			a := newAgent(b)
			for j := range others {
				pod := fmt.Sprintf("other-%d", j)
				a.publish(b, pod, a.target(b, pod), v1.StorageMediumDefault)
			}
			target := a.target(b, "pod")
			i := 0
			defer reportCPU(b)()
			for b.Loop() {
				id := fmt.Sprintf("csi-%d", i)
				i++
				a.publish(b, id, target, v1.StorageMediumDefault)
				a.unpublish(b, id, target)
			}
		})
	}
}

// target makes the parent of the kubelet's target path for a volume of the
// pod, and returns the target.
func (a *agent) target(b *testing.B, pod string) string {
	parent := filepath.Join(a.dir, "kubelet", "pods", pod, "volumes", "kubernetes.io~csi", "scratch")
	if err := os.MkdirAll(parent, 0o750); err != nil {
		b.Fatal(err)
	}
	return filepath.Join(parent, "mount")
}

var mountCapability = &csipb.VolumeCapability{
	AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
	AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}

// publish publishes an ephemeral emptyDir of medium at target, as the
// kubelet does.
func (a *agent) publish(b *testing.B, id, target string, medium v1.StorageMedium) {
	_, err := a.node.NodePublishVolume(context.Background(), &csipb.NodePublishVolumeRequest{
		VolumeId:         id,
		TargetPath:       target,
		VolumeCapability: mountCapability,
		VolumeContext:    map[string]string{"type": "emptyDir", "medium": string(medium), "csi.storage.k8s.io/pod.name": "bench", "csi.storage.k8s.io/pod.namespace": "default"},
	})
	if err != nil {
		b.Fatal(err)
	}
}

func (a *agent) unpublish(b *testing.B, id, target string) {
	if _, err := a.node.NodeUnpublishVolume(context.Background(), &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		b.Fatal(err)
	}
}

func benchPlugin(b *testing.B, medium v1.StorageMedium, removePodDir bool) {
	a := newAgent(b)
	plugin, err := a.plugins.FindPluginByName(emptydir.PluginName)
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	defer reportCPU(b)()
	for b.Loop() {
		uid := types.UID(fmt.Sprintf("pod-%d", i))
		i++
		pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "default", UID: uid}}
		spec := volume.NewSpecFromVolume(&v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: medium}}})
		builder, err := plugin.NewBuilder(spec, pod, volume.VolumeOptions{Context: context.Background()})
		if err != nil {
			b.Fatal(err)
		}
		if err := builder.SetUp(nil); err != nil {
			b.Fatal(err)
		}
		cleaner, err := plugin.NewCleaner("scratch", uid)
		if err != nil {
			b.Fatal(err)
		}
		if err := cleaner.TearDown(); err != nil {
			b.Fatal(err)
		}
		if removePodDir {
			// Empty dirs only: os.RemoveAll would cross a mount.
			if err := removeEmptyDirs(a.layout.PodDir(uid)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// removeEmptyDirs removes dir and the dirs beneath it, which must be empty.
func removeEmptyDirs(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if err := removeEmptyDirs(filepath.Join(dir, entry.Name())); err != nil {
			return err
		}
	}
	return syscall.Rmdir(dir)
}

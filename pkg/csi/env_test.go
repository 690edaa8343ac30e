package csi_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/exec"

	"github.com/volume-agent/volume-agent/pkg/csi"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	"github.com/volume-agent/volume-agent/pkg/volume/gitrepo"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// env is an agent's volume manager with the real emptyDir and gitRepo
// plugins, and the CSI driver served over a unix socket to a client, as a
// kubelet would call it. Everything it mounts is unmounted when the test
// ends.
type env struct {
	t       *testing.T
	dir     string
	root    string
	kubelet string
	m       *volumemanager.Manager
	plugins *volume.VolumePluginMgr
	node    csipb.NodeClient
	ident   csipb.IdentityClient
	// stop stops the driver and the manager, once; the test's cleanup
	// calls it too.
	stop func()
}

func gitConfig() gitrepo.Config {
	return gitrepo.Config{AllowedProtocols: []string{"http", "git"}, Timeout: time.Minute}
}

func newEnv(t *testing.T, gitCfg gitrepo.Config, extraPlugins ...volume.VolumePlugin) *env {
	t.Helper()
	volumetesting.RequiresRoot(t)
	// Short: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, root: filepath.Join(dir, "root"), kubelet: filepath.Join(dir, "kubelet")}
	mounter := util.NewMounter()
	t.Cleanup(func() {
		volumetesting.UnmountAllBeneath(t, mounter, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	layout := volume.Layout{Root: e.root}
	plugins := &volume.VolumePluginMgr{}
	host := volume.NewHost(volume.HostConfig{Layout: layout, Mounter: mounter, Exec: exec.New(), Clock: clock.RealClock{}, NodeName: "node-a", NodeIP: net.IPv4(127, 0, 0, 1)}, plugins)
	probed := append(emptydir.ProbeVolumePlugins(), gitrepo.ProbeVolumePlugins(gitCfg)...)
	if err := plugins.InitPlugins(append(probed, extraPlugins...), host); err != nil {
		t.Fatal(err)
	}
	e.plugins = plugins
	e.m, err = volumemanager.New(volumemanager.Config{
		Plugins:  plugins,
		Layout:   layout,
		Mounter:  mounter,
		Executor: volumemanager.ExecutorConfig{InitialBackoff: 50 * time.Millisecond, Timeout: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	managerDone := make(chan error, 1)
	go func() { managerDone <- e.m.Run(ctx) }()
	driver, err := csi.New(csi.Config{DriverName: "volume-agent.io", VendorVersion: "test", NodeID: "node-a", RootDir: e.root, Manager: e.m, Plugins: plugins})
	if err != nil {
		t.Fatal(err)
	}
	if err := driver.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e.m.MarkSourcesSynced()
	sock := filepath.Join(dir, "csi.sock")
	listener, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- driver.Serve(ctx, listener) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.node, e.ident = csipb.NewNodeClient(conn), csipb.NewIdentityClient(conn)
	e.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-serveDone; err != nil {
			t.Errorf("Serve() = %v", err)
		}
		<-managerDone
	})
	// Cleanups run last first: this one before the unmounts above.
	t.Cleanup(func() {
		conn.Close()
		e.stop()
	})
	return e
}

// target returns the kubelet's target path of volume name of pod podUID,
// with its parent made, as the kubelet makes it.
func (e *env) target(podUID, name string) string {
	dir := filepath.Join(e.kubelet, "pods", podUID, "volumes", "kubernetes.io~csi", name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.t.Fatal(err)
	}
	return filepath.Join(dir, "mount")
}

// request returns a publish request for an ephemeral volume of pod
// default/<pod> with volume context attrs.
func (e *env) request(volumeID, target, pod string, attrs map[string]string) *csipb.NodePublishVolumeRequest {
	vc := map[string]string{
		"csi.storage.k8s.io/ephemeral":     "true",
		"csi.storage.k8s.io/pod.name":      pod,
		"csi.storage.k8s.io/pod.namespace": "default",
		"csi.storage.k8s.io/pod.uid":       "uid-" + pod,
	}
	for k, v := range attrs {
		vc[k] = v
	}
	return &csipb.NodePublishVolumeRequest{
		VolumeId:   volumeID,
		TargetPath: target,
		VolumeCapability: &csipb.VolumeCapability{
			AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: vc,
	}
}

func (e *env) publish(req *csipb.NodePublishVolumeRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.node.NodePublishVolume(ctx, req)
	return err
}

func (e *env) mustPublish(t *testing.T, req *csipb.NodePublishVolumeRequest) {
	t.Helper()
	if err := e.publish(req); err != nil {
		t.Fatalf("NodePublishVolume(%s) = %v", req.VolumeId, err)
	}
}

func (e *env) unpublish(volumeID, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target})
	return err
}

// mustUnpublish unpublishes and checks that nothing of the volume is left:
// no target, no pod in the manager, no pod dir, no record, no mount.
func (e *env) mustUnpublish(t *testing.T, volumeID, target string) {
	t.Helper()
	if err := e.unpublish(volumeID, target); err != nil {
		t.Fatalf("NodeUnpublishVolume(%s) = %v", volumeID, err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target %s still there after unpublish: %v", target, err)
	}
	uid := csi.PodUID(volumeID)
	if ps, ok := e.m.Pod(uid); ok {
		t.Errorf("the manager still holds pod %s after unpublish: %+v", uid, ps)
	}
	assertNoMountsBeneath(t, target)
	if records, _ := os.ReadDir(filepath.Join(e.root, csi.RecordDir)); len(records) > 0 {
		t.Errorf("publish records left: %v", records)
	}
	e.waitNoPodDir(t, uid)
}

// waitNoPodDir waits a little for the manager to remove the pod dir of a
// pod whose volumes are all torn down; it removes it after tear-down.
func (e *env) waitNoPodDir(t *testing.T, uid types.UID) {
	t.Helper()
	dir := filepath.Join(e.root, "pods", string(uid))
	for range 100 {
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("pod dir %s still there", dir)
}

func assertNoMountsBeneath(t *testing.T, dir string) {
	t.Helper()
	mountPoints, err := util.NewMounter().List()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mountPoints {
		if mp.Path == dir || strings.HasPrefix(mp.Path, dir+"/") {
			t.Errorf("%s is still mounted", mp.Path)
		}
	}
}

// volumeStatus returns the manager's status of the volume volumeID.
func (e *env) volumeStatus(t *testing.T, volumeID string) (volumemanager.PodStatus, volumemanager.VolumeStatus) {
	t.Helper()
	ps, ok := e.m.Pod(csi.PodUID(volumeID))
	if !ok || len(ps.Volumes) != 1 {
		t.Fatalf("the manager does not hold the one volume of %s: %+v", volumeID, ps)
	}
	return ps, ps.Volumes[0]
}

// wantCode checks that err is a gRPC error with code, whose message holds
// every one of parts.
func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	for _, part := range parts {
		if !strings.Contains(st.Message(), part) {
			t.Errorf("error %q does not mention %q", st.Message(), part)
		}
	}
}

package csisanity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/csi"
	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

// TestStagedVolumeSurvivesSIGKILL stages and publishes a Flocker dataset,
// SIGKILLs the agent, and checks that the restarted agent answers the
// kubelet's repeated calls as before: the same stage and publish succeed
// without mounting twice, and unpublish and unstage leave nothing mounted.
func TestStagedVolumeSurvivesSIGKILL(t *testing.T) {
	dir, mounter := newTestDir(t)
	emu := emulator.StartForTest(t, emulator.Config{
		StateDir:    filepath.Join(dir, "flocker"),
		RemoteNodes: []emulator.Node{{Host: "10.0.0.2", UUID: "5c2e8a1f-6d3b-4c7e-9f0a-2b4d6e8f1a3c"}},
	})
	id, err := emu.AddDataset(emulator.DatasetSpec{Name: "pg-data", Primary: "5c2e8a1f-6d3b-4c7e-9f0a-2b4d6e8f1a3c"})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "csi.sock")
	kubelet := filepath.Join(dir, "kubelet")
	staging := filepath.Join(kubelet, "plugins", "kubernetes.io", "csi", "volume-agent.io", "pv", "globalmount")
	stagedDataset := filepath.Join(staging, csi.StagedDatasetDir)
	target := filepath.Join(kubelet, "pods", "pod-1", "volumes", "kubernetes.io~csi", "pg-data", "mount")
	for _, d := range []string{staging, filepath.Dir(target)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	capability := &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	stageReq := &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: capability}
	publishReq := &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capability}

	stageAndPublish := func(node csipb.NodeClient) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if _, err := node.NodeStageVolume(ctx, stageReq); err != nil {
			t.Fatalf("NodeStageVolume = %v", err)
		}
		if _, err := node.NodePublishVolume(ctx, publishReq); err != nil {
			t.Fatalf("NodePublishVolume = %v", err)
		}
		for _, path := range []string{stagedDataset, target} {
			if n := countMounts(t, mounter, path); n != 1 {
				t.Errorf("%s is mounted %d times, want once", path, n)
			}
		}
	}

	first := startAgent(t, dir, socket, emu)
	stageAndPublish(nodeClient(t, socket))
	if err := os.WriteFile(filepath.Join(target, "data"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	first.kill()

	startAgent(t, dir, socket, emu).waitReady(filepath.Join(dir, "root"))
	// Nothing the kubelet still uses was torn down when the agent came back.
	for _, path := range []string{stagedDataset, target} {
		if n := countMounts(t, mounter, path); n != 1 {
			t.Errorf("%s is mounted %d times after the restart, want once", path, n)
		}
	}
	node := nodeClient(t, socket)
	stageAndPublish(node)
	if got, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(got) != "before" {
		t.Errorf("the published volume holds %q, %v after the restart; want the data written before", got, err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume = %v", err)
	}
	if _, err := node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume = %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the target is still there: %v", err)
	}
	for _, path := range mountsBeneath(t, mounter, kubelet) {
		t.Errorf("%s is still mounted", path)
	}
}

func nodeClient(t *testing.T, socket string) csipb.NodeClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csipb.NewNodeClient(conn)
}

// countMounts counts the mounts at path.
func countMounts(t *testing.T, mounter mount.Interface, path string) int {
	t.Helper()
	mps, err := mounter.List()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mp := range mps {
		if strings.TrimSuffix(mp.Path, "/") == path {
			n++
		}
	}
	return n
}

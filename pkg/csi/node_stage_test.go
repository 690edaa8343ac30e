package csi_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/csi"
	"github.com/volume-agent/volume-agent/pkg/volume/flocker"
	emulator "github.com/volume-agent/volume-agent/test/flocker"
)

const remoteNode = "5c2e8a1f-6d3b-4c7e-9f0a-2b4d6e8f1a3c"

// flockerEnv is env with the Flocker plugin, talking to an emulated control
// service whose local node is 127.0.0.1 and which has one remote node.
type flockerEnv struct {
	*env
	emu *emulator.Emulator
}

func newFlockerEnv(t *testing.T) *flockerEnv {
	t.Helper()
	emu := emulator.StartForTest(t, emulator.Config{RemoteNodes: []emulator.Node{{Host: "10.0.0.2", UUID: remoteNode}}})
	certs := emu.Certs()
	cfg := flocker.Config{ControlServiceHost: emu.Host(), Port: emu.Port(), CAFile: certs.CACert,
		ClientCertFile: certs.ClientCert, ClientKeyFile: certs.ClientKey, MoveTimeout: 30 * time.Second}
	// Registered after the emulator's cleanup, so it runs first: the
	// driver's mounts go before the datasets'.
	return &flockerEnv{env: newEnv(t, gitConfig(), flocker.ProbeVolumePlugins(cfg)...), emu: emu}
}

func mountCapability(mode csipb.VolumeCapability_AccessMode_Mode, mountGroup string) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{VolumeMountGroup: mountGroup}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

func (e *flockerEnv) stage(volumeID, staging string, volumeContext map[string]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, VolumeContext: volumeContext,
		VolumeCapability: mountCapability(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "2345"),
	})
	return err
}

func (e *flockerEnv) unstage(volumeID, staging string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: staging})
	return err
}

func (e *flockerEnv) publishStaged(volumeID, staging, target string, readOnly bool) error {
	return e.publish(&csipb.NodePublishVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, TargetPath: target, Readonly: readOnly,
		VolumeCapability: mountCapability(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, ""),
		VolumeContext:    map[string]string{"csi.storage.k8s.io/pod.name": "db"},
	})
}

// staging returns the kubelet's staging path of volumeID, made as the
// kubelet makes it.
func (e *flockerEnv) staging(name string) string {
	dir := filepath.Join(e.kubelet, "plugins", "kubernetes.io", "csi", "volume-agent.io", name, "globalmount")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// TestPersistentFlockerVolume stages a dataset that starts on another node
// (a static PersistentVolume: no volume context, the handle is its UUID),
// publishes it to two pods, one read-only, and undoes each step.
func TestPersistentFlockerVolume(t *testing.T) {
	e := newFlockerEnv(t)
	id, err := e.emu.AddDataset(emulator.DatasetSpec{Name: "pg-data", Primary: remoteNode})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.emu.BackingDir(id), "PG_VERSION"), []byte("16"), 0o644); err != nil {
		t.Fatal(err)
	}
	staging := e.staging("pv1")
	if err := e.stage(id, staging, nil); err != nil {
		t.Fatalf("NodeStageVolume = %v", err)
	}
	dataset := filepath.Join(staging, csi.StagedDatasetDir)
	expectContent(t, filepath.Join(dataset, "PG_VERSION"), "16")
	if ds, _ := e.emu.Dataset(id); ds.Primary != e.emu.LocalNode().UUID {
		t.Errorf("the dataset's primary is %s, want this node", ds.Primary)
	}
	if info, err := os.Stat(dataset); err != nil || info.Sys().(*syscall.Stat_t).Gid != 2345 {
		t.Errorf("the staged volume is not owned by the volume_mount_group 2345: %v", err)
	}

	t.Run("stage is idempotent, and refuses conflicts", func(t *testing.T) {
		if err := e.stage(id, staging, nil); err != nil {
			t.Fatalf("the same stage again = %v", err)
		}
		wantCode(t, e.stage(id, e.staging("pv2"), nil), codes.AlreadyExists, id, staging)
		other, err := e.emu.AddDataset(emulator.DatasetSpec{Name: "other"})
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, e.stage(other, staging, nil), codes.AlreadyExists, staging)
	})

	rw := e.target("pod-rw", "data")
	ro := e.target("pod-ro", "data")
	wantCode(t, e.publishStaged(id, e.staging("elsewhere"), rw, false), codes.FailedPrecondition, "not staged")
	if err := e.publishStaged(id, staging, rw, false); err != nil {
		t.Fatalf("NodePublishVolume (read-write) = %v", err)
	}
	if err := e.publishStaged(id, staging, ro, true); err != nil {
		t.Fatalf("NodePublishVolume (read-only) = %v", err)
	}
	if err := os.WriteFile(filepath.Join(rw, "written"), []byte("by rw"), 0o644); err != nil {
		t.Fatalf("writing to the read-write target: %v", err)
	}
	expectContent(t, filepath.Join(ro, "written"), "by rw")
	if err := os.WriteFile(filepath.Join(ro, "nope"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing to the read-only target: %v, want EROFS", err)
	}

	t.Run("publish is idempotent, and refuses conflicts", func(t *testing.T) {
		if err := e.publishStaged(id, staging, rw, false); err != nil {
			t.Fatalf("the same publish again = %v", err)
		}
		if n := mountCount(t, rw); n != 1 {
			t.Errorf("%s is mounted %d times, want once", rw, n)
		}
		wantCode(t, e.publishStaged(id, staging, rw, true), codes.AlreadyExists, "readonly")
	})

	wantCode(t, e.unstage(id, staging), codes.FailedPrecondition, "still published")
	for _, target := range []string{rw, ro} {
		if err := e.unpublish(id, target); err != nil {
			t.Fatalf("NodeUnpublishVolume(%s) = %v", target, err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s still there: %v", target, err)
		}
		if err := e.unpublish(id, target); err != nil {
			t.Errorf("a second NodeUnpublishVolume(%s) = %v", target, err)
		}
	}
	// The kubelet calls NodeUnstageVolume only when this holds.
	if refs := outsideMountRefs(t, staging); len(refs) > 0 {
		t.Errorf("the kubelet would not unstage %s: other mounts share its source: %v", staging, refs)
	}
	if err := e.unstage(id, staging); err != nil {
		t.Fatalf("NodeUnstageVolume = %v", err)
	}
	if err := e.unstage(id, staging); err != nil {
		t.Errorf("a second NodeUnstageVolume = %v", err)
	}
	assertNoMountsBeneath(t, e.kubelet)
	// The kubelet removes the staging dir with os.Remove: it must be empty.
	if entries, err := os.ReadDir(staging); err != nil || len(entries) > 0 {
		t.Errorf("the staging dir after NodeUnstageVolume holds %v (%v), want nothing", entries, err)
	}
	if ds, ok := e.emu.Dataset(id); !ok || ds.Deleted {
		t.Error("unstaging deleted the dataset")
	}
	expectContent(t, filepath.Join(e.emu.BackingDir(id), "written"), "by rw")
	for _, dir := range []string{csi.StagedRecordDir, csi.StagedPublishedRecordDir} {
		if records, _ := os.ReadDir(filepath.Join(e.root, dir)); len(records) > 0 {
			t.Errorf("records left in %s: %v", dir, records)
		}
	}
}

func TestStageRejectsWhatIsNotAFlockerDataset(t *testing.T) {
	e := newFlockerEnv(t)
	const uuid = "3f2b9a4e-7c1d-4e8a-9b6f-2d5c8e1a7f40"
	staging := e.staging("bad")
	tests := []struct {
		name          string
		volumeID      string
		volumeContext map[string]string
		code          codes.Code
		want          []string
	}{
		{"no context, not a UUID", "pvc-1", nil, codes.InvalidArgument, []string{"volume_id", `"pvc-1"`}},
		{"ephemeral type", uuid, map[string]string{"type": "emptyDir"}, codes.InvalidArgument, []string{`"type"`, `"emptyDir"`}},
		{"another dataset's UUID", uuid, map[string]string{"type": "flocker", "datasetUUID": "0f6e1c52-7b41-4d0e-9a3c-5b2d8e1f4a60"},
			codes.InvalidArgument, []string{`"datasetUUID"`, uuid}},
		{"a bad dataset name", "pv-x", map[string]string{"type": "flocker", "datasetName": "a/b"}, codes.InvalidArgument, []string{`"datasetName"`, `"a/b"`}},
		{"an unknown key", uuid, map[string]string{"type": "flocker", "size": "1Gi"}, codes.InvalidArgument, []string{`"size"`}},
		{"a dataset that does not exist", uuid, nil, codes.Internal, []string{"not found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, e.stage(tt.volumeID, staging, tt.volumeContext), tt.code, tt.want...)
			if err := e.unstage(tt.volumeID, staging); err != nil {
				t.Fatalf("NodeUnstageVolume = %v", err)
			}
		})
	}
	assertNoMountsBeneath(t, e.kubelet)
}

func expectContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Fatalf("%s = %q, %v; want %q", path, got, err, want)
	}
}

// outsideMountRefs returns the mounts that the kubelet counts as users of
// the staging path staging before it unstages it (GetDeviceMountRefs, then
// HasMountRefs): those sharing its source, except the ones in the kubelet's
// own plugin dir.
func outsideMountRefs(t *testing.T, staging string) []string {
	t.Helper()
	refs, err := mount.New("").GetMountRefs(staging)
	if err != nil {
		t.Fatalf("GetMountRefs(%s) = %v", staging, err)
	}
	inPluginDir := staging[strings.Index(staging, filepath.Join("plugins", "kubernetes.io")):]
	var out []string
	for _, ref := range refs {
		if !strings.Contains(ref, inPluginDir) {
			out = append(out, ref)
		}
	}
	return out
}

// mountCount counts the mounts at path.
func mountCount(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && fields[4] == path {
			n++
		}
	}
	return n
}

package csi_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/volume-agent/volume-agent/pkg/csi"
	volumetesting "github.com/volume-agent/volume-agent/pkg/volume/testing"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

func TestIdentityAndNodeInfo(t *testing.T) {
	e := newEnv(t, gitConfig())
	ctx := context.Background()
	info, err := e.ident.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil || info.Name != "volume-agent.io" || info.VendorVersion != "test" {
		t.Errorf("GetPluginInfo() = %v, %v", info, err)
	}
	caps, err := e.ident.GetPluginCapabilities(ctx, &csipb.GetPluginCapabilitiesRequest{})
	if err != nil || len(caps.Capabilities) != 0 {
		t.Errorf("GetPluginCapabilities() = %v, %v; want none without a controller", caps, err)
	}
	probe, err := e.ident.Probe(ctx, &csipb.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe() = %v, %v", probe, err)
	}
	nodeInfo, err := e.node.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil || nodeInfo.NodeId != "node-a" {
		t.Errorf("NodeGetInfo() = %v, %v", nodeInfo, err)
	}
	nodeCaps, err := e.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	var gotCaps []csipb.NodeServiceCapability_RPC_Type
	for _, c := range nodeCaps.GetCapabilities() {
		gotCaps = append(gotCaps, c.GetRpc().GetType())
	}
	if want := []csipb.NodeServiceCapability_RPC_Type{csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP, csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}; err != nil || !slices.Equal(gotCaps, want) {
		t.Errorf("NodeGetCapabilities() = %v, %v; want %v", gotCaps, err, want)
	}
}

func TestEphemeralEmptyDirOnDisk(t *testing.T) {
	e := newEnv(t, gitConfig())
	target := e.target("pod-1", "scratch")
	req := e.request("csi-scratch-1", target, "web", map[string]string{"type": "emptyDir"})
	req.VolumeCapability.GetMount().VolumeMountGroup = "4321"
	e.mustPublish(t, req)

	info, err := os.Stat(target)
	if err != nil || !info.IsDir() || info.Mode().Perm() != 0o777 {
		t.Fatalf("target = %v, %v; want a 0777 dir", info, err)
	}
	if gid := info.Sys().(*syscall.Stat_t).Gid; gid != 4321 || info.Mode()&os.ModeSetgid == 0 {
		t.Errorf("target has group %d, mode %v; want volume_mount_group 4321 with setgid", gid, info.Mode())
	}
	if err := os.WriteFile(filepath.Join(target, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, vol := e.volumeStatus(t, "csi-scratch-1")
	if ps.Namespace != "default" || ps.Name != "web" || ps.Source != csi.SourcePrefix+target ||
		vol.Path != target || vol.Plugin != "kubernetes.io/empty-dir" || vol.Volume != "scratch" || vol.State != volumemanager.StateReady {
		t.Errorf("status = %+v, volume %+v", ps, vol)
	}

	t.Run("the same publish again succeeds and changes nothing", func(t *testing.T) {
		events := len(e.m.Events())
		e.mustPublish(t, req)
		if data, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(data) != "kept" {
			t.Errorf("data = %q, %v; want the volume's contents kept", data, err)
		}
		if got := len(e.m.Events()); got != events {
			t.Errorf("the repeated publish made %d events; want none (no work)", got-events)
		}
	})

	t.Run("the same target with other arguments is AlreadyExists", func(t *testing.T) {
		like := func(volumeID, target string, attrs map[string]string) *csipb.NodePublishVolumeRequest {
			r := e.request(volumeID, target, "web", attrs)
			r.VolumeCapability.GetMount().VolumeMountGroup = "4321"
			return r
		}
		other := like("csi-scratch-2", target, map[string]string{"type": "emptyDir"})
		wantCode(t, e.publish(other), codes.AlreadyExists, target, `this call has volume ID "csi-scratch-2", not "csi-scratch-1"`)
		readOnly := like("csi-scratch-1", target, map[string]string{"type": "emptyDir"})
		readOnly.Readonly = true
		wantCode(t, e.publish(readOnly), codes.AlreadyExists, "this call has readonly true, not false")
		medium := like("csi-scratch-1", target, map[string]string{"type": "emptyDir", "medium": "Memory"})
		wantCode(t, e.publish(medium), codes.AlreadyExists, "this call has another volume context")
		group := e.request("csi-scratch-1", target, "web", map[string]string{"type": "emptyDir"})
		wantCode(t, e.publish(group), codes.AlreadyExists, `this call has volume_mount_group "", not "4321"`)
		elsewhere := like("csi-scratch-1", e.target("pod-2", "scratch"), map[string]string{"type": "emptyDir"})
		wantCode(t, e.publish(elsewhere), codes.AlreadyExists, `already published at "`+target+`"`)
		if data, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(data) != "kept" {
			t.Errorf("data = %q, %v; want the volume untouched", data, err)
		}
	})

	t.Run("unpublish with another volume ID is refused", func(t *testing.T) {
		wantCode(t, e.unpublish("csi-other", target), codes.FailedPrecondition, "csi-scratch-1")
	})

	e.mustUnpublish(t, "csi-scratch-1", target)
	if err := e.unpublish("csi-scratch-1", target); err != nil {
		t.Errorf("a second NodeUnpublishVolume() = %v; want success", err)
	}
}

func TestUnpublishUnknownTarget(t *testing.T) {
	e := newEnv(t, gitConfig())
	gone := filepath.Join(e.dir, "never-published", "mount")
	if err := e.unpublish("csi-unknown", gone); err != nil {
		t.Errorf("NodeUnpublishVolume() of a missing target = %v; want success", err)
	}
	empty := e.target("pod-x", "left")
	if err := os.Mkdir(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := e.unpublish("csi-unknown", empty); err != nil {
		t.Errorf("NodeUnpublishVolume() of an empty unknown target = %v; want success", err)
	}
	if _, err := os.Lstat(empty); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the empty target is still there: %v", err)
	}
	full := e.target("pod-y", "notmine")
	if err := os.MkdirAll(filepath.Join(full, "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := e.unpublish("csi-unknown", full); err != nil {
		t.Errorf("NodeUnpublishVolume() of an unknown target with contents = %v; want success", err)
	}
	if _, err := os.Stat(filepath.Join(full, "dir")); err != nil {
		t.Errorf("a target the driver did not publish lost its contents: %v", err)
	}
}

func TestEphemeralEmptyDirInMemoryReadOnly(t *testing.T) {
	e := newEnv(t, gitConfig())
	target := e.target("pod-1", "cache")
	req := e.request("csi-mem", target, "web", map[string]string{"type": "emptyDir", "medium": "Memory", "sizeLimit": "8Mi"})
	e.mustPublish(t, req)
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC || int64(st.Blocks)*st.Bsize != 8<<20 {
		t.Errorf("target is fs type %#x of %d bytes; want an 8 MiB tmpfs", st.Type, int64(st.Blocks)*st.Bsize)
	}
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644); err != nil {
		t.Errorf("writing to a read-write volume: %v", err)
	}
	e.mustUnpublish(t, "csi-mem", target)

	for _, medium := range []string{"", "Memory"} {
		t.Run("read-only, medium "+medium, func(t *testing.T) {
			target := e.target("pod-ro", "ro"+strings.ToLower(medium))
			req := e.request("csi-ro-"+medium, target, "reader", map[string]string{"type": "emptyDir", "medium": medium})
			req.Readonly = true
			e.mustPublish(t, req)
			e.mustPublish(t, req)
			err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644)
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("writing to a read-only volume: %v; want EROFS", err)
			}
			e.mustUnpublish(t, "csi-ro-"+medium, target)
		})
	}
}

func TestVolumeContextIsValidated(t *testing.T) {
	e := newEnv(t, gitConfig())
	target := e.target("pod-1", "bad")
	tests := map[string]struct {
		attrs map[string]string
		parts []string
	}{
		"missing type":        {map[string]string{}, []string{`"type"`, "required"}},
		"unknown type":        {map[string]string{"type": "hostPath"}, []string{`"type"`, `"hostPath"`}},
		"unknown key":         {map[string]string{"type": "emptyDir", "path": "/etc"}, []string{`"path"`, `"/etc"`, "medium, sizeLimit"}},
		"key of another type": {map[string]string{"type": "emptyDir", "repository": "x"}, []string{`"repository"`}},
		"bad medium":          {map[string]string{"type": "emptyDir", "medium": "Disk"}, []string{`volume context key "medium": invalid value "Disk"`}},
		"bad size":            {map[string]string{"type": "emptyDir", "sizeLimit": "lots"}, []string{`"sizeLimit"`, `"lots"`}},
		"negative size":       {map[string]string{"type": "emptyDir", "sizeLimit": "-1Mi"}, []string{`"sizeLimit"`, `"-1Mi"`}},
		"no repository":       {map[string]string{"type": "gitRepo"}, []string{`"repository"`}},
		"bad pod name":        {map[string]string{"type": "emptyDir", "csi.storage.k8s.io/pod.name": "Not_A_Name"}, []string{`"csi.storage.k8s.io/pod.name"`, `"Not_A_Name"`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req := e.request("csi-bad", target, "web", nil)
			delete(req.VolumeContext, "csi.storage.k8s.io/pod.name")
			for k, v := range tc.attrs {
				req.VolumeContext[k] = v
			}
			wantCode(t, e.publish(req), codes.InvalidArgument, tc.parts...)
		})
	}
	t.Run("bad mount group", func(t *testing.T) {
		req := e.request("csi-bad", target, "web", map[string]string{"type": "emptyDir"})
		req.VolumeCapability.GetMount().VolumeMountGroup = "wheel"
		wantCode(t, e.publish(req), codes.InvalidArgument, `volume_mount_group "wheel"`)
	})
	t.Run("block volume", func(t *testing.T) {
		req := e.request("csi-bad", target, "web", map[string]string{"type": "emptyDir"})
		req.VolumeCapability.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
		wantCode(t, e.publish(req), codes.InvalidArgument, "block")
	})
	t.Run("flocker without its plugin", func(t *testing.T) {
		req := e.request("csi-bad", target, "web", map[string]string{"type": "flocker", "datasetName": "db"})
		wantCode(t, e.publish(req), codes.FailedPrecondition, "no loaded volume plugin")
	})
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused publish made the target: %v", err)
	}
	if records, _ := os.ReadDir(filepath.Join(e.root, csi.RecordDir)); len(records) > 0 {
		t.Errorf("a refused publish left records: %v", records)
	}
	if pods := e.m.Pods(); len(pods) > 0 {
		t.Errorf("a refused publish reached the manager: %+v", pods)
	}
}

func TestRegistration(t *testing.T) {
	volumetesting.RequiresRoot(t)
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := csi.RegistrationSocket(dir, "volume-agent.io")
	if sock != filepath.Join(dir, "volume-agent.io-reg.sock") {
		t.Fatalf("RegistrationSocket() = %q", sock)
	}
	listener, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	listener.(*net.UnixListener).SetUnlinkOnClose(true)
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logger))
	srv := &csi.RegistrationServer{DriverName: "volume-agent.io", Endpoint: "/var/lib/kubelet/plugins/volume-agent.io/csi.sock"}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, listener) }()

	// The fake kubelet: what pluginwatcher does with a new socket.
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := registerapi.NewRegistrationClient(conn)
	info, err := client.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "volume-agent.io" || info.Endpoint != srv.Endpoint ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Errorf("GetInfo() = %v", info)
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{Error: "driver name taken"}); err != nil {
		t.Fatal(err)
	}
	logs := logger.GetSink().(ktesting.Underlier).GetBuffer().String()
	if !strings.Contains(logs, "The kubelet registered the CSI driver") || !strings.Contains(logs, "driver name taken") {
		t.Errorf("the log does not say whether the kubelet accepted the driver:\n%s", logs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve() = %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the registration socket is still there after Serve returned: %v", err)
	}
}

// TestSyncKeepsUnreadableRecordsAsSourceErrors restarts the driver over a
// publish record and a stage record that do not decode: each becomes a
// source with an error, which keeps the manager from tearing down what it
// does not know.
func TestSyncKeepsUnreadableRecordsAsSourceErrors(t *testing.T) {
	e := newEnv(t, gitConfig())
	want := map[string]bool{} // source name -> seen with its error
	for dir, prefix := range map[string]string{csi.RecordDir: csi.SourcePrefix, csi.StagedRecordDir: csi.StageSourcePrefix} {
		path := filepath.Join(e.root, dir, "broken.json")
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		want[prefix+path] = false
	}
	driver, err := csi.New(csi.Config{DriverName: "volume-agent.io", VendorVersion: "test", NodeID: "node-a", RootDir: e.root, Manager: e.m, Plugins: e.plugins})
	if err != nil {
		t.Fatal(err)
	}
	if err := driver.Sync(context.Background()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	for _, source := range e.m.Sources() {
		if _, ok := want[source.Name]; ok && strings.Contains(source.Error, "failed to decode CSI record") {
			want[source.Name] = true
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no source %q with the record's decode error in %+v", name, e.m.Sources())
		}
	}
}

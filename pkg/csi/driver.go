package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// SourcePrefix starts the names of the volume manager's sources that CSI
// publishes are: "csi:" and the target path.
const SourcePrefix = "csi:"

// RecordDir is the directory, inside the agent's root dir, that keeps the
// publish records.
const RecordDir = "csi/published"

// Manager is what the driver needs of the volume manager;
// *volumemanager.Manager implements it.
type Manager interface {
	UpdateSources(updates ...volumemanager.SourceUpdate)
	WaitForPod(ctx context.Context, uid types.UID, done func(volumemanager.PodStatus, bool) bool) (volumemanager.PodStatus, bool, error)
	Retry(uid types.UID)
}

// Config configures a Driver. DriverName, NodeID, RootDir, Manager and
// Plugins are required.
type Config struct {
	// DriverName is the name GetPluginInfo reports.
	DriverName string
	// VendorVersion is the version GetPluginInfo reports.
	VendorVersion string
	// NodeID is the node's ID NodeGetInfo reports: the agent's node name.
	NodeID string
	// RootDir is the agent's root dir; the records are kept in RecordDir
	// inside it.
	RootDir string
	Manager Manager
	// Plugins validate the volumes of publishes, as they do manifests.
	Plugins *volume.VolumePluginMgr
	// Controller, when set, is served as the Controller service, and
	// GetPluginCapabilities reports CONTROLLER_SERVICE.
	Controller csi.ControllerServer
	// Mounter bind-mounts staged volumes at their targets; nil means
	// mount.New("").
	Mounter mount.Interface
}

// Driver is the CSI driver: the Identity and Node services (and the
// Controller service when one is configured). Its methods are safe for
// concurrent use.
type Driver struct {
	cfg     Config
	store   recordStore
	mounter mount.Interface
	// stageStore and stagedPublishStore keep the stages and the publishes
	// of staged volumes; see node_stage.go.
	stageStore, stagedPublishStore recordStore

	// mu guards records and the files of the store.
	mu sync.Mutex
	// records are the publishes, by target path.
	records map[string]*publishRecord
	// staged are the stages, by staging path; stagedPublishes the
	// publishes of staged volumes, by target path.
	staged, stagedPublishes map[string]*publishRecord
}

// New returns a Driver. Call Sync before Serve.
func New(cfg Config) (*Driver, error) {
	if cfg.DriverName == "" || cfg.NodeID == "" || cfg.RootDir == "" || cfg.Manager == nil || cfg.Plugins == nil {
		return nil, errors.New("CSI driver config needs DriverName, NodeID, RootDir, Manager and Plugins")
	}
	mounter := cfg.Mounter
	if mounter == nil {
		mounter = mount.New("")
	}
	return &Driver{
		cfg:                cfg,
		store:              recordStore{dir: filepath.Join(cfg.RootDir, RecordDir)},
		mounter:            mounter,
		stageStore:         recordStore{dir: filepath.Join(cfg.RootDir, StagedRecordDir)},
		stagedPublishStore: recordStore{dir: filepath.Join(cfg.RootDir, StagedPublishedRecordDir)},
		records:            map[string]*publishRecord{},
		staged:             map[string]*publishRecord{},
		stagedPublishes:    map[string]*publishRecord{},
	}, nil
}

// Sync reads the publish records kept on disk and makes their volumes
// desired again, all at once. Call it before the volume manager's
// MarkSourcesSynced, so that nothing published is torn down after a
// restart. A record that does not decode becomes a source with an error,
// which keeps the manager from tearing down what it does not know until
// the record is removed (by the kubelet's unpublish of its target, or by
// hand); a record whose volume no longer validates is desired with the
// error shown on its source.
func (d *Driver) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	updates, err := restoreSources(logger, d.store, d.records, SourcePrefix, d.sourceUpdate)
	if err != nil {
		return err
	}
	staged, err := d.syncStagedLocked(logger)
	if err != nil {
		return err
	}
	updates = append(updates, staged...)
	d.cfg.Manager.UpdateSources(updates...)
	logger.V(1).Info("Read the CSI publish records", "records", len(d.records), "staged", len(d.staged), "stagedPublishes", len(d.stagedPublishes))
	return nil
}

// restoreSources reads the records of store back into byPath, and returns
// what each says to the volume manager: update(r), or, for a record that
// does not decode, an error on the source prefix + its path, which keeps
// the manager from tearing down what it does not know until the record is
// removed.
func restoreSources(logger klog.Logger, store recordStore, byPath map[string]*publishRecord, prefix string,
	update func(*publishRecord) volumemanager.SourceUpdate) ([]volumemanager.SourceUpdate, error) {
	records, bad, err := store.load()
	if err != nil {
		return nil, err
	}
	updates := make([]volumemanager.SourceUpdate, 0, len(records)+len(bad))
	for _, r := range records {
		byPath[r.TargetPath] = r
		updates = append(updates, update(r))
	}
	for path, err := range bad {
		logger.Error(err, "Failed to read a CSI record; nothing is torn down until it is removed", "path", path, "source", prefix+path)
		updates = append(updates, volumemanager.SourceUpdate{Source: prefix + path, Err: err})
	}
	return updates, nil
}

// sourceUpdate returns what r says to the volume manager.
func (d *Driver) sourceUpdate(r *publishRecord) volumemanager.SourceUpdate {
	u := volumemanager.SourceUpdate{Source: SourcePrefix + r.TargetPath}
	pod, err := r.pod(d.cfg.Plugins)
	if err != nil {
		u.Err = fmt.Errorf("publish of volume %q at %q: %w", r.VolumeID, r.TargetPath, err)
		return u
	}
	u.Bundle = &manifest.Bundle{Pods: []*v1.Pod{pod}}
	u.Targets = map[types.UID]map[string]volumemanager.Target{
		pod.UID: {pod.Spec.Volumes[0].Name: {Path: r.TargetPath, ReadOnly: r.ReadOnly}},
	}
	return u
}

// Serve serves the CSI services on listener until ctx is cancelled, then
// stops, cancelling the calls in flight (a publish may wait minutes for its
// volume; the kubelet retries it), and closes the listener (which removes a
// unix socket).
func (d *Driver) Serve(ctx context.Context, listener net.Listener) error {
	logger := klog.FromContext(ctx)
	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls(logger)))
	csi.RegisterIdentityServer(srv, &identityServer{d: d})
	csi.RegisterNodeServer(srv, &nodeServer{d: d})
	if d.cfg.Controller != nil {
		csi.RegisterControllerServer(srv, d.cfg.Controller)
	}
	return serveGRPC(ctx, srv, listener)
}

// serveGRPC serves srv on listener until ctx is cancelled, then stops it
// and the calls in flight.
func serveGRPC(ctx context.Context, srv *grpc.Server, listener net.Listener) error {
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.Stop()
		case <-stopped:
		}
	}()
	err := srv.Serve(listener)
	close(stopped)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// logCalls logs every call, with the secrets of its request stripped,
// and its error, under a logger that names the method.
func logCalls(logger klog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		callLogger := logger.WithValues("method", info.FullMethod)
		callLogger.V(4).Info("CSI call", "request", protosanitizer.StripSecrets(req))
		resp, err := handler(klog.NewContext(ctx, callLogger), req)
		if err != nil {
			callLogger.Error(err, "CSI call failed", "request", protosanitizer.StripSecrets(req))
		} else {
			callLogger.V(4).Info("CSI call succeeded", "response", protosanitizer.StripSecrets(resp))
		}
		return resp, err
	}
}

type identityServer struct {
	csi.UnimplementedIdentityServer
	d *Driver
}

// GetPluginInfo returns the driver's name and version.
func (s *identityServer) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.d.cfg.DriverName, VendorVersion: s.d.cfg.VendorVersion}, nil
}

// GetPluginCapabilities reports CONTROLLER_SERVICE when a Controller is
// configured, and nothing else.
func (s *identityServer) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	resp := &csi.GetPluginCapabilitiesResponse{}
	if s.d.cfg.Controller != nil {
		resp.Capabilities = append(resp.Capabilities, &csi.PluginCapability{
			Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
		})
	}
	return resp, nil
}

// Probe reports the driver ready: it serves only once its records are
// read.
func (s *identityServer) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// statusf returns a gRPC status error.
func statusf(code codes.Code, format string, args ...any) error {
	return status.Errorf(code, format, args...)
}

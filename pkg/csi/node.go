package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

// NodeGetInfo returns the node's ID; the driver sets no volume limit and no
// topology.
func (s *nodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.d.cfg.NodeID}, nil
}

// NodeGetCapabilities reports VOLUME_MOUNT_GROUP: the kubelet passes a pod's
// fsGroup as volume_mount_group, which the driver applies as the fsGroup of
// a manifest's pod is applied.
func (s *nodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		nodeCapability(csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP),
		nodeCapability(csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME),
	}}, nil
}

func nodeCapability(c csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
	return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}}
}

// NodePublishVolume sets the ephemeral volume its volume context describes
// up at the target path, through the volume manager, and waits for the
// result within the call's deadline.
//
// It is idempotent: the same call again succeeds at once when the volume is
// ready, and waits for it otherwise (a volume whose last attempt failed is
// tried again). The same target with other arguments is AlreadyExists, as
// is the same volume ID at another target. A bad volume context is
// InvalidArgument naming the key and the value; a volume whose plugin is
// not loaded is FailedPrecondition. A final set-up error is Internal; a
// transient or uncertain one is Unavailable (the manager retries it too);
// a set-up still running at the deadline is DeadlineExceeded; a volume
// unpublished meanwhile is Aborted.
func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	rec, err := publishRequest(req)
	if err != nil {
		return nil, err
	}
	if req.GetStagingTargetPath() != "" {
		if err := s.d.publishStaged(ctx, req); err != nil {
			return nil, err
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	uid, err := s.d.publish(ctx, rec)
	if err != nil {
		return nil, err
	}
	if err := s.d.waitForSetUp(ctx, uid, rec.VolumeID, rec.TargetPath); err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// checkVolumeAndTarget checks the volume ID and target path of a call.
func checkVolumeAndTarget(volumeID, target string) error {
	switch {
	case volumeID == "":
		return statusf(codes.InvalidArgument, "volume_id is required")
	case target == "":
		return statusf(codes.InvalidArgument, "target_path is required")
	case !filepath.IsAbs(target):
		return statusf(codes.InvalidArgument, "target_path %q must be an absolute path", target)
	}
	return nil
}

// publishRequest checks req and returns the record it asks for.
func publishRequest(req *csi.NodePublishVolumeRequest) (*publishRecord, error) {
	if err := checkVolumeAndTarget(req.GetVolumeId(), req.GetTargetPath()); err != nil {
		return nil, err
	}
	switch {
	case req.GetVolumeCapability() == nil:
		return nil, statusf(codes.InvalidArgument, "volume_capability is required")
	case req.GetVolumeCapability().GetMount() == nil:
		return nil, statusf(codes.InvalidArgument, "volume_capability: only mount volumes are supported, not block volumes")
	case len(req.GetVolumeCapability().GetMount().GetMountFlags()) > 0:
		return nil, statusf(codes.InvalidArgument, "volume_capability.mount.mount_flags %q: mount flags are not supported", req.GetVolumeCapability().GetMount().GetMountFlags())
	}
	return &publishRecord{
		VolumeID:      req.GetVolumeId(),
		TargetPath:    filepath.Clean(req.GetTargetPath()),
		VolumeContext: req.GetVolumeContext(),
		ReadOnly:      req.GetReadonly(),
		MountGroup:    req.GetVolumeCapability().GetMount().GetVolumeMountGroup(),
	}, nil
}

// publish records rec and makes its volume desired, unless the same
// publish is recorded already. It returns the UID of the volume's pod.
func (d *Driver) publish(ctx context.Context, rec *publishRecord) (types.UID, error) {
	uid := PodUID(rec.VolumeID)
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.records[rec.TargetPath]; old != nil {
		if diffs := old.differences(rec); len(diffs) > 0 {
			return "", statusf(codes.AlreadyExists, "target %q holds volume %q published with other arguments: this call has %s",
				rec.TargetPath, old.VolumeID, strings.Join(diffs, ", "))
		}
		// The same publish again: a new attempt if the last one failed.
		d.cfg.Manager.Retry(uid)
		return uid, nil
	}
	for _, other := range d.records {
		if other.VolumeID == rec.VolumeID {
			return "", statusf(codes.AlreadyExists, "volume %q is already published at %q", rec.VolumeID, other.TargetPath)
		}
	}
	u := d.sourceUpdate(rec)
	if u.Err != nil {
		if errors.Is(u.Err, errNoPlugin) {
			return "", statusf(codes.FailedPrecondition, "%v", u.Err)
		}
		return "", statusf(codes.InvalidArgument, "%v", u.Err)
	}
	if err := d.store.write(rec); err != nil {
		return "", statusf(codes.Internal, "%v", err)
	}
	d.records[rec.TargetPath] = rec
	d.cfg.Manager.UpdateSources(u)
	klog.FromContext(ctx).V(2).Info("Published CSI volume", "volumeID", rec.VolumeID, "targetPath", rec.TargetPath, "podUID", uid)
	return uid, nil
}

// waitForSetUp waits until the volume of the pod uid at path is ready or
// failed, and returns the gRPC error the result maps to.
func (d *Driver) waitForSetUp(ctx context.Context, uid types.UID, volumeID, path string) error {
	var vol *volumemanager.VolumeStatus
	ps, known, err := d.cfg.Manager.WaitForPod(ctx, uid, func(ps volumemanager.PodStatus, known bool) bool {
		vol = publishedVolume(ps, path)
		return !known || vol == nil || !vol.Desired || vol.State == volumemanager.StateReady || vol.State == volumemanager.StateFailed
	})
	switch {
	case err != nil:
		return status.FromContextError(fmt.Errorf("volume %q is not set up yet at %q (%s): %w", volumeID, path, describe(vol), err)).Err()
	case !known || vol == nil || !vol.Desired:
		return statusf(codes.Aborted, "volume %q was unpublished from %q while it was being published", volumeID, path)
	case vol.State == volumemanager.StateReady:
		return nil
	case vol.ErrorClass == "final":
		return statusf(codes.Internal, "failed to set up volume %q of pod %s/%s at %q: %s", volumeID, ps.Namespace, ps.Name, path, vol.Message)
	}
	return statusf(codes.Unavailable, "failed to set up volume %q of pod %s/%s at %q, to be retried: %s", volumeID, ps.Namespace, ps.Name, path, vol.Message)
}

// publishedVolume returns the status of the pod's volume at target, or nil.
func publishedVolume(ps volumemanager.PodStatus, target string) *volumemanager.VolumeStatus {
	for i := range ps.Volumes {
		if ps.Volumes[i].Path == target {
			return &ps.Volumes[i]
		}
	}
	return nil
}

func describe(vol *volumemanager.VolumeStatus) string {
	if vol == nil {
		return "not known yet"
	}
	if vol.Message != "" {
		return string(vol.State) + ": " + vol.Message
	}
	return string(vol.State)
}

// NodeUnpublishVolume tears the volume published at the target path down,
// through the volume manager, and removes the target; it waits for that
// within the call's deadline. It is idempotent: a target that is not
// published, or gone, succeeds (an empty directory left there is removed;
// anything else is not the driver's and is left alone). A target that holds
// another volume is FailedPrecondition; a tear-down that failed is Internal
// (the manager retries it, and so does the kubelet's next call); one still
// running at the deadline is DeadlineExceeded.
func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := checkVolumeAndTarget(req.GetVolumeId(), req.GetTargetPath()); err != nil {
		return nil, err
	}
	target := filepath.Clean(req.GetTargetPath())
	if staged, err := s.d.unpublishIfStaged(ctx, req.GetVolumeId(), target); staged || err != nil {
		if err != nil {
			return nil, err
		}
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err := s.d.unpublish(ctx, req.GetVolumeId(), target); err != nil {
		return nil, err
	}
	if err := s.d.waitForTearDown(ctx, PodUID(req.GetVolumeId()), req.GetVolumeId(), target); err != nil {
		return nil, err
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		klog.FromContext(ctx).V(2).Info("Left the target path, which is not empty or is a mount", "targetPath", target, "err", err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// unpublish removes the record of volumeID at target, if any, and makes
// its volume undesired.
func (d *Driver) unpublish(ctx context.Context, volumeID, target string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.records[target]
	if rec == nil {
		// Not published, or unpublished already: the volume may still be
		// being torn down, which the caller waits for.
		d.cfg.Manager.Retry(PodUID(volumeID))
		return nil
	}
	if rec.VolumeID != volumeID {
		return statusf(codes.FailedPrecondition, "target %q holds volume %q, not %q", target, rec.VolumeID, volumeID)
	}
	if err := d.store.remove(target); err != nil {
		return statusf(codes.Internal, "%v", err)
	}
	delete(d.records, target)
	d.cfg.Manager.UpdateSources(volumemanager.SourceUpdate{Source: SourcePrefix + target, Removed: true})
	klog.FromContext(ctx).V(2).Info("Unpublished CSI volume", "volumeID", volumeID, "targetPath", target)
	return nil
}

// waitForTearDown waits until the manager holds no volume of volumeID (of
// the pod uid) at target.
func (d *Driver) waitForTearDown(ctx context.Context, uid types.UID, volumeID, target string) error {
	var vol *volumemanager.VolumeStatus
	_, _, err := d.cfg.Manager.WaitForPod(ctx, uid, func(ps volumemanager.PodStatus, known bool) bool {
		vol = publishedVolume(ps, target)
		return !known || vol == nil || vol.Desired || vol.Reason == volumemanager.ReasonTearDownFailed
	})
	switch {
	case err != nil:
		return status.FromContextError(fmt.Errorf("volume %q is not torn down yet at %q (%s): %w", volumeID, target, describe(vol), err)).Err()
	case vol == nil:
		return nil
	case vol.Desired:
		return statusf(codes.Aborted, "volume %q was published again at %q while it was being unpublished", volumeID, target)
	}
	return statusf(codes.Internal, "failed to tear down volume %q at %q, to be retried: %s", volumeID, target, vol.Message)
}

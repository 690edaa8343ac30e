package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

// Persistent volumes are Flocker datasets, staged and published in two
// steps:
//
//   - NodeStageVolume is one more source of desired volumes, as an ephemeral
//     publish is: the dataset becomes the only volume of a pod of its own,
//     set up by the Flocker plugin (moved to this node, mounted, given the
//     mount group) at StagedDatasetDir inside the staging path. Its record
//     is kept under ROOT/csi/staged from before the set-up starts until it
//     is unstaged.
//   - NodePublishVolume of a staged volume bind-mounts the staged dataset at
//     the target, read-only when asked, as the kubelet binds a device it
//     mounted once; its record is kept under ROOT/csi/published-staged.
//
// The staging path itself stays a plain directory. The dataset's mount is
// a bind mount of the Flocker agent's own mount of it, and before it calls
// NodeUnstageVolume the kubelet refuses to unstage while another mount
// outside its plugin dir shares the staging path's source
// (GetDeviceMountRefs). Mounted one level down, the dataset shares no
// source with the staging path, so the Flocker agent's mount is not taken
// for a user of the staging path.
//
// After a restart, Sync reads both back: the staged volumes are desired
// again, and the published ones known, so that repeated calls answer as
// before.
const (
	StagedRecordDir          = "csi/staged"
	StagedPublishedRecordDir = "csi/published-staged"
	// StageSourcePrefix starts the names of the volume manager's sources
	// that stages are: "csi-stage:" and the staging path.
	StageSourcePrefix = "csi-stage:"
	// StagedDatasetDir is where, inside the staging path, a staged
	// dataset is mounted.
	StagedDatasetDir = "dataset"
	// stagedVolumeName is the pod's name for a staged volume.
	stagedVolumeName = "staged"
)

// stagedDatasetPath returns where the dataset staged at staging is mounted.
func stagedDatasetPath(staging string) string { return filepath.Join(staging, StagedDatasetDir) }

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// stagePodUID returns the UID of the pod a staged volume becomes, distinct
// from that of an ephemeral publish of the same ID.
func stagePodUID(volumeID string) types.UID { return PodUID("stage\x00" + volumeID) }

// persistentContext returns the Flocker volume context a persistent volume
// stands for: its own context when it names a dataset, else (a static
// PersistentVolume with no attributes) the dataset whose UUID is the volume
// ID. Any other type is an InvalidContextError: only Flocker volumes are
// persistent.
func persistentContext(volumeID string, volumeContext map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range volumeContext {
		if !strings.HasPrefix(k, kubeletKeyPrefix) {
			out[k] = v
		}
	}
	switch typ, ok := out[KeyType]; {
	case !ok && len(out) == 0:
		if !uuidPattern.MatchString(volumeID) {
			return nil, fmt.Errorf("volume_id %q: a volume without a volume context must be a Flocker dataset UUID", volumeID)
		}
		return map[string]string{KeyType: string(TypeFlocker), ContextDatasetUUID: volumeID}, nil
	case VolumeType(typ) != TypeFlocker:
		return nil, &InvalidContextError{Key: KeyType, Value: typ,
			Detail: fmt.Sprintf("only %s volumes are persistent (staged); %s and %s are ephemeral inline volumes", TypeFlocker, TypeGitRepo, TypeEmptyDir)}
	}
	if id := out[ContextDatasetUUID]; id != "" && uuidPattern.MatchString(volumeID) && !strings.EqualFold(id, volumeID) {
		return nil, &InvalidContextError{Key: ContextDatasetUUID, Value: id, Detail: fmt.Sprintf("differs from the volume_id %q", volumeID)}
	}
	return out, nil
}

// stagePod returns the pod a stage becomes, checked by the manifest
// validator: one Flocker volume, with the mount group as its fsGroup.
func (r *publishRecord) stagePod(d *Driver) (*v1.Pod, error) {
	source, err := volumeSourceFromContext(r.VolumeContext)
	if err != nil {
		return nil, err
	}
	uid := stagePodUID(r.VolumeID)
	pod := &v1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        "csi-stage-" + string(uid)[:8],
			Namespace:   defaultNamespace,
			UID:         uid,
			Annotations: map[string]string{AnnotationVolumeID: r.VolumeID, AnnotationTargetPath: r.TargetPath},
		},
		Spec: v1.PodSpec{Volumes: []v1.Volume{{Name: stagedVolumeName, VolumeSource: source}}},
	}
	if err := r.setMountGroup(pod); err != nil {
		return nil, err
	}
	if err := manifest.Validate(&manifest.Bundle{Pods: []*v1.Pod{pod}}, d.cfg.Plugins); err != nil {
		return nil, r.contextError(err)
	}
	return pod, nil
}

// stageSourceUpdate returns what the stage r says to the volume manager.
func (d *Driver) stageSourceUpdate(r *publishRecord) volumemanager.SourceUpdate {
	u := volumemanager.SourceUpdate{Source: StageSourcePrefix + r.TargetPath}
	pod, err := r.stagePod(d)
	if err != nil {
		u.Err = fmt.Errorf("stage of volume %q at %q: %w", r.VolumeID, r.TargetPath, err)
		return u
	}
	u.Bundle = &manifest.Bundle{Pods: []*v1.Pod{pod}}
	u.Targets = map[types.UID]map[string]volumemanager.Target{pod.UID: {stagedVolumeName: {Path: stagedDatasetPath(r.TargetPath)}}}
	return u
}

// syncStagedLocked reads the stage and staged-publish records back, and
// returns what the stages say to the volume manager; see Sync.
func (d *Driver) syncStagedLocked(logger klog.Logger) ([]volumemanager.SourceUpdate, error) {
	updates, err := restoreSources(logger, d.stageStore, d.staged, StageSourcePrefix, d.stageSourceUpdate)
	if err != nil {
		return nil, err
	}
	published, badPublished, err := d.stagedPublishStore.load()
	if err != nil {
		return nil, err
	}
	for _, r := range published {
		d.stagedPublishes[r.TargetPath] = r
	}
	for path, err := range badPublished {
		logger.Error(err, "Failed to read a CSI publish record of a staged volume; it is left alone", "path", path)
	}
	return updates, nil
}

// NodeStageVolume sets the Flocker dataset of a persistent volume up in the
// staging path through the volume manager, and waits for the result within
// the call's deadline. The dataset comes from the volume context
// (type flocker, datasetUUID or datasetName) or, with no context, is the
// dataset whose UUID is the volume ID.
//
// It is idempotent: the same call again succeeds at once when the volume is
// staged. The staging path holding another volume, or the volume staged at
// another path, is AlreadyExists. A missing field, a block or multi-node
// capability, or a volume context that names no Flocker dataset is
// InvalidArgument; set-up errors map as for NodePublishVolume.
func (s *nodeServer) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if err := checkStagingRequest(req.GetVolumeId(), req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	if err := validateCapability(req.GetVolumeCapability()); err != nil {
		return nil, statusf(codes.InvalidArgument, "volume_capability: %v", err)
	}
	volumeContext, err := persistentContext(req.GetVolumeId(), req.GetVolumeContext())
	if err != nil {
		return nil, statusf(codes.InvalidArgument, "%v", err)
	}
	rec := &publishRecord{
		VolumeID:      req.GetVolumeId(),
		TargetPath:    filepath.Clean(req.GetStagingTargetPath()),
		VolumeContext: volumeContext,
		MountGroup:    req.GetVolumeCapability().GetMount().GetVolumeMountGroup(),
	}
	if err := s.d.stage(ctx, rec); err != nil {
		return nil, err
	}
	if err := s.d.waitForSetUp(ctx, stagePodUID(rec.VolumeID), rec.VolumeID, stagedDatasetPath(rec.TargetPath)); err != nil {
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// checkStagingRequest requires a volume ID and an absolute staging path.
func checkStagingRequest(volumeID, staging string) error {
	switch {
	case volumeID == "":
		return statusf(codes.InvalidArgument, "volume_id is required")
	case staging == "":
		return statusf(codes.InvalidArgument, "staging_target_path is required")
	case !filepath.IsAbs(staging):
		return statusf(codes.InvalidArgument, "staging_target_path %q must be an absolute path", staging)
	}
	return nil
}

// stage records rec and makes its volume desired, unless the same stage is
// recorded already.
func (d *Driver) stage(ctx context.Context, rec *publishRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.staged[rec.TargetPath]; old != nil {
		if diffs := old.differences(rec); len(diffs) > 0 {
			return statusf(codes.AlreadyExists, "staging path %q holds volume %q staged with other arguments: this call has %s",
				rec.TargetPath, old.VolumeID, strings.Join(diffs, ", "))
		}
		d.cfg.Manager.Retry(stagePodUID(rec.VolumeID))
		return nil
	}
	for _, other := range d.staged {
		if other.VolumeID == rec.VolumeID {
			return statusf(codes.AlreadyExists, "volume %q is already staged at %q", rec.VolumeID, other.TargetPath)
		}
	}
	u := d.stageSourceUpdate(rec)
	if u.Err != nil {
		return statusf(codes.InvalidArgument, "%v", u.Err)
	}
	if err := d.stageStore.write(rec); err != nil {
		return statusf(codes.Internal, "%v", err)
	}
	d.staged[rec.TargetPath] = rec
	d.cfg.Manager.UpdateSources(u)
	klog.FromContext(ctx).V(2).Info("Staged CSI volume", "volumeID", rec.VolumeID, "stagingPath", rec.TargetPath)
	return nil
}

// NodeUnstageVolume tears the volume staged at the staging path down
// through the volume manager (the Flocker plugin unmounts it; the dataset
// is neither moved nor deleted) and waits for that within the call's
// deadline. A staging path that is not staged succeeds; one that holds
// another volume, or whose volume is still published, is
// FailedPrecondition.
func (s *nodeServer) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if err := checkStagingRequest(req.GetVolumeId(), req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	staging := filepath.Clean(req.GetStagingTargetPath())
	if err := s.d.unstage(ctx, req.GetVolumeId(), staging); err != nil {
		return nil, err
	}
	if err := s.d.waitForTearDown(ctx, stagePodUID(req.GetVolumeId()), req.GetVolumeId(), stagedDatasetPath(staging)); err != nil {
		return nil, err
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) unstage(ctx context.Context, volumeID, staging string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.staged[staging]
	if rec == nil {
		d.cfg.Manager.Retry(stagePodUID(volumeID))
		return nil
	}
	if rec.VolumeID != volumeID {
		return statusf(codes.FailedPrecondition, "staging path %q holds volume %q, not %q", staging, rec.VolumeID, volumeID)
	}
	for _, p := range d.stagedPublishes {
		if p.StagingPath == staging {
			return statusf(codes.FailedPrecondition, "volume %q is still published at %q: unpublish it first", volumeID, p.TargetPath)
		}
	}
	if err := d.stageStore.remove(staging); err != nil {
		return statusf(codes.Internal, "%v", err)
	}
	delete(d.staged, staging)
	d.cfg.Manager.UpdateSources(volumemanager.SourceUpdate{Source: StageSourcePrefix + staging, Removed: true})
	klog.FromContext(ctx).V(2).Info("Unstaged CSI volume", "volumeID", volumeID, "stagingPath", staging)
	return nil
}

// publishStaged bind-mounts the staged volume at the target, read-only
// when asked. It is idempotent: the same publish again mounts only what is
// missing (after a crash between the record and the mount). The target
// holding another publish is AlreadyExists; a volume not staged at the
// staging path is FailedPrecondition, one whose stage is not set up yet
// Unavailable.
func (d *Driver) publishStaged(ctx context.Context, req *csi.NodePublishVolumeRequest) error {
	if err := validateCapability(req.GetVolumeCapability()); err != nil {
		return statusf(codes.InvalidArgument, "volume_capability: %v", err)
	}
	rec := &publishRecord{
		VolumeID:    req.GetVolumeId(),
		TargetPath:  filepath.Clean(req.GetTargetPath()),
		StagingPath: filepath.Clean(req.GetStagingTargetPath()),
		ReadOnly:    req.GetReadonly(),
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.records[rec.TargetPath]; old != nil {
		return statusf(codes.AlreadyExists, "target %q holds the ephemeral volume %q", rec.TargetPath, old.VolumeID)
	}
	old := d.stagedPublishes[rec.TargetPath]
	if old != nil {
		if diffs := old.differences(rec); len(diffs) > 0 {
			return statusf(codes.AlreadyExists, "target %q holds volume %q published with other arguments: this call has %s",
				rec.TargetPath, old.VolumeID, strings.Join(diffs, ", "))
		}
	}
	// Also for a publish recorded already: after a reboot the staging path
	// is an empty dir until the stage is set up again.
	if err := d.checkStagedLocked(ctx, rec); err != nil {
		return err
	}
	if old == nil {
		if err := d.stagedPublishStore.write(rec); err != nil {
			return statusf(codes.Internal, "%v", err)
		}
		d.stagedPublishes[rec.TargetPath] = rec
	}
	if err := bindMount(d.mounter, stagedDatasetPath(rec.StagingPath), rec.TargetPath, rec.ReadOnly); err != nil {
		return statusf(codes.Internal, "failed to publish volume %q at %q: %v", rec.VolumeID, rec.TargetPath, err)
	}
	klog.FromContext(ctx).V(2).Info("Published staged CSI volume", "volumeID", rec.VolumeID, "targetPath", rec.TargetPath, "readOnly", rec.ReadOnly)
	return nil
}

// checkStagedLocked returns FailedPrecondition unless rec's volume is
// staged at rec's staging path, and Unavailable (retried by the kubelet)
// while its set-up there has not succeeded yet, as after a restart.
func (d *Driver) checkStagedLocked(ctx context.Context, rec *publishRecord) error {
	staged := d.staged[rec.StagingPath]
	if staged == nil || staged.VolumeID != rec.VolumeID {
		return statusf(codes.FailedPrecondition, "volume %q is not staged at %q", rec.VolumeID, rec.StagingPath)
	}
	ps, _, err := d.cfg.Manager.WaitForPod(ctx, stagePodUID(rec.VolumeID), func(volumemanager.PodStatus, bool) bool { return true })
	if err != nil {
		return status.FromContextError(err).Err()
	}
	if vol := publishedVolume(ps, stagedDatasetPath(rec.StagingPath)); vol == nil || vol.State != volumemanager.StateReady {
		return statusf(codes.Unavailable, "volume %q is not set up at its staging path %q yet (%s)", rec.VolumeID, rec.StagingPath, describe(vol))
	}
	return nil
}

// unpublishStaged unmounts the target of a staged volume's publish, removes
// it, then forgets the publish.
func (d *Driver) unpublishStaged(ctx context.Context, volumeID string, rec *publishRecord) error {
	if rec.VolumeID != volumeID {
		return statusf(codes.FailedPrecondition, "target %q holds volume %q, not %q", rec.TargetPath, rec.VolumeID, volumeID)
	}
	if err := mount.CleanupMountPoint(rec.TargetPath, d.mounter, true); err != nil {
		return statusf(codes.Internal, "failed to unpublish volume %q from %q: %v", volumeID, rec.TargetPath, err)
	}
	if err := d.stagedPublishStore.remove(rec.TargetPath); err != nil {
		return statusf(codes.Internal, "%v", err)
	}
	delete(d.stagedPublishes, rec.TargetPath)
	klog.FromContext(ctx).V(2).Info("Unpublished staged CSI volume", "volumeID", volumeID, "targetPath", rec.TargetPath)
	return nil
}

// bindMount makes target a bind mount of source, read-only if asked,
// unless it is a mount point already. A failed mount is undone.
func bindMount(mounter mount.Interface, source, target string, readOnly bool) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("failed to create the target: %w", err)
	}
	mounted, err := mounter.IsMountPoint(target)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to check the mount at the target: %w", err)
	}
	if mounted {
		return nil
	}
	options := []string{"bind"}
	if readOnly {
		options = append(options, "ro")
	}
	if err := mounter.Mount(source, target, "", options); err != nil {
		if cleanupErr := mount.CleanupMountPoint(target, mounter, true); cleanupErr != nil {
			return fmt.Errorf("failed to bind-mount %q: %w; and failed to undo it: %w", source, err, cleanupErr)
		}
		return fmt.Errorf("failed to bind-mount %q: %w", source, err)
	}
	return nil
}

// unpublishIfStaged unpublishes target when it holds a staged volume's
// publish, and reports whether it did.
func (d *Driver) unpublishIfStaged(ctx context.Context, volumeID, target string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.stagedPublishes[target]
	if rec == nil {
		return false, nil
	}
	return true, d.unpublishStaged(ctx, volumeID, rec)
}

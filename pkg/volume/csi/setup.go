package csi

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// The volume_context keys the kubelet adds for an inline volume.
const (
	contextPodName        = "csi.storage.k8s.io/pod.name"
	contextPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	contextPodUID         = "csi.storage.k8s.io/pod.uid"
	contextServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	contextEphemeral      = "csi.storage.k8s.io/ephemeral"
)

type builder struct {
	volumeRef
	spec *volume.Spec
	pod  *v1.Pod
	ctx  context.Context
}

var (
	_ volume.Builder = &builder{}
	_ volume.Cleaner = &cleaner{}
)

// csiVolume is what a spec asks of the driver.
type csiVolume struct {
	driver      string
	handle      string
	ephemeral   bool
	readOnly    bool
	fsType      string
	mountFlags  []string
	accessModes []v1.PersistentVolumeAccessMode
	attributes  map[string]string
	// stageSecret and publishSecret name the Secrets of NodeStageVolume and
	// NodePublishVolume, or are nil.
	stageSecret, publishSecret *secretRef
}

// secretRef names the Secret of a volume's secret reference, and the
// reference's field, for errors.
type secretRef struct {
	field, namespace, name string
}

func (b *builder) volume() csiVolume {
	if src := b.spec.Volume; src != nil {
		csi := src.CSI
		vol := csiVolume{
			driver:      csi.Driver,
			handle:      ephemeralVolumeHandle(b.pod.UID, src.Name),
			ephemeral:   true,
			readOnly:    b.spec.ReadOnly || (csi.ReadOnly != nil && *csi.ReadOnly),
			accessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			attributes:  maps.Clone(csi.VolumeAttributes),
		}
		if csi.FSType != nil {
			vol.fsType = *csi.FSType
		}
		if vol.attributes == nil {
			vol.attributes = map[string]string{}
		}
		vol.attributes[contextPodName] = b.pod.Name
		vol.attributes[contextPodNamespace] = b.pod.Namespace
		vol.attributes[contextPodUID] = string(b.pod.UID)
		vol.attributes[contextServiceAccount] = b.pod.Spec.ServiceAccountName
		vol.attributes[contextEphemeral] = "true"
		if ref := csi.NodePublishSecretRef; ref != nil {
			// An inline volume's Secret is in the pod's namespace.
			vol.publishSecret = &secretRef{field: "csi.nodePublishSecretRef", namespace: b.pod.Namespace, name: ref.Name}
		}
		return vol
	}
	pv := b.spec.PersistentVolume
	csi := pv.Spec.CSI
	vol := csiVolume{
		driver:      csi.Driver,
		handle:      csi.VolumeHandle,
		readOnly:    b.spec.ReadOnly || csi.ReadOnly,
		fsType:      csi.FSType,
		mountFlags:  pv.Spec.MountOptions,
		accessModes: pv.Spec.AccessModes,
		attributes:  csi.VolumeAttributes,
	}
	if ref := csi.NodeStageSecretRef; ref != nil {
		vol.stageSecret = &secretRef{field: "spec.csi.nodeStageSecretRef", namespace: ref.Namespace, name: ref.Name}
	}
	if ref := csi.NodePublishSecretRef; ref != nil {
		vol.publishSecret = &secretRef{field: "spec.csi.nodePublishSecretRef", namespace: ref.Namespace, name: ref.Name}
	}
	return vol
}

// secrets returns the data of the Secret ref names, as CSI takes it, or nil
// for no ref. A Secret that cannot be had (not declared yet) is a
// Transient error naming the reference; it never holds a value.
func (b *builder) secrets(ref *secretRef) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	secret, err := b.plugin.host.GetSecretFunc()(ref.namespace, ref.name)
	if err != nil {
		return nil, volume.NewTransientError(fmt.Errorf("failed to get Secret %q of %s: %w", ref.namespace+"/"+ref.name, ref.field, err))
	}
	data := make(map[string]string, len(secret.Data))
	for key, value := range secret.Data {
		data[key] = string(value)
	}
	return data, nil
}

// GetAttributes reports the volume read-only when the pod or the source asks
// for it.
func (b *builder) GetAttributes() volume.Attributes {
	ro := b.volume().readOnly
	return volume.Attributes{ReadOnly: ro, Managed: !ro}
}

// SetUp sets the volume up at GetPath(); see SetUpAt.
func (b *builder) SetUp(fsGroup *int64) error { return b.SetUpAt(b.GetPath(), fsGroup) }

// SetUpAt publishes the volume at dir, as the kubelet does: it writes
// vol_data.json in dir's parent, then, for a PersistentVolume whose driver
// has STAGE_UNSTAGE_VOLUME, records the pod's claim and stages the volume
// unless it is staged already, then calls NodePublishVolume with dir as the
// target, gives fsGroup ownership when the driver does not take it as
// volume_mount_group, and marks the volume ready. Every step is idempotent,
// and NodePublishVolume is called again on every SetUp (drivers must accept
// that), so a volume found after a restart is published again.
//
// NodeStageVolume and NodePublishVolume get the data of the Secrets that
// nodeStageSecretRef and nodePublishSecretRef name, from the host's
// SecretGetter, as their secrets; nothing else of them is kept.
//
// Errors: a driver that is not registered, or a Secret that is not there
// (yet), is Transient, naming the reference; a CSI error with a
// final code is Final; a non-final code (Canceled, DeadlineExceeded,
// Unavailable, ResourceExhausted, Aborted) or a lost connection during a
// stage or publish is Uncertain.
func (b *builder) SetUpAt(dir string, fsGroup *int64) error {
	p := b.plugin
	vol := b.volume()
	logger := klog.FromContext(b.ctx).WithValues("volumePath", dir, "driver", vol.driver, "volumeHandle", vol.handle)
	if err := util.RemoveMetadataDir(b.metadataDir); err != nil {
		return err
	}
	// The publish Secret is had first, so that a missing one stops the
	// set-up before it stages anything.
	publishSecrets, err := b.secrets(vol.publishSecret)
	if err != nil {
		return err
	}
	d, err := p.drivers.get(b.ctx, vol.driver)
	if err != nil {
		return err
	}
	fp, err := p.drivers.nodeCapabilities(b.ctx, d)
	if err != nil {
		return err
	}

	volDir := filepath.Dir(dir)
	if err := os.MkdirAll(volDir, 0o750); err != nil {
		return volume.NewTransientError(fmt.Errorf("failed to create volume dir %q: %w", volDir, err))
	}
	mode := modePersistent
	if vol.ephemeral {
		mode = modeEphemeral
	}
	data := volumeData{SpecVolumeID: b.volName, VolumeHandle: vol.handle, DriverName: vol.driver, NodeName: p.host.GetNodeName(), VolumeLifecycleMode: mode}
	var existing volumeData
	if found, err := readJSON(filepath.Join(volDir, volDataFileName), &existing); err != nil {
		return volume.NewTransientError(err)
	} else if found && (existing.DriverName != data.DriverName || existing.VolumeHandle != data.VolumeHandle) {
		return volume.NewTransientError(fmt.Errorf("csi volume %q is still set up as volume %q of driver %q: it must be torn down first",
			b.volName, existing.VolumeHandle, existing.DriverName))
	}
	if err := writeJSON(filepath.Join(volDir, volDataFileName), data); err != nil {
		return volume.NewTransientError(err)
	}

	capability := volumeCapability(vol, fp, fsGroup)
	stagingPath := ""
	if !vol.ephemeral && fp.has(csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME) {
		stageSecrets, err := b.secrets(vol.stageSecret)
		if err != nil {
			return err
		}
		if stagingPath, err = b.stage(logger, d, vol, capability, stageSecrets); err != nil {
			return err
		}
	}

	req := &csipb.NodePublishVolumeRequest{
		VolumeId:          vol.handle,
		StagingTargetPath: stagingPath,
		TargetPath:        dir,
		VolumeCapability:  capability,
		Readonly:          vol.readOnly,
		VolumeContext:     vol.attributes,
		Secrets:           publishSecrets,
	}
	if err := p.drivers.call(b.ctx, func(ctx context.Context) error { return d.client.NodePublishVolume(ctx, req) }); err != nil {
		return callError(err, fmt.Sprintf("NodePublishVolume of volume %q of driver %q", vol.handle, vol.driver), true)
	}
	if fsGroup != nil && !vol.readOnly && capability.GetMount().GetVolumeMountGroup() == "" && appliesFSGroup(vol) {
		if err := util.SetVolumeOwnership(dir, fsGroup, false); err != nil {
			return volume.NewUncertainError(err)
		}
	}
	if err := util.SetReady(b.metadataDir); err != nil {
		return volume.NewUncertainError(err)
	}
	logger.V(1).Info("Published CSI volume", "stagingPath", stagingPath, "readOnly", vol.readOnly)
	return nil
}

// stage records the pod's claim on the volume, then stages it unless it was
// staged since the node booted, and returns the staging path. It holds the
// volume's stage lock, so that no unstage runs between the claim and the
// stage.
func (b *builder) stage(logger klog.Logger, d *driver, vol csiVolume, capability *csipb.VolumeCapability, secrets map[string]string) (string, error) {
	p := b.plugin
	sdir := p.stagingDir(vol.driver, vol.handle)
	globalMount := filepath.Join(sdir, globalMountName)
	unlock := p.stageLocks.lock(sdir)
	defer unlock()
	if err := os.MkdirAll(sdir, 0o750); err != nil {
		return "", volume.NewTransientError(fmt.Errorf("failed to create staging dir %q: %w", sdir, err))
	}
	if err := writeJSON(filepath.Join(sdir, volDataFileName), stagingData{DriverName: vol.driver, VolumeHandle: vol.handle}); err != nil {
		return "", volume.NewTransientError(err)
	}
	if err := addClaim(sdir, b.podUID, b.volName); err != nil {
		return "", volume.NewTransientError(err)
	}
	if isStaged(sdir) {
		return globalMount, nil
	}
	if err := os.MkdirAll(globalMount, 0o750); err != nil {
		return "", volume.NewTransientError(fmt.Errorf("failed to create staging path %q: %w", globalMount, err))
	}
	req := &csipb.NodeStageVolumeRequest{
		VolumeId:          vol.handle,
		StagingTargetPath: globalMount,
		VolumeCapability:  capability,
		VolumeContext:     vol.attributes,
		Secrets:           secrets,
	}
	if err := p.drivers.call(b.ctx, func(ctx context.Context) error { return d.client.NodeStageVolume(ctx, req) }); err != nil {
		return "", callError(err, fmt.Sprintf("NodeStageVolume of volume %q of driver %q", vol.handle, vol.driver), true)
	}
	if err := markStaged(sdir); err != nil {
		return "", volume.NewUncertainError(err)
	}
	logger.V(1).Info("Staged CSI volume", "stagingPath", globalMount)
	return globalMount, nil
}

// volumeCapability is the mount capability the kubelet sends: the fsType,
// the mount flags, the access mode, and fsGroup as volume_mount_group when
// the driver has VOLUME_MOUNT_GROUP.
func volumeCapability(vol csiVolume, fp fingerprint, fsGroup *int64) *csipb.VolumeCapability {
	mount := &csipb.VolumeCapability_MountVolume{FsType: vol.fsType, MountFlags: vol.mountFlags}
	if fsGroup != nil && fp.has(csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP) {
		mount.VolumeMountGroup = fmt.Sprint(*fsGroup)
	}
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: mount},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: accessMode(vol.accessModes, fp.has(csipb.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER))},
	}
}

// accessMode maps the first of the volume's access modes to CSI's, as the
// kubelet does; the single-node modes of CSI 1.5 are used only with a driver
// that has SINGLE_NODE_MULTI_WRITER.
func accessMode(modes []v1.PersistentVolumeAccessMode, singleNodeModes bool) csipb.VolumeCapability_AccessMode_Mode {
	if len(modes) == 0 {
		return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	}
	switch modes[0] {
	case v1.ReadOnlyMany:
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	case v1.ReadWriteMany:
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	case v1.ReadWriteOncePod:
		if singleNodeModes {
			return csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		}
	case v1.ReadWriteOnce:
		if singleNodeModes {
			return csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
		}
	}
	return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
}

// appliesFSGroup is the kubelet's default fsGroupPolicy,
// ReadWriteOnceWithFSType: ownership is changed only for a volume with an
// fsType that one node writes.
func appliesFSGroup(vol csiVolume) bool {
	if vol.fsType == "" {
		return false
	}
	if vol.ephemeral {
		return true
	}
	for _, m := range vol.accessModes {
		if m == v1.ReadWriteOnce || m == v1.ReadWriteOncePod {
			return true
		}
	}
	return false
}

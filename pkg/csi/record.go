package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/manifest"
	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Annotations of the pod a publish becomes, for hooks and status.
const (
	annotationPrefix     = "csi.volume-agent.io/"
	AnnotationVolumeID   = annotationPrefix + "volume-id"
	AnnotationTargetPath = annotationPrefix + "target-path"
	AnnotationPodUID     = annotationPrefix + "pod-uid"
)

// defaultNamespace is the namespace of a publish whose volume context does
// not name the pod's.
const defaultNamespace = "default"

// fallbackVolumeName names the volume of a target path that does not end
// in the kubelet's .../volumes/kubernetes.io~csi/<volume>/mount.
const fallbackVolumeName = "csi-volume"

// errNoPlugin is the error of a volume that no loaded plugin sets up.
var errNoPlugin = errors.New("no loaded volume plugin sets the volume up")

// publishRecord is one NodePublishVolume of an ephemeral volume: what the
// call asked for, kept on disk as ROOT/csi/published/<sha256 of the
// target>.json from before the set-up starts until the volume is
// unpublished.
type publishRecord struct {
	VolumeID      string            `json:"volumeID"`
	TargetPath    string            `json:"targetPath"`
	VolumeContext map[string]string `json:"volumeContext,omitempty"`
	ReadOnly      bool              `json:"readOnly,omitempty"`
	// MountGroup is the request's volume_mount_group: the pod's fsGroup.
	MountGroup string `json:"mountGroup,omitempty"`
	// StagingPath is where a persistent volume published at TargetPath is
	// staged; empty for an ephemeral volume.
	StagingPath string `json:"stagingPath,omitempty"`
}

// differences names what other asks for that r does not; empty when both
// ask for the same.
func (r *publishRecord) differences(other *publishRecord) []string {
	var out []string
	if r.VolumeID != other.VolumeID {
		out = append(out, fmt.Sprintf("volume ID %q, not %q", other.VolumeID, r.VolumeID))
	}
	if !maps.Equal(r.VolumeContext, other.VolumeContext) {
		out = append(out, "another volume context")
	}
	if r.ReadOnly != other.ReadOnly {
		out = append(out, fmt.Sprintf("readonly %t, not %t", other.ReadOnly, r.ReadOnly))
	}
	if r.StagingPath != other.StagingPath {
		out = append(out, fmt.Sprintf("staging path %q, not %q", other.StagingPath, r.StagingPath))
	}
	if r.MountGroup != other.MountGroup {
		out = append(out, fmt.Sprintf("volume_mount_group %q, not %q", other.MountGroup, r.MountGroup))
	}
	return out
}

// PodUID returns the UID of the pod that the volume volumeID becomes: a
// UUID made of the SHA-256 of the ID, so that a restarted agent finds it.
func PodUID(volumeID string) types.UID {
	sum := sha256.Sum256([]byte("volume-agent.io/csi\x00" + volumeID))
	h := hex.EncodeToString(sum[:16])
	return types.UID(h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}

// volumeName returns the pod's name for the volume: the name in the
// kubelet's target path when there is one, else fallbackVolumeName.
func volumeName(target string) string {
	if filepath.Base(target) == "mount" {
		name := filepath.Base(filepath.Dir(target))
		if filepath.Base(filepath.Dir(filepath.Dir(target))) == "kubernetes.io~csi" && len(validation.IsDNS1123Label(name)) == 0 {
			return name
		}
	}
	return fallbackVolumeName
}

// pod returns the pod the publish becomes, checked by the manifest
// validator with plugins: one volume, from the volume context, with the
// mount group as the pod's fsGroup. Bad input is an *InvalidContextError
// or another error that names the request's field.
func (r *publishRecord) pod(plugins *volume.VolumePluginMgr) (*v1.Pod, error) {
	source, err := volumeSourceFromContext(r.VolumeContext)
	if err != nil {
		return nil, err
	}
	uid := PodUID(r.VolumeID)
	pod := &v1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      r.VolumeContext[KeyPodName],
			Namespace: r.VolumeContext[KeyPodNamespace],
			UID:       uid,
			Annotations: map[string]string{
				AnnotationVolumeID:   r.VolumeID,
				AnnotationTargetPath: r.TargetPath,
			},
		},
		Spec: v1.PodSpec{Volumes: []v1.Volume{{Name: volumeName(r.TargetPath), VolumeSource: source}}},
	}
	if pod.Name == "" {
		pod.Name = "csi-" + string(uid)[:8]
	}
	if pod.Namespace == "" {
		pod.Namespace = defaultNamespace
	}
	if podUID := r.VolumeContext[KeyPodUID]; podUID != "" {
		pod.Annotations[AnnotationPodUID] = podUID
	}
	if err := r.setMountGroup(pod); err != nil {
		return nil, err
	}
	if err := manifest.Validate(&manifest.Bundle{Pods: []*v1.Pod{pod}}, plugins); err != nil {
		return nil, r.contextError(err)
	}
	if _, err := plugins.FindPluginBySpec(volume.NewSpecFromVolume(&pod.Spec.Volumes[0])); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoPlugin, err)
	}
	return pod, nil
}

// setMountGroup makes the mount group the pod's fsGroup.
func (r *publishRecord) setMountGroup(pod *v1.Pod) error {
	if r.MountGroup == "" {
		return nil
	}
	gid, err := strconv.ParseInt(r.MountGroup, 10, 64)
	if err != nil {
		return fmt.Errorf("volume_mount_group %q: must be a numeric group ID", r.MountGroup)
	}
	pod.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: &gid}
	return nil
}

// contextError names, in the manifest validator's errors, the volume
// context keys (or request fields) the bad fields came from.
func (r *publishRecord) contextError(err error) error {
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		return err
	}
	out := make([]error, 0, len(agg.Errors()))
	for _, e := range agg.Errors() {
		var fe *field.Error
		if !errors.As(e, &fe) {
			out = append(out, e)
			continue
		}
		detail := fe.Detail
		if detail == "" {
			detail = fe.Type.String()
		}
		key := contextKey(fe.Field)
		switch key {
		case "":
			out = append(out, fmt.Errorf("%s: %s", fe.Field, fe.ErrorBody()))
		case "volume_mount_group":
			out = append(out, fmt.Errorf("volume_mount_group %q: %s", r.MountGroup, detail))
		default:
			out = append(out, &InvalidContextError{Key: key, Value: r.VolumeContext[key], Detail: detail})
		}
	}
	return utilerrors.NewAggregate(out)
}

// contextKey returns the volume context key that sets the pod's field at
// path, "volume_mount_group" for the fsGroup, or "".
func contextKey(path string) string {
	switch {
	case path == "metadata.name":
		return KeyPodName
	case path == "metadata.namespace":
		return KeyPodNamespace
	case path == "spec.securityContext.fsGroup":
		return "volume_mount_group"
	}
	// spec.volumes[0].<source>.<key>...
	rest, ok := strings.CutPrefix(path, "spec.volumes[0].")
	if !ok {
		return ""
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	key, _, _ := strings.Cut(parts[1], "[")
	return key
}

// recordStore keeps publish records in a directory, one file each.
type recordStore struct {
	dir string
}

func (s recordStore) file(target string) string {
	sum := sha256.Sum256([]byte(target))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:])+".json")
}

// write keeps r, replacing its previous record atomically: a crash leaves
// the old file or the new one. It is not synced, as the ready markers and
// the manager's targets are not: the record must survive the agent's
// death, which the page cache does; after the node's, the kubelet publishes
// again.
func (s recordStore) write(r *publishRecord) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the record of %q: %w", r.TargetPath, err)
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return fmt.Errorf("failed to create the CSI record dir: %w", err)
	}
	file := s.file(r.TargetPath)
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("failed to write the record of %q: %w", r.TargetPath, err)
	}
	_, err = tmp.Write(append(data, '\n'))
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("failed to write the record of %q: %w", r.TargetPath, err)
	}
	return nil
}

// remove forgets the record of target; a missing one is not an error.
func (s recordStore) remove(target string) error {
	if err := os.Remove(s.file(target)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove the record of %q: %w", target, err)
	}
	return nil
}

// load reads every record. A file that does not decode is returned by name
// among the errors.
func (s recordStore) load() ([]*publishRecord, map[string]error, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read the CSI record dir: %w", err)
	}
	var records []*publishRecord
	bad := map[string]error{}
	for _, entry := range entries {
		if !entry.Type().IsRegular() || filepath.Ext(entry.Name()) != ".json" || strings.HasPrefix(entry.Name(), ".") {
			continue
		}
		path := filepath.Join(s.dir, entry.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("failed to read CSI record %q: %w", path, err)
		}
		r := &publishRecord{}
		switch err := json.Unmarshal(data, r); {
		case err != nil:
			bad[path] = fmt.Errorf("failed to decode CSI record %q: %w", path, err)
		case r.VolumeID == "" || !filepath.IsAbs(r.TargetPath) || s.file(r.TargetPath) != path:
			bad[path] = fmt.Errorf("CSI record %q names no volume ID or the wrong target path", path)
		default:
			records = append(records, r)
		}
	}
	return records, bad, nil
}

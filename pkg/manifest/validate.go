package manifest

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// supportedAccessModes are the access modes Kubernetes knows.
var supportedAccessModes = []v1.PersistentVolumeAccessMode{
	v1.ReadWriteOnce, v1.ReadOnlyMany, v1.ReadWriteMany, v1.ReadWriteOncePod,
}

// Validate checks every object of b and returns a utilerrors.Aggregate of
// *Error, one for every problem, ordered by source and document, or nil
// when b is valid. It changes nothing.
//
// The generic rules are Kubernetes' rules for the fields volume-agent uses:
//   - metadata as Kubernetes validates it on creation: every object has a
//     name, a DNS-1123 subdomain; a Pod's, a claim's and a Secret's
//     namespace is a DNS-1123 label; labels and annotations are valid; a
//     pod's UID is valid (see IsValidPodUID);
//   - a pod's volumes have names that are DNS-1123 labels, unique in the pod;
//     each has exactly one source (counted over every field of
//     v1.VolumeSource, so that new sources are covered); a
//     persistentVolumeClaim source has a claimName;
//   - a pod's securityContext fsGroup, runAsUser, runAsGroup and
//     supplementalGroups are valid IDs (fsGroup ≥ 0);
//   - a PersistentVolume has exactly one source and at least one access
//     mode; a claim has at least one access mode; every access mode is one
//     Kubernetes knows; ReadWriteOncePod stands alone;
//   - no two pods have the same namespace/name or the same UID, no two
//     PersistentVolumes the same name, no two claims the same
//     namespace/name, and no two PersistentVolumes a claimRef to the same
//     claim, nor two claims a spec.volumeName naming the same
//     PersistentVolume, nor a claim one whose claimRef is to another claim
//     (a PersistentVolume is bound to one claim); a claim's access modes are
//     offered by the PersistentVolume it is bound to;
//   - a Secret's keys (of data and stringData) are valid keys, its values
//     hold at most v1.MaxSecretSize bytes in all, and no two Secrets have
//     the same namespace/name. No error shows a Secret's value.
//
// When plugins is not nil, each pod's inline volume and each
// PersistentVolume is given to the plugin that supports it
// (FindPluginBySpec), and a volume.SpecValidatingPlugin checks it with
// ValidateSpec, at the path of the source (as spec.volumes[1].emptyDir). A
// PersistentVolume's plugin must be a volume.PersistentVolumePlugin whose
// access modes cover the volume's. A volume that no plugin supports is not
// a validation error: it fails alone when it is set up.
func Validate(b *Bundle, plugins *volume.VolumePluginMgr) error {
	errs := validate(b, plugins)
	sortErrors(errs)
	return utilerrors.NewAggregate(errs)
}

func validate(b *Bundle, plugins *volume.VolumePluginMgr) []error {
	var errs []error

	podsByName := map[string]*v1.Pod{}
	podsByUID := map[types.UID]*v1.Pod{}
	for _, pod := range b.Pods {
		root := b.Origin(pod).Root
		podErrs := validatePod(pod, root)
		key := pod.Namespace + "/" + pod.Name
		if first, taken := podsByName[key]; taken && pod.Name != "" {
			podErrs = append(podErrs, b.duplicate(root.Child("metadata", "name"), pod.Name, first))
		} else if first, taken := podsByUID[pod.UID]; taken {
			podErrs = append(podErrs, b.duplicate(root.Child("metadata", "uid"), string(pod.UID), first))
		}
		podsByName[key], podsByUID[pod.UID] = pod, pod
		if plugins != nil {
			podErrs = append(podErrs, validateVolumesWithPlugins(pod.Spec.Volumes, root.Child("spec", "volumes"), plugins)...)
		}
		errs = append(errs, b.fieldErrors(pod, KindPod, podErrs)...)
	}

	volumesByName := map[string]*v1.PersistentVolume{}
	volumesByClaim := map[string]*v1.PersistentVolume{}
	for _, pv := range b.PersistentVolumes {
		root := b.Origin(pv).Root
		pvErrs := validatePersistentVolume(pv, root)
		if first, taken := volumesByName[pv.Name]; taken && pv.Name != "" {
			pvErrs = append(pvErrs, b.duplicate(root.Child("metadata", "name"), pv.Name, first))
		}
		volumesByName[pv.Name] = pv
		if ref := pv.Spec.ClaimRef; ref != nil && ref.Name != "" {
			claimKey := defaultNamespace(KindPersistentVolumeClaim, ref.Namespace) + "/" + ref.Name
			if first, taken := volumesByClaim[claimKey]; taken {
				pvErrs = append(pvErrs, b.duplicate(root.Child("spec", "claimRef"), claimKey, first))
			}
			volumesByClaim[claimKey] = pv
		}
		if plugins != nil {
			pvErrs = append(pvErrs, validatePersistentVolumeWithPlugins(pv, root.Child("spec"), plugins)...)
		}
		errs = append(errs, b.fieldErrors(pv, KindPersistentVolume, pvErrs)...)
	}

	claimsByName := map[string]*v1.PersistentVolumeClaim{}
	for _, claim := range b.PersistentVolumeClaims {
		root := b.Origin(claim).Root
		claimErrs := validatePersistentVolumeClaim(claim, root)
		key := claim.Namespace + "/" + claim.Name
		if first, taken := claimsByName[key]; taken && claim.Name != "" {
			claimErrs = append(claimErrs, b.duplicate(root.Child("metadata", "name"), claim.Name, first))
		}
		claimsByName[key] = claim
		pv, reason, message := b.boundVolume(claim)
		if pv != nil && !volume.AccessModesCover(pv.Spec.AccessModes, claim.Spec.AccessModes) {
			claimErrs = append(claimErrs, field.Invalid(root.Child("spec", "accessModes"), claim.Spec.AccessModes,
				fmt.Sprintf("the claim is bound to PersistentVolume %q, which offers only %v", pv.Name, pv.Spec.AccessModes)))
		}
		if reason == ReasonVolumeBoundToAnotherClaim {
			claimErrs = append(claimErrs, field.Invalid(root.Child("spec", "volumeName"), claim.Spec.VolumeName, message))
		}
		errs = append(errs, b.fieldErrors(claim, KindPersistentVolumeClaim, claimErrs)...)
	}

	secretsByName := map[string]*v1.Secret{}
	for _, secret := range b.Secrets {
		root := b.Origin(secret).Root
		secretErrs := validateSecret(secret, root)
		key := secret.Namespace + "/" + secret.Name
		if first, taken := secretsByName[key]; taken && secret.Name != "" {
			secretErrs = append(secretErrs, b.duplicate(root.Child("metadata", "name"), secret.Name, first))
		}
		secretsByName[key] = secret
		errs = append(errs, b.fieldErrors(secret, KindSecret, secretErrs)...)
	}
	return errs
}

// duplicate returns the error for a value at fldPath that first, an object
// found earlier, already has.
func (b *Bundle) duplicate(fldPath *field.Path, value string, first metav1.Object) *field.Error {
	err := field.Duplicate(fldPath, value)
	err.Detail = "already used by the object at " + b.Origin(first).String()
	return err
}

func validatePod(pod *v1.Pod, root *field.Path) field.ErrorList {
	metadataPath := root.Child("metadata")
	errs := apivalidation.ValidateObjectMeta(&pod.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, metadataPath)
	for _, msg := range IsValidPodUID(string(pod.UID)) {
		errs = append(errs, field.Invalid(metadataPath.Child("uid"), string(pod.UID), msg))
	}
	specPath := root.Child("spec")
	errs = append(errs, validateVolumes(pod.Spec.Volumes, specPath.Child("volumes"))...)
	return append(errs, validatePodSecurityContext(pod.Spec.SecurityContext, specPath.Child("securityContext"))...)
}

// MaxPodUIDLength bounds a pod UID, which names the pod's directory: far
// above a Kubernetes UID (36 bytes) or a derived one (32), and short enough
// for a file name.
const MaxPodUIDLength = 128

// IsValidPodUID returns the problems of uid as a pod UID, which names the
// pod's directory under the root dir and appears in every line the agent
// prints of the pod: it is not empty, not longer than MaxPodUIDLength, holds
// no whitespace or control character, no '/' and no '%', and is not "." or
// "..".
func IsValidPodUID(uid string) []string {
	var msgs []string
	switch {
	case uid == "":
		msgs = append(msgs, "must not be empty")
	case len(uid) > MaxPodUIDLength:
		msgs = append(msgs, fmt.Sprintf("must be no more than %d bytes", MaxPodUIDLength))
	}
	if strings.IndexFunc(uid, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		msgs = append(msgs, "must not contain whitespace or control characters")
	}
	return append(msgs, content.IsPathSegmentName(uid)...)
}

func validateVolumes(volumes []v1.Volume, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i := range volumes {
		vol := &volumes[i]
		volPath := fldPath.Index(i)
		namePath := volPath.Child("name")
		if vol.Name == "" {
			errs = append(errs, field.Required(namePath, ""))
		} else {
			for _, msg := range validation.IsDNS1123Label(vol.Name) {
				errs = append(errs, field.Invalid(namePath, vol.Name, msg))
			}
			if names.Has(vol.Name) {
				errs = append(errs, field.Duplicate(namePath, vol.Name))
			}
			names.Insert(vol.Name)
		}
		errs = append(errs, validateExactlyOneSource(vol.VolumeSource, volPath)...)
		if claim := vol.PersistentVolumeClaim; claim != nil && claim.ClaimName == "" {
			errs = append(errs, field.Required(volPath.Child("persistentVolumeClaim", "claimName"), ""))
		}
	}
	return errs
}

// setSources returns the JSON names of the sources set in source, a
// v1.VolumeSource or a v1.PersistentVolumeSource: its non-nil pointer
// fields.
func setSources(source any) []string {
	value := reflect.ValueOf(source)
	var names []string
	for i := range value.NumField() {
		if fieldValue := value.Field(i); fieldValue.Kind() == reflect.Pointer && !fieldValue.IsNil() {
			name, _, _ := strings.Cut(value.Type().Field(i).Tag.Get("json"), ",")
			names = append(names, name)
		}
	}
	return names
}

// validateExactlyOneSource checks that source, a v1.VolumeSource or a
// v1.PersistentVolumeSource at fldPath, has exactly one source set, with
// Kubernetes' messages.
func validateExactlyOneSource(source any, fldPath *field.Path) field.ErrorList {
	sources := setSources(source)
	if len(sources) == 0 {
		return field.ErrorList{field.Required(fldPath, "must specify a volume type")}
	}
	var errs field.ErrorList
	for _, extra := range sources[1:] {
		errs = append(errs, field.Forbidden(fldPath.Child(extra),
			fmt.Sprintf("may not specify more than 1 volume type; this volume also specifies %s", sources[0])))
	}
	return errs
}

func validatePodSecurityContext(securityContext *v1.PodSecurityContext, fldPath *field.Path) field.ErrorList {
	if securityContext == nil {
		return nil
	}
	var errs field.ErrorList
	validateID := func(id *int64, idPath *field.Path, check func(int64) []string) {
		if id == nil {
			return
		}
		for _, msg := range check(*id) {
			errs = append(errs, field.Invalid(idPath, *id, msg))
		}
	}
	validateID(securityContext.FSGroup, fldPath.Child("fsGroup"), validation.IsValidGroupID)
	validateID(securityContext.RunAsUser, fldPath.Child("runAsUser"), validation.IsValidUserID)
	validateID(securityContext.RunAsGroup, fldPath.Child("runAsGroup"), validation.IsValidGroupID)
	for i := range securityContext.SupplementalGroups {
		validateID(&securityContext.SupplementalGroups[i], fldPath.Child("supplementalGroups").Index(i), validation.IsValidGroupID)
	}
	return errs
}

func validatePersistentVolume(pv *v1.PersistentVolume, root *field.Path) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&pv.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, root.Child("metadata"))
	specPath := root.Child("spec")
	errs = append(errs, validateExactlyOneSource(pv.Spec.PersistentVolumeSource, specPath)...)
	errs = append(errs, validateAccessModes(pv.Spec.AccessModes, specPath.Child("accessModes"))...)
	if ref := pv.Spec.ClaimRef; ref != nil && ref.Name == "" {
		errs = append(errs, field.Required(specPath.Child("claimRef", "name"), ""))
	}
	return errs
}

func validatePersistentVolumeClaim(claim *v1.PersistentVolumeClaim, root *field.Path) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&claim.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, root.Child("metadata"))
	specPath := root.Child("spec")
	errs = append(errs, validateAccessModes(claim.Spec.AccessModes, specPath.Child("accessModes"))...)
	if name := claim.Spec.VolumeName; name != "" {
		for _, msg := range apivalidation.NameIsDNSSubdomain(name, false) {
			errs = append(errs, field.Invalid(specPath.Child("volumeName"), name, msg))
		}
	}
	return errs
}

// validateSecret checks a Secret's metadata, the keys of its data and
// stringData, and its size, as Kubernetes does. No error shows a value.
func validateSecret(secret *v1.Secret, root *field.Path) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&secret.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, root.Child("metadata"))
	size := 0
	for _, key := range slices.Sorted(maps.Keys(secret.Data)) {
		errs = append(errs, validateSecretKey(root.Child("data").Key(key), key)...)
		size += len(secret.Data[key])
	}
	for _, key := range slices.Sorted(maps.Keys(secret.StringData)) {
		errs = append(errs, validateSecretKey(root.Child("stringData").Key(key), key)...)
		size += len(secret.StringData[key])
	}
	if size > v1.MaxSecretSize {
		errs = append(errs, field.TooLong(root.Child("data"), field.OmitValueType{}, v1.MaxSecretSize))
	}
	return errs
}

func validateSecretKey(fldPath *field.Path, key string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsConfigMapKey(key) {
		errs = append(errs, field.Invalid(fldPath, key, msg))
	}
	return errs
}

func validateAccessModes(modes []v1.PersistentVolumeAccessMode, fldPath *field.Path) field.ErrorList {
	if len(modes) == 0 {
		return field.ErrorList{field.Required(fldPath, "at least 1 access mode is required")}
	}
	var errs field.ErrorList
	for i, mode := range modes {
		if !slices.Contains(supportedAccessModes, mode) {
			errs = append(errs, field.NotSupported(fldPath.Index(i), mode, supportedAccessModes))
		}
	}
	if len(modes) > 1 && slices.Contains(modes, v1.ReadWriteOncePod) {
		errs = append(errs, field.Forbidden(fldPath, "may not use ReadWriteOncePod with other access modes"))
	}
	return errs
}

// validateVolumesWithPlugins lets the plugins check the pod's inline
// volumes that have exactly one source.
func validateVolumesWithPlugins(volumes []v1.Volume, fldPath *field.Path, plugins *volume.VolumePluginMgr) field.ErrorList {
	var errs field.ErrorList
	for i := range volumes {
		vol := &volumes[i]
		sources := setSources(vol.VolumeSource)
		if len(sources) != 1 || vol.PersistentVolumeClaim != nil {
			continue
		}
		_, volErrs := validateSpecWithPlugin(volume.NewSpecFromVolume(vol), fldPath.Index(i).Child(sources[0]), plugins)
		errs = append(errs, volErrs...)
	}
	return errs
}

// validatePersistentVolumeWithPlugins lets the plugin check the
// PersistentVolume's source, and checks that it supports the volume's
// access modes.
func validatePersistentVolumeWithPlugins(pv *v1.PersistentVolume, specPath *field.Path, plugins *volume.VolumePluginMgr) field.ErrorList {
	sources := setSources(pv.Spec.PersistentVolumeSource)
	if len(sources) != 1 {
		return nil
	}
	sourcePath := specPath.Child(sources[0])
	plugin, errs := validateSpecWithPlugin(volume.NewSpecFromPersistentVolume(pv, false), sourcePath, plugins)
	if plugin == nil {
		return errs
	}
	persistent, ok := plugin.(volume.PersistentVolumePlugin)
	if !ok {
		return append(errs, field.Forbidden(sourcePath, fmt.Sprintf("volume plugin %q does not support PersistentVolumes", plugin.Name())))
	}
	supported := persistent.GetAccessModes()
	for i, mode := range pv.Spec.AccessModes {
		if !slices.Contains(supported, mode) {
			errs = append(errs, field.NotSupported(specPath.Child("accessModes").Index(i), mode, supported))
		}
	}
	return errs
}

// validateSpecWithPlugin returns the one plugin that supports spec, or nil,
// and that plugin's problems with the source at sourcePath.
func validateSpecWithPlugin(spec *volume.Spec, sourcePath *field.Path, plugins *volume.VolumePluginMgr) (volume.VolumePlugin, field.ErrorList) {
	plugin, err := plugins.FindPluginBySpec(spec)
	if err != nil {
		// No plugin, or several: the volume fails alone when it is set up.
		return nil, nil
	}
	if validating, ok := plugin.(volume.SpecValidatingPlugin); ok {
		return plugin, validating.ValidateSpec(spec, sourcePath)
	}
	return plugin, nil
}

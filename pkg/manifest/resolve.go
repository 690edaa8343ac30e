package manifest

import (
	"fmt"

	v1 "k8s.io/api/core/v1"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// VolumeSpec returns the spec to set up vol, a volume of pod, with:
//   - an inline volume: volume.NewSpecFromVolume(vol);
//   - a persistentVolumeClaim volume: the spec of the PersistentVolume bound
//     to the claim, which is found in b in the pod's namespace. A claim is
//     bound to the PersistentVolume its spec.volumeName names, which must
//     have no claimRef or one to this claim; or else to the one
//     PersistentVolume whose spec.claimRef names it (an empty claimRef
//     namespace means "default"). The spec is read-only when the pod's
//     source says readOnly, or when the PersistentVolume's only access mode
//     is ReadOnlyMany.
//
// A claim that is missing, not bound, or bound to a missing volume is a
// *PendingError with its reason. VolumeSpec looks for no plugin; see
// ResolveVolume.
func (b *Bundle) VolumeSpec(pod *v1.Pod, vol *v1.Volume) (*volume.Spec, error) {
	spec, _, err := b.volumeSpec(pod, vol)
	return spec, err
}

// ResolveVolume returns VolumeSpec(pod, vol) and the plugin that supports
// it, which plugins must hold. The plugin of a claim's PersistentVolume must
// be a volume.PersistentVolumePlugin whose access modes cover the claim's.
// Errors: a *PendingError from VolumeSpec; otherwise a volume.Final error,
// which wraps volume.ErrNoPluginMatched when no plugin supports the spec
// (the spec is still returned then).
func (b *Bundle) ResolveVolume(pod *v1.Pod, vol *v1.Volume, plugins *volume.VolumePluginMgr) (*volume.Spec, volume.VolumePlugin, error) {
	spec, claim, err := b.volumeSpec(pod, vol)
	if err != nil {
		return nil, nil, err
	}
	if claim == nil {
		plugin, err := plugins.FindPluginBySpec(spec)
		if err != nil {
			return spec, nil, err
		}
		return spec, plugin, nil
	}
	plugin, err := plugins.FindPersistentPluginBySpec(spec)
	if err != nil {
		return spec, nil, err
	}
	if supported := plugin.GetAccessModes(); !volume.AccessModesCover(supported, claim.Spec.AccessModes) {
		return spec, nil, volume.Finalf("volume %q: claim %q asks for access modes %v, but volume plugin %q supports only %v",
			vol.Name, claim.Namespace+"/"+claim.Name, claim.Spec.AccessModes, plugin.Name(), supported)
	}
	return spec, plugin, nil
}

// volumeSpec is VolumeSpec, which also returns the claim of a
// persistentVolumeClaim volume.
func (b *Bundle) volumeSpec(pod *v1.Pod, vol *v1.Volume) (*volume.Spec, *v1.PersistentVolumeClaim, error) {
	source := vol.PersistentVolumeClaim
	if source == nil {
		return volume.NewSpecFromVolume(vol), nil, nil
	}
	claim := b.PersistentVolumeClaim(pod.Namespace, source.ClaimName)
	if claim == nil {
		return nil, nil, &PendingError{Volume: vol.Name, Claim: pod.Namespace + "/" + source.ClaimName,
			Reason: ReasonClaimNotFound, Message: "no such PersistentVolumeClaim"}
	}
	pv, reason, message := b.boundVolume(claim)
	if pv == nil {
		return nil, nil, &PendingError{Volume: vol.Name, Claim: claim.Namespace + "/" + claim.Name, Reason: reason, Message: message}
	}
	readOnly := source.ReadOnly || (len(pv.Spec.AccessModes) == 1 && pv.Spec.AccessModes[0] == v1.ReadOnlyMany)
	return volume.NewSpecFromPersistentVolume(pv, readOnly), claim, nil
}

// boundVolume returns the PersistentVolume that claim is bound to or, when
// there is none, why.
func (b *Bundle) boundVolume(claim *v1.PersistentVolumeClaim) (*v1.PersistentVolume, PendingReason, string) {
	if name := claim.Spec.VolumeName; name != "" {
		pv := b.PersistentVolume(name)
		if pv == nil {
			return nil, ReasonVolumeNotFound, fmt.Sprintf("spec.volumeName names PersistentVolume %q, which does not exist", name)
		}
		if ref := pv.Spec.ClaimRef; ref != nil && !claimRefMatches(ref, claim) {
			return nil, ReasonVolumeBoundToAnotherClaim, fmt.Sprintf("PersistentVolume %q has a claimRef to claim %q",
				name, defaultNamespace(KindPersistentVolumeClaim, ref.Namespace)+"/"+ref.Name)
		}
		if first := b.firstClaimNaming(name); pv.Spec.ClaimRef == nil && first != claim {
			where := ""
			if origin := b.Origin(first); origin.Source != "" {
				where = " (at " + origin.String() + ")"
			}
			return nil, ReasonVolumeBoundToAnotherClaim, fmt.Sprintf("PersistentVolume %q is bound to claim %q%s, which names it too; a PersistentVolume is bound to one claim",
				name, first.Namespace+"/"+first.Name, where)
		}
		return pv, "", ""
	}
	var bound []*v1.PersistentVolume
	for _, pv := range b.PersistentVolumes {
		if ref := pv.Spec.ClaimRef; ref != nil && claimRefMatches(ref, claim) {
			bound = append(bound, pv)
		}
	}
	switch len(bound) {
	case 0:
		return nil, ReasonClaimNotBound, "the claim has no spec.volumeName and no PersistentVolume has a spec.claimRef to it"
	case 1:
		return bound[0], "", ""
	}
	return nil, ReasonClaimBoundTwice, fmt.Sprintf("PersistentVolumes %q and %q both have a claimRef to the claim", bound[0].Name, bound[1].Name)
}

// firstClaimNaming returns the first claim of b whose spec.volumeName is
// name: of several, it is the one bound to a PersistentVolume that has no
// claimRef.
func (b *Bundle) firstClaimNaming(name string) *v1.PersistentVolumeClaim {
	for _, claim := range b.PersistentVolumeClaims {
		if claim.Spec.VolumeName == name {
			return claim
		}
	}
	return nil
}

// claimRefMatches reports whether ref names claim; a UID, when both have
// one, must match too.
func claimRefMatches(ref *v1.ObjectReference, claim *v1.PersistentVolumeClaim) bool {
	return ref.Name == claim.Name &&
		defaultNamespace(KindPersistentVolumeClaim, ref.Namespace) == claim.Namespace &&
		(ref.UID == "" || claim.UID == "" || ref.UID == claim.UID)
}

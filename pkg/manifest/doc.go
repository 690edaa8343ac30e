// Package manifest is the one decoder and validator of the pod,
// PersistentVolume, PersistentVolumeClaim and Secret manifests that volume-agent
// takes: from the validate, setup and teardown commands, from the static
// manifest directory, and from the local API.
//
// A manifest is YAML or JSON, with one or more documents, each a v1.Pod, a
// v1.PersistentVolume, a v1.PersistentVolumeClaim, a v1.Secret (the secrets
// of CSI volumes), or a v1.List of those.
// Decoding is strict: an unknown or duplicate field, a missing apiVersion or
// kind, and an unknown kind are errors. Decoding applies the defaults the
// kubelet applies to static pods (namespace "default", a pod UID derived from
// the manifest's content when metadata.uid is unset). No error shows a
// Secret's values.
//
// Validation applies the Kubernetes rules for names and volume sources, then
// lets each volume plugin that implements volume.SpecValidatingPlugin check
// its own source. Every problem is returned, not only the first, and each
// error names the source, the document, the object, the field path (as in
// spec.volumes[1].emptyDir.medium) and the bad value; see Error.
//
// A pod's persistentVolumeClaim volume is resolved, within a Bundle, to the
// PersistentVolume bound to the claim; see Bundle.VolumeSpec and
// Bundle.ResolveVolume.
package manifest

// Package csi is the kubernetes.io/csi volume plugin: it sets volumes up
// through external CSI node plugins ("drivers") over their unix sockets, as
// the kubelet's csi plugin does.
//
// It handles pods' inline csi volumes (ephemeral: published, never staged)
// and PersistentVolumes with spec.csi (staged once per volume on the node when
// the driver has STAGE_UNSTAGE_VOLUME, then published per pod). The paths are
// the kubelet's:
//
//	ROOT/plugins/kubernetes.io/csi/<driver>/<sha256(volumeHandle)>/globalmount   staging
//	ROOT/plugins/kubernetes.io/csi/<driver>/<sha256(volumeHandle)>/vol_data.json
//	ROOT/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount                      publish target
//	ROOT/pods/<uid>/volumes/kubernetes.io~csi/<volume>/vol_data.json
//
// Which pods use a staged volume is recorded on disk, in a claims dir beside
// the staging dir, before the volume is staged, and a claim is removed only
// after its pod's volume is unpublished; the volume is unstaged when the last
// claim goes. The on-disk state alone decides, so a restart after a SIGKILL
// at any step neither unstages a volume a pod still uses nor leaks one no pod
// uses.
//
// The Secrets that a volume's nodeStageSecretRef and nodePublishSecretRef
// name are had from the host (VolumeHost.GetSecretFunc) at each set-up and
// sent in NodeStageVolume and NodePublishVolume; they are never logged or
// written to disk, and a missing one is a Transient error naming the
// reference.
//
// Drivers are found in a static list and through the kubelet's
// plugin-registration protocol in a registration dir. The plugin talks to
// them only through the Client interface, so tests use a fake.
package csi

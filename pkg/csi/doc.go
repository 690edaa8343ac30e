// Package csi makes the agent a CSI driver (CSI spec v1.14.0): it serves
// the Identity and Node services on a unix socket, and the kubelet's
// plugin-registration API on a socket of its own.
//
// A CSI call is one more source of desired volumes on the volume manager's
// one path: NodePublishVolume of an ephemeral inline volume turns the
// volume context into a pod volume (checked by the manifest validator),
// records the publish on disk under ROOT/csi, and hands the volume to the
// manager as the only volume of a pod of its own, to be set up at the
// target path the kubelet chose. The call then waits for the volume's
// result within its deadline. NodeUnpublishVolume removes the record and
// waits for the manager to tear the volume down. After a restart the
// records are read back before the manager judges what it finds on disk.
package csi

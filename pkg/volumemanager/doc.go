// Package volumemanager keeps the volumes of the desired pods set up and the
// others torn down, as the kubelet's volume manager does.
//
// A Manager holds the desired state of the world (pods from named sources,
// each volume resolved to a volume.Spec or left pending with a reason) and
// the actual state of the world (volumes that are set up, or may be). Its
// reconciler first tears down what is no longer desired, then sets up what
// is missing; an operation executor runs those operations on bounded
// parallel workers, never two on the same volume, with a per-operation
// timeout and exponential backoff after failures.
//
// Before its first pass the Manager rebuilds the actual state from the root
// dir's volume and metadata directories, marking what it finds uncertain
// (ready markers and the mount table are left to the plugins' SetUp and
// TearDown, which check them): volumes that the sources still want are
// set up again (a no-op for a ready volume), and the others are torn down
// once every source has been read in full.
//
// A source may place a volume at a target path outside the root dir (see
// Target): the CSI driver's publishes are such a source. The volume goes
// through the same executor, plugin, hooks and status; only its directory
// differs, and it is recorded under the root dir before its set-up so that
// reconstruction finds it.
//
// The one-shot `setup` and `teardown` commands use the same Manager through
// RunOnce, which returns when every volume of the given pods has settled.
package volumemanager

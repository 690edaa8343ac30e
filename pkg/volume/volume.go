package volume

// Volume is a directory on the host that a pod's containers see.
type Volume interface {
	// GetPath returns the directory the volume is set up at:
	// ROOT/pods/<uid>/volumes/<escaped plugin>/<volume>.
	GetPath() string
}

// Attributes describe how a set-up volume behaves.
type Attributes struct {
	// ReadOnly is true when containers may not write to the volume.
	ReadOnly bool
	// Managed is true when the plugin owns the volume's contents, so that
	// the agent may change their ownership (fsGroup).
	Managed bool
}

// Builder sets a volume up.
//
// SetUp and SetUpAt are idempotent: calling them on a volume that is already
// set up is a cheap no-op that keeps its contents, and they may be called again
// after any failure or crash, including one that stopped half-way. They mark the
// volume ready (a "ready" file in its metadata dir) only after every step has
// succeeded, so a half-done set-up is never reported as ready.
//
// Errors carry an ErrorClass (see ClassOf): Transient errors are retried,
// Final errors wait for the spec to change, Uncertain errors mean the set-up may
// have partly happened and must be torn down if the pod goes away.
type Builder interface {
	Volume
	// SetUp sets the volume up at GetPath(). fsGroup, when not nil, is the
	// group that must own the volume's contents.
	SetUp(fsGroup *int64) error
	// SetUpAt sets the volume up at dir.
	SetUpAt(dir string, fsGroup *int64) error
	// GetAttributes returns the volume's attributes.
	GetAttributes() Attributes
}

// Cleaner tears a volume down. It is built from what is on disk alone, so it
// works after a restart with no pod spec.
//
// TearDown and TearDownAt are idempotent: tearing down a volume that is gone
// succeeds, and they may be called again after any failure or crash. They
// never follow a symlink out of the volume and never delete across a mount
// boundary: a mount found inside the volume fails the tear-down with an error
// that names it, leaving it and the volume in place.
type Cleaner interface {
	Volume
	// TearDown tears the volume down at GetPath() and removes its metadata.
	TearDown() error
	// TearDownAt tears the volume down at dir.
	TearDownAt(dir string) error
}

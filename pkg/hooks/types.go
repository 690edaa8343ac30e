package hooks

import (
	"k8s.io/apimachinery/pkg/types"
)

// Version is the only hook file schema version this package reads.
const Version = "1.0.0"

// Stage is a point in a volume's life at which hooks run.
type Stage string

const (
	// PreSetUp runs before a volume is set up. A failing hook fails the
	// set-up with a transient error, so it is retried with backoff.
	PreSetUp Stage = "preSetUp"
	// PostSetUp runs after a volume was set up. A failing hook is reported
	// and does not undo the set-up.
	PostSetUp Stage = "postSetUp"
	// PreTearDown runs before a volume is torn down. A failing hook delays
	// the tear-down with a transient error, so it is retried with backoff.
	PreTearDown Stage = "preTearDown"
	// PostTearDown runs after a volume was torn down. A failing hook is
	// reported and does not undo the tear-down.
	PostTearDown Stage = "postTearDown"
)

// Stages lists every stage, in the order of a volume's life.
var Stages = []Stage{PreSetUp, PostSetUp, PreTearDown, PostTearDown}

// IsPre reports whether s runs before its operation, so that a failing hook
// stops the operation.
func (s Stage) IsPre() bool { return s == PreSetUp || s == PreTearDown }

// valid reports whether s is one of Stages.
func (s Stage) valid() bool {
	for _, known := range Stages {
		if s == known {
			return true
		}
	}
	return false
}

// File is the content of one hook file.
type File struct {
	// Version must be "1.0.0".
	Version string `json:"version"`
	// Hook is the program to run.
	Hook Command `json:"hook"`
	// When selects the volumes the hook runs for.
	When When `json:"when"`
	// Stages lists the stages the hook runs at; at least one.
	Stages []Stage `json:"stages"`
}

// Command is the program a hook runs.
type Command struct {
	// Path is the absolute path of the program. It must exist, be a regular
	// file and be executable when the file is loaded.
	Path string `json:"path"`
	// Args is the program's full argument vector, argv[0] included, as in
	// execv(3) and OCI hooks. Empty means [Path].
	Args []string `json:"args,omitempty"`
	// Env is the program's whole environment, as "KEY=value" entries. Nothing
	// of the agent's environment is passed on: not even PATH.
	Env []string `json:"env,omitempty"`
	// Timeout is the number of seconds after which the program and its
	// process group are killed: 1 to MaxTimeout in seconds. Unset means
	// DefaultTimeout.
	Timeout *int `json:"timeout,omitempty"`
}

// When selects the volumes a hook runs for. Every condition that is set must
// match; at least one must be set. Each regular expression is Go RE2 syntax,
// anchored at both ends: it must match the whole string.
type When struct {
	// Always, when true, matches every volume; when false, matches none (the
	// hook is disabled).
	Always *bool `json:"always,omitempty"`
	// Plugins matches when any expression matches the plugin's name, as
	// "kubernetes.io/empty-dir".
	Plugins []string `json:"plugins,omitempty"`
	// Annotations maps an expression over pod annotation keys to an
	// expression over their values. It matches when, for every entry, some
	// annotation's key and value both match.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Volumes matches when any expression matches the volume's name in the
	// pod.
	Volumes []string `json:"volumes,omitempty"`
}

// VolumeState is what a hook is told about the volume, as JSON on its standard
// input (with the stage and the schema version added, see StdinState).
//
// After an agent restart, a volume found on disk is torn down with no pod spec:
// then PodNamespace, PodName and Annotations are empty, and hooks that select
// on annotations do not match.
type VolumeState struct {
	PodNamespace string            `json:"podNamespace"`
	PodName      string            `json:"podName"`
	PodUID       types.UID         `json:"podUID"`
	Volume       string            `json:"volume"`
	Plugin       string            `json:"plugin"`
	Path         string            `json:"path"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// StdinState is the JSON document written to a hook's standard input.
type StdinState struct {
	Version string `json:"version"`
	Stage   Stage  `json:"stage"`
	VolumeState
}

package manifest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Error is one problem in a manifest. Decode, Validate and Load return an
// aggregate (k8s.io/apimachinery/pkg/util/errors.Aggregate) of *Error, one
// for every problem found; every such problem is bad input.
type Error struct {
	// Source names where the manifest came from: a file name, "stdin", or
	// the name a caller gave to Decode.
	Source string
	// Document is the 1-based index of the document in Source, counting the
	// documents that are not empty. It is 0 when the problem is with the
	// source as a whole, as when it cannot be read.
	Document int
	// Line is the 1-based line of Source where the document starts, or 0
	// when it is not known.
	Line int
	// Object names the object when it is known, as `Pod "default/web"`.
	Object string
	// Field is the path of the bad field in its document, as
	// "spec.volumes[1].emptyDir.medium", or "items[0].metadata.name" in a
	// List. It is empty when the problem is with the document as a whole, as
	// a YAML syntax error.
	Field string
	// Err is the problem. It is a *field.Error, which also names the field
	// and the bad value, for every validation problem.
	Err error
}

// Error returns "<source>: document <n> (line <l>): <object>: <problem>",
// leaving out the parts that are not known.
func (e *Error) Error() string {
	var parts []string
	if e.Source != "" {
		parts = append(parts, e.Source)
	}
	if e.Document > 0 {
		document := fmt.Sprintf("document %d", e.Document)
		if e.Line > 0 {
			document += fmt.Sprintf(" (line %d)", e.Line)
		}
		parts = append(parts, document)
	}
	if e.Object != "" {
		parts = append(parts, e.Object)
	}
	parts = append(parts, e.Err.Error())
	return strings.Join(parts, ": ")
}

// Unwrap returns the problem.
func (e *Error) Unwrap() error { return e.Err }

// newFieldErrors turns field errors on the object at origin into Errors.
func newFieldErrors(origin Origin, object string, errs field.ErrorList) []error {
	out := make([]error, 0, len(errs))
	for _, err := range errs {
		out = append(out, origin.newError(object, err.Field, err))
	}
	return out
}

// sortErrors orders errors by source, then document, keeping the order of
// the problems found in one document.
func sortErrors(errs []error) {
	slices.SortStableFunc(errs, func(a, b error) int {
		var ea, eb *Error
		if !errors.As(a, &ea) || !errors.As(b, &eb) {
			return 0
		}
		return cmp.Or(cmp.Compare(ea.Source, eb.Source), cmp.Compare(ea.Document, eb.Document))
	})
}

// PendingReason says why a pod's volume cannot be set up yet.
type PendingReason string

const (
	// ReasonClaimNotFound: no PersistentVolumeClaim of that name is in the
	// pod's namespace.
	ReasonClaimNotFound PendingReason = "ClaimNotFound"
	// ReasonClaimNotBound: the claim names no volume, and no
	// PersistentVolume's claimRef names the claim.
	ReasonClaimNotBound PendingReason = "ClaimNotBound"
	// ReasonVolumeNotFound: the claim's spec.volumeName names a
	// PersistentVolume that does not exist.
	ReasonVolumeNotFound PendingReason = "PersistentVolumeNotFound"
	// ReasonVolumeBoundToAnotherClaim: the PersistentVolume the claim names
	// has a claimRef to another claim.
	ReasonVolumeBoundToAnotherClaim PendingReason = "PersistentVolumeBoundToAnotherClaim"
	// ReasonClaimBoundTwice: several PersistentVolumes have a claimRef to the
	// claim, and the claim names none of them.
	ReasonClaimBoundTwice PendingReason = "ClaimBoundToSeveralVolumes"
)

// PendingError says that a pod's persistentVolumeClaim volume cannot be set
// up until the claim and its PersistentVolume are there and bound to each
// other. The agent shows such a volume as pending and waits for its
// manifests to change; the one-shot setup command reports it as failed.
type PendingError struct {
	// Volume is the name of the pod's volume.
	Volume string
	// Claim is the claim's "namespace/name".
	Claim string
	// Reason says what is missing.
	Reason PendingReason
	// Message says it in words.
	Message string
}

// Error returns `volume "<vol>" is pending (<reason>): claim "<ns/name>": <message>`.
func (e *PendingError) Error() string {
	return fmt.Sprintf("volume %q is pending (%s): claim %q: %s", e.Volume, e.Reason, e.Claim, e.Message)
}

// IsPending reports whether err is, or wraps, a *PendingError.
func IsPending(err error) bool {
	var pending *PendingError
	return errors.As(err, &pending)
}

package volume

import (
	"errors"
	"fmt"
)

// ErrorClass tells the caller of a volume operation what to do after a failure.
type ErrorClass int

const (
	// Transient errors are retried with exponential backoff. An error that
	// carries no class is treated as transient.
	Transient ErrorClass = iota
	// Final errors are not retried until the volume's spec changes.
	Final
	// Uncertain errors mean the set-up may have partly happened: the volume
	// must be torn down if the pod goes away, and is retried otherwise.
	Uncertain
)

// String returns the class's lower-case name.
func (c ErrorClass) String() string {
	switch c {
	case Final:
		return "final"
	case Uncertain:
		return "uncertain"
	default:
		return "transient"
	}
}

// OperationError is an error with an ErrorClass. Use errors.As to find it in a
// chain, or ClassOf to read the class of any error.
type OperationError struct {
	Class ErrorClass
	Err   error
}

// Error returns the wrapped error's message.
func (e *OperationError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *OperationError) Unwrap() error { return e.Err }

// NewTransientError marks err as transient: retry with backoff.
func NewTransientError(err error) error { return &OperationError{Class: Transient, Err: err} }

// NewFinalError marks err as final: do not retry until the spec changes.
func NewFinalError(err error) error { return &OperationError{Class: Final, Err: err} }

// NewUncertainError marks err as uncertain: set-up may have partly happened.
func NewUncertainError(err error) error { return &OperationError{Class: Uncertain, Err: err} }

// Finalf formats a final error, as fmt.Errorf does.
func Finalf(format string, args ...any) error { return NewFinalError(fmt.Errorf(format, args...)) }

// ClassOf returns the class of the outermost OperationError in err's chain,
// and Transient for an error that carries none. It returns Transient for nil.
func ClassOf(err error) ErrorClass {
	var opErr *OperationError
	if errors.As(err, &opErr) {
		return opErr.Class
	}
	return Transient
}

// IsFinal reports whether err is a final error.
func IsFinal(err error) bool { return err != nil && ClassOf(err) == Final }

// IsUncertain reports whether err is an uncertain error.
func IsUncertain(err error) bool { return err != nil && ClassOf(err) == Uncertain }

// ErrNoPluginMatched is returned, wrapped in a final error, when no plugin
// supports a volume's spec.
var ErrNoPluginMatched = errors.New("no volume plugin matched")

// ErrSecretNotFound is wrapped by a SecretGetter's error for a Secret that
// is not known.
var ErrSecretNotFound = errors.New("secret not found")

// Errors of ProvisionableVolumePlugin, wrapped with the details.
var (
	// ErrInvalidProvisionOptions: the name or another option is not
	// acceptable to the storage.
	ErrInvalidProvisionOptions = errors.New("invalid provision options")
	// ErrCapacityOutOfRange: no capacity the storage supports lies in the
	// required and limit bounds.
	ErrCapacityOutOfRange = errors.New("capacity out of range")
	// ErrVolumeExists: a volume of that name exists with a capacity outside
	// the bounds asked for.
	ErrVolumeExists = errors.New("a volume of that name exists with another capacity")
	// ErrVolumeNotFound: there is no such volume.
	ErrVolumeNotFound = errors.New("volume not found")
)

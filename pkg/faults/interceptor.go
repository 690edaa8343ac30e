package faults

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Names of the operations that WrapPlugins intercepts. WrapExec intercepts
// "git<Subcommand>" operations, named by GitOperationName.
const (
	OpSetUp    = "setUp"
	OpTearDown = "tearDown"
)

// Stage says whether an interceptor is called before or after an operation.
type Stage string

const (
	// Start is before the operation: Pre is called.
	Start Stage = "Start"
	// End is after the operation: Post is called.
	End Stage = "End"
)

// Operation is the operation being intercepted.
type Operation struct {
	// Name is the operation, as "setUp" or "gitClone".
	Name string
	// Plugin is the plugin's name; empty for a command.
	Plugin string
	// Volume is the volume's name in its pod ("wrapped_<name>" for a volume
	// a plugin builds on another); empty for a command.
	Volume string
	// PodUID is the pod's UID; empty for a command.
	PodUID types.UID
	// PodNamespace and PodName name the pod at set-up; they are empty at
	// tear-down, which works from what is on disk alone, and for a command.
	PodNamespace, PodName string
	// Stage is Start in Pre and End in Post.
	Stage Stage
	// Args are a command's arguments, the command itself excluded.
	Args []string
}

// Interceptor is called around every intercepted operation. Both funcs must be
// safe for concurrent use; either may be nil.
type Interceptor struct {
	// Pre is called before the operation. A non-nil error is returned in
	// place of running the operation, which then does not run. Return a typed
	// error (volume.NewTransientError, NewFinalError, NewUncertainError) to
	// choose how the caller reacts.
	Pre func(ctx context.Context, op Operation) error
	// Post is called after the operation with its result, and returns the
	// result to report: result itself to keep it, or another error (or nil)
	// to replace it.
	Post func(ctx context.Context, op Operation, result error) error
}

// around runs operation between i.Pre and i.Post.
func (i Interceptor) around(ctx context.Context, op Operation, operation func() error) error {
	if err := i.pre(ctx, op); err != nil {
		return err
	}
	return i.post(ctx, op, operation())
}

func (i Interceptor) pre(ctx context.Context, op Operation) error {
	if i.Pre == nil {
		return nil
	}
	op.Stage = Start
	return i.Pre(ctx, op)
}

func (i Interceptor) post(ctx context.Context, op Operation, result error) error {
	if i.Post == nil {
		return result
	}
	op.Stage = End
	return i.Post(ctx, op, result)
}

// PreHook returns an Interceptor whose Pre calls decide with the number (from
// 1) of each call of the operation called name, and returns what decide
// returns; other operations pass untouched. This is the form the Kubernetes
// storage tests use: PreHook(OpSetUp, func(n int) error { if n <= 2 { return
// transientErr }; return nil }) fails the first two set-ups. Calls are counted
// across every plugin and volume; decide may run concurrently for concurrent
// operations.
func PreHook(name string, decide func(call int) error) Interceptor {
	var mu sync.Mutex
	calls := 0
	return Interceptor{Pre: func(_ context.Context, op Operation) error {
		if op.Name != name {
			return nil
		}
		mu.Lock()
		calls++
		call := calls
		mu.Unlock()
		return decide(call)
	}}
}

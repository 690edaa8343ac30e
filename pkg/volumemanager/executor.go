package volumemanager

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Defaults of ExecutorConfig, as the kubelet's.
const (
	DefaultWorkers          = 8
	DefaultInitialBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff       = 2*time.Minute + 2*time.Second
	DefaultOperationTimeout = 2 * time.Minute
)

// ErrOperationPending is returned by Run when an operation on the same
// volume is queued or running.
var ErrOperationPending = errors.New("an operation on this volume is already pending")

// ErrOperationTimeout is the cause of the context of an operation that ran
// past its timeout.
var ErrOperationTimeout = errors.New("operation timed out")

// ErrNoLongerDesired is the cause of the context of a set-up cancelled
// because no source wants its volume any more.
var ErrNoLongerDesired = errors.New("the volume is no longer desired")

// BackoffError is returned by Run while a failed operation waits for its
// next retry.
type BackoffError struct {
	Key       VolumeKey
	Kind      OperationKind
	NextRetry time.Time
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("%s of volume %s backs off until %s", e.Kind, e.Key, e.NextRetry.Format(time.RFC3339Nano))
}

// ExecutorConfig configures an operation executor.
type ExecutorConfig struct {
	// Workers bounds the operations that run at the same time.
	Workers int
	// InitialBackoff is the delay after a first failure; it doubles after
	// each further failure up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Timeout bounds one operation: its context is cancelled with
	// ErrOperationTimeout as the cause.
	Timeout time.Duration
	Clock   clock.WithTickerAndDelayedExecution
}

func (c *ExecutorConfig) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultOperationTimeout
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
}

// Operation is one set-up or tear-down of one volume.
type Operation struct {
	Key  VolumeKey
	Kind OperationKind
	// Run does the work. It must return when ctx is cancelled.
	Run func(ctx context.Context) error
	// Done, when set, is called with the result once the volume is free for
	// the next operation. It must not block for long.
	Done func(OperationResult)
}

// OperationResult is the outcome of one Operation.
type OperationResult struct {
	Key  VolumeKey
	Kind OperationKind
	// Err is nil on success. Class is its class; an operation that timed
	// out is Uncertain when it was a set-up (it may have partly happened)
	// and Transient otherwise.
	Err   error
	Class volume.ErrorClass
	// TimedOut is true when the operation ran past its timeout, and
	// Cancelled when the executor was stopped while it ran or Cancel
	// cancelled it (then Err wraps the cause Cancel was given).
	TimedOut  bool
	Cancelled bool
	// Attempt numbers this attempt since the last success, from 1.
	Attempt int
	// NextRetry is when a failed operation may run again.
	NextRetry time.Time
	Started   time.Time
	Finished  time.Time
}

// Duration returns how long the operation ran.
func (r OperationResult) Duration() time.Duration { return r.Finished.Sub(r.Started) }

type backoffKey struct {
	key  VolumeKey
	kind OperationKind
}

type backoffState struct {
	backoff   wait.Backoff
	failures  int
	nextRetry time.Time
}

// operationExecutor runs Operations on a bounded pool of workers. It never
// runs two operations on the same VolumeKey at once, and after a failure it
// refuses the same kind of operation on the same volume until the backoff
// has passed: InitialBackoff, doubling up to MaxBackoff, reset on success.
type operationExecutor struct {
	cfg ExecutorConfig

	mu      sync.Mutex
	queue   []*Operation
	pending map[VolumeKey]OperationKind
	// cancels cancel the running operations, by volume.
	cancels  map[VolumeKey]context.CancelCauseFunc
	backoffs map[backoffKey]*backoffState
	wake     chan struct{}
	stopped  bool
	workers  sync.WaitGroup
}

func newOperationExecutor(cfg ExecutorConfig) *operationExecutor {
	cfg.setDefaults()
	return &operationExecutor{
		cfg:      cfg,
		pending:  map[VolumeKey]OperationKind{},
		cancels:  map[VolumeKey]context.CancelCauseFunc{},
		backoffs: map[backoffKey]*backoffState{},
		wake:     make(chan struct{}, 1),
	}
}

// Start starts the workers. They run operations until ctx is cancelled,
// which also cancels the context of every running operation; Wait waits for
// them.
func (e *operationExecutor) Start(ctx context.Context) {
	for range e.cfg.Workers {
		e.workers.Add(1)
		go e.work(ctx)
	}
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		e.stopped = true
		dropped := e.queue
		e.queue = nil
		for _, op := range dropped {
			delete(e.pending, op.Key)
		}
		e.mu.Unlock()
		e.signal()
		for _, op := range dropped {
			if op.Done != nil {
				now := e.cfg.Clock.Now()
				op.Done(OperationResult{Key: op.Key, Kind: op.Kind, Err: ctx.Err(), Cancelled: true, Started: now, Finished: now})
			}
		}
	}()
}

// Wait waits until every worker has returned after Start's context was
// cancelled.
func (e *operationExecutor) Wait() { e.workers.Wait() }

// Run queues op. It returns ErrOperationPending when an operation on the
// same volume is queued or running, and a *BackoffError while a failed
// operation of the same kind on the same volume waits for its retry.
func (e *operationExecutor) Run(op *Operation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return context.Canceled
	}
	if _, busy := e.pending[op.Key]; busy {
		return ErrOperationPending
	}
	if b, ok := e.backoffs[backoffKey{op.Key, op.Kind}]; ok && e.cfg.Clock.Now().Before(b.nextRetry) {
		return &BackoffError{Key: op.Key, Kind: op.Kind, NextRetry: b.nextRetry}
	}
	e.pending[op.Key] = op.Kind
	e.queue = append(e.queue, op)
	e.signal()
	return nil
}

// Cancel cancels the operation of kind on key, with cause as its context's
// cause: a queued one is dropped, a running one's context is cancelled (the
// operation must return promptly). Either ends with a Cancelled result, or
// with the result the operation returned if it finished anyway; there is no
// backoff. It reports whether such an operation was queued or running, and
// is idempotent.
func (e *operationExecutor) Cancel(key VolumeKey, kind OperationKind, cause error) bool {
	e.mu.Lock()
	if e.pending[key] != kind {
		e.mu.Unlock()
		return false
	}
	if cancel, running := e.cancels[key]; running {
		e.mu.Unlock()
		cancel(cause)
		return true
	}
	var dropped *Operation
	for i, op := range e.queue {
		if op.Key == key {
			dropped = op
			e.queue = append(e.queue[:i], e.queue[i+1:]...)
			break
		}
	}
	delete(e.pending, key)
	e.mu.Unlock()
	if dropped != nil && dropped.Done != nil {
		now := e.cfg.Clock.Now()
		dropped.Done(OperationResult{Key: key, Kind: kind, Err: cause, Cancelled: true, Started: now, Finished: now})
	}
	return true
}

// IsPending reports whether an operation on key is queued or running.
func (e *operationExecutor) IsPending(key VolumeKey) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, busy := e.pending[key]
	return busy
}

// NextRetry returns when a failed operation of kind on key may run again,
// and how many times in a row it failed; zero values when it has not failed.
func (e *operationExecutor) NextRetry(key VolumeKey, kind OperationKind) (time.Time, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.backoffs[backoffKey{key, kind}]; ok {
		return b.nextRetry, b.failures
	}
	return time.Time{}, 0
}

// ResetBackoff forgets the failures of kind on key, so that it may run at
// once (used when a volume's spec changes).
func (e *operationExecutor) ResetBackoff(key VolumeKey, kind OperationKind) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.backoffs, backoffKey{key, kind})
}

// Forget drops every backoff of key (used once the volume is gone).
func (e *operationExecutor) Forget(key VolumeKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.backoffs, backoffKey{key, OperationSetUp})
	delete(e.backoffs, backoffKey{key, OperationTearDown})
}

func (e *operationExecutor) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *operationExecutor) next(ctx context.Context) (*Operation, bool) {
	for {
		e.mu.Lock()
		if e.stopped || ctx.Err() != nil {
			e.mu.Unlock()
			return nil, false
		}
		if len(e.queue) > 0 {
			op := e.queue[0]
			e.queue[0] = nil
			e.queue = e.queue[1:]
			more := len(e.queue) > 0
			e.mu.Unlock()
			if more {
				e.signal()
			}
			return op, true
		}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-e.wake:
		}
	}
}

func (e *operationExecutor) work(ctx context.Context) {
	defer e.workers.Done()
	for {
		op, ok := e.next(ctx)
		if !ok {
			return
		}
		e.execute(ctx, op)
	}
}

func (e *operationExecutor) execute(parent context.Context, op *Operation) {
	logger := klog.FromContext(parent).WithValues("volume", op.Key.String(), "operation", op.Kind)
	ctx, cancel := context.WithCancelCause(klog.NewContext(parent, logger))
	timer := e.cfg.Clock.AfterFunc(e.cfg.Timeout, func() { cancel(ErrOperationTimeout) })
	e.mu.Lock()
	e.cancels[op.Key] = cancel
	e.mu.Unlock()

	result := OperationResult{Key: op.Key, Kind: op.Kind, Started: e.cfg.Clock.Now()}
	result.Err = runRecovering(ctx, op.Run)
	result.Finished = e.cfg.Clock.Now()
	timer.Stop()
	cause := context.Cause(ctx)
	result.TimedOut = errors.Is(cause, ErrOperationTimeout)
	cancelled := !result.TimedOut && parent.Err() == nil && cause != nil
	result.Cancelled = !result.TimedOut && (parent.Err() != nil || cancelled)
	if cancelled && result.Err != nil && !errors.Is(result.Err, cause) {
		result.Err = fmt.Errorf("%w: %w", cause, result.Err)
	}
	cancel(nil)

	if result.Err != nil {
		result.Class = volume.ClassOf(result.Err)
		if result.TimedOut {
			result.Err = fmt.Errorf("%w after %s: %w", ErrOperationTimeout, e.cfg.Timeout, result.Err)
			if op.Kind == OperationSetUp && result.Class != volume.Final {
				result.Class = volume.Uncertain
			}
		}
	}

	e.mu.Lock()
	bk := backoffKey{op.Key, op.Kind}
	switch {
	case result.Err == nil:
		result.Attempt = 1
		if b := e.backoffs[bk]; b != nil {
			result.Attempt = b.failures + 1
		}
		delete(e.backoffs, bk)
		if op.Kind == OperationTearDown {
			delete(e.backoffs, backoffKey{op.Key, OperationSetUp})
		}
	case result.Cancelled:
		// Stopping is not the volume's failure: no backoff.
		b := e.backoffs[bk]
		result.Attempt = 1
		if b != nil {
			result.Attempt = b.failures + 1
		}
	default:
		b, ok := e.backoffs[bk]
		if !ok {
			b = &backoffState{backoff: wait.Backoff{
				Duration: e.cfg.InitialBackoff,
				Factor:   2,
				Cap:      e.cfg.MaxBackoff,
				Steps:    math.MaxInt32,
			}}
			e.backoffs[bk] = b
		}
		b.failures++
		b.nextRetry = result.Finished.Add(b.backoff.Step())
		result.Attempt = b.failures
		result.NextRetry = b.nextRetry
	}
	delete(e.pending, op.Key)
	delete(e.cancels, op.Key)
	e.mu.Unlock()

	if result.Err != nil {
		logger.V(2).Info("Volume operation failed", "attempt", result.Attempt, "errorClass", result.Class.String(), "nextRetry", result.NextRetry, "err", result.Err)
	}
	if op.Done != nil {
		op.Done(result)
	}
}

// runRecovering runs fn, turning a panic into a transient error so that one
// plugin's bug does not take the agent down.
func runRecovering(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("volume operation panicked: %v", r)
		}
	}()
	return fn(ctx)
}

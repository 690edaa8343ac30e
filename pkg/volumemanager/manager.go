package volumemanager

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/hooks"
	"github.com/volume-agent/volume-agent/pkg/volume"
)

// Defaults of Config.
const (
	DefaultResyncPeriod      = 20 * time.Second
	DefaultHealthCheckPeriod = 30 * time.Second
	DefaultSizeCheckPeriod   = 30 * time.Second
	DefaultVerifyPeriod      = 10 * time.Second
	DefaultSourceLoadTimeout = 2 * time.Minute
	DefaultMaxEvents         = 1000
	// PendingWorkPeriod is the longest the reconciler waits between passes
	// while some volume is not yet where it should be.
	PendingWorkPeriod = 100 * time.Millisecond
	// ShutdownGracePeriod bounds the wait, when Run stops, for operations
	// that do not return once their context is cancelled.
	ShutdownGracePeriod = 30 * time.Second
	// healthCheckTimeout bounds one plugin health check.
	healthCheckTimeout = 10 * time.Second
)

// Hooks runs lifecycle hooks before and after set-ups and tear-downs;
// *hooks.Manager implements it. A failing pre-stage hook fails the operation
// (with a transient error, retried with backoff); a failing post-stage hook
// is reported as an event and does not undo the operation.
type Hooks interface {
	Run(ctx context.Context, stage hooks.Stage, state hooks.VolumeState) error
}

// Observer is told what the Manager does, for metrics. Its methods must be
// safe for concurrent use and must not block.
type Observer interface {
	// ObserveOperation records one finished operation; result is "success",
	// "cancelled" or the error class ("transient", "final", "uncertain").
	ObserveOperation(plugin string, kind OperationKind, result string, duration time.Duration)
	// ObserveRetry records an operation started again after a failure.
	ObserveRetry(plugin string, kind OperationKind)
	// ObserveReconcile records one reconciler pass.
	ObserveReconcile(duration time.Duration)
	// ObserveSourceError records an error of a source.
	ObserveSourceError(source string)
}

// Config configures a Manager. Plugins, Layout and Mounter are required.
type Config struct {
	// Plugins are the loaded plugins, initialized with a host whose layout
	// is Layout.
	Plugins *volume.VolumePluginMgr
	Layout  volume.Layout
	// Mounter lists the mount table when pod directories are removed: a
	// pod dir with something still mounted in it is kept.
	Mounter mount.Interface
	// Clock defaults to the real clock.
	Clock clock.WithTickerAndDelayedExecution
	// Executor configures the workers, backoff and operation timeout.
	Executor ExecutorConfig
	// ResyncPeriod is the longest the reconciler waits between passes when
	// nothing is pending.
	ResyncPeriod time.Duration
	// HealthCheckPeriod is how often the plugins' health is checked by Run.
	HealthCheckPeriod time.Duration
	// SizeCheckPeriod is how often Run measures emptyDirs on disk that have
	// a sizeLimit.
	SizeCheckPeriod time.Duration
	// VerifyPeriod is how often Run verifies the ready volumes of plugins
	// that can (volume.VerifyingPlugin).
	VerifyPeriod time.Duration
	// SourceLoadTimeout bounds how long, after MarkSourcesSynced, the
	// volumes that a source which has not loaded since the start may
	// declare are kept from being torn down; see MarkSourcesSynced.
	SourceLoadTimeout time.Duration
	// MaxEvents bounds the event list; the oldest events are dropped.
	MaxEvents int
	// Hooks, when set, run before and after every set-up and tear-down.
	Hooks Hooks
	// Observer, when set, is told of operations and passes.
	Observer Observer
	// OnEvent, when set, is called with every event, in order. It is called
	// with the Manager's lock held: it must not block or call the Manager.
	OnEvent func(Event)
	// PodScope, when set, limits the Manager to the pods it returns true
	// for: reconstruction skips the others' directories on disk, and they
	// are never torn down. Nil means every pod under Layout.Root.
	PodScope func(types.UID) bool
}

func (c *Config) setDefaults() error {
	if c.Plugins == nil || c.Mounter == nil || c.Layout.Root == "" {
		return errors.New("volume manager config needs Plugins, Mounter and Layout.Root")
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	c.Executor.Clock = c.Clock
	c.Executor.setDefaults()
	if c.ResyncPeriod <= 0 {
		c.ResyncPeriod = DefaultResyncPeriod
	}
	if c.HealthCheckPeriod <= 0 {
		c.HealthCheckPeriod = DefaultHealthCheckPeriod
	}
	if c.SizeCheckPeriod <= 0 {
		c.SizeCheckPeriod = DefaultSizeCheckPeriod
	}
	if c.VerifyPeriod <= 0 {
		c.VerifyPeriod = DefaultVerifyPeriod
	}
	if c.SourceLoadTimeout <= 0 {
		c.SourceLoadTimeout = DefaultSourceLoadTimeout
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	return nil
}

// Manager reconciles the volumes of the desired pods with what is on disk.
// Its methods are safe for concurrent use.
type Manager struct {
	cfg      Config
	executor *operationExecutor
	// trigger asks the reconciler for a pass.
	trigger chan struct{}

	mu sync.Mutex
	// sources are the named sources of pods. sourcesRead is set by
	// MarkSourcesSynced; sourcesSynced is true once sourcesRead is and every
	// source has also loaded without error at least once (see
	// updateSourcesSyncedLocked). It never goes back to false.
	sources       map[string]*sourceState
	sourcesRead   bool
	sourcesSynced bool
	// sourcesReadAt is when MarkSourcesSynced was called.
	sourcesReadAt time.Time
	// loadedPods are the pods a source that loaded declared, while
	// sourcesSynced is false: a source that never loaded does not hold back
	// their tear-down (see holdTearDownLocked).
	loadedPods sets.Set[types.UID]
	// pods are the desired pods, from the sources.
	pods map[types.UID]*desiredPod
	// volumes are the volumes that are desired, set up, or may be.
	volumes map[VolumeKey]*volumeRecord
	byPod   map[types.UID]map[VolumeKey]*volumeRecord
	// owners maps each PersistentVolume and claim that a source declares
	// (as `PersistentVolume "name"`) to the source whose declaration is
	// used; see claimsBundleLocked.
	owners map[string]string
	// secrets are the Secrets the sources declare, one of each name; see
	// GetSecret.
	secrets map[types.NamespacedName]*v1.Secret
	// boundClaims maps the name of each PersistentVolume that claims name in
	// their spec.volumeName to the claim that comes first, and binds it.
	boundClaims map[string]string
	// podNames remembers the namespace/name of the pods the sources
	// declared, to name them while their volumes are torn down and their
	// directory removed; see prunePodNameLocked.
	podNames map[types.UID]types.NamespacedName
	// orphans are undesired pods whose directory may be removed; removing
	// holds those being removed, whose volumes may not be set up meanwhile.
	orphans  sets.Set[types.UID]
	removing sets.Set[types.UID]
	// reconstructed is true once the actual state was read from disk.
	reconstructed bool
	// tearDownAll makes every volume undesired (shutdown, one-shot teardown).
	tearDownAll bool
	ready       bool
	lastPass    time.Time
	// nextWake is the earliest retry time a pass found, zero when none.
	nextWake time.Time
	// passDone is closed and replaced at the end of every reconciler pass,
	// and when an operation finishes (see wakeWaitersLocked).
	passDone chan struct{}
	// events is a ring of at most MaxEvents; eventsHead indexes the oldest
	// once it is full.
	events     []Event
	eventsHead int
	health     map[string]PluginStatus
	// oneShot is set while RunOnce runs.
	oneShot *oneShotState
}

// New returns a Manager. It does nothing until Run or RunOnce.
func New(cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Manager{
		cfg:        cfg,
		executor:   newOperationExecutor(cfg.Executor),
		trigger:    make(chan struct{}, 1),
		sources:    map[string]*sourceState{},
		pods:       map[types.UID]*desiredPod{},
		volumes:    map[VolumeKey]*volumeRecord{},
		byPod:      map[types.UID]map[VolumeKey]*volumeRecord{},
		podNames:   map[types.UID]types.NamespacedName{},
		orphans:    sets.New[types.UID](),
		loadedPods: sets.New[types.UID](),
		removing:   sets.New[types.UID](),
		passDone:   make(chan struct{}),
		health:     map[string]PluginStatus{},
	}, nil
}

// Layout returns the layout the Manager works in.
func (m *Manager) Layout() volume.Layout { return m.cfg.Layout }

// PluginMgr returns the plugin registry.
func (m *Manager) PluginMgr() *volume.VolumePluginMgr { return m.cfg.Plugins }

// Run reconstructs the actual state from disk, then reconciles until ctx is
// cancelled: it sets up the desired volumes, tears down the others once
// every source was read (see MarkSourcesSynced), checks the plugins' health
// and the emptyDirs' size limits. When ctx is cancelled it cancels the
// operations in flight, waits for them, and returns, leaving volumes in
// place (see TearDownAll to remove them first).
func (m *Manager) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	if err := m.Reconstruct(ctx); err != nil {
		return err
	}
	m.executor.Start(ctx)
	var wg sync.WaitGroup
	m.runPlugins(ctx, &wg)
	wg.Go(func() { m.healthLoop(ctx) })
	wg.Go(func() { m.sizeLoop(ctx) })
	wg.Go(func() { m.verifyLoop(ctx) })
	m.loop(ctx, nil)
	wg.Wait()
	// Operations were cancelled through their contexts; a plugin that
	// ignores its context must not keep the agent from stopping.
	stopped := make(chan struct{})
	go func() { m.executor.Wait(); close(stopped) }()
	select {
	case <-stopped:
		logger.Info("Volume manager stopped")
	case <-m.cfg.Clock.After(ShutdownGracePeriod):
		logger.Info("Volume manager stopped with operations still running", "gracePeriod", ShutdownGracePeriod)
	}
	return nil
}

// runPlugins starts the Run of every volume.RunningPlugin on wg.
func (m *Manager) runPlugins(ctx context.Context, wg *sync.WaitGroup) {
	for _, plugin := range m.cfg.Plugins.ListPlugins() {
		if running, ok := plugin.(volume.RunningPlugin); ok {
			wg.Go(func() { running.Run(ctx) })
		}
	}
}

// Trigger asks for a reconciler pass soon.
func (m *Manager) Trigger() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// loop runs reconciler passes until ctx is cancelled or done returns true
// after a pass. Pod dirs are removed beside the passes, one batch at a
// time, so that a pass never waits for the file system's removals; loop
// waits for the last batch before it returns.
func (m *Manager) loop(ctx context.Context, done func() bool) {
	timer := m.cfg.Clock.NewTimer(0)
	defer timer.Stop()
	var removals sync.WaitGroup
	defer removals.Wait()
	for {
		start := m.cfg.Clock.Now()
		m.mu.Lock()
		pending := m.reconcileLocked(ctx)
		nextWake := m.nextWake
		var orphans []types.UID
		if m.removing.Len() == 0 {
			orphans = m.takeOrphansLocked()
		}
		m.mu.Unlock()
		if len(orphans) > 0 {
			removals.Go(func() { m.removePodDirs(ctx, orphans) })
			pending = true
		}
		if m.cfg.Observer != nil {
			m.cfg.Observer.ObserveReconcile(m.cfg.Clock.Since(start))
		}
		m.mu.Lock()
		m.wakeWaitersLocked()
		m.mu.Unlock()
		if done != nil && done() {
			return
		}
		wait := m.cfg.ResyncPeriod
		if pending {
			wait = PendingWorkPeriod
		}
		if untilRetry := nextWake.Sub(m.cfg.Clock.Now()); !nextWake.IsZero() && untilRetry < wait {
			wait = untilRetry
		}
		if wait <= 0 {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		if !timer.Stop() {
			select {
			case <-timer.C():
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.trigger:
		case <-timer.C():
		}
	}
}

// wakeWaitersLocked makes waitFor check its condition again.
func (m *Manager) wakeWaitersLocked() {
	close(m.passDone)
	m.passDone = make(chan struct{})
}

// waitFor waits until cond, checked with m.mu held after every pass and
// every finished operation, is true, or ctx is done.
func (m *Manager) waitFor(ctx context.Context, cond func() bool) error {
	for {
		m.mu.Lock()
		ok := cond()
		passDone := m.passDone
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-passDone:
		}
	}
}

// TearDownAll makes every volume undesired, whatever the sources say, and
// waits until every volume is torn down and its pod directory removed, or
// ctx is done. Run must be running. Later source updates are kept but not
// acted on. The error of a ctx done first names every volume not torn down,
// with its pod and path.
func (m *Manager) TearDownAll(ctx context.Context) error {
	m.mu.Lock()
	m.tearDownAll = true
	m.mu.Unlock()
	m.Trigger()
	err := m.waitFor(ctx, func() bool { return len(m.volumes) == 0 && m.orphans.Len() == 0 && m.removing.Len() == 0 })
	if err != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		remaining := make([]string, 0, len(m.volumes))
		for _, rec := range m.volumes {
			pod := m.podNameLocked(rec.key.PodUID)
			if pod == "" {
				pod = "uid " + string(rec.key.PodUID)
			}
			remaining = append(remaining, fmt.Sprintf("%s volume %s at %s", pod, rec.podVolume, rec.path))
		}
		sort.Strings(remaining)
		return fmt.Errorf("failed to tear down every volume: %d remain (%s): %w", len(remaining), strings.Join(remaining, "; "), err)
	}
	return nil
}

// Ready reports whether every source has been read in full and every volume
// of that desired state has been tried at least once.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

// WaitForReady waits until Ready or ctx is done.
func (m *Manager) WaitForReady(ctx context.Context) error {
	return m.waitFor(ctx, func() bool { return m.ready })
}

// recordEventLocked appends an event, logs it, and hands it to OnEvent.
func (m *Manager) recordEventLocked(ev Event) {
	ev.Time = m.cfg.Clock.Now().UTC()
	// A ring: once full, the oldest event is overwritten.
	if len(m.events) < m.cfg.MaxEvents {
		m.events = append(m.events, ev)
	} else {
		m.events[m.eventsHead] = ev
		m.eventsHead = (m.eventsHead + 1) % len(m.events)
	}
	kv := []any{"reason", ev.Reason}
	if ev.PodUID != "" {
		kv = append(kv, "podUID", ev.PodUID)
	}
	if ev.Pod != "" {
		kv = append(kv, "pod", ev.Pod)
	}
	if ev.Volume != "" {
		kv = append(kv, "volume", ev.Volume)
	}
	if ev.Source != "" {
		kv = append(kv, "source", ev.Source)
	}
	kv = append(kv, "message", ev.Message)
	if ev.Type == EventWarning {
		klog.InfoS("Volume event (warning)", kv...)
	} else {
		klog.V(1).InfoS("Volume event", kv...)
	}
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(ev)
	}
}

// Events returns the events, oldest first.
func (m *Manager) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Event, 0, len(m.events))
	out = append(out, m.events[m.eventsHead:]...)
	return append(out, m.events[:m.eventsHead]...)
}

// podName returns "namespace/name" of uid, or "" when unknown.
func (m *Manager) podNameLocked(uid types.UID) string {
	if n, ok := m.podNames[uid]; ok {
		return n.String()
	}
	return ""
}

// prunePodNameLocked forgets the name of uid once nothing needs it: the pod
// is not desired, has no volume record, and its directory is not waiting
// for removal.
func (m *Manager) prunePodNameLocked(uid types.UID) {
	if _, desired := m.pods[uid]; desired || len(m.byPod[uid]) > 0 || m.orphans.Has(uid) || m.removing.Has(uid) {
		return
	}
	delete(m.podNames, uid)
}

// fsGroupOf returns the pod's fsGroup, or nil.
func fsGroupOf(pod *v1.Pod) *int64 {
	if pod.Spec.SecurityContext == nil {
		return nil
	}
	return pod.Spec.SecurityContext.FSGroup
}

// WaitForPod waits until the actual state has been rebuilt from disk and
// done, called with the status of the pod uid after every reconciler pass
// (and once at first), returns true, or ctx is done. known is false when the
// Manager knows nothing of the pod: it is not desired and has no volume.
// It returns the last status done was given. done is called with the
// Manager's lock held: it must not block or call the Manager.
func (m *Manager) WaitForPod(ctx context.Context, uid types.UID, done func(status PodStatus, known bool) bool) (PodStatus, bool, error) {
	var status PodStatus
	var known bool
	err := m.waitFor(ctx, func() bool {
		if !m.reconstructed {
			return false
		}
		_, desired := m.pods[uid]
		known = desired || len(m.byPod[uid]) > 0
		status = PodStatus{UID: uid}
		if known {
			status = m.podStatusLocked(uid)
		}
		return done(status, known)
	})
	return status, known, err
}

// Retry makes the failed operations of the pod uid's volumes run again at
// the next pass, whatever their backoff and even after a final error: a
// caller that asks again (the kubelet repeating a CSI call) gets a new
// attempt. Their state is pending until it starts. Volumes that did not
// fail are left alone.
func (m *Manager) Retry(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	retried := false
	for _, rec := range m.byPod[uid] {
		if rec.state != StateFailed || rec.running != "" {
			continue
		}
		rec.finalHash, rec.nextRetry = "", time.Time{}
		m.executor.ResetBackoff(rec.key, OperationSetUp)
		m.executor.ResetBackoff(rec.key, OperationTearDown)
		m.setStateLocked(rec, StatePending, "Retrying", "asked to try again after: "+rec.message)
		retried = true
	}
	if retried {
		m.Trigger()
	}
}

package volumemanager

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/hooks"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/util"
)

// actualState is what is known of a volume on the host.
type actualState int

const (
	// actualNone: nothing of the volume is on the host.
	actualNone actualState = iota
	// actualUncertain: the volume may be partly or fully set up (found on
	// disk after a restart, or a set-up that failed half-way). It must be
	// torn down if it is not desired, and set up again if it is.
	actualUncertain
	// actualReady: the volume was set up.
	actualReady
)

// volumeRecord is everything the Manager knows of one volume on disk: what
// is desired of it, what is on the host, and its operations.
type volumeRecord struct {
	key  VolumeKey
	path string
	// target is the path of a volume set up at a source's Target (then
	// also path), or "".
	target string
	// want is the desired volume, nil when no source wants it.
	want *desiredVolume
	// podVolume is the pod's name for the volume, kept after the pod goes.
	podVolume string
	// claimPending is the pod's volume whose claim stopped resolving while
	// this record, set up for it, keeps its previous want; nil otherwise.
	claimPending *desiredVolume

	actual actualState

	// running is the kind of the operation queued or running, or "".
	running   OperationKind
	lastKind  OperationKind
	lastErr   error
	lastClass volume.ErrorClass
	attempts  int
	nextRetry time.Time
	// finalHash is the spec hash of the last final set-up failure: the
	// volume is not set up again until its spec hashes differently.
	finalHash string
	// tried is true once an operation finished after the sources synced.
	tried bool

	state       VolumeState
	reason      string
	message     string
	since       time.Time
	lastAttempt time.Time
	readySince  time.Time

	usage        int64
	sizeExceeded bool
}

func (m *Manager) newRecordLocked(key VolumeKey, path string) *volumeRecord {
	rec := &volumeRecord{key: key, path: path, podVolume: key.Name, state: StatePending, since: m.cfg.Clock.Now().UTC()}
	m.volumes[key] = rec
	byPod := m.byPod[key.PodUID]
	if byPod == nil {
		byPod = map[VolumeKey]*volumeRecord{}
		m.byPod[key.PodUID] = byPod
	}
	byPod[key] = rec
	return rec
}

// deleteRecordLocked forgets a volume that is neither desired nor on the
// host. When it was its pod's last, an undesired pod's directory becomes a
// candidate for removal.
func (m *Manager) deleteRecordLocked(rec *volumeRecord) {
	delete(m.volumes, rec.key)
	uid := rec.key.PodUID
	delete(m.byPod[uid], rec.key)
	m.executor.Forget(rec.key)
	if m.oneShot != nil && !m.oneShot.reported[rec.key] {
		m.oneShot.reported[rec.key] = true
		m.oneShot.finished = append(m.oneShot.finished, m.resultLocked(rec, ResultTornDown))
	}
	if len(m.byPod[uid]) == 0 {
		delete(m.byPod, uid)
		if _, desired := m.pods[uid]; !desired || m.tearDownAll {
			m.orphans.Insert(uid)
		}
	}
	m.prunePodNameLocked(uid)
}

func (m *Manager) setStateLocked(rec *volumeRecord, state VolumeState, reason, message string) {
	if rec.state != state {
		rec.since = m.cfg.Clock.Now().UTC()
	}
	rec.state, rec.reason, rec.message = state, reason, message
}

// reconcileLocked runs one pass: it starts tear-downs of the volumes no
// longer desired, then set-ups of the desired volumes that are not ready. It
// returns whether work is pending.
func (m *Manager) reconcileLocked(ctx context.Context) bool {
	m.lastPass = m.cfg.Clock.Now().UTC()
	m.nextWake = time.Time{}
	m.updateSourcesSyncedLocked()
	pending := false
	for _, rec := range m.volumes {
		if rec.want != nil && !m.tearDownAll {
			continue
		}
		switch {
		case rec.running != "":
			pending = true
			if rec.running == OperationSetUp && rec.want == nil {
				// Its pod is gone: the set-up stops now, rather than at its
				// end or timeout, and the volume is torn down after it.
				m.executor.Cancel(rec.key, OperationSetUp, ErrNoLongerDesired)
			}
		case rec.actual == actualNone:
			m.deleteRecordLocked(rec)
		case m.holdTearDownLocked(rec.key.PodUID):
			m.setStateLocked(rec, StatePending, ReasonWaitingForSources,
				fmt.Sprintf("no source declares it; waiting for every source to load, at most %s, before tearing it down", m.cfg.SourceLoadTimeout))
			pending = true
		case m.exhaustedLocked(rec):
		default:
			pending = true
			m.startTearDownLocked(ctx, rec)
		}
	}
	if !m.tearDownAll {
		for uid, dp := range m.pods {
			if m.removing.Has(uid) {
				pending = true
				continue
			}
			for _, dv := range dp.volumes {
				if !dv.resolved() {
					continue
				}
				rec := m.volumes[dv.key]
				switch {
				case rec.running != "":
					pending = true
				case rec.actual == actualReady, rec.finalHash != "", m.exhaustedLocked(rec):
				default:
					pending = true
					m.startSetUpLocked(ctx, rec, dp.pod)
				}
			}
		}
	}
	m.updateReadyLocked()
	return pending
}

// exhaustedLocked reports whether a one-shot run gave up on rec.
func (m *Manager) exhaustedLocked(rec *volumeRecord) bool {
	return m.oneShot != nil && rec.attempts >= m.oneShot.maxAttempts
}

func (m *Manager) updateReadyLocked() {
	if m.ready || !m.sourcesSynced || !m.reconstructed {
		return
	}
	for _, rec := range m.volumes {
		if rec.want != nil && (rec.actual == actualReady || rec.finalHash != "" || rec.claimPending != nil) {
			// Kept while its claim does not resolve: it waits for the
			// manifests, as a pending claim does.
			continue
		}
		if !rec.tried {
			return
		}
	}
	m.ready = true
	klog.V(1).InfoS("Volume manager is ready", "volumes", len(m.volumes))
}

func (m *Manager) hookState(key VolumeKey, podVolume, path string, pod *v1.Pod) hooks.VolumeState {
	state := hooks.VolumeState{PodUID: key.PodUID, Volume: podVolume, Plugin: key.Plugin, Path: path}
	if pod != nil {
		state.PodNamespace, state.PodName, state.Annotations = pod.Namespace, pod.Name, pod.Annotations
	}
	return state
}

func (m *Manager) startSetUpLocked(ctx context.Context, rec *volumeRecord, pod *v1.Pod) {
	dv := rec.want
	if dv.target.Path != "" && rec.actual == actualNone {
		// Nothing is at the old target, if any: the volume may move.
		rec.target, rec.path = dv.target.Path, dv.target.Path
	}
	spec, podVolume, target := dv.spec, dv.name, rec.target
	var path string
	op := &Operation{
		Key:  rec.key,
		Kind: OperationSetUp,
		Run: func(ctx context.Context) error {
			var err error
			path, err = m.setUp(ctx, rec.key, podVolume, spec, pod, target)
			return err
		},
		Done: func(r OperationResult) { m.setUpDone(r, spec, path) },
	}
	m.startLocked(rec, op)
}

func (m *Manager) startTearDownLocked(ctx context.Context, rec *volumeRecord) {
	key, podVolume, path, target := rec.key, rec.podVolume, rec.path, rec.target
	var pod *v1.Pod
	if dp, ok := m.pods[key.PodUID]; ok {
		pod = dp.pod
	}
	op := &Operation{
		Key:  key,
		Kind: OperationTearDown,
		Run: func(ctx context.Context) error {
			return m.tearDown(ctx, key, target, m.hookState(key, podVolume, path, pod))
		},
		Done: m.tearDownDone,
	}
	m.startLocked(rec, op)
}

func (m *Manager) startLocked(rec *volumeRecord, op *Operation) {
	err := m.executor.Run(op)
	var backoff *BackoffError
	switch {
	case err == nil:
		rec.running = op.Kind
		rec.lastAttempt = m.cfg.Clock.Now().UTC()
		if op.Kind == OperationSetUp {
			m.setStateLocked(rec, StateSettingUp, "", "")
		} else {
			m.setStateLocked(rec, StateTearingDown, "", "")
		}
		if rec.lastKind == op.Kind && rec.attempts > 0 && m.cfg.Observer != nil {
			m.cfg.Observer.ObserveRetry(rec.key.Plugin, op.Kind)
		}
	case errors.As(err, &backoff):
		rec.nextRetry = backoff.NextRetry
		if m.nextWake.IsZero() || backoff.NextRetry.Before(m.nextWake) {
			m.nextWake = backoff.NextRetry
		}
	case errors.Is(err, ErrOperationPending), errors.Is(err, context.Canceled):
	default:
		klog.ErrorS(err, "Failed to start volume operation", "volume", rec.key.String(), "operation", op.Kind)
	}
}

// setUp builds the volume's Builder and sets it up, with the hooks around,
// at target when it is not empty (recorded on disk first, and made
// read-only when spec is), else at the Builder's path. It returns the
// volume's path.
func (m *Manager) setUp(ctx context.Context, key VolumeKey, podVolume string, spec *volume.Spec, pod *v1.Pod, target string) (string, error) {
	plugin, err := m.cfg.Plugins.FindPluginByName(key.Plugin)
	if err != nil {
		return "", err
	}
	builder, err := plugin.NewBuilder(spec, pod, volume.VolumeOptions{Context: ctx})
	if err != nil {
		return "", fmt.Errorf("failed to build volume %q: %w", podVolume, err)
	}
	path := builder.GetPath()
	if target != "" {
		path = target
		if err := m.writeTarget(key, target); err != nil {
			return path, err
		}
	}
	state := m.hookState(key, podVolume, path, pod)
	if err := m.runHook(ctx, hooks.PreSetUp, state); err != nil {
		return path, err
	}
	if target == "" {
		err = builder.SetUp(fsGroupOf(pod))
	} else {
		err = builder.SetUpAt(target, fsGroupOf(pod))
	}
	if err != nil {
		return path, err
	}
	if target != "" && spec.ReadOnly && !builder.GetAttributes().ReadOnly {
		if err := util.MakeReadOnly(m.cfg.Mounter, target); err != nil {
			return path, volume.NewUncertainError(err)
		}
	}
	m.runPostHook(ctx, hooks.PostSetUp, state)
	return path, nil
}

// tearDown builds the volume's Cleaner from disk and tears it down, with the
// hooks around, at target when it is not empty (then forgotten on disk),
// else at the Cleaner's path.
func (m *Manager) tearDown(ctx context.Context, key VolumeKey, target string, state hooks.VolumeState) error {
	plugin, err := m.cfg.Plugins.FindPluginByName(key.Plugin)
	if err != nil {
		return err
	}
	cleaner, err := plugin.NewCleaner(key.Name, key.PodUID)
	if err != nil {
		return fmt.Errorf("failed to build cleaner of volume %q: %w", key.Name, err)
	}
	if err := m.runHook(ctx, hooks.PreTearDown, state); err != nil {
		return err
	}
	if target == "" {
		err = cleaner.TearDown()
	} else if err = cleaner.TearDownAt(target); err == nil {
		err = m.removeTarget(key)
	}
	if err != nil {
		return err
	}
	m.runPostHook(ctx, hooks.PostTearDown, state)
	return nil
}

func (m *Manager) runHook(ctx context.Context, stage hooks.Stage, state hooks.VolumeState) error {
	if m.cfg.Hooks == nil {
		return nil
	}
	return m.cfg.Hooks.Run(ctx, stage, state)
}

// runPostHook runs a post-stage hook; its failure is an event and does not
// undo the operation.
func (m *Manager) runPostHook(ctx context.Context, stage hooks.Stage, state hooks.VolumeState) {
	if err := m.runHook(ctx, stage, state); err != nil {
		m.mu.Lock()
		m.recordEventLocked(Event{Type: EventWarning, Reason: string(stage) + "HookFailed", PodUID: state.PodUID,
			Pod: m.podNameLocked(state.PodUID), Volume: state.Volume, Message: err.Error()})
		m.mu.Unlock()
	}
}

func resultLabel(r OperationResult) string {
	switch {
	case r.Err == nil:
		return "success"
	case r.Cancelled:
		return "cancelled"
	}
	return r.Class.String()
}

// finishLocked records what every operation result says.
func (m *Manager) finishLocked(rec *volumeRecord, r OperationResult) {
	rec.running = ""
	rec.lastKind = r.Kind
	if m.sourcesSynced {
		rec.tried = true
	}
	if m.cfg.Observer != nil {
		m.cfg.Observer.ObserveOperation(r.Key.Plugin, r.Kind, resultLabel(r), r.Duration())
	}
	if r.Err == nil {
		rec.attempts, rec.lastErr, rec.nextRetry = 0, nil, time.Time{}
		return
	}
	if !r.Cancelled {
		rec.attempts, rec.lastErr, rec.lastClass, rec.nextRetry = r.Attempt, r.Err, r.Class, r.NextRetry
	}
}

func (m *Manager) setUpDone(r OperationResult, spec *volume.Spec, path string) {
	defer m.Trigger()
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.wakeWaitersLocked()
	rec := m.volumes[r.Key]
	if rec == nil {
		return
	}
	if path != "" {
		rec.path = path
	}
	m.finishLocked(rec, r)
	ev := Event{PodUID: r.Key.PodUID, Pod: m.podNameLocked(r.Key.PodUID), Volume: rec.podVolume}
	switch {
	case r.Err == nil:
		rec.actual, rec.finalHash = actualReady, ""
		rec.readySince = m.cfg.Clock.Now().UTC()
		m.setStateLocked(rec, StateReady, "", "")
		ev.Type, ev.Reason, ev.Message = EventNormal, ReasonSetUp, fmt.Sprintf("volume is ready at %s", rec.path)
	case r.Cancelled:
		if rec.actual == actualNone && m.leftOnDisk(rec) {
			rec.actual = actualUncertain
		}
		if errors.Is(r.Err, ErrNoLongerDesired) {
			m.setStateLocked(rec, StatePending, "Cancelled", "the set-up was cancelled because no source wants the volume any more")
		} else {
			m.setStateLocked(rec, StatePending, "Stopped", "the set-up was cancelled because the agent is stopping")
		}
		return
	default:
		if r.Class == volume.Final {
			rec.finalHash, rec.nextRetry = hashSpec(spec), time.Time{}
		}
		if r.Class == volume.Uncertain || rec.actual != actualNone || m.leftOnDisk(rec) {
			rec.actual = actualUncertain
		}
		m.setStateLocked(rec, StateFailed, ReasonSetUpFailed, r.Err.Error())
		ev.Type, ev.Reason = EventWarning, ReasonSetUpFailed
		ev.Message = fmt.Sprintf("attempt %d failed (%s): %v", r.Attempt, r.Class, r.Err)
	}
	m.recordEventLocked(ev)
}

func (m *Manager) tearDownDone(r OperationResult) {
	defer m.Trigger()
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.wakeWaitersLocked()
	rec := m.volumes[r.Key]
	if rec == nil {
		return
	}
	m.finishLocked(rec, r)
	ev := Event{PodUID: r.Key.PodUID, Pod: m.podNameLocked(r.Key.PodUID), Volume: rec.podVolume}
	switch {
	case r.Err == nil:
		rec.actual = actualNone
		m.executor.Forget(rec.key)
		ev.Type, ev.Reason, ev.Message = EventNormal, ReasonTornDown, fmt.Sprintf("volume at %s is torn down", rec.path)
		m.recordEventLocked(ev)
		if rec.want != nil && !m.tearDownAll {
			m.setStateLocked(rec, StatePending, "", "")
		} else {
			m.deleteRecordLocked(rec)
		}
	case r.Cancelled:
		m.setStateLocked(rec, StateTearingDown, "Stopped", "the tear-down was cancelled because the agent is stopping")
	default:
		m.setStateLocked(rec, StateFailed, ReasonTearDownFailed, r.Err.Error())
		ev.Type, ev.Reason = EventWarning, ReasonTearDownFailed
		ev.Message = fmt.Sprintf("attempt %d failed (%s): %v", r.Attempt, r.Class, r.Err)
		m.recordEventLocked(ev)
	}
}

// leftOnDisk reports whether a failed set-up left the volume's directory
// or its metadata behind, so that it must be torn down if the pod goes.
func (m *Manager) leftOnDisk(rec *volumeRecord) bool {
	for _, p := range []string{rec.path, m.cfg.Layout.VolumeMetadataDir(rec.key.PodUID, rec.key.Plugin, rec.key.Name), m.targetFile(rec.key)} {
		if _, err := os.Lstat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

// takeOrphansLocked returns the pods whose directories may now be removed,
// and marks them as being removed.
func (m *Manager) takeOrphansLocked() []types.UID {
	var out []types.UID
	for uid := range m.orphans {
		if m.holdTearDownLocked(uid) {
			continue
		}
		m.orphans.Delete(uid)
		if _, desired := m.pods[uid]; (desired && !m.tearDownAll) || len(m.byPod[uid]) > 0 {
			continue
		}
		out = append(out, uid)
		m.removing.Insert(uid)
	}
	return out
}

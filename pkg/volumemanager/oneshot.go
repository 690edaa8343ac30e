package volumemanager

import (
	"context"
	"errors"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// DefaultOneShotAttempts is how many times RunOnce tries a volume whose
// operation fails with a transient or uncertain error: with the default
// backoff the attempts are 0.5 s and 1 s apart, so a volume settles as
// failed about 1.5 s after its first failure.
const DefaultOneShotAttempts = 3

// OneShotMode is what RunOnce does.
type OneShotMode int

const (
	// OneShotSetUp sets up the volumes of the pods the sources declare, and
	// tears down the other volumes found on disk for those pods.
	OneShotSetUp OneShotMode = iota
	// OneShotTearDown tears down every volume of the pods in scope (those
	// the sources declare and those of Config.PodScope found on disk), and
	// removes their pod directories.
	OneShotTearDown
)

// Result states of a settled volume, as VolumeResult.State.
const (
	ResultReady    = "ready"
	ResultFailed   = "failed"
	ResultTornDown = "tornDown"
)

// OneShotOptions configure RunOnce.
type OneShotOptions struct {
	Mode OneShotMode
	// MaxAttempts bounds the attempts of an operation that keeps failing
	// with transient or uncertain errors; 0 means DefaultOneShotAttempts.
	// A final error settles a volume at once.
	MaxAttempts int
	// Report, when set, is called with each volume's result as soon as it
	// settles, from the goroutine that called RunOnce.
	Report func(VolumeResult)
}

// VolumeResult is how one volume settled in RunOnce. Its JSON form is the
// output of the setup and teardown commands.
type VolumeResult struct {
	PodUID types.UID `json:"podUID"`
	// Pod is "namespace/name"; empty for a pod found on disk that no
	// manifest names.
	Pod    string `json:"pod"`
	Volume string `json:"volume"`
	Plugin string `json:"plugin"`
	Path   string `json:"path"`
	// Ready is true for a volume that is set up.
	Ready bool `json:"ready"`
	// State is ResultReady, ResultFailed or ResultTornDown.
	State string `json:"state"`
	// Error is empty unless State is ResultFailed.
	Error string `json:"error"`
}

// Failed reports whether the volume failed.
func (r VolumeResult) Failed() bool { return r.State == ResultFailed }

type oneShotState struct {
	maxAttempts int
	// reported holds the volumes already reported, by key, and the
	// unresolved ones by pod UID and volume name.
	reported   map[VolumeKey]bool
	unresolved map[types.NamespacedName]bool
	// finished collects the volumes that left the actual state.
	finished []VolumeResult
}

// RunOnce is the one-shot form of Run, for the setup and teardown
// commands: it reconstructs the volumes of the pods in scope, takes the
// sources as read in full, and reconciles until every volume has settled:
// set up (ready), torn down, or failed (at once on a final error or an
// unbound claim, after opts.MaxAttempts attempts otherwise). It reports
// each volume as it settles and returns them all, in that order. It returns
// ctx's error when ctx is cancelled first; the operations in flight are then
// cancelled and their volumes left to a later run.
func (m *Manager) RunOnce(ctx context.Context, opts OneShotOptions) ([]VolumeResult, error) {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultOneShotAttempts
	}
	if err := m.Reconstruct(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.oneShot != nil {
		m.mu.Unlock()
		return nil, errors.New("RunOnce is already running")
	}
	m.oneShot = &oneShotState{maxAttempts: opts.MaxAttempts, reported: map[VolumeKey]bool{}, unresolved: map[types.NamespacedName]bool{}}
	m.sourcesSynced = true
	m.tearDownAll = opts.Mode == OneShotTearDown
	m.mu.Unlock()

	// The plugins stop after runCtx is cancelled (defers run in reverse).
	var plugins sync.WaitGroup
	defer plugins.Wait()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.runPlugins(runCtx, &plugins)
	m.executor.Start(runCtx)
	var results []VolumeResult
	settled := func() bool {
		m.mu.Lock()
		newly, all := m.settledLocked()
		m.mu.Unlock()
		for _, r := range newly {
			results = append(results, r)
			if opts.Report != nil {
				opts.Report(r)
			}
		}
		return all
	}
	m.loop(runCtx, settled)
	cancel()
	m.executor.Wait()
	return results, ctx.Err()
}

// settledLocked returns the volumes that settled since the last call, and
// whether every volume has settled.
func (m *Manager) settledLocked() ([]VolumeResult, bool) {
	st := m.oneShot
	newly := st.finished
	st.finished = nil
	all := m.orphans.Len() == 0 && m.removing.Len() == 0
	for uid, dp := range m.pods {
		if m.tearDownAll {
			break
		}
		for _, dv := range dp.volumes {
			if dv.resolved() {
				continue
			}
			name := types.NamespacedName{Namespace: string(uid), Name: dv.name}
			if !st.unresolved[name] {
				st.unresolved[name] = true
				r := VolumeResult{PodUID: uid, Pod: m.podNameLocked(uid), Volume: dv.name, State: ResultFailed}
				if dv.pending != nil {
					r.Error = dv.pending.Error()
				} else {
					r.Error = dv.failure.Error()
				}
				newly = append(newly, r)
			}
		}
	}
	for key, rec := range m.volumes {
		if st.reported[key] {
			continue
		}
		var r VolumeResult
		switch {
		case rec.running != "":
			all = false
			continue
		case rec.want != nil && !m.tearDownAll && rec.actual == actualReady:
			r = m.resultLocked(rec, ResultReady)
		case rec.finalHash != "" && !m.tearDownAll && rec.want != nil, rec.attempts >= st.maxAttempts:
			r = m.resultLocked(rec, ResultFailed)
		default:
			all = false
			continue
		}
		st.reported[key] = true
		newly = append(newly, r)
	}
	return newly, all
}

// resultLocked returns rec's result in state.
func (m *Manager) resultLocked(rec *volumeRecord, state string) VolumeResult {
	r := VolumeResult{
		PodUID: rec.key.PodUID,
		Pod:    m.podNameLocked(rec.key.PodUID),
		Volume: rec.podVolume,
		Plugin: rec.key.Plugin,
		Path:   rec.path,
		Ready:  state == ResultReady,
		State:  state,
	}
	if state == ResultFailed && rec.lastErr != nil {
		r.Error = rec.lastErr.Error()
	}
	return r
}

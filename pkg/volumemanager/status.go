package volumemanager

import (
	"sort"

	"k8s.io/apimachinery/pkg/types"
)

// Pods returns the status of every desired pod, ordered by namespace and
// name, followed by the pods that are no longer desired but still have
// volumes, ordered by UID.
func (m *Manager) Pods() []PodStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PodStatus, 0, len(m.pods)+len(m.byPod))
	for uid := range m.pods {
		out = append(out, m.podStatusLocked(uid))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].UID < out[j].UID
	})
	var gone []PodStatus
	for uid := range m.byPod {
		if _, desired := m.pods[uid]; !desired {
			gone = append(gone, m.podStatusLocked(uid))
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].UID < gone[j].UID })
	return append(out, gone...)
}

// Pod returns the status of the pod uid, and false when the Manager knows
// nothing of it.
func (m *Manager) Pod(uid types.UID) (PodStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, desired := m.pods[uid]
	if !desired && len(m.byPod[uid]) == 0 {
		return PodStatus{}, false
	}
	return m.podStatusLocked(uid), true
}

// Volumes returns the status of every volume, pod by pod as Pods orders
// them.
func (m *Manager) Volumes() []VolumeStatus {
	var out []VolumeStatus
	for _, pod := range m.Pods() {
		out = append(out, pod.Volumes...)
	}
	return out
}

// Summary counts pods and volumes by state and reports readiness. It is
// cheap: it builds no per-volume status.
func (m *Manager) Summary() Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Summary{
		Ready:         m.ready,
		SourcesSynced: m.sourcesSynced,
		Pods:          len(m.pods),
		Volumes:       map[VolumeState]int{},
		Sources:       len(m.sources),
		LastPass:      m.lastPass,
	}
	for _, src := range m.sources {
		if src.err != nil || len(src.conflicts) > 0 {
			s.SourceErrors = append(s.SourceErrors, sourceStatus(src))
		}
	}
	sort.Slice(s.SourceErrors, func(i, j int) bool { return s.SourceErrors[i].Name < s.SourceErrors[j].Name })
	for uid, dp := range m.pods {
		for _, dv := range dp.volumes {
			if !dv.resolved() && dv.kept == nil {
				s.Volumes[m.unresolvedStatus(uid, PodStatus{}, dv).State]++
			}
		}
	}
	for uid, recs := range m.byPod {
		if _, desired := m.pods[uid]; !desired {
			s.Pods++
		}
		for _, rec := range recs {
			s.Volumes[recordState(rec)]++
		}
	}
	return s
}

func (m *Manager) podStatusLocked(uid types.UID) PodStatus {
	ps := PodStatus{UID: uid}
	if name, ok := m.podNames[uid]; ok {
		ps.Namespace, ps.Name = name.Namespace, name.Name
	}
	dp, desired := m.pods[uid]
	listed := map[VolumeKey]bool{}
	if desired {
		ps.Source = dp.source
		for _, dv := range dp.volumes {
			if dv.kept != nil {
				listed[dv.kept.key] = true
				ps.Volumes = append(ps.Volumes, m.volumeStatusLocked(dv.kept))
				continue
			}
			if !dv.resolved() {
				ps.Volumes = append(ps.Volumes, m.unresolvedStatus(uid, ps, dv))
				continue
			}
			listed[dv.key] = true
			if rec := m.volumes[dv.key]; rec != nil {
				ps.Volumes = append(ps.Volumes, m.volumeStatusLocked(rec))
			}
		}
	}
	var rest []VolumeStatus
	for key, rec := range m.byPod[uid] {
		if !listed[key] {
			rest = append(rest, m.volumeStatusLocked(rec))
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].Volume < rest[j].Volume })
	ps.Volumes = append(ps.Volumes, rest...)
	if ps.Volumes == nil {
		ps.Volumes = []VolumeStatus{}
	}
	ps.State = podState(desired && !m.tearDownAll, ps.Volumes)
	return ps
}

func podState(desired bool, volumes []VolumeStatus) PodState {
	if !desired {
		return PodTearingDown
	}
	state := PodReady
	for _, vol := range volumes {
		switch {
		case vol.State == StateFailed && vol.Desired:
			return PodFailed
		case vol.State != StateReady && vol.Desired:
			state = PodPending
		}
	}
	return state
}

func (m *Manager) unresolvedStatus(uid types.UID, ps PodStatus, dv *desiredVolume) VolumeStatus {
	vs := VolumeStatus{PodUID: uid, PodNamespace: ps.Namespace, PodName: ps.Name, Volume: dv.name, Desired: true, Reason: dv.reason}
	switch {
	case dv.pending != nil:
		vs.State, vs.Message = StatePending, dv.pending.Error()
	case dv.reason == ReasonClaimUnsatisfiable:
		vs.State, vs.Message = StatePending, dv.failure.Error()
	default:
		vs.State, vs.LastError, vs.ErrorClass = StateFailed, dv.failure.Error(), "final"
		vs.Message = vs.LastError
	}
	return vs
}

// recordState is the state shown for rec: pending while its claim does not
// resolve, whatever is on the host.
func recordState(rec *volumeRecord) VolumeState {
	if rec.claimPending != nil && rec.running == "" {
		return StatePending
	}
	return rec.state
}

func (m *Manager) volumeStatusLocked(rec *volumeRecord) VolumeStatus {
	vs := VolumeStatus{
		PodUID:            rec.key.PodUID,
		Volume:            rec.podVolume,
		Plugin:            rec.key.Plugin,
		Path:              rec.path,
		Desired:           rec.want != nil && !m.tearDownAll,
		State:             rec.state,
		Reason:            rec.reason,
		Message:           rec.message,
		Attempts:          rec.attempts,
		NextRetry:         rec.nextRetry,
		Since:             rec.since,
		LastAttempt:       rec.lastAttempt,
		ReadySince:        rec.readySince,
		SizeLimitExceeded: rec.sizeExceeded,
		Usage:             rec.usage,
	}
	if name, ok := m.podNames[rec.key.PodUID]; ok {
		vs.PodNamespace, vs.PodName = name.Namespace, name.Name
	}
	if rec.want != nil && rec.want.spec != nil && rec.want.spec.PersistentVolume != nil {
		vs.PersistentVolume = rec.want.spec.PersistentVolume.Name
	}
	if rec.lastErr != nil {
		vs.LastError, vs.ErrorClass = rec.lastErr.Error(), rec.lastClass.String()
	}
	if rec.state == StateReady && rec.sizeExceeded {
		vs.Reason = ReasonSizeLimitExceeded
	}
	if dv := rec.claimPending; dv != nil && rec.running == "" {
		msg := dv.reason
		switch {
		case dv.pending != nil:
			msg = dv.pending.Error()
		case dv.failure != nil:
			msg = dv.failure.Error()
		}
		vs.State, vs.Reason = StatePending, dv.reason
		vs.Message = "kept as set up while its claim does not resolve: " + msg
	}
	return vs
}

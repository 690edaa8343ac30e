package volumemanager

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// verifyCheck is a ready volume to verify.
type verifyCheck struct {
	key      VolumeKey
	path     string
	spec     *volume.Spec
	verifier volume.VerifyingPlugin
}

// VerifyVolumes asks the plugin of every ready volume that can
// (volume.VerifyingPlugin) whether the volume is still set up. A volume its
// plugin can restore (a tmpfs unmounted behind the agent's back) is set up
// again, with a VolumeLost event; one it cannot is shown failed, with the
// same event, until a later check finds it whole again. Volumes with an
// operation queued or running are skipped.
func (m *Manager) VerifyVolumes(ctx context.Context) {
	m.mu.Lock()
	var checks []verifyCheck
	for key, rec := range m.volumes {
		if rec.actual != actualReady || rec.running != "" || rec.want == nil || m.tearDownAll {
			continue
		}
		plugin, err := m.cfg.Plugins.FindPluginByName(key.Plugin)
		if err != nil {
			continue
		}
		if verifier, ok := plugin.(volume.VerifyingPlugin); ok {
			checks = append(checks, verifyCheck{key: key, path: rec.path, spec: rec.want.spec, verifier: verifier})
		}
	}
	m.mu.Unlock()

	logger := klog.FromContext(ctx)
	for _, check := range checks {
		if ctx.Err() != nil {
			return
		}
		err := check.verifier.VerifyVolume(check.spec, check.key.PodUID, check.path)
		m.mu.Lock()
		rec := m.volumes[check.key]
		// The volume may have changed while it was verified.
		if rec == nil || rec.actual != actualReady || rec.running != "" || rec.want == nil || rec.path != check.path {
			m.mu.Unlock()
			continue
		}
		lost := rec.state == StateFailed && rec.reason == ReasonVolumeLost
		switch {
		case err == nil && lost:
			logger.Info("Volume is whole again", "volume", check.key.String(), "path", check.path)
			m.setStateLocked(rec, StateReady, "", "")
		case err == nil:
		case volume.ClassOf(err) == volume.Final:
			if !lost {
				m.setStateLocked(rec, StateFailed, ReasonVolumeLost, err.Error())
				m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonVolumeLost, PodUID: check.key.PodUID,
					Pod: m.podNameLocked(check.key.PodUID), Volume: rec.podVolume,
					Message: fmt.Sprintf("volume at %s is no longer set up and cannot be restored: %v", check.path, err)})
			}
		default:
			// Set it up again, as after a failed set-up: the reconciler
			// starts at once.
			rec.actual = actualUncertain
			m.setStateLocked(rec, StatePending, ReasonVolumeLost, err.Error())
			m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonVolumeLost, PodUID: check.key.PodUID,
				Pod: m.podNameLocked(check.key.PodUID), Volume: rec.podVolume,
				Message: fmt.Sprintf("volume at %s is no longer set up; setting it up again: %v", check.path, err)})
			m.Trigger()
		}
		m.mu.Unlock()
	}
}

// verifyLoop verifies the ready volumes every VerifyPeriod.
func (m *Manager) verifyLoop(ctx context.Context) {
	for sleep(ctx, m.cfg.Clock, m.cfg.VerifyPeriod) {
		m.VerifyVolumes(ctx)
	}
}

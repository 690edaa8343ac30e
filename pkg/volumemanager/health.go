package volumemanager

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// CheckPluginHealth runs the health check of every plugin that has one
// (volume.HealthCheckingPlugin), at once and each bounded by a timeout, and
// keeps the results for Plugins. A plugin that turns unusable is an event.
func (m *Manager) CheckPluginHealth(ctx context.Context) {
	var wg sync.WaitGroup
	for _, plugin := range m.cfg.Plugins.ListPlugins() {
		checker, ok := plugin.(volume.HealthCheckingPlugin)
		if !ok {
			continue
		}
		wg.Go(func() {
			checkCtx, cancel := context.WithTimeout(ctx, healthCheckTimeout)
			defer cancel()
			health := checker.CheckHealth(checkCtx)
			m.mu.Lock()
			defer m.mu.Unlock()
			previous, seen := m.health[plugin.Name()]
			m.health[plugin.Name()] = PluginStatus{
				Checked:   true,
				Usable:    health.Usable,
				Message:   health.Message,
				Details:   health.Details,
				CheckedAt: m.cfg.Clock.Now().UTC(),
			}
			if !health.Usable && (!seen || previous.Usable) {
				m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonPluginUnhealthy, Source: plugin.Name(),
					Message: "volume plugin " + plugin.Name() + " is not usable: " + health.Message})
			}
		})
	}
	wg.Wait()
}

// Plugins returns every loaded plugin with its access modes and its last
// health check, ordered by name.
func (m *Manager) Plugins() []PluginStatus {
	plugins := m.cfg.Plugins.ListPlugins()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PluginStatus, 0, len(plugins))
	for _, plugin := range plugins {
		st, ok := m.health[plugin.Name()]
		if !ok {
			st = PluginStatus{Usable: true}
		}
		st.Name = plugin.Name()
		if persistent, ok := plugin.(volume.PersistentVolumePlugin); ok {
			for _, mode := range persistent.GetAccessModes() {
				st.AccessModes = append(st.AccessModes, string(mode))
			}
		}
		out = append(out, st)
	}
	return out
}

// healthLoop checks the plugins' health now and every HealthCheckPeriod.
func (m *Manager) healthLoop(ctx context.Context) {
	logger := klog.FromContext(ctx)
	for {
		m.CheckPluginHealth(ctx)
		logger.V(4).Info("Checked volume plugin health")
		if !sleep(ctx, m.cfg.Clock, m.cfg.HealthCheckPeriod) {
			return
		}
	}
}

// sleep waits for d on clk and reports whether ctx is still live.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	timer := clk.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C():
		return true
	}
}

package volumemanager

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// CheckPlugins runs the health check of every plugin that has one
// (volume.HealthCheckingPlugin), at once and each bounded by a timeout, and
// returns the status of every loaded plugin, ordered by name, each followed
// by a row per driver of a volume.DriverHealthCheckingPlugin. A plugin
// without a check is taken as usable. now stamps the checks.
func CheckPlugins(ctx context.Context, plugins *volume.VolumePluginMgr, now func() time.Time) []PluginStatus {
	loaded := plugins.ListPlugins()
	rows := make([][]PluginStatus, len(loaded))
	var wg sync.WaitGroup
	for i, plugin := range loaded {
		rows[i] = []PluginStatus{uncheckedStatus(plugin)}
		checker, ok := plugin.(volume.HealthCheckingPlugin)
		if !ok {
			continue
		}
		wg.Go(func() {
			checkCtx, cancel := context.WithTimeout(ctx, healthCheckTimeout)
			defer cancel()
			checked := now().UTC()
			rows[i][0].setHealth(checker.CheckHealth(checkCtx), checked)
			if drivers, ok := plugin.(volume.DriverHealthCheckingPlugin); ok {
				for _, d := range drivers.DriverHealth() {
					row := PluginStatus{Name: plugin.Name(), Driver: d.Name}
					row.setHealth(d.Health, checked)
					rows[i] = append(rows[i], row)
				}
			}
		})
	}
	wg.Wait()
	var out []PluginStatus
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

func (st *PluginStatus) setHealth(health volume.Health, checked time.Time) {
	st.Checked = true
	st.Usable = health.Usable
	st.Message = health.Message
	st.Details = health.Details
	st.CheckedAt = checked
}

// key names a row: the plugin, or the plugin and one of its drivers.
func (st PluginStatus) key() string {
	if st.Driver == "" {
		return st.Name
	}
	return st.Name + " " + st.Driver
}

// uncheckedStatus is plugin's status before any health check: usable.
func uncheckedStatus(plugin volume.VolumePlugin) PluginStatus {
	st := PluginStatus{Name: plugin.Name(), Usable: true}
	if persistent, ok := plugin.(volume.PersistentVolumePlugin); ok {
		for _, mode := range persistent.GetAccessModes() {
			st.AccessModes = append(st.AccessModes, string(mode))
		}
	}
	return st
}

// CheckPluginHealth checks every plugin (CheckPlugins) and keeps the results
// for Plugins. A plugin that turns unusable is an event.
func (m *Manager) CheckPluginHealth(ctx context.Context) {
	statuses := CheckPlugins(ctx, m.cfg.Plugins, m.cfg.Clock.Now)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, status := range statuses {
		if !status.Checked {
			continue
		}
		previous, seen := m.health[status.key()]
		m.health[status.key()] = status
		if !status.Usable && (!seen || previous.Usable) {
			what := "volume plugin " + status.Name
			if status.Driver != "" {
				what += " driver " + status.Driver
			}
			m.recordEventLocked(Event{Type: EventWarning, Reason: ReasonPluginUnhealthy, Source: status.key(),
				Message: what + " is not usable: " + status.Message})
		}
	}
}

// Plugins returns every loaded plugin with its access modes and its last
// health check, ordered by name, each followed by a row per driver with what
// the plugin knows of it now.
func (m *Manager) Plugins() []PluginStatus {
	plugins := m.cfg.Plugins.ListPlugins()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PluginStatus, 0, len(plugins))
	for _, plugin := range plugins {
		st, ok := m.health[plugin.Name()]
		if !ok {
			st = uncheckedStatus(plugin)
		}
		out = append(out, st)
		if drivers, ok := plugin.(volume.DriverHealthCheckingPlugin); ok {
			// The drivers as the plugin knows them now: one that registered
			// since the last check shows at once.
			for _, d := range drivers.DriverHealth() {
				row := PluginStatus{Name: plugin.Name(), Driver: d.Name}
				row.setHealth(d.Health, time.Time{})
				out = append(out, row)
			}
		}
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

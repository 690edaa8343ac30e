package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

const metricsNamespace = "volume_agent"

// Metrics are the agent's Prometheus metrics. They implement
// volumemanager.Observer; the volumes-by-state gauge is read from the
// manager at each scrape (see WatchManager).
type Metrics struct {
	registry          *prometheus.Registry
	operationDuration *prometheus.HistogramVec
	retries           *prometheus.CounterVec
	reconcileDuration prometheus.Histogram
	sourceErrors      *prometheus.CounterVec
}

var _ volumemanager.Observer = &Metrics{}

// NewMetrics returns the metrics, registered in a registry of their own with
// the Go and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		operationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "operation_duration_seconds",
			Help:      "Duration of volume operations, by plugin, operation (setUp, tearDown) and result (success, transient, final, uncertain, cancelled).",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"plugin", "operation", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "operation_retries_total",
			Help:      "Volume operations started again after a failure, by plugin and operation.",
		}, []string{"plugin", "operation"}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "reconcile_duration_seconds",
			Help:      "Duration of reconciler passes.",
			Buckets:   prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "source_errors_total",
			Help:      "Errors reading a source of pods (a manifest file that fails to load), by source.",
		}, []string{"source"}),
	}
	m.registry.MustRegister(
		m.operationDuration, m.retries, m.reconcileDuration, m.sourceErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// WatchManager registers the gauge of volumes by state, read from manager at
// each scrape.
func (m *Metrics) WatchManager(manager *volumemanager.Manager) {
	m.registry.MustRegister(&volumeStateCollector{manager: manager})
}

// ObserveOperation implements volumemanager.Observer.
func (m *Metrics) ObserveOperation(plugin string, kind volumemanager.OperationKind, result string, duration time.Duration) {
	m.operationDuration.WithLabelValues(plugin, string(kind), result).Observe(duration.Seconds())
}

// ObserveRetry implements volumemanager.Observer.
func (m *Metrics) ObserveRetry(plugin string, kind volumemanager.OperationKind) {
	m.retries.WithLabelValues(plugin, string(kind)).Inc()
}

// ObserveReconcile implements volumemanager.Observer.
func (m *Metrics) ObserveReconcile(duration time.Duration) {
	m.reconcileDuration.Observe(duration.Seconds())
}

// ObserveSourceError implements volumemanager.Observer.
func (m *Metrics) ObserveSourceError(source string) {
	m.sourceErrors.WithLabelValues(source).Inc()
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

var volumesDesc = prometheus.NewDesc(metricsNamespace+"_volumes", "Volumes by state.", []string{"state"}, nil)

var allStates = []volumemanager.VolumeState{
	volumemanager.StatePending, volumemanager.StateSettingUp, volumemanager.StateReady,
	volumemanager.StateFailed, volumemanager.StateTearingDown,
}

type volumeStateCollector struct {
	manager *volumemanager.Manager
}

func (c *volumeStateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- volumesDesc }

func (c *volumeStateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.manager.Summary().Volumes
	for _, state := range allStates {
		ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(counts[state]), string(state))
	}
}

// MetricsAddress returns addr with the loopback address filled in when it
// names no host (":9090" becomes "127.0.0.1:9090"), so that metrics are not
// exposed beyond the node unless a host is given.
func MetricsAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("invalid metrics address %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// ListenMetrics listens on the TCP address addr (see MetricsAddress).
func ListenMetrics(addr string) (net.Listener, error) {
	addr, err := MetricsAddress(addr)
	if err != nil {
		return nil, err
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for metrics on %s: %w", addr, err)
	}
	return listener, nil
}

// ServeMetrics serves m at /metrics on listener until ctx is cancelled.
func ServeMetrics(ctx context.Context, listener net.Listener, m *Metrics) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return Serve(ctx, listener, mux)
}

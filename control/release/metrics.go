package release

import "github.com/prometheus/client_golang/prometheus"

// Triggers, the trigger label of the metrics and the logs.
const (
	TriggerOperator          = "operator"
	TriggerClientReplaced    = "client_replaced"
	TriggerClientMoved       = "client_moved"
	TriggerClientUnavailable = "client_unavailable"
)

// Metrics are the release counters; a prometheus.Collector. Safe for
// concurrent use.
type Metrics struct {
	released    *prometheus.CounterVec
	sent        *prometheus.CounterVec
	discarded   *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	unavailable prometheus.Gauge
}

// NewMetrics returns the counters, every label set at zero.
func NewMetrics() *Metrics {
	m := &Metrics{
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_release_total",
			Help: "Bindings the relay asked the server to release, by trigger and result (success, no_binding: released and cleared; refused, no_answer, error: kept until expiry).",
		}, []string{"trigger", "result"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_release_transmissions_total",
			Help: "RELEASE-REQUESTs (mode release-request) or Releases on a client's behalf (mode client-release) sent, retransmissions included.",
		}, []string{"mode"}),
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_release_replies_discarded_total",
			Help: "RELEASE-REQUEST-REPLYs discarded (draft section 3.2.2), by reason.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_release_triggers_dropped_total",
			Help: "Release triggers not acted on because the release queue was full, by trigger.",
		}, []string{"trigger"}),
		unavailable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pdrelay_release_watched_next_hops",
			Help: "Client next hops watched for unavailability (release.triggers.client_unavailable).",
		}),
	}
	for _, t := range []string{TriggerOperator, TriggerClientReplaced, TriggerClientMoved, TriggerClientUnavailable} {
		for _, r := range []string{"success", "no_binding", "refused", "no_answer", "error"} {
			m.released.WithLabelValues(t, r)
		}
		m.dropped.WithLabelValues(t)
	}
	for _, r := range []string{"type", "xid", "no_status", "malformed"} {
		m.discarded.WithLabelValues(r)
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.released.Describe(ch)
	m.sent.Describe(ch)
	m.discarded.Describe(ch)
	m.dropped.Describe(ch)
	m.unavailable.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.released.Collect(ch)
	m.sent.Collect(ch)
	m.discarded.Collect(ch)
	m.dropped.Collect(ch)
	m.unavailable.Collect(ch)
}

package leasequery

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descLastTime = prometheus.NewDesc("pdrelay_leasequery_last_timestamp_seconds",
		"When the last Bulk Leasequery run against the server began (Unix time); absent before the first.", []string{"server"}, nil)
	descLastDuration = prometheus.NewDesc("pdrelay_leasequery_last_duration_seconds",
		"How long the last Bulk Leasequery run against the server took, retries included.", []string{"server"}, nil)
	descLastReceived = prometheus.NewDesc("pdrelay_leasequery_last_bindings",
		"Prefixes the server returned in the last Bulk Leasequery run.", []string{"server"}, nil)
	descLastResult = prometheus.NewDesc("pdrelay_leasequery_last_result",
		"1 for the result of the last Bulk Leasequery run against the server (complete, partial, failed), 0 for the others.",
		[]string{"server", "result"}, nil)
	descRunning = prometheus.NewDesc("pdrelay_leasequery_running",
		"1 while a Bulk Leasequery run against the server is in progress.", []string{"server"}, nil)
	descRuns = prometheus.NewDesc("pdrelay_leasequery_runs_total",
		"Bulk Leasequery runs against the server, by result.", []string{"server", "result"}, nil)
	descBindings = prometheus.NewDesc("pdrelay_leasequery_bindings_total",
		"Prefixes the server returned and what became of them (received, added, updated, refused, expired), and bindings removed because a complete answer left them out (removed).",
		[]string{"server", "outcome"}, nil)
	descDropped = prometheus.NewDesc("pdrelay_leasequery_discarded_total",
		"Client data from the server that yielded no binding, by reason.", []string{"server", "reason"}, nil)
	descStatuses = prometheus.NewDesc("pdrelay_leasequery_status_total",
		"Error statuses the server answered a query with, by name.", []string{"server", "status"}, nil)
	descConnFails = prometheus.NewDesc("pdrelay_leasequery_connection_failures_total",
		"Bulk Leasequery connections that failed (connect, timeout, closed early, protocol error).", []string{"server"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Requestor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastTime, descLastDuration, descLastReceived, descLastResult,
		descRunning, descRuns, descBindings, descDropped, descStatuses, descConnFails} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the servers' status, read at
// scrape time.
func (r *Requestor) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, s := range r.order {
		st, name := r.status[s], s.String()
		running := 0.0
		if st.running {
			running = 1
		}
		gauge(descRunning, running, name)
		if l := st.last; l != nil {
			gauge(descLastTime, float64(l.Started.UnixNano())/1e9, name)
			gauge(descLastDuration, l.DurationSeconds, name)
			gauge(descLastReceived, float64(l.Received), name)
			for _, res := range Results {
				v := 0.0
				if l.Result == res {
					v = 1
				}
				gauge(descLastResult, v, name, res)
			}
		}
		for _, res := range Results {
			counter(descRuns, float64(st.runs[res]), name, res)
		}
		t := st.totals
		for _, o := range []struct {
			name string
			v    int
		}{{"received", t.Received}, {"added", t.Added}, {"updated", t.Updated}, {"refused", t.Refused},
			{"expired", t.Expired}, {"removed", t.Removed}} {
			counter(descBindings, float64(o.v), name, o.name)
		}
		for _, reason := range DropReasons {
			counter(descDropped, float64(st.dropped[reason]), name, reason)
		}
		for status, n := range st.statuses {
			counter(descStatuses, float64(n), name, status)
		}
		counter(descConnFails, float64(st.connFails), name)
	}
}

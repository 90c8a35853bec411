// Package metrics exports pdrelay's control-plane counters to Prometheus:
// messages relayed by type and direction, drops by reason, snooping
// events, bindings per port, binding changes and limit hits.
//
// Counters that live elsewhere (the relay engine's atomics) are read at
// scrape time by a Collector, so the relay path pays nothing for them. All
// types here are safe for concurrent use.
//
// Ports may come and go with a config reload: AddPorts makes a new port's
// series, and a removed port's series stay until the relay restarts (its
// bindings stay until they expire, and its bindings gauge follows them;
// its counters stay as they were).
package metrics

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/relay"
	"github.com/pdrelay/pdrelay/internal/version"
)

// Metrics is the relay's registry.
type Metrics struct {
	Registry  *prometheus.Registry
	bindings  *prometheus.GaugeVec
	changes   *prometheus.CounterVec
	limitHits *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	installs  prometheus.Histogram

	ports   []string
	mu      sync.Mutex
	perPort map[string]int
}

// New returns a registry reading the engine's counters at scrape time.
func New(eng *relay.Counters, ports []string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		bindings: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdrelay_bindings", Help: "Active delegated-prefix bindings per downlink port.",
		}, []string{"interface"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_binding_changes_total", Help: "Binding changes by operation and removal reason.",
		}, []string{"op", "reason"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_limit_hits_total", Help: "Bindings refused by a limit (max_per_client, max_delegations, unique_client).",
		}, []string{"interface", "limit"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdrelay_binding_refusals_total",
			Help: "Delegations not installed because the policy refused them (delegated_lengths, delegated_pools, reserved space, the relay's own prefixes, nesting with another client's binding), by port and reason.",
		}, []string{"interface", "reason"}),
		installs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pdrelay_binding_install_seconds",
			Help:    "Time from a server's Reply reaching the relay to the new binding it delegated being in the dataplane (the FIB; in kernel mode also the kernel's route and nftables sets).",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}),
		perPort: make(map[string]int),
	}
	m.AddPorts(ports...)
	info := version.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pdrelay_build_info", Help: "Always 1: the running pdrelay's version, commit and Go version as labels.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(info.Version, info.Commit, info.Go).Set(1)
	m.Registry.MustRegister(build, m.bindings, m.changes, m.limitHits, m.refusals, m.installs,
		&engineCollector{c: eng},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// AddPorts makes the per-port series of ports that have none yet (at
// zero, or the port's binding count the Sink has kept), for a port added
// at run time (a config reload). A port removed from the config keeps its
// series: its bindings stay until they expire or are cleared, and the
// gauge follows them; its counters stay as they were.
func (m *Metrics) AddPorts(ports ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ports {
		if slices.Contains(m.ports, p) {
			continue
		}
		m.ports = append(m.ports, p)
		m.bindings.WithLabelValues(p).Set(float64(m.perPort[p]))
		for _, l := range []string{binding.LimitMaxPerClient, binding.LimitMaxDelegations, binding.LimitUniqueClient} {
			m.limitHits.WithLabelValues(p, l)
		}
		for _, r := range binding.RefuseReasons {
			m.refusals.WithLabelValues(p, r)
		}
	}
}

// Sink is a binding.Sink keeping the per-port gauges and change counters.
func (m *Metrics) Sink(changes []binding.Change) {
	m.mu.Lock()
	defer m.mu.Unlock()
	touched := map[string]bool{}
	for _, c := range changes {
		switch c.Op {
		case binding.Added:
			m.perPort[c.Binding.Port]++
		case binding.Removed:
			m.perPort[c.Binding.Port]--
		}
		touched[c.Binding.Port] = true
		m.changes.WithLabelValues(c.Op.String(), c.Reason).Inc()
	}
	for p := range touched {
		m.bindings.WithLabelValues(p).Set(float64(m.perPort[p]))
	}
}

// Installed observes one binding's Reply-to-dataplane time; it fits
// binding.Manager.OnInstalled.
func (m *Metrics) Installed(d time.Duration) { m.installs.Observe(d.Seconds()) }

// Load sets the per-port gauges of the configured ports from count (the
// binding table's PortCount after a restore).
func (m *Metrics) Load(count func(port string) int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.ports {
		m.perPort[p] = count(p)
		m.bindings.WithLabelValues(p).Set(float64(m.perPort[p]))
	}
}

// Refused counts a binding refused by a limit or by the delegation
// policy; it fits binding.Manager.OnRefused.
func (m *Metrics) Refused(port string, err error) {
	var re *binding.RefusedError
	if errors.As(err, &re) {
		m.refusals.WithLabelValues(port, re.Reason).Inc()
		return
	}
	limit := "other"
	switch {
	case errors.Is(err, binding.ErrClientLimit):
		limit = binding.LimitMaxPerClient
	case errors.Is(err, binding.ErrPortLimit):
		limit = binding.LimitMaxDelegations
	case errors.Is(err, binding.ErrDuplicateDUID):
		limit = binding.LimitUniqueClient
	}
	m.limitHits.WithLabelValues(port, limit).Inc()
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

var (
	descMsgs      = prometheus.NewDesc("pdrelay_dhcp_messages_total", "DHCPv6 messages relayed, by direction (up: to servers, down: to clients) and message type.", []string{"direction", "type"}, nil)
	descDrops     = prometheus.NewDesc("pdrelay_dhcp_drops_total", "DHCPv6 messages not relayed, by reason.", []string{"reason"}, nil)
	descSnoop     = prometheus.NewDesc("pdrelay_snoop_events_total", "Reply-snooping events (the messages were relayed).", []string{"event"}, nil)
	descPortDrops = prometheus.NewDesc("pdrelay_dhcp_client_drops_total",
		"Client messages not relayed, by downlink and reason (also counted in pdrelay_dhcp_drops_total).", []string{"interface", "reason"}, nil)
	descPending      = prometheus.NewDesc("pdrelay_pending_requests", "Client requests recorded and awaiting their Reply.", nil, nil)
	descPendingBytes = prometheus.NewDesc("pdrelay_pending_bytes", "Bytes the pending requests are accounted to hold (bounded).", nil, nil)
)

// engineCollector reads the engine's counters at scrape time. The
// per-port drops are those of every port the engine has had, so a port
// removed at run time keeps its series (frozen) until the relay restarts.
type engineCollector struct {
	c *relay.Counters
}

func (e *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMsgs
	ch <- descDrops
	ch <- descSnoop
	ch <- descPortDrops
	ch <- descPending
	ch <- descPendingBytes
}

func (e *engineCollector) Collect(ch chan<- prometheus.Metric) {
	e.c.EachMessage(func(d relay.Direction, t dhcp6Type, n uint64) {
		ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(n), d.String(), t.String())
	})
	e.c.EachDrop(func(r relay.Drop, n uint64) {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), r.String())
	})
	e.c.EachSnoop(func(s relay.SnoopEvent, n uint64) {
		ch <- prometheus.MustNewConstMetric(descSnoop, prometheus.CounterValue, float64(n), s.String())
	})
	e.c.EachPortDropByName(func(port string, r relay.Drop, n uint64) {
		ch <- prometheus.MustNewConstMetric(descPortDrops, prometheus.CounterValue, float64(n), port, r.String())
	})
	n, b := e.c.Pending()
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(descPendingBytes, prometheus.GaugeValue, float64(b))
}

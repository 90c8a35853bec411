package bgp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The Speaker's metrics. Per-session series carry the peer's address.
var (
	descSessionUp = prometheus.NewDesc("pdrelay_bgp_session_up",
		"1 while the BGP session to the peer is established, else 0.", []string{"peer"}, nil)
	descSessionUptime = prometheus.NewDesc("pdrelay_bgp_session_uptime_seconds",
		"Seconds since the BGP session to the peer came up; 0 while it is down.", []string{"peer"}, nil)
	descSessionFlaps = prometheus.NewDesc("pdrelay_bgp_session_flaps_total",
		"Times the BGP session to the peer went down after being established.", []string{"peer"}, nil)
	descPrefixesAdvertised = prometheus.NewDesc("pdrelay_bgp_prefixes_advertised",
		"Prefixes the BGP session carries to the peer (its Adj-RIB-Out).", []string{"peer"}, nil)
	descPrefixesReceived = prometheus.NewDesc("pdrelay_bgp_prefixes_received",
		"Prefixes the peer sent over the BGP session (pdrelay uses none).", []string{"peer"}, nil)
	descUpdatesSent = prometheus.NewDesc("pdrelay_bgp_updates_sent_total",
		"BGP UPDATE messages sent to the peer.", []string{"peer"}, nil)
	descUpdatesReceived = prometheus.NewDesc("pdrelay_bgp_updates_received_total",
		"BGP UPDATE messages received from the peer.", []string{"peer"}, nil)
	descAnnounced = prometheus.NewDesc("pdrelay_bgp_prefixes_announced",
		"Prefixes in the speaker's table: the delegated ones and the aggregates.", nil, nil)
	descDelegated = prometheus.NewDesc("pdrelay_bgp_delegated_prefixes",
		"Delegated prefixes in the speaker's table.", nil, nil)
	descPending = prometheus.NewDesc("pdrelay_bgp_pending_changes",
		"Binding changes recorded and not yet applied to the BGP table.", nil, nil)
	descChanges = prometheus.NewDesc("pdrelay_bgp_changes_total",
		"Prefixes handed to the BGP table, by operation (announce, withdraw).", []string{"op"}, nil)
	descErrors = prometheus.NewDesc("pdrelay_bgp_errors_total",
		"Announcements or withdrawals the BGP table refused (logged).", nil, nil)
	descRestarts = prometheus.NewDesc("pdrelay_bgp_server_starts_total",
		"Starts of the BGP server: 1, plus one per reload that changed asn, router_id or listen_port.", nil, nil)
)

// collectTimeout bounds one scrape's wait for GoBGP.
const collectTimeout = 5 * time.Second

// Describe and Collect make the Speaker a Prometheus collector.
func (s *Speaker) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessionUp, descSessionUptime, descSessionFlaps,
		descPrefixesAdvertised, descPrefixesReceived, descUpdatesSent, descUpdatesReceived,
		descAnnounced, descDelegated, descPending, descChanges, descErrors, descRestarts} {
		ch <- d
	}
}

func (s *Speaker) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descAnnounced, float64(s.stats.announced.Load()))
	gauge(descDelegated, float64(s.stats.delegated.Load()))
	gauge(descPending, float64(s.stats.pending.Load()))
	counter(descChanges, float64(s.stats.announces.Load()), "announce")
	counter(descChanges, float64(s.stats.withdraws.Load()), "withdraw")
	counter(descErrors, float64(s.stats.applyErrs.Load()))
	counter(descRestarts, float64(s.stats.restarts.Load()))

	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		s.log.Debug("bgp metrics", "err", err)
		return
	}
	now := time.Now()
	for _, se := range st.Sessions {
		peer := se.Peer.String()
		up, uptime := 0.0, 0.0
		if se.Established() {
			up = 1
			if !se.Since.IsZero() {
				uptime = max(now.Sub(se.Since).Seconds(), 0)
			}
		}
		gauge(descSessionUp, up, peer)
		gauge(descSessionUptime, uptime, peer)
		counter(descSessionFlaps, float64(se.Flaps), peer)
		gauge(descPrefixesAdvertised, float64(se.PrefixesSent), peer)
		gauge(descPrefixesReceived, float64(se.PrefixesReceived), peer)
		counter(descUpdatesSent, float64(se.UpdatesSent), peer)
		counter(descUpdatesReceived, float64(se.UpdatesReceived), peer)
	}
}

package daemon

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/dataplane/plane"
	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// fakeCounters stands in for the plane's kernel counters.
type fakeCounters struct {
	sockets  []plane.SocketStats
	programs []plane.ProgramStats
}

func (f fakeCounters) SocketStats() []plane.SocketStats   { return f.sockets }
func (f fakeCounters) ProgramStats() []plane.ProgramStats { return f.programs }

// TestPlaneCounters: the XDP programs' verdict counters and the sockets'
// XDP_STATISTICS reach /metrics (every verdict and reason, by interface
// and queue) and pdrelay stats (only the losses, non-zero, summed over a
// port's queues, as xdp_<verdict> and xsk_<reason>), each lost frame
// once: a copy-mode socket's rx_dropped leaves out its fill_ring_empty.
func TestPlaneCounters(t *testing.T) {
	fwd, err := dataplane.New(dataplane.Config{Ports: []dataplane.PortConfig{
		{ID: 0, Uplink: true, MAC: [6]byte{2, 0, 0, 0, 0, 1}},
		{ID: 1, MAC: [6]byte{2, 0, 0, 0, 0, 2}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarding{fwd: fwd, names: map[fib.PortID]string{0: "up0", 1: "dl0"}, counters: fakeCounters{
		programs: []plane.ProgramStats{
			{Port: "up0", ProgramStats: xsk.ProgramStats{Redirected: 100, Passed: 7, NoSocket: 3, Aborted: 0}},
			{Port: "dl0", ProgramStats: xsk.ProgramStats{Redirected: 50, Passed: 2, NoSocket: 0, Aborted: 4}},
		},
		sockets: []plane.SocketStats{
			// Copy mode: 1 frame lost to an empty fill ring (the kernel
			// counts it in rx_dropped too) and 2 too long for a frame.
			{Port: "up0", Queue: 0, Stats: xsk.Stats{RxRingFull: 5, RxFillRingEmpty: 1, RxDropped: 3}},
			{Port: "up0", Queue: 1, Stats: xsk.Stats{RxRingFull: 6}},
			// Zero-copy: rx_dropped is the kernel's as it is.
			{Port: "dl0", Queue: 0, ZeroCopy: true, Stats: xsk.Stats{TxInvalidDescs: 9, RxFillRingEmpty: 4, RxDropped: 7, TxDropped: 12}},
		},
	}}

	want := `
# HELP pdrelay_xdp_program_total Frames each port's XDP program saw, by verdict: redirect (to the AF_XDP socket of its queue), pass (to the kernel by a rule), no_socket (to the kernel because its queue had no socket: the plane never saw it), aborted (lost in the redirect).
# TYPE pdrelay_xdp_program_total counter
pdrelay_xdp_program_total{interface="dl0",verdict="aborted"} 4
pdrelay_xdp_program_total{interface="dl0",verdict="no_socket"} 0
pdrelay_xdp_program_total{interface="dl0",verdict="pass"} 2
pdrelay_xdp_program_total{interface="dl0",verdict="redirect"} 50
pdrelay_xdp_program_total{interface="up0",verdict="aborted"} 0
pdrelay_xdp_program_total{interface="up0",verdict="no_socket"} 3
pdrelay_xdp_program_total{interface="up0",verdict="pass"} 7
pdrelay_xdp_program_total{interface="up0",verdict="redirect"} 100
`
	if err := testutil.CollectAndCompare(f, strings.NewReader(want), "pdrelay_xdp_program_total"); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(f); err != nil {
		t.Fatalf("register: %v", err)
	}
	for _, m := range []struct {
		labels string
		n      float64
	}{
		{`interface="up0",queue="0",reason="rx_ring_full"`, 5},
		{`interface="up0",queue="1",reason="rx_ring_full"`, 6},
		{`interface="up0",queue="0",reason="fill_ring_empty"`, 1},
		{`interface="dl0",queue="0",reason="tx_invalid_descs"`, 9},
		{`interface="up0",queue="0",reason="rx_dropped"`, 2},
		{`interface="dl0",queue="0",reason="rx_dropped"`, 7},
		{`interface="dl0",queue="0",reason="fill_ring_empty"`, 4},
		{`interface="dl0",queue="0",reason="tx_dropped"`, 12},
		{`interface="up0",queue="1",reason="tx_dropped"`, 0},
	} {
		line := "pdrelay_xsk_drops_total{" + m.labels + "} " + strconv.FormatFloat(m.n, 'g', -1, 64) + "\n"
		if out := gather(t, reg); !strings.Contains(out, line) {
			t.Errorf("no %q in\n%s", line, out)
		}
	}

	got := map[string]map[string]uint64{}
	for _, p := range f.stats() {
		got[p.Interface] = p.Packets
	}
	for _, c := range []struct {
		port, reason string
		n            uint64 // 0: must be absent
	}{
		{"up0", "xdp_no_socket", 3},
		{"up0", "xdp_aborted", 0},
		{"up0", "xdp_redirect", 0}, // not a loss
		{"up0", "xdp_pass", 0},     // not a loss
		{"up0", "xsk_rx_ring_full", 11},
		{"up0", "xsk_fill_ring_empty", 1},
		{"dl0", "xdp_aborted", 4},
		{"dl0", "xdp_no_socket", 0},
		{"dl0", "xsk_tx_invalid_descs", 9},
		{"up0", "xsk_rx_dropped", 2},
		{"dl0", "xsk_rx_dropped", 7},
		{"dl0", "xsk_tx_dropped", 12},
		{"up0", "xsk_tx_dropped", 0},
		{"dl0", "xsk_rx_ring_full", 0},
	} {
		n, ok := got[c.port][c.reason]
		if c.n == 0 && ok {
			t.Errorf("stats: %s has %s = %d, want none", c.port, c.reason, n)
		}
		if c.n != 0 && n != c.n {
			t.Errorf("stats: %s %s = %d, want %d", c.port, c.reason, n, c.n)
		}
	}
}

// gather renders reg in the text format.
func gather(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString(mf.GetName() + "{")
			for i, l := range m.GetLabel() {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(l.GetName() + "=\"" + l.GetValue() + "\"")
			}
			b.WriteString("} " + strconv.FormatFloat(m.GetCounter().GetValue(), 'g', -1, 64) + "\n")
		}
	}
	return b.String()
}

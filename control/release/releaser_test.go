package release

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// fakeServer answers RELEASE-REQUESTs on loopback with what answer says
// (nothing, one or several datagrams) and records what it received.
type fakeServer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	at   []time.Time
}

func newFakeServer(t *testing.T, answer func(n int, req []byte) [][]byte) *fakeServer {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	s := &fakeServer{conn: c}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			req := bytes.Clone(buf[:n])
			s.mu.Lock()
			s.got = append(s.got, req)
			s.at = append(s.at, time.Now())
			k := len(s.got)
			s.mu.Unlock()
			for _, a := range answer(k, req) {
				c.WriteToUDP(a, from)
			}
		}
	}()
	return s
}

func (s *fakeServer) addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (s *fakeServer) received() ([][]byte, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.got...), append([]time.Time(nil), s.at...)
}

// testManager runs a binding manager holding bs.
func testManager(t *testing.T, bs ...binding.Binding) *binding.Manager {
	t.Helper()
	tb := binding.NewTable(binding.PortLimits{}, nil)
	now := time.Now()
	for _, b := range bs {
		if _, err := tb.Learn(now, binding.Learned{Key: b.Key, NextHop: b.NextHop, MAC: b.MAC, MACKnown: true,
			Preferred: time.Hour, Valid: time.Hour, ServerDUID: b.ServerDUID}); err != nil {
			t.Fatal(err)
		}
	}
	tb.TakeChanges()
	m := binding.NewManager(tb, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

func keysOf(t *testing.T, m *binding.Manager) map[binding.Key]bool {
	t.Helper()
	bs, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[binding.Key]bool{}
	for _, b := range bs {
		out[b.Key] = true
	}
	return out
}

func requestReleaser(t *testing.T, srv netip.AddrPort, tbl Table, irt time.Duration, mrc int) (*Releaser, *Metrics) {
	t.Helper()
	met := NewMetrics()
	r, err := New(context.Background(), Config{
		Mode: config.ReleaseRequest, Timeout: irt, MaxRC: mrc, Operator: true,
		RequestType: 250, ReplyType: 251, Server: srv, RelayID: relayDUID,
	}, tbl, met, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.rnd = func() float64 { return 0 }
	t.Cleanup(func() { r.Close() })
	return r, met
}

// answerWith makes a RELEASE-REQUEST-REPLY to req holding opts.
func answerWith(req []byte, typ byte, opts ...[]byte) []byte {
	return replyBytes(typ, xidOf(req), opts...)
}

// TestRequestRetransmits: unanswered transmissions are repeated with the
// same bytes (same transaction id) after IRT, then 2*IRT; the answer to
// the third releases and clears the bindings.
func TestRequestRetransmits(t *testing.T) {
	a := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	b := bnd("eth1", clientB, 1, "2001:db8:2::/56")
	mgr := testManager(t, a, b)
	srv := newFakeServer(t, func(n int, req []byte) [][]byte {
		if n < 3 {
			return nil
		}
		return [][]byte{answerWith(req, 251, status(0))}
	})
	const irt = 50 * time.Millisecond
	r, met := requestReleaser(t, srv.addr(), mgr, irt, 4)
	res, err := r.Release(context.Background(), []binding.Binding{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res {
		if !x.Released() {
			t.Errorf("%v not released: %s", x.Binding.Key, x.Reason())
		}
	}
	got, at := srv.received()
	if len(got) != 3 {
		t.Fatalf("%d transmissions, want 3", len(got))
	}
	if !bytes.Equal(got[0], got[1]) || !bytes.Equal(got[1], got[2]) {
		t.Errorf("retransmissions differ:\n%x\n%x\n%x", got[0], got[1], got[2])
	}
	// The schedule itself is TestSchedule's; here the waits are seen
	// from the server, whose receive times can be a few milliseconds off
	// the sender's timers either way: spaced by IRT, then about twice it.
	d1, d2 := at[1].Sub(at[0]), at[2].Sub(at[1])
	if d1 < irt*8/10 {
		t.Errorf("second transmission %v after the first, want about IRT %v", d1, irt)
	}
	if d2 < 2*irt*8/10 || d2 < d1 {
		t.Errorf("third transmission %v after the second (the second %v after the first), want about 2*IRT", d2, d1)
	}
	if k := keysOf(t, mgr); len(k) != 0 {
		t.Errorf("released bindings still in the table: %v", k)
	}
	if n := counterValue(met.released.WithLabelValues(TriggerOperator, "success")); n != 2 {
		t.Errorf("pdrelay_release_total{operator,success} = %v, want 2", n)
	}
	if n := counterValue(met.sent.WithLabelValues("release-request")); n != 3 {
		t.Errorf("transmissions counted %v, want 3", n)
	}
}

// TestRequestNoAnswer: MRC transmissions, then the bindings are kept.
func TestRequestNoAnswer(t *testing.T) {
	a := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	mgr := testManager(t, a)
	srv := newFakeServer(t, func(int, []byte) [][]byte { return nil })
	r, met := requestReleaser(t, srv.addr(), mgr, 20*time.Millisecond, 3)
	start := time.Now()
	res, err := r.Release(context.Background(), []binding.Binding{a})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Released() || res[0].Reason() != "no answer" {
		t.Errorf("results %+v, want one kept for no answer", res)
	}
	if d := time.Since(start); d < 140*time.Millisecond {
		t.Errorf("gave up after %v, want the whole schedule 20+40+80 ms", d)
	}
	if got, _ := srv.received(); len(got) != 3 {
		t.Errorf("%d transmissions, want MRC 3", len(got))
	}
	if !keysOf(t, mgr)[a.Key] {
		t.Error("unreleased binding cleared")
	}
	if n := counterValue(met.released.WithLabelValues(TriggerOperator, "no_answer")); n != 1 {
		t.Errorf("no_answer counted %v", n)
	}
}

// TestRequestDiscardsAndStatuses: answers with another transaction id,
// another type or no status are discarded and counted; the valid one's
// statuses decide binding by binding: NoBinding is done, UnspecFail kept.
func TestRequestDiscardsAndStatuses(t *testing.T) {
	a := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	b := bnd("eth1", clientB, 1, "2001:db8:2::/56")
	c := bnd("eth1", clientB, 2, "2001:db8:3::/56")
	mgr := testManager(t, a, b, c)
	srv := newFakeServer(t, func(n int, req []byte) [][]byte {
		other := xidOf(req)
		other[2]++
		return [][]byte{
			replyBytes(251, other, status(0)),      // another transaction
			answerWith(req, 7, status(0)),          // a Reply, not the configured type
			answerWith(req, 251),                   // no status
			answerWith(req, 251, []byte{0, 13, 0}), // malformed
			answerWith(req, 251, status(0),
				clientData(clientA, status(dhcp6.StatusNoBinding)),
				clientData(clientB, iaprefix("2001:db8:2::/56", status(dhcp6.StatusUnspecFail)))),
		}
	})
	r, met := requestReleaser(t, srv.addr(), mgr, time.Second, 2)
	res, err := r.Release(context.Background(), []binding.Binding{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	want := map[binding.Key]uint16{a.Key: dhcp6.StatusNoBinding, b.Key: dhcp6.StatusUnspecFail, c.Key: dhcp6.StatusSuccess}
	for _, x := range res {
		if !x.Answered || x.Status != want[x.Binding.Key] {
			t.Errorf("%v: %+v, want status %d", x.Binding.Key.Prefix, x, want[x.Binding.Key])
		}
	}
	left := keysOf(t, mgr)
	if len(left) != 1 || !left[b.Key] {
		t.Errorf("bindings left %v, want only the refused one", left)
	}
	for reason, n := range map[string]float64{"xid": 1, "type": 1, "no_status": 1, "malformed": 1} {
		if got := counterValue(met.discarded.WithLabelValues(reason)); got != n {
			t.Errorf("discarded{%s} = %v, want %v", reason, got, n)
		}
	}
	if got, _ := srv.received(); len(got) != 1 {
		t.Errorf("%d transmissions: the valid answer should stop the exchange", len(got))
	}
}

// TestRequestRefusedWhole: a top-level NotAllowed keeps every binding.
func TestRequestRefusedWhole(t *testing.T) {
	a := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	mgr := testManager(t, a)
	srv := newFakeServer(t, func(_ int, req []byte) [][]byte {
		return [][]byte{answerWith(req, 251, status(dhcp6.StatusNotAllowed), clientData(clientA, status(0)))}
	})
	r, _ := requestReleaser(t, srv.addr(), mgr, time.Second, 2)
	res, _ := r.Release(context.Background(), []binding.Binding{a})
	if len(res) != 1 || res[0].Released() || res[0].Reason() != "NotAllowed" {
		t.Errorf("results %+v, want kept with NotAllowed", res)
	}
	if !keysOf(t, mgr)[a.Key] {
		t.Error("refused binding cleared")
	}
}

// TestReleaseRefusedByConfig: mode off and operator off refuse.
func TestReleaseRefusedByConfig(t *testing.T) {
	r, err := New(context.Background(), Config{Mode: config.ReleaseOff, Operator: true}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Release(context.Background(), []binding.Binding{bnd("eth1", clientA, 1, "2001:db8::/56")}); err != ErrModeOff {
		t.Errorf("mode off: %v", err)
	}
	r, _ = New(context.Background(), Config{Mode: config.ReleaseClient}, nil, nil, nil)
	if _, err := r.Release(context.Background(), []binding.Binding{bnd("eth1", clientA, 1, "2001:db8::/56")}); err != ErrOperatorOff {
		t.Errorf("operator off: %v", err)
	}
}

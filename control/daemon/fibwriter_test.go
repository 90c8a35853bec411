package daemon

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/fib"
)

// TestFIBSinkFollowsBindings drives a real binding.Table and checks that
// the published FIB routes and filters exactly the delegated prefixes, on
// the right port, and only while the binding lives.
func TestFIBSinkFollowsBindings(t *testing.T) {
	ft := fib.NewTable()
	s := &fibWriter{t: ft, ports: map[string]fib.PortID{"up0": 0, "dl1": 1, "dl2": 2}, log: slog.New(slog.DiscardHandler)}
	tab := binding.NewTable(binding.PortLimits{MaxPerClient: 8}, nil)
	now := time.Unix(1_000_000, 0)
	nh := netip.MustParseAddr("fe80::1")
	learn := func(port, prefix string, mac byte, valid time.Duration) {
		t.Helper()
		if _, err := tab.Learn(now, binding.Learned{
			Key:     binding.Key{Port: port, DUID: "\x00\x03\x00\x01\x02\x00\x00\x00\x00" + port, IAID: 1, Prefix: netip.MustParsePrefix(prefix)},
			NextHop: nh, MAC: [6]byte{2, 0, 0, 0, 0, mac}, MACKnown: true, Valid: valid, Preferred: valid,
		}); err != nil {
			t.Fatal(err)
		}
		s.Sink(tab.TakeChanges())
	}
	learn("dl1", "2001:db8:100::/56", 1, 100*time.Second)
	learn("dl2", "2001:db8:200::/48", 2, 200*time.Second)

	snap := ft.Load()
	r, ok := snap.Lookup(netip.MustParseAddr("2001:db8:100:ff::1"))
	if !ok || r.Port != 1 || r.MAC != [6]byte{2, 0, 0, 0, 0, 1} || r.NextHop != nh || r.Prefix.Bits() != 56 {
		t.Fatalf("route for /56: %+v %v", r, ok)
	}
	if _, ok := snap.Lookup(netip.MustParseAddr("2001:db8:101::1")); ok {
		t.Fatal("address just outside the /56 was routed (R-2: exact prefix length)")
	}
	if !snap.SourceAllowed(1, netip.MustParseAddr("2001:db8:100:1::5")) {
		t.Fatal("delegated source refused on its port")
	}
	if snap.SourceAllowed(2, netip.MustParseAddr("2001:db8:100:1::5")) {
		t.Fatal("source of port 1's prefix allowed on port 2 (R-3)")
	}

	// A new MAC updates the route; the source filter keeps one reference.
	learn("dl1", "2001:db8:100::/56", 9, 100*time.Second)
	if r, _ := ft.Load().Lookup(netip.MustParseAddr("2001:db8:100::1")); r == nil || r.MAC[5] != 9 {
		t.Fatalf("MAC change not published: %+v", r)
	}
	// Expiry removes route and filter together.
	tab.Expire(now.Add(100 * time.Second))
	s.Sink(tab.TakeChanges())
	snap = ft.Load()
	if _, ok := snap.Lookup(netip.MustParseAddr("2001:db8:100::1")); ok {
		t.Fatal("route survived its binding")
	}
	if snap.SourceAllowed(1, netip.MustParseAddr("2001:db8:100::1")) {
		t.Fatal("source filter survived its binding (a MAC update leaked a reference)")
	}
	if _, ok := snap.Lookup(netip.MustParseAddr("2001:db8:200::1")); !ok {
		t.Fatal("unrelated binding lost")
	}
}

// TestRenewalDoesNotPublish checks that lifetime-only renewals leave the
// published snapshot alone.
func TestRenewalDoesNotPublish(t *testing.T) {
	ft := fib.NewTable()
	s := &fibWriter{t: ft, ports: map[string]fib.PortID{"dl1": 1}, log: slog.New(slog.DiscardHandler)}
	tab := binding.NewTable(binding.PortLimits{}, nil)
	l := binding.Learned{
		Key:     binding.Key{Port: "dl1", DUID: "a", IAID: 1, Prefix: netip.MustParsePrefix("2001:db8::/56")},
		NextHop: netip.MustParseAddr("fe80::1"), MACKnown: true, Valid: time.Minute,
	}
	now := time.Unix(1_000_000, 0)
	tab.Learn(now, l)
	s.Sink(tab.TakeChanges())
	before := ft.Load()
	tab.Learn(now.Add(time.Second), l)
	s.Sink(tab.TakeChanges())
	if ft.Load() != before {
		t.Fatal("a renewal republished the FIB")
	}
}

// TestClientLoopPolicyOnRoutes checks that a client's loop_overrides entry
// becomes its routes' loop policy (R-5 per client) and that other clients'
// routes leave it to the port.
func TestClientLoopPolicyOnRoutes(t *testing.T) {
	cfg := &config.Config{Downlinks: []config.Downlink{{
		Interface:     "dl1",
		LoopOverrides: []config.LoopOverride{{Client: []byte("vip"), Policy: config.LoopForward}},
	}}}
	ft := fib.NewTable()
	s := &fibWriter{t: ft, ports: map[string]fib.PortID{"dl1": 1}, log: slog.New(slog.DiscardHandler), loop: clientLoopPolicies(cfg)}
	tab := binding.NewTable(binding.PortLimits{}, nil)
	now := time.Unix(1_000_000, 0)
	for duid, p := range map[string]string{"vip": "2001:db8:1::/56", "other": "2001:db8:2::/56"} {
		tab.Learn(now, binding.Learned{Key: binding.Key{Port: "dl1", DUID: duid, IAID: 1, Prefix: netip.MustParsePrefix(p)}, Valid: time.Hour})
	}
	s.Sink(tab.TakeChanges())
	if r, _ := ft.Load().Lookup(netip.MustParseAddr("2001:db8:1::1")); r == nil || r.Loop != fib.LoopForward {
		t.Fatalf("vip route %+v, want loop forward", r)
	}
	if r, _ := ft.Load().Lookup(netip.MustParseAddr("2001:db8:2::1")); r == nil || r.Loop != fib.LoopDefault {
		t.Fatalf("other route %+v, want the port's policy", r)
	}
}

// setMirror records what the FIB sink mirrors.
type setMirror map[netip.Prefix]bool

func (m setMirror) Add(p netip.Prefix) error    { m[p] = true; return nil }
func (m setMirror) Delete(p netip.Prefix) error { delete(m, p); return nil }

// TestMirrorFollowsRoutes checks the prefix set the uplink's XDP program
// uses for no_route: pass: exactly the routed prefixes, and a prefix that
// moved to another port stays when its old binding ends.
func TestMirrorFollowsRoutes(t *testing.T) {
	ft := fib.NewTable()
	m := setMirror{}
	s := &fibWriter{t: ft, ports: map[string]fib.PortID{"dl1": 1, "dl2": 2}, log: slog.New(slog.DiscardHandler), mirror: m}
	tab := binding.NewTable(binding.PortLimits{}, nil)
	now := time.Unix(1_000_000, 0)
	p := netip.MustParsePrefix("2001:db8:1::/56")
	learn := func(port, duid string, at time.Time) {
		tab.Learn(at, binding.Learned{Key: binding.Key{Port: port, DUID: duid, IAID: 1, Prefix: p}, Valid: time.Hour})
		s.Sink(tab.TakeChanges())
	}
	learn("dl1", "a", now)
	if !m[p] || len(m) != 1 {
		t.Fatalf("mirror %v after learn", m)
	}
	learn("dl2", "b", now.Add(time.Second)) // re-delegated to another port: supersedes
	if !m[p] {
		t.Fatal("prefix left the mirror while routed on its new port")
	}
	tab.Expire(now.Add(2 * time.Hour))
	s.Sink(tab.TakeChanges())
	if len(m) != 0 {
		t.Fatalf("mirror %v after expiry", m)
	}
}

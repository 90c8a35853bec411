package xsk

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// routedVerdict runs a UDP frame to dst through p and reports whether it
// was redirected (p has a socket on queue 0).
func routedVerdict(t *testing.T, p *Program, dst string) bool {
	t.Helper()
	got, err := p.run(udpFrame(t, net.ParseIP(dst), 64, 40000, 53))
	if err != nil {
		t.Fatalf("run to %s: %v", dst, err)
	}
	switch got {
	case xdpRedirect:
		return true
	case xdpPass:
		return false
	}
	t.Fatalf("dst %s: verdict %d", dst, got)
	return false
}

// TestProgramRoutes checks the uplink's route check: with a Routes map,
// only destinations some prefix holds are redirected; every earlier pass
// rule still applies.
func TestProgramRoutes(t *testing.T) {
	requireRoot(t)
	r, err := NewRoutes(16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p := programWithSocketRoutes(t, r)
	if p.Routes() != r {
		t.Fatal("Program.Routes is not the map given")
	}

	// No prefix: nothing is redirected.
	for _, c := range verdictCases(t) {
		if got, err := p.run(c.frame); err != nil || got != xdpPass {
			t.Errorf("empty routes, %s: verdict %d, err %v; want XDP_PASS", c.name, got, err)
		}
	}

	mp := netip.MustParsePrefix
	for _, pfx := range []netip.Prefix{mp("2001:db8:b::/48"), mp("2001:db8:b:1::/64"), mp("2001:db8:c::7/128"), mp("2001:db8:a::/48")} {
		if err := r.Add(pfx); err != nil {
			t.Fatalf("Add %s: %v", pfx, err)
		}
	}
	if err := r.Add(mp("2001:db8:b::/48")); err != nil { // again: no error, no new entry
		t.Fatalf("Add twice: %v", err)
	}
	if n := r.Len(); n != 4 {
		t.Errorf("Len = %d, want 4", n)
	}

	// The table: redirected only if the rules redirect and the
	// destination is routed.
	routes := []netip.Prefix{mp("2001:db8:b::/48"), mp("2001:db8:b:1::/64"), mp("2001:db8:c::7/128"), mp("2001:db8:a::/48")}
	for _, c := range verdictCases(t) {
		want := uint32(xdpPass)
		if modelRedirect(c.frame, localAddr, &routes) {
			want = xdpRedirect
		}
		if c.redirect != (want == xdpRedirect) && c.name != "dst fec0::1 (outside fe80::/10)" {
			t.Errorf("%s: model disagrees with the table's redirect=%v", c.name, c.redirect)
		}
		if got, err := p.run(c.frame); err != nil || got != want {
			t.Errorf("routed, %s: verdict %d, err %v; want %d", c.name, got, err, want)
		}
	}

	check := func(step string, cases map[string]bool) {
		t.Helper()
		for dst, want := range cases {
			if got := routedVerdict(t, p, dst); got != want {
				t.Errorf("%s: dst %s redirected=%v, want %v", step, dst, got, want)
			}
			if got := r.Contains(netip.MustParseAddr(dst)); got != want && dst != localAddr.String() {
				t.Errorf("%s: Contains(%s) = %v, want %v", step, dst, got, want)
			}
		}
	}
	check("routed", map[string]bool{
		"2001:db8:b::2":           true,  // /48
		"2001:db8:b:ffff:1::1":    true,  // /48, top half
		"2001:db8:b:1::9":         true,  // /64 inside the /48
		"2001:db8:c::7":           true,  // /128
		"2001:db8:c::8":           false, // next to the /128
		"2001:db8:c::6":           false,
		"2001:db8:d::2":           false, // no prefix
		"2001:db8:a::2":           true,
		localAddr.String():        false, // local, though routed
		"2001:db8::1":             false,
		"ffff:ffff:ffff:ffff::1":  false, // multicast anyway
		"2001:db8:b:0:ffff::ffff": true,
	})
	if got, _ := p.run(echoFrame(t, net.ParseIP("2001:db8:b::2"), 1)); got != xdpPass {
		t.Errorf("routed dst, hop limit 1: verdict %d, want XDP_PASS", got)
	}
	if got, _ := p.run(udpFrame(t, net.ParseIP("2001:db8:b::2"), 64, 40000, 547)); got != xdpPass {
		t.Errorf("routed dst, DHCPv6: verdict %d, want XDP_PASS", got)
	}

	// Delete the outer prefix: the inner one still routes.
	if err := r.Delete(mp("2001:db8:b::/48")); err != nil {
		t.Fatal(err)
	}
	check("outer /48 deleted", map[string]bool{
		"2001:db8:b::2":   false,
		"2001:db8:b:1::9": true,
		"2001:db8:c::7":   true,
	})
	for _, pfx := range []netip.Prefix{mp("2001:db8:b:1::/64"), mp("2001:db8:c::7/128")} {
		if err := r.Delete(pfx); err != nil {
			t.Fatal(err)
		}
	}
	check("all but 2001:db8:a::/48 deleted", map[string]bool{
		"2001:db8:b:1::9": false,
		"2001:db8:c::7":   false,
		"2001:db8:a::2":   true,
	})
	if err := r.Delete(mp("2001:db8:c::7/128")); err != nil { // absent: no error
		t.Errorf("Delete absent: %v", err)
	}
	if n := r.Len(); n != 1 {
		t.Errorf("Len = %d, want 1", n)
	}
	if err := r.Delete(mp("2001:db8:a::/48")); err != nil {
		t.Fatal(err)
	}
	check("empty", map[string]bool{"2001:db8:a::2": false})
	if n := r.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}

	// ::/0 routes every global destination.
	if err := r.Add(mp("::/0")); err != nil {
		t.Fatal(err)
	}
	check("::/0", map[string]bool{"2001:db8:d::2": true, "fec0::1": true, "::1": true})
}

// TestRoutesErrors: prefixes must be valid, IPv6 and masked; a full map
// refuses new prefixes.
func TestRoutesErrors(t *testing.T) {
	requireRoot(t)
	r, err := NewRoutes(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, bad := range []netip.Prefix{
		{},
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("2001:db8:b::1/48"),
		netip.PrefixFrom(netip.MustParseAddr("2001:db8::"), 129),
	} {
		if err := r.Add(bad); err == nil {
			t.Errorf("Add(%v) accepted", bad)
		}
		if err := r.Delete(bad); err == nil {
			t.Errorf("Delete(%v) accepted", bad)
		}
	}
	if r.Contains(netip.MustParseAddr("192.0.2.1")) || r.Contains(netip.Addr{}) {
		t.Error("Contains of a non-IPv6 address is true")
	}
	a, b, c := netip.MustParsePrefix("2001:db8:1::/48"), netip.MustParsePrefix("2001:db8:2::/48"), netip.MustParsePrefix("2001:db8:3::/48")
	if err := r.Add(a); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(b); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(c); err == nil {
		t.Error("Add to a full map succeeded")
	}
	if err := r.Add(a); err != nil {
		t.Errorf("re-Add to a full map: %v", err)
	}
	if n := r.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
	if r.Contains(netip.MustParseAddr("2001:db8:3::1")) {
		t.Error("Contains a prefix that did not fit")
	}
}

// TestRoutesConcurrent adds and deletes from several goroutines while
// others look up; Len stays exact.
func TestRoutesConcurrent(t *testing.T) {
	requireRoot(t)
	r, err := NewRoutes(1024)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 64 {
				// Goroutines g and g+4 share their prefixes.
				pfx := netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:%x::/64", g%4, i))
				if err := r.Add(pfx); err != nil {
					t.Error(err)
					return
				}
				r.Contains(pfx.Addr())
				_ = r.Len()
				if i%2 == 1 {
					if err := r.Delete(pfx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := r.Len(); n != 4*32 {
		t.Errorf("Len = %d, want %d", n, 4*32)
	}
	for g := range 4 {
		for i := range 64 {
			a := netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::1", g, i))
			if got, want := r.Contains(a), i%2 == 0; got != want {
				t.Errorf("Contains(%s) = %v, want %v", a, got, want)
			}
		}
	}
}

// TestProgramInsnsRoutes: without Routes the program is the same as
// before the route check existed (it loads no route map); with it, it
// loads the Routes' three maps, and the check is a prologue (11
// instructions), 16 a length, 27 a window (winPerLen for each of the
// winLens most used lengths, after a load of their count) and the
// miss's jump.
func TestProgramInsnsRoutes(t *testing.T) {
	requireRoot(t)
	p := newTestProgram(t)
	r, err := NewRoutes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	without := programInsns(p.xsks, p.locals.m, nil, p.verdicts)
	with := programInsns(p.xsks, p.locals.m, r, p.verdicts)
	if want := len(without) + 11 + 16*routeLensMax + winLens*(1+27*winPerLen) + 1; len(with) != want {
		t.Errorf("with routes %d instructions, without %d; want %d", len(with), len(without), want)
	}
	loads := func(insns asm.Instructions, m *ebpf.Map) bool {
		for _, ins := range insns {
			if ins.IsLoadFromMap() && ins.Constant == int64(m.FD()) {
				return true
			}
		}
		return false
	}
	for _, m := range []*ebpf.Map{r.m, r.lens, r.bits} {
		if loads(without, m) || !loads(with, m) {
			t.Errorf("map %v: loaded without routes %v, with %v; want false, true", m, loads(without, m), loads(with, m))
		}
	}
	for _, ins := range without {
		if ins.IsLoadFromMap() && ins.Constant != int64(p.xsks.FD()) && ins.Constant != int64(p.locals.m.FD()) &&
			ins.Constant != int64(p.verdicts.FD()) {
			t.Errorf("program without routes loads another map: %v", ins)
		}
	}
}

package fib

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func mustAdd(t testing.TB, tb *Table, r Route) {
	t.Helper()
	if err := tb.AddRoute(r); err != nil {
		t.Fatal(err)
	}
}

func TestExactLength(t *testing.T) {
	tb := NewTable()
	mustAdd(t, tb, Route{Prefix: pfx("2001:db8:0:100::/56"), Port: 1, NextHop: addr("fe80::1"), MAC: [6]byte{2, 0, 0, 0, 0, 1}})
	mustAdd(t, tb, Route{Prefix: pfx("2001:db8:0:1ab::/64"), Port: 2, NextHop: addr("fe80::2")})
	mustAdd(t, tb, Route{Prefix: pfx("2001:db8:0:1ac::7/128"), Port: 3})
	mustAdd(t, tb, Route{Prefix: pfx("2001:db8:100::/40"), Port: 4})
	// Host bits are masked off: this is 2001:db8:0:300::/56.
	mustAdd(t, tb, Route{Prefix: pfx("2001:db8:0:3ff::1/56"), Port: 5})
	s := tb.Publish()

	tests := []struct {
		dst  string
		port PortID // 0: no route
		want string // matched prefix
	}{
		{"2001:db8:0:100::", 1, "2001:db8:0:100::/56"},
		{"2001:db8:0:1ff:ffff:ffff:ffff:ffff", 1, "2001:db8:0:100::/56"},
		{"2001:db8:0:ff:ffff:ffff:ffff:ffff", 0, ""},    // neighbouring /56 below
		{"2001:db8:0:200::", 0, ""},                     // neighbouring /56 above
		{"2001:db8:0:1ab::1", 2, "2001:db8:0:1ab::/64"}, // /64 inside the /56 wins
		{"2001:db8:0:1aa:ffff::1", 1, "2001:db8:0:100::/56"},
		{"2001:db8:0:1ac::7", 3, "2001:db8:0:1ac::7/128"},
		{"2001:db8:0:1ac::8", 1, "2001:db8:0:100::/56"},
		{"2001:db8:1ff:ffff::1", 4, "2001:db8:100::/40"},
		{"2001:db8:200::", 0, ""},
		{"2001:db8:0:3ab::1", 5, "2001:db8:0:300::/56"},
		{"2001:db8:0:400::1", 0, ""},
		{"2001:db9::", 0, ""},
	}
	for _, tt := range tests {
		a := addr(tt.dst)
		r, ok := s.Lookup(a)
		b := a.As16()
		rb, okb := s.LookupBytes(&b)
		if ok != okb || r != rb {
			t.Errorf("%s: Lookup and LookupBytes disagree", tt.dst)
		}
		if tt.port == 0 {
			if ok {
				t.Errorf("%s: got route %v, want none", tt.dst, r.Prefix)
			}
			continue
		}
		if !ok || r.Port != tt.port || r.Prefix != pfx(tt.want) {
			t.Errorf("%s: got %v %v, want port %d via %s", tt.dst, r, ok, tt.port, tt.want)
		}
	}
	if s.Len() != 5 {
		t.Errorf("Len = %d, want 5", s.Len())
	}
	if _, ok := s.Lookup(addr("192.0.2.1")); ok {
		t.Error("IPv4 address matched")
	}
}

func TestInvalid(t *testing.T) {
	tb := NewTable()
	for _, p := range []netip.Prefix{{}, pfx("192.0.2.0/24"), netip.PrefixFrom(addr("2001:db8::"), 129)} {
		if err := tb.AddRoute(Route{Prefix: p}); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("AddRoute(%v) = %v, want ErrInvalidPrefix", p, err)
		}
		if err := tb.AddSource(1, p); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("AddSource(%v) = %v, want ErrInvalidPrefix", p, err)
		}
		if tb.DeleteRoute(p) || tb.DeleteSource(1, p) {
			t.Errorf("delete of %v succeeded", p)
		}
	}
	if err := tb.AddRoute(Route{Prefix: pfx("2001:db8::/56"), NextHop: addr("192.0.2.1")}); !errors.Is(err, ErrInvalidRoute) {
		t.Errorf("IPv4 next hop: %v, want ErrInvalidRoute", err)
	}
	if err := tb.AddRoute(Route{Prefix: pfx("2001:db8::/56"), Loop: 9}); !errors.Is(err, ErrInvalidRoute) {
		t.Errorf("bad loop policy: %v, want ErrInvalidRoute", err)
	}
	if err := tb.AddRoute(Route{Prefix: pfx("2001:db8::/56"), Port: MaxPort + 1}); !errors.Is(err, ErrInvalidRoute) {
		t.Errorf("port above MaxPort: %v, want ErrInvalidRoute", err)
	}
	if err := tb.SetAllowedSources(1, []netip.Prefix{pfx("2001:db8::/64"), pfx("10.0.0.0/8")}); !errors.Is(err, ErrInvalidPrefix) {
		t.Errorf("SetAllowedSources with IPv4: %v", err)
	}
	if s := tb.Publish(); s.Len() != 0 || s.SourceLen() != 0 {
		t.Errorf("failed calls changed the table: %d routes, %d sources", s.Len(), s.SourceLen())
	}
}

func TestRouteReplaceAndDeleteIf(t *testing.T) {
	tb := NewTable()
	p := pfx("2001:db8:0:100::/56")
	mustAdd(t, tb, Route{Prefix: p, Port: 1})
	mustAdd(t, tb, Route{Prefix: p, Port: 2}) // the prefix moved to port 2
	if tb.Len() != 1 {
		t.Fatalf("Len = %d after replace, want 1", tb.Len())
	}
	if tb.DeleteRouteIf(p, 1) {
		t.Fatal("DeleteRouteIf removed the newer binding's route")
	}
	s := tb.Publish()
	if r, ok := s.Lookup(addr("2001:db8:0:100::1")); !ok || r.Port != 2 {
		t.Fatalf("got %v %v, want port 2", r, ok)
	}
	if !tb.DeleteRouteIf(p, 2) {
		t.Fatal("DeleteRouteIf(2) failed")
	}
	if tb.DeleteRoute(p) {
		t.Fatal("second delete succeeded")
	}
	s2 := tb.Publish()
	if _, ok := s2.Lookup(addr("2001:db8:0:100::1")); ok {
		t.Fatal("deleted route still found")
	}
	if _, ok := s.Lookup(addr("2001:db8:0:100::1")); !ok {
		t.Fatal("old snapshot changed")
	}
}

func TestSources(t *testing.T) {
	tb := NewTable()
	p := pfx("2001:db8:0:100::/56")
	in, out := addr("2001:db8:0:1ff::1"), addr("2001:db8:0:200::1")
	check := func(step string, want ...bool) {
		t.Helper()
		s := tb.Publish()
		for port, w := range want {
			if got := s.SourceAllowed(PortID(port), in); got != w {
				t.Errorf("%s: port %d: SourceAllowed = %v, want %v", step, port, got, w)
			}
			b := in.As16()
			if got := s.SourceAllowedBytes(PortID(port), &b); got != w {
				t.Errorf("%s: port %d: SourceAllowedBytes = %v, want %v", step, port, got, w)
			}
			if s.SourceAllowed(PortID(port), out) {
				t.Errorf("%s: port %d: address outside the /56 allowed", step, port)
			}
		}
	}
	check("empty", false, false, false)
	if err := tb.AddSource(1, p); err != nil {
		t.Fatal(err)
	}
	if err := tb.AddSource(2, p); err != nil { // same prefix, other port
		t.Fatal(err)
	}
	check("two ports", false, true, true)
	tb.DeleteSource(1, p)
	check("port 1 deleted", false, false, true)
	if tb.DeleteSource(1, p) {
		t.Error("DeleteSource without a reference succeeded")
	}
	tb.AddSource(2, p) // a second binding on port 2
	tb.DeleteSource(2, p)
	check("refcount", false, false, true)
	if err := tb.SetAllowedSources(2, []netip.Prefix{p, pfx("2001:db8:ffff::/48")}); err != nil {
		t.Fatal(err)
	}
	tb.DeleteSource(2, p)
	check("configured outlives binding", false, false, true)
	tb.SetAllowedSources(2, nil)
	check("configuration removed", false, false, false)
	if n := tb.Publish().SourceLen(); n != 0 {
		t.Errorf("SourceLen = %d, want 0", n)
	}
	// A configured prefix of another length, on port 0.
	tb.SetAllowedSources(0, []netip.Prefix{pfx("2001:db8:0:1fe::/63")})
	check("configured /63", true, false, false)
}

func TestDefaultRoute(t *testing.T) {
	tb := NewTable()
	if _, ok := tb.Publish().DefaultRoute(); ok {
		t.Fatal("default route before SetDefault")
	}
	gw := &Route{Port: 7, NextHop: addr("fe80::1"), MAC: [6]byte{1, 2, 3, 4, 5, 6}}
	if err := tb.SetDefault(gw); err != nil {
		t.Fatal(err)
	}
	gw.Port = 8 // the table keeps its own copy
	s := tb.Publish()
	r, ok := s.DefaultRoute()
	if !ok || r.Port != 7 || r.Prefix != pfx("::/0") {
		t.Fatalf("DefaultRoute = %v %v", r, ok)
	}
	if _, ok := s.Lookup(addr("2001:db8::1")); ok {
		t.Error("Lookup fell back to the default route")
	}
	tb.SetDefault(nil)
	if _, ok := tb.Publish().DefaultRoute(); ok {
		t.Error("default route not cleared")
	}
}

func TestNilFailsClosed(t *testing.T) {
	var s *Snapshot
	b := addr("2001:db8::1").As16()
	if r, ok := s.Lookup(addr("2001:db8::1")); ok || r != nil {
		t.Error("nil Lookup found a route")
	}
	if _, ok := s.LookupBytes(&b); ok {
		t.Error("nil LookupBytes found a route")
	}
	if s.SourceAllowed(0, addr("2001:db8::1")) || s.SourceAllowedBytes(0, &b) {
		t.Error("nil snapshot allowed a source")
	}
	if _, ok := s.DefaultRoute(); ok {
		t.Error("nil snapshot has a default route")
	}
	if s.Len() != 0 || s.SourceLen() != 0 || s.Gen() != 0 {
		t.Error("nil snapshot has entries")
	}
	for range s.Routes() {
		t.Error("nil snapshot yields routes")
	}
	var f *FIB
	if f.Load() != nil || new(FIB).Load() != nil || NewTable().Load() != nil {
		t.Error("Load before Publish returned a snapshot")
	}
	// A published table with nothing in it fails closed too.
	e := NewTable().Publish()
	if _, ok := e.LookupBytes(&b); ok || e.SourceAllowedBytes(0, &b) || e.SourceAllowedBytes(0, nil) {
		t.Error("empty snapshot matched")
	}
	if _, ok := e.LookupBytes(nil); ok {
		t.Error("LookupBytes(nil) matched")
	}
	// The batch lookups in a nil snapshot clear what a last batch left.
	addrs := []*[16]byte{&b, nil}
	ok := []bool{true, true}
	routes := []*Route{{}, {}}
	hops := []Hop{{Port: 1}, {Port: 1}}
	new(Batch).SourcesAndHops(s, 0, addrs, ok, addrs, routes, hops)
	if ok[0] || ok[1] || routes[0] != nil || routes[1] != nil || hops[0] != (Hop{}) || hops[1] != (Hop{}) {
		t.Errorf("nil SourcesAndHops: %v %v %v", ok, routes, hops)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SourcesAndHops with srcs and dsts of different lengths did not panic")
			}
		}()
		new(Batch).SourcesAndHops(e, 0, addrs, ok, addrs[:1], routes, hops)
	}()
}

func TestAllocs(t *testing.T) {
	defer setThresholds(1, 1)() // dense blocks for every length that may have them
	tb := NewTable()
	// Seven lengths: one of them is served by bart.
	for i, l := range []int{40, 48, 52, 56, 60, 64, 128} {
		a := addr("2001:db8:aa00::").As16()
		a[6] = byte(i)
		p := netip.PrefixFrom(netip.AddrFrom16(a), l)
		mustAdd(t, tb, Route{Prefix: p, Port: PortID(i)})
		tb.AddSource(PortID(i), p)
	}
	tb.SetAllowedSources(1, []netip.Prefix{pfx("2001:db8:ffff::/33")})
	s := tb.Publish()
	hit, miss := addr("2001:db8:aa00:1::1"), addr("2001:db9::1")
	hb, mb := hit.As16(), miss.As16()
	for _, a := range []netip.Addr{hit, miss} {
		if n := testing.AllocsPerRun(1000, func() { s.Lookup(a) }); n != 0 {
			t.Errorf("Lookup(%v): %v allocs", a, n)
		}
		if n := testing.AllocsPerRun(1000, func() { s.SourceAllowed(1, a) }); n != 0 {
			t.Errorf("SourceAllowed(%v): %v allocs", a, n)
		}
	}
	for _, b := range []*[16]byte{&hb, &mb} {
		if n := testing.AllocsPerRun(1000, func() { s.LookupBytes(b) }); n != 0 {
			t.Errorf("LookupBytes: %v allocs", n)
		}
		if n := testing.AllocsPerRun(1000, func() { s.SourceAllowedBytes(1, b) }); n != 0 {
			t.Errorf("SourceAllowedBytes: %v allocs", n)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { tb.Load() }); n != 0 {
		t.Errorf("Load: %v allocs", n)
	}
	// The batch lookups, with and without a Batch.
	dsts := []*[16]byte{&hb, &mb, nil, &hb}
	routes, hops, ok := make([]*Route, len(dsts)), make([]Hop, len(dsts)), make([]bool, len(dsts))
	fb := new(Batch)
	for name, f := range map[string]func(){
		"Snapshot.LookupBatch":        func() { s.LookupBatch(dsts, routes) },
		"Snapshot.SourceAllowedBatch": func() { s.SourceAllowedBatch(1, dsts, ok) },
		"Batch.LookupBatch":           func() { fb.LookupBatch(s, dsts, routes) },
		"Batch.LookupHops":            func() { fb.LookupHops(s, dsts, routes, hops) },
		"Batch.SourceAllowedBatch":    func() { fb.SourceAllowedBatch(s, 1, dsts, ok) },
		"Batch.SourcesAndHops":        func() { fb.SourcesAndHops(s, 1, dsts, ok, dsts, routes, hops) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs", name, n)
		}
	}
	if routes[0] == nil || hops[0] != routes[0].Hop() || routes[1] != nil || routes[2] != nil || !ok[0] || ok[1] {
		t.Errorf("batch answers: routes %v hops %v sources %v", routes, hops, ok)
	}
	if len(indexed(&s.routes)) == 0 {
		t.Error("no dense blocks: the batch lookups' dense path went untested")
	}
}

// TestOuterFilter checks lookups as the region filter outgrows maxOuter
// ranges (they coalesce) and shrinks again, with a prefix shorter than a
// region, and as too many such prefixes turn the filter off.
func TestOuterFilter(t *testing.T) {
	tb := NewTable()
	in := func(i int) netip.Addr { return join128(uint64(0x20010000+i)<<32|0xab<<8, 1) }
	p := func(i int) netip.Prefix { return netip.PrefixFrom(in(i), 56).Masked() }
	check := func(n int, filter bool) {
		t.Helper()
		s := tb.Publish()
		if s.routes.filter != filter || len(s.routes.outer) > maxOuter {
			t.Errorf("%d routed /32s: filter = %v with %d ranges, want %v", n, s.routes.filter, len(s.routes.outer), filter)
		}
		for i := range maxOuter + 10 {
			if _, ok := s.Lookup(in(i)); ok != (i < n) {
				t.Errorf("%d /32s: Lookup(%v) = %v", n, in(i), ok)
			}
			if _, ok := s.Lookup(in(i).Next().Next()); ok != (i < n) { // a second length, or the /56 again
				t.Errorf("%d /32s: Lookup(%v) = %v", n, in(i).Next().Next(), ok)
			}
		}
		if _, ok := s.Lookup(addr("2a00::1")); ok {
			t.Error("foreign address matched")
		}
	}
	for i := range maxOuter {
		mustAdd(t, tb, Route{Prefix: p(i)})
		if i%2 == 0 { // and a second length in half of the /32s
			mustAdd(t, tb, Route{Prefix: netip.PrefixFrom(in(i), 64).Masked()})
		}
	}
	check(maxOuter, true)
	if n := len(tb.Publish().routes.outer); n != maxOuter {
		t.Fatalf("%d ranges for %d separate regions", n, maxOuter)
	}
	mustAdd(t, tb, Route{Prefix: p(maxOuter)})
	check(maxOuter+1, true) // coalesced
	tb.DeleteRoute(p(maxOuter))
	check(maxOuter, true)
	mustAdd(t, tb, Route{Prefix: pfx("2a00::/31")})
	if _, ok := tb.Publish().Lookup(addr("2a00:1::1")); !ok || !tb.Publish().routes.filter {
		t.Error("a /31 route: not found, or the filter is off")
	}
	tb.DeleteRoute(pfx("2a00::/31"))
	check(maxOuter, true)
	// More prefixes shorter than a region than the filter lays over.
	var short []netip.Prefix
	for i := range maxShort + 1 {
		short = append(short, netip.PrefixFrom(join128(uint64(0x2a000000+i)<<32, 0), 40))
		mustAdd(t, tb, Route{Prefix: short[i]})
	}
	s := tb.Publish()
	if s.routes.filter {
		t.Errorf("filter on with %d prefixes shorter than a region", maxShort+1)
	}
	for _, p := range short {
		if _, ok := s.Lookup(p.Addr().Next()); !ok {
			t.Errorf("filter off: %v not found", p)
		}
	}
	for _, p := range short {
		tb.DeleteRoute(p)
	}
	check(maxOuter, true)
}

// TestOuterRanges checks the region filter's ranges against a region by
// region account, over random prefixes crowded into a few /40s so that
// regions hold several lengths, adjoin, and lie under shorter prefixes.
func TestOuterRanges(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	base := uint64(0x20010db8_00000000)
	coalesced := 0
	defer func() {
		if coalesced < 5 {
			t.Errorf("only %d rounds had more regions than ranges allowed", coalesced)
		}
	}()
	for round := range 200 {
		tb := NewTable()
		var ps []netip.Prefix
		for range 1 + r.IntN(40) {
			bits := []int{32, 38, 40, 44, 46, 48, 56, 64, 128}[r.IntN(9)]
			hi := base | r.Uint64N(1<<12)<<20 | r.Uint64()&(1<<20-1) // inside 2001:db8::/32, 4096 regions
			p := netip.PrefixFrom(join128(hi, r.Uint64()), bits).Masked()
			ps = append(ps, p)
			mustAdd(t, tb, Route{Prefix: p})
		}
		if round%10 == 9 { // spread: more regions than ranges allowed
			for range maxOuter + r.IntN(maxOuter) {
				hi := base | r.Uint64N(1<<12)<<20 | r.Uint64()&(1<<20-1)
				bits := []int{48, 56, 64}[r.IntN(3)]
				p := netip.PrefixFrom(join128(hi, 0), bits).Masked()
				ps = append(ps, p)
				if err := tb.AddRoute(Route{Prefix: p}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, p := range ps[:r.IntN(len(ps))] { // and take some out again
			tb.DeleteRoute(p)
		}
		s := tb.Publish()
		if !s.routes.filter {
			t.Fatalf("round %d: filter off", round)
		}
		want := map[uint64][129]bool{} // lengths in use by region
		for rt := range s.Routes() {
			hi, _ := split128(rt.Prefix.Addr())
			lo := region(hi)
			n := uint64(1)
			if rt.Prefix.Bits() < regionBits {
				n = 1 << (regionBits - rt.Prefix.Bits())
			}
			for x := lo; x < lo+n; x++ {
				m := want[x]
				m[rt.Prefix.Bits()] = true
				want[x] = m
			}
		}
		if len(want) > maxOuter {
			coalesced++
		}
		for x := region(base) - 2; x < region(base)+1<<12+2; x++ {
			o, ok := findOuter(s.routes.outer, x)
			m, wok := want[x]
			wfast, wslow := lengthMask(&s.routes, m)
			if coalesced := len(want) > maxOuter; coalesced {
				// Ranges may cover gaps and more lengths than a region
				// has, never fewer.
				if wok && (!ok || o.fast&wfast != wfast || wslow && !o.slow) {
					t.Fatalf("round %d: region %#x: in filter %v fast %b slow %v, want at least %b %v", round, x, ok, o.fast, o.slow, wfast, wslow)
				}
				continue
			}
			if ok != wok {
				t.Fatalf("round %d: region %#x: in filter %v, want %v (%v)", round, x, ok, wok, s.routes.outer)
			}
			if o.fast != wfast || o.slow != wslow {
				t.Fatalf("round %d: region %#x: fast %b slow %v, want %b %v", round, x, o.fast, o.slow, wfast, wslow)
			}
		}
		if len(s.routes.outer) > maxOuter {
			t.Fatalf("round %d: %d ranges", round, len(s.routes.outer))
		}
		for i := 1; i < len(s.routes.outer); i++ {
			if a, b := s.routes.outer[i-1], s.routes.outer[i]; a.hi >= b.lo || a.hi+1 == b.lo && a.fast == b.fast && a.slow == b.slow {
				t.Fatalf("round %d: ranges %v and %v overlap or should have merged", round, a, b)
			}
		}
	}
}

// lengthMask returns the filter bits for the prefix lengths set in m: the
// fast tables that hold them, and whether bart holds any.
func lengthMask(t *lpm[*routeEnt], m [129]bool) (fast uint8, slow bool) {
	for bits, in := range m {
		i := slices.IndexFunc(t.fast[:t.nfast], func(f fastLen[*routeEnt]) bool { return int(f.bits) == bits })
		switch {
		case in && i >= 0:
			fast |= 1 << i
		case in:
			slow = true
		}
	}
	return fast, slow
}

// TestCoalesce: coalesce brings any sorted range list to at most maxOuter
// ranges, sorted and disjoint, each covering what it replaced with at
// least its lengths.
func TestCoalesce(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{maxOuter + 1, 3000, 20000} {
		var in []outerEnt
		x := uint64(1000)
		for range n {
			x += 1 + r.Uint64N(3) // adjacent or with a gap
			in = append(in, outerEnt{lo: x, hi: x, fast: uint8(1 << r.IntN(3)), slow: r.IntN(50) == 0})
		}
		out := coalesce(slices.Clone(in))
		if len(out) > maxOuter {
			t.Fatalf("%d ranges: %d after coalesce", n, len(out))
		}
		for i := 1; i < len(out); i++ {
			if out[i-1].hi >= out[i].lo {
				t.Fatalf("%d ranges: %v and %v overlap", n, out[i-1], out[i])
			}
		}
		for _, e := range in {
			o, ok := findOuter(out, e.lo)
			if !ok || o.fast&e.fast != e.fast || e.slow && !o.slow {
				t.Fatalf("%d ranges: %v is covered by %v %v", n, e, o, ok)
			}
		}
	}
}

// TestPublishDeferred: PublishDeferred serves without making dense
// blocks, the next Publish makes them, and lookups agree throughout.
func TestPublishDeferred(t *testing.T) {
	defer setThresholds(3, 2)()
	tb := NewTable()
	var ps []netip.Prefix
	for i := range 5 { // five /56s of one /44: one block
		p := netip.PrefixFrom(join128(0x20010db8_00000000|uint64(i)<<8, 0), 56)
		ps = append(ps, p)
		mustAdd(t, tb, Route{Prefix: p, Port: PortID(i + 1)})
	}
	check := func(s *Snapshot, blocks int) {
		t.Helper()
		if n := len(indexed(&s.routes)); n != blocks {
			t.Fatalf("%d dense blocks, want %d", n, blocks)
		}
		for i, p := range ps {
			if r, ok := s.Lookup(p.Addr().Next()); !ok || r.Port != PortID(i+1) {
				t.Fatalf("Lookup(%v) = %v %v", p.Addr().Next(), r, ok)
			}
		}
	}
	check(tb.PublishDeferred(), 0)
	check(tb.Publish(), 1)
}

// setThresholds sets the dense block thresholds of both kinds, and
// returns what puts them back.
func setThresholds(on, off int32) func() {
	r, s := [2]int32{denseOn, denseOff}, [2]int32{srcDenseOn, srcDenseOff}
	denseOn, denseOff, srcDenseOn, srcDenseOff = on, off, on, off
	return func() { denseOn, denseOff, srcDenseOn, srcDenseOff = r[0], r[1], s[0], s[1] }
}

// unpack returns the Hop h packs.
func (h packedHop) unpack() Hop {
	var d Hop
	h.unpackTo(&d)
	return d
}

// TestHopPacking checks the hops dense blocks pack, at the limits of the
// port and for every loop policy: from a block's cell (LookupHops) and
// from the route.
func TestHopPacking(t *testing.T) {
	defer setThresholds(1, 1)()
	tb := NewTable()
	var want []Hop
	for i, port := range []PortID{0, 1, MaxPort - 1, MaxPort} {
		for pol := LoopDefault; pol <= LoopForward; pol++ {
			n := len(want)
			p := netip.PrefixFrom(join128(0x20010db8_00000000|uint64(n)<<8, 0), 56)
			mac := [6]byte{0xff, byte(i), 0xff, byte(pol), 0xff, 0xff}
			mustAdd(t, tb, Route{Prefix: p, Port: port, MAC: mac, Loop: pol})
			want = append(want, Hop{Port: port, MAC: mac, Loop: pol})
		}
	}
	s := tb.Publish()
	if len(indexed(&s.routes)) == 0 {
		t.Fatal("no dense block: the packed hops went untested")
	}
	dsts := make([]*[16]byte, len(want))
	for i := range dsts {
		a := join128(0x20010db8_00000000|uint64(i)<<8|0x42, 1).As16()
		dsts[i] = &a
	}
	routes, hops := make([]*Route, len(dsts)), make([]Hop, len(dsts))
	new(Batch).LookupHops(s, dsts, routes, hops)
	for i, w := range want {
		if routes[i] == nil || routes[i].Hop() != w || hops[i] != w {
			t.Errorf("route %d: %v, hop %+v, want %+v", i, routes[i], hops[i], w)
		}
	}
}

// TestOneLengthBatch checks the batch lookups of tables holding one prefix
// length, all of it in dense blocks (the batch setup's shortcut), against
// the single lookups: hits, misses in a block, addresses outside every
// block, on the right port and the wrong one, as prefixes come and go.
// The blocks lie in two runs of the index (two /44s side by side, and one
// far from them), so that both ways of finding a block's run are taken;
// "two lengths" adds /60s in the same three places and takes the batch
// setup's general path.
func TestOneLengthBatch(t *testing.T) {
	defer setThresholds(2, 1)()
	for _, c := range []struct {
		name string
		lens []int
	}{{"one length", []int{56}}, {"two lengths", []int{56, 60}}} {
		r := rand.New(rand.NewPCG(5, 6))
		tb := NewTable()
		in := map[netip.Prefix]bool{}
		prefix := func() netip.Prefix {
			bits := c.lens[r.IntN(len(c.lens))]
			var a [16]byte
			hi := 0x20010db8_00a00000 | []uint64{0, 1, 0x100}[r.IntN(3)]<<20 | uint64(r.IntN(4096))<<(64-bits)
			binary.BigEndian.PutUint64(a[:], hi)
			return netip.PrefixFrom(netip.AddrFrom16(a), bits)
		}
		port := func(p netip.Prefix) PortID { return PortID(1 + p.Addr().As16()[6]&1) }
		for round := range 20 {
			for range 300 {
				p := prefix()
				if in[p] {
					tb.DeleteRoute(p)
					tb.DeleteSource(port(p), p)
					delete(in, p)
					continue
				}
				mustAdd(t, tb, Route{Prefix: p, Port: port(p), MAC: [6]byte{2, byte(round)}})
				if err := tb.AddSource(port(p), p); err != nil {
					t.Fatal(err)
				}
				in[p] = true
			}
			s := tb.Publish()
			if l := &s.routes; l.nfast != len(c.lens) || !l.fast[0].blocks {
				t.Fatalf("%s, round %d: routes have %d fast lengths, blocks %v", c.name, round, l.nfast, l.fast[0].blocks)
			}
			if l := &s.src; l.nfast != len(c.lens) || !l.fast[0].blocks {
				t.Fatalf("%s, round %d: sources have %d fast lengths, blocks %v", c.name, round, l.nfast, l.fast[0].blocks)
			}
			for _, bits := range c.lens {
				if n := len(s.routes.dense.runs(0, uint8(bits))); round > 0 && n != 2 {
					t.Fatalf("%s, round %d: /%d blocks in %d runs, want 2", c.name, round, bits, n)
				}
			}
			var addrs []*[16]byte
			for range 150 {
				a := prefix().Addr().As16()
				a[15] = byte(r.IntN(256))
				if r.IntN(10) == 0 {
					a[1] ^= 0x40 // outside every block
				}
				addrs = append(addrs, &a)
			}
			checkBatch(t, s, addrs)
			// A probe whose block exists must find it, not fall back to
			// hashing (which would answer right, only slower).
			checkDenseProbes(t, &s.routes, 0, addrs)
			checkDenseProbes(t, &s.src, 1, addrs)
			checkDenseProbes(t, &s.src, 2, addrs)
		}
	}
}

// checkDenseProbes checks that the batch setup makes a dense probe for
// each (address, length) in addrs[:64] whose block is in l's index in
// namespace ns, and a hashed probe for the others.
func checkDenseProbes[P entry](t *testing.T, l *lpm[P], ns uint16, addrs []*[16]byte) {
	t.Helper()
	addrs = addrs[:min(len(addrs), batchStride)]
	st := new(batchState[P])
	st.load(l, addrs)
	st.begin(l, ns, len(addrs), wantMatch)
	dense, probes := 0, 0
	for j := range addrs {
		for m := st.fast[j]; m != 0; m &= m - 1 {
			f := &l.fast[bits.TrailingZeros8(m)]
			probes++
			if k, _ := blockOf(st.hi[j], int(f.bits), ns); f.blocks && l.dense.find(k) != nil {
				dense++
			}
		}
	}
	if st.nd != dense || st.np != probes-dense || dense == 0 {
		t.Fatalf("namespace %d: %d dense probes and %d hashed, want %d and %d", ns, st.nd, st.np, dense, probes-dense)
	}
}

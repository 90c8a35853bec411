package fib

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// oracle is the slow, obviously correct model of a Table: maps, and a
// linear scan of the prefixes sorted longest first.
type oracle struct {
	routes map[netip.Prefix]Route
	srcs   map[srcKey]int // AddSource references
	conf   map[PortID][]netip.Prefix
	def    *Route
}

type srcKey struct {
	port PortID
	p    netip.Prefix
}

func newOracle() *oracle {
	return &oracle{routes: map[netip.Prefix]Route{}, srcs: map[srcKey]int{}, conf: map[PortID][]netip.Prefix{}}
}

func (o *oracle) clone() *oracle {
	c := &oracle{routes: maps.Clone(o.routes), srcs: maps.Clone(o.srcs), conf: maps.Clone(o.conf)}
	if o.def != nil {
		d := *o.def
		c.def = &d
	}
	return c
}

// sorted returns the routes longest prefix first.
func (o *oracle) sorted() []Route {
	rs := slices.Collect(maps.Values(o.routes))
	slices.SortFunc(rs, func(a, b Route) int { return b.Prefix.Bits() - a.Prefix.Bits() })
	return rs
}

func lookupSorted(rs []Route, a netip.Addr) (Route, bool) {
	for _, r := range rs {
		if r.Prefix.Contains(a) {
			return r, true
		}
	}
	return Route{}, false
}

func (o *oracle) sourceAllowed(port PortID, a netip.Addr) bool {
	for k := range o.srcs {
		if k.port == port && k.p.Contains(a) {
			return true
		}
	}
	for _, p := range o.conf[port] {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (o *oracle) sourceLen() int {
	keys := maps.Clone(o.srcs)
	for port, ps := range o.conf {
		for _, p := range ps {
			keys[srcKey{port, p}]++
		}
	}
	return len(keys)
}

// gen draws prefixes and addresses from a small universe, so that random
// prefixes nest, collide and neighbour each other often.
type gen struct {
	r    *rand.Rand
	lens []int
}

// addr returns an address under 2001:db8::/32 whose variable bits are
// mostly confined to a few positions.
func (g *gen) addr() netip.Addr {
	hi := uint64(0x20010db8) << 32
	switch g.r.IntN(16) {
	case 0: // anywhere
		return join128(g.r.Uint64(), g.r.Uint64())
	case 1, 2: // a neighbouring /32
		hi += 1 << 32
	}
	for _, bit := range []uint{39, 41, 44, 47, 50, 52, 55, 58, 60, 63} {
		if g.r.IntN(2) == 0 {
			hi |= 1 << (63 - bit)
		}
	}
	var lo uint64
	switch g.r.IntN(4) {
	case 0:
		lo = uint64(g.r.IntN(4))
	case 1:
		lo = g.r.Uint64()
	case 2:
		hi |= g.r.Uint64() & 0xffffffff // anywhere in the /32
	}
	return join128(hi, lo)
}

func (g *gen) prefix() netip.Prefix {
	return netip.PrefixFrom(g.addr(), g.lens[g.r.IntN(len(g.lens))]).Masked()
}

// near returns an address inside p, or one just outside it.
func (g *gen) near(p netip.Prefix) netip.Addr {
	hi, lo := split128(p.Addr())
	mhi, mlo := masks(p.Bits())
	hi |= g.r.Uint64() &^ mhi
	lo |= g.r.Uint64() &^ mlo
	if g.r.IntN(2) == 0 && p.Bits() > 0 { // flip the last network bit: the neighbour
		b := uint(p.Bits() - 1)
		if b < 64 {
			hi ^= 1 << (63 - b)
		} else {
			lo ^= 1 << (127 - b)
		}
	}
	return join128(hi, lo)
}

func pick[K comparable, V any](r *rand.Rand, m map[K]V) (K, bool) {
	var zero K
	if len(m) == 0 {
		return zero, false
	}
	n := r.IntN(len(m))
	for k := range m {
		if n == 0 {
			return k, true
		}
		n--
	}
	return zero, false
}

// apply makes one random change to both the table and the oracle.
func (g *gen) apply(t *testing.T, tb *Table, o *oracle) {
	r := g.r
	port := PortID(r.IntN(4))
	switch op := r.IntN(20); {
	case op < 7: // add a route, new or replacing
		p := g.prefix()
		if op == 0 {
			if q, ok := pick(r, o.routes); ok {
				p = q
			}
		}
		rt := Route{Prefix: p, Port: port, NextHop: join128(0xfe80<<48, r.Uint64()), Loop: LoopPolicy(r.IntN(3))}
		rt.MAC[5] = byte(r.Uint32())
		if err := tb.AddRoute(rt); err != nil {
			t.Fatal(err)
		}
		o.routes[p] = rt
	case op < 11: // delete a route, usually an existing one
		p := g.prefix()
		if q, ok := pick(r, o.routes); ok && op < 10 {
			p = q
		}
		_, want := o.routes[p]
		if op == 9 { // conditional delete
			want = want && o.routes[p].Port == port
			if got := tb.DeleteRouteIf(p, port); got != want {
				t.Fatalf("DeleteRouteIf(%v, %d) = %v, want %v", p, port, got, want)
			}
		} else if got := tb.DeleteRoute(p); got != want {
			t.Fatalf("DeleteRoute(%v) = %v, want %v", p, got, want)
		}
		if want {
			delete(o.routes, p)
		}
	case op < 15: // allow a source
		k := srcKey{port, g.prefix()}
		if q, ok := pick(r, o.srcs); ok && op == 14 {
			k = q
		}
		if err := tb.AddSource(k.port, k.p); err != nil {
			t.Fatal(err)
		}
		o.srcs[k]++
	case op < 19: // drop a source reference
		k := srcKey{port, g.prefix()}
		if q, ok := pick(r, o.srcs); ok && op < 18 {
			k = q
		}
		want := o.srcs[k] > 0
		if got := tb.DeleteSource(k.port, k.p); got != want {
			t.Fatalf("DeleteSource(%v) = %v, want %v", k, got, want)
		}
		if want {
			if o.srcs[k]--; o.srcs[k] == 0 {
				delete(o.srcs, k)
			}
		}
	case r.IntN(4) == 0:
		if r.IntN(3) == 0 {
			tb.SetDefault(nil)
			o.def = nil
		} else {
			d := Route{Prefix: pfx("::/0"), Port: port, NextHop: addr("fe80::1")}
			tb.SetDefault(&d)
			o.def = &d
		}
	default: // configured sources, of any length
		var ps []netip.Prefix
		for range r.IntN(4) {
			p := g.prefix()
			if r.IntN(3) == 0 {
				p = netip.PrefixFrom(g.addr(), r.IntN(129)).Masked()
			}
			ps = append(ps, p, p) // duplicates are fine
		}
		if err := tb.SetAllowedSources(port, ps); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ps, netip.Prefix.Compare)
		if ps = slices.Compact(ps); len(ps) > 0 {
			o.conf[port] = ps
		} else {
			delete(o.conf, port)
		}
	}
}

// check compares a snapshot with the oracle it should equal.
func (g *gen) check(t *testing.T, s *Snapshot, o *oracle, queries int) {
	t.Helper()
	if s.Len() != len(o.routes) {
		t.Fatalf("gen %d: Len = %d, want %d", s.Gen(), s.Len(), len(o.routes))
	}
	if n := o.sourceLen(); s.SourceLen() != n {
		t.Fatalf("gen %d: SourceLen = %d, want %d", s.Gen(), s.SourceLen(), n)
	}
	seen := 0
	for r := range s.Routes() {
		if w, ok := o.routes[r.Prefix]; !ok || w != *r {
			t.Fatalf("gen %d: Routes yields %v, want %v", s.Gen(), *r, w)
		}
		seen++
	}
	if seen != len(o.routes) {
		t.Fatalf("gen %d: Routes yields %d routes, want %d", s.Gen(), seen, len(o.routes))
	}
	d, ok := s.DefaultRoute()
	if ok != (o.def != nil) || ok && *d != *o.def {
		t.Fatalf("gen %d: DefaultRoute = %v, want %v", s.Gen(), d, o.def)
	}
	rs := o.sorted()
	prefixes := slices.Collect(maps.Keys(o.routes))
	for k := range o.srcs {
		prefixes = append(prefixes, k.p)
	}
	addrs := make([]*[16]byte, queries) // for the batch lookups, with a few nil
	for i := range queries {
		var a netip.Addr
		if len(prefixes) > 0 && i%2 == 0 {
			a = g.near(prefixes[g.r.IntN(len(prefixes))])
		} else {
			a = g.addr()
		}
		if i%23 != 22 {
			b := a.As16()
			addrs[i] = &b
		}
		want, wok := lookupSorted(rs, a)
		got, ok := s.Lookup(a)
		if ok != wok || ok && *got != want {
			t.Fatalf("gen %d: Lookup(%v) = %v %v, want %v %v", s.Gen(), a, got, ok, want, wok)
		}
		b := a.As16()
		if gotb, okb := s.LookupBytes(&b); gotb != got || okb != ok {
			t.Fatalf("gen %d: LookupBytes(%v) differs from Lookup", s.Gen(), a)
		}
		port := PortID(g.r.IntN(5))
		if got, want := s.SourceAllowed(port, a), o.sourceAllowed(port, a); got != want {
			t.Fatalf("gen %d: SourceAllowed(%d, %v) = %v, want %v", s.Gen(), port, a, got, want)
		}
		if s.SourceAllowedBytes(port, &b) != s.SourceAllowed(port, a) {
			t.Fatalf("gen %d: SourceAllowedBytes(%d, %v) differs", s.Gen(), port, a)
		}
	}
	checkBatch(t, s, addrs)
	checkDense(t, s, o, g.r)
}

// checkDense compares a few dense blocks of a snapshot, slot by slot, with
// the oracle: a slot holds the entry of its prefix, or nothing if the
// prefix has none.
func checkDense(t *testing.T, s *Snapshot, o *oracle, r *rand.Rand) {
	t.Helper()
	prefix := func(k blockKey, j int) netip.Prefix {
		return netip.PrefixFrom(join128(k.id<<(64-int(k.bits)+blockBits)|uint64(j)<<(64-int(k.bits)), 0), int(k.bits))
	}
	checkBlockFlags(t, "routes", &s.routes)
	checkBlockFlags(t, "sources", &s.src)
	// One block of each kind, at random.
	if bs := indexed(&s.routes); len(bs) > 0 {
		b := bs[r.IntN(len(bs))]
		for j := range blockSlots {
			p := prefix(b.key, j)
			want, ok := o.routes[p]
			if e := b.get(j); (e != nil) != ok || b.holds(j) != ok || ok && (e.Route != want || b.cell(j).hop.unpack() != want.Hop()) {
				t.Fatalf("gen %d: route block %+v slot %d (%v) holds %v (bit %v), want %v %v", s.Gen(), b.key, j, p, e, b.holds(j), want, ok)
			}
		}
	}
	if bs := indexed(&s.src); len(bs) > 0 {
		b := bs[r.IntN(len(bs))]
		port := PortID(b.key.ns)
		for j := range blockSlots {
			p := prefix(b.key, j)
			want := o.srcs[srcKey{port, p}] > 0 || slices.Contains(o.conf[port], p)
			if b.holds(j) != want {
				t.Fatalf("gen %d: source block %+v slot %d (%v): bit %v, want %v", s.Gen(), b.key, j, p, b.holds(j), want)
			}
		}
	}
}

// checkBlockFlags checks that the lookups look for blocks in exactly the
// fast lengths that have some.
func checkBlockFlags[P entry](t *testing.T, name string, l *lpm[P]) {
	t.Helper()
	var has [129]bool
	for _, b := range indexed(l) {
		has[b.key.bits] = true
	}
	for i := range l.nfast {
		if f := &l.fast[i]; f.blocks != has[f.bits] {
			t.Fatalf("%s: fast /%d has blocks %v, flagged %v", name, f.bits, has[f.bits], f.blocks)
		}
	}
}

// checkBatch checks that the batch lookups answer as the single ones, and
// a nil address as no address.
func checkBatch(t *testing.T, s *Snapshot, addrs []*[16]byte) {
	t.Helper()
	routes := make([]*Route, len(addrs)+1)
	routes[len(addrs)] = &Route{} // past the batch: must stay as it is
	s.LookupBatch(addrs, routes)
	for i, a := range addrs {
		want, ok := s.LookupBytes(a)
		if !ok {
			want = nil
		}
		if routes[i] != want {
			t.Fatalf("gen %d: LookupBatch [%d] %v = %v, want %v", s.Gen(), i, a, routes[i], want)
		}
	}
	if routes[len(addrs)] == nil {
		t.Fatalf("gen %d: LookupBatch wrote past its batch", s.Gen())
	}
	// LookupHops: the same routes, and their hops.
	var fb Batch
	hrs := make([]*Route, len(addrs))
	hops := make([]Hop, len(addrs)+1)
	hops[len(addrs)] = Hop{Port: 9} // past the batch: must stay as it is
	for i := range hops[:len(addrs)] {
		hops[i] = Hop{Port: 7, MAC: [6]byte{7}} // what a last batch left
	}
	fb.LookupHops(s, addrs, hrs, hops)
	for i, a := range addrs {
		var want Hop
		if routes[i] != nil {
			want = routes[i].Hop()
		}
		if hrs[i] != routes[i] || hops[i] != want {
			t.Fatalf("gen %d: LookupHops [%d] %v = %v %+v, want %v %+v", s.Gen(), i, a, hrs[i], hops[i], routes[i], want)
		}
	}
	if hops[len(addrs)] != (Hop{Port: 9}) {
		t.Fatalf("gen %d: LookupHops wrote past its batch", s.Gen())
	}
	ok := make([]bool, len(addrs))
	for port := range PortID(5) {
		s.SourceAllowedBatch(port, addrs, ok)
		for i, a := range addrs {
			if want := s.SourceAllowedBytes(port, a); ok[i] != want {
				t.Fatalf("gen %d: SourceAllowedBatch(%d) [%d] %v = %v, want %v", s.Gen(), port, i, a, ok[i], want)
			}
		}
	}
	// SourcesAndHops: sources and destinations that differ, with a nil
	// source every third address and a nil destination every fifth.
	srcs, dsts := make([]*[16]byte, len(addrs)), make([]*[16]byte, len(addrs))
	for i := range addrs {
		if i%3 != 2 {
			srcs[i] = addrs[len(addrs)-1-i]
		}
		if i%5 != 4 {
			dsts[i] = addrs[i]
		}
	}
	ok2 := make([]bool, len(addrs)+1)
	for port := range PortID(5) {
		for i := range addrs {
			ok2[i], hrs[i], hops[i] = srcs[i] == nil, &Route{}, Hop{Port: 7} // what a last batch left
		}
		ok2[len(addrs)] = true // past the batch: must stay as it is
		fb.SourcesAndHops(s, port, srcs, ok2[:len(addrs)], dsts, hrs, hops)
		for i := range addrs {
			wantOK := srcs[i] != nil && s.SourceAllowedBytes(port, srcs[i])
			var wantR *Route
			var wantH Hop
			if dsts[i] != nil {
				wantR = routes[i]
				if wantR != nil {
					wantH = wantR.Hop()
				}
			}
			if ok2[i] != wantOK || hrs[i] != wantR || hops[i] != wantH {
				t.Fatalf("gen %d: SourcesAndHops(%d) [%d] %v %v = %v %v %+v, want %v %v %+v",
					s.Gen(), port, i, srcs[i], dsts[i], ok2[i], hrs[i], hops[i], wantOK, wantR, wantH)
			}
		}
		if !ok2[len(addrs)] || hops[len(addrs)] != (Hop{Port: 9}) {
			t.Fatalf("gen %d: SourcesAndHops wrote past its batch", s.Gen())
		}
	}
}

func lengths(lo, hi int, extra ...int) []int {
	var ls []int
	for l := lo; l <= hi; l++ {
		ls = append(ls, l)
	}
	return append(ls, extra...)
}

// TestOracle checks the table against the oracle over random nested prefix
// sets, random changes and random addresses, after every Publish, and
// checks that earlier snapshots keep answering as they did.
func TestOracle(t *testing.T) {
	// Dense blocks at their real thresholds (rare in these small tables),
	// and at thresholds so low that they come and go all the time.
	for _, th := range []struct{ on, off int32 }{{0, 0}, {1, 1}, {2, 1}, {3, 2}} { // 0: the real ones
		name := fmt.Sprintf("dense=%d,%d", th.on, th.off)
		if th.on == 0 {
			name = "dense=real"
		}
		t.Run(name, func(t *testing.T) {
			if th.on > 0 {
				defer setThresholds(th.on, th.off)()
			}
			blocks := testOracle(t)
			if th.on > 0 && blocks == 0 {
				t.Error("no dense blocks made")
			}
		})
	}
}

// testOracle runs the oracle test and returns how many dense blocks the
// tables held at the ends of the phases, summed.
func testOracle(t *testing.T) (blocks int) {
	phases := []struct {
		name string
		lens []int // prefix lengths drawn from, changing phase by phase
	}{
		{"few", []int{48, 56, 60, 64}},
		{"many", lengths(40, 64, 128)},
		{"shift", []int{41, 42, 43, 44, 45, 46, 47, 128}},
		{"more", []int{40, 48, 52, 56, 56, 56, 60, 64, 64, 127, 128}},
	}
	seeds, rounds, batch, queries := 4, 25, 60, 200
	if testing.Short() {
		seeds, rounds = 2, 15
	}
	// Let lengths trade places between the exact tables and bart often.
	defer func(s int) { swapSlack = s }(swapSlack)
	swapSlack = 2
	moves := 0
	for seed := range seeds {
		g := &gen{r: rand.New(rand.NewPCG(uint64(seed), 42))}
		tb, o := NewTable(), newOracle()
		type kept struct {
			s *Snapshot
			o *oracle
		}
		var old []kept
		for _, ph := range phases {
			g.lens = ph.lens
			for round := range rounds {
				n := batch
				if round%7 == 0 {
					n = 1 // small batches too
				}
				for range n {
					g.apply(t, tb, o)
				}
				s := tb.Publish()
				if round%5 == 3 {
					s = tb.PublishDeferred() // dense blocks wait for the next Publish
				}
				g.check(t, s, o, queries)
				// Earlier generations must not have been disturbed.
				for _, k := range old {
					g.check(t, k.s, k.o, queries/10)
				}
				old = append(old, kept{s, o.clone()})
				if len(old) > 3 {
					old = old[1:]
				}
			}
			blocks += len(tb.routes.dense.dense) + len(tb.src.dense.dense)
			t.Logf("seed %d phase %s: %d routes, %d sources, route lengths fast %d slow max %d, dense blocks %d+%d",
				seed, ph.name, len(o.routes), o.sourceLen(), tb.routes.cur.nfast, old[len(old)-1].s.routes.slowMax,
				len(tb.routes.dense.dense), len(tb.src.dense.dense))
		}
		moves += tb.routes.moves + tb.src.moves
		// Empty the table completely.
		for p := range o.routes {
			tb.DeleteRoute(p)
		}
		for k, n := range o.srcs {
			for range n {
				tb.DeleteSource(k.port, k.p)
			}
		}
		for port := range o.conf {
			tb.SetAllowedSources(port, nil)
		}
		if s := tb.Publish(); s.Len() != 0 || s.SourceLen() != 0 || s.routes.nfast != 0 || s.src.nfast != 0 || s.routes.slowMax != -1 {
			t.Fatalf("emptied table: %d routes, %d sources, %d/%d fast tables, slowMax %d",
				s.Len(), s.SourceLen(), s.routes.nfast, s.src.nfast, s.routes.slowMax)
		}
	}
	if moves == 0 {
		t.Error("no prefix length moved between exact tables and bart")
	}
	t.Logf("%d migrations", moves)
	return blocks
}

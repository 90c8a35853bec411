package binding

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"
)

// unknownMAC is l with the MAC unknown, as the relay learns it from a
// Reply whose request it never saw.
func unknownMAC(l Learned) Learned {
	l.MAC, l.MACKnown = [6]byte{}, false
	return l
}

// TestSetMACs fills the MAC of one next hop on one port for the clients
// waiting on it and checks, binding by binding, what changed and what was
// recorded.
func TestSetMACs(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	const duidC = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0c"
	const duidD = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0d"
	macC := [6]byte{2, 0, 0, 0, 0, 0x0c}
	resolved := [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a} // what neighbour discovery found for fe80::a

	a1 := unknownMAC(learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour))
	a2 := unknownMAC(learned("eth1", duidA, 2, "2001:db8:2::/56", time.Hour, 2*time.Hour))
	b1 := unknownMAC(learned("eth1", duidB, 1, "2001:db8:3::/56", time.Hour, 2*time.Hour)) // fe80::b: another next hop
	other := unknownMAC(learned("eth2", duidA, 1, "2001:db8:4::/56", time.Hour, 2*time.Hour))
	// Same port and next hop, MAC known but different: the kernel's
	// current answer wins.
	changed := learned("eth1", duidC, 1, "2001:db8:5::/56", time.Hour, 2*time.Hour)
	changed.MAC = macC
	// Same port and next hop, already the resolved MAC: untouched.
	same := learned("eth1", duidD, 1, "2001:db8:6::/56", time.Hour, 2*time.Hour)
	same.MAC = resolved
	for _, l := range []Learned{a1, a2, b1, other, changed, same} {
		mustLearn(t, tb, t0, l)
	}
	if g, _ := tb.Get(a1.Key); g.MAC != ([6]byte{}) {
		t.Fatalf("a binding learned with the MAC unknown holds %x, want all zero", g.MAC)
	}
	tb.TakeChanges()
	before := map[Key]Binding{}
	for _, b := range tb.List() {
		before[b.Key] = b
	}

	all := []string{duidA, duidB, duidC, duidD}
	set := func(port string, nh netip.Addr, mac [6]byte) int {
		return tb.SetMACs([]Neighbor{{Port: port, NextHop: nh, MAC: mac, Clients: all}})[0]
	}
	// The next hop as the resolver reports it: with the port as zone.
	n := set("eth1", llA.WithZone("eth1"), resolved)
	if n != 3 {
		t.Fatalf("SetMACs changed %d bindings, want 3 (two zero, one different)", n)
	}
	want := map[Key]Binding{}
	for k, b := range before {
		if k == a1.Key || k == a2.Key || k == changed.Key {
			b.MAC = resolved // and nothing else: not Updated, not lifetimes
		}
		want[k] = b
	}
	for _, b := range tb.List() {
		if b != want[b.Key] {
			t.Errorf("after SetMACs %v:\n got %+v\nwant %+v", b.Prefix, b, want[b.Key])
		}
	}
	ch := tb.TakeChanges()
	var gotKeys []string
	for _, c := range ch {
		if c.Op != Updated || !c.RouteChanged || c.Reason != "" {
			t.Errorf("change %+v: want Updated with RouteChanged", c)
		}
		if c.Binding != want[c.Binding.Key] {
			t.Errorf("change carries %+v, want %+v", c.Binding, want[c.Binding.Key])
		}
		gotKeys = append(gotKeys, c.Binding.Prefix.String())
	}
	slices.Sort(gotKeys)
	if !slices.Equal(gotKeys, []string{"2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:5::/56"}) {
		t.Errorf("changes recorded for %v", gotKeys)
	}

	// Again: nothing differs, nothing is recorded.
	if n := set("eth1", llA, resolved); n != 0 {
		t.Errorf("second SetMACs changed %d", n)
	}
	// An all-zero MAC is never set; an unknown next hop or port matches
	// nothing.
	if n := set("eth1", llA, [6]byte{}); n != 0 {
		t.Errorf("SetMACs(zero) changed %d", n)
	}
	if n := set("eth9", llA, macC); n != 0 {
		t.Errorf("SetMACs(other port) changed %d", n)
	}
	if n := set("eth1", netip.MustParseAddr("fe80::99"), macC); n != 0 {
		t.Errorf("SetMACs(other next hop) changed %d", n)
	}
	if c := tb.TakeChanges(); c != nil {
		t.Errorf("changes recorded for no change: %+v", c)
	}
	// The other port's binding with the same next hop is filled only by
	// its own port's resolution.
	if n := set("eth2", llA, resolved); n != 1 {
		t.Errorf("SetMACs(eth2) changed %d, want 1", n)
	}
	if g, _ := tb.Get(b1.Key); g != before[b1.Key] {
		t.Errorf("fe80::b's binding changed: %+v", g)
	}
}

// TestSetMACThenMatchedRequest: a resolved MAC is a MAC like any other.
// A later Reply whose request was seen brings the frame's MAC, which
// replaces it; a later unmatched Reply keeps it (never back to zero).
func TestSetMACThenMatchedRequest(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour)
	mustLearn(t, tb, t0, unknownMAC(l))
	resolved := [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a}
	if n := tb.SetClientMAC("eth1", duidA, llA, resolved); n != 1 {
		t.Fatalf("SetClientMAC changed %d", n)
	}
	tb.TakeChanges()

	// Unmatched renewal: lifetimes only, the resolved MAC stays.
	t1 := t0.Add(time.Minute)
	mustLearn(t, tb, t1, unknownMAC(l))
	if g, _ := tb.Get(l.Key); g.MAC != resolved || !g.Updated.Equal(t1) {
		t.Fatalf("after an unmatched renewal: %+v", g)
	}
	if ch := tb.TakeChanges(); len(ch) != 1 || ch[0].RouteChanged {
		t.Fatalf("unmatched renewal recorded %+v, want one lifetime-only update", ch)
	}

	// Matched renewal: the request frame's MAC (macA) replaces it.
	t2 := t1.Add(time.Minute)
	mustLearn(t, tb, t2, l)
	if g, _ := tb.Get(l.Key); g.MAC != macA {
		t.Fatalf("after a matched renewal MAC %x, want %x", g.MAC, macA)
	}
	ch := tb.TakeChanges()
	if len(ch) != 1 || ch[0].Op != Updated || !ch[0].RouteChanged || ch[0].Binding.MAC != macA {
		t.Fatalf("matched renewal recorded %+v", ch)
	}
	// And a resolution saying the same changes nothing.
	if n := tb.SetClientMAC("eth1", duidA, llA, macA); n != 0 {
		t.Errorf("SetClientMAC with the bound MAC changed %d", n)
	}
}

// TestSetClientMAC: the scoped form changes only the named client's
// bindings with that next hop on that port.
func TestSetClientMAC(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	const duidC = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0c"
	resolved := [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a}
	a1 := unknownMAC(learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour))
	a2 := learned("eth1", duidA, 2, "2001:db8:2::/56", time.Hour, 2*time.Hour) // known macA: changed
	a3 := unknownMAC(learned("eth1", duidA, 3, "2001:db8:3::/56", time.Hour, 2*time.Hour))
	a3.NextHop = llB // the same client with another next hop: untouched
	c1 := unknownMAC(learned("eth1", duidC, 1, "2001:db8:4::/56", time.Hour, 2*time.Hour))
	c1.NextHop = llA // another client at the same next hop: not named
	other := unknownMAC(learned("eth2", duidA, 1, "2001:db8:5::/56", time.Hour, 2*time.Hour))
	for _, l := range []Learned{a1, a2, a3, c1, other} {
		mustLearn(t, tb, t0, l)
	}
	tb.TakeChanges()
	before := map[Key]Binding{}
	for _, b := range tb.List() {
		before[b.Key] = b
	}
	if n := tb.SetClientMAC("eth1", duidA, llA.WithZone("eth1"), resolved); n != 2 {
		t.Fatalf("SetClientMAC changed %d, want 2", n)
	}
	for _, b := range tb.List() {
		want := before[b.Key]
		if b.Key == a1.Key || b.Key == a2.Key {
			want.MAC = resolved
		}
		if b != want {
			t.Errorf("after SetClientMAC %v:\n got %+v\nwant %+v", b.Prefix, b, want)
		}
	}
	ch := tb.TakeChanges()
	if len(ch) != 2 || ch[0].Op != Updated || !ch[0].RouteChanged || ch[1].Op != Updated || !ch[1].RouteChanged {
		t.Errorf("changes %+v, want two Updated with RouteChanged", ch)
	}
	if n := tb.SetClientMAC("eth1", duidA, llA, resolved); n != 0 {
		t.Errorf("again: changed %d", n)
	}
	if n := tb.SetClientMAC("eth1", duidA, llA, [6]byte{}); n != 0 {
		t.Errorf("zero MAC: changed %d", n)
	}

	// Through SetMACs: Clients selects this path.
	counts := tb.SetMACs([]Neighbor{{Port: "eth1", NextHop: llA, MAC: macB, Clients: []string{duidA, duidC}}})
	if counts[0] != 3 {
		t.Errorf("SetMACs with Clients changed %d, want 3", counts[0])
	}
	if g, _ := tb.Get(other.Key); g != before[other.Key] {
		t.Errorf("the other port's binding changed: %+v", g)
	}
	if g, _ := tb.Get(a3.Key); g != before[a3.Key] {
		t.Errorf("the other next hop's binding changed: %+v", g)
	}
}

func TestManagerSetMACs(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	var rec recorder
	m := NewManager(tb, newFakeClock(t0).now, nil, rec.sink)
	startManager(t, m)
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour)
	m.Apply(Update{Learn: []Learned{unknownMAC(l)}})
	resolved := [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a}
	done := make(chan []int, 1)
	m.SetMACs([]Neighbor{{Port: "eth1", NextHop: llA, MAC: resolved, Clients: []string{duidA}}}, func(_ []Neighbor, counts []int) { done <- counts })
	select {
	case c := <-done:
		if len(c) != 1 || c[0] != 1 {
			t.Fatalf("counts %v, want [1]", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetMACs never ran")
	}
	bs, err := m.List(t.Context())
	if err != nil || len(bs) != 1 || bs[0].MAC != resolved {
		t.Fatalf("List = %+v, %v", bs, err)
	}
	var last Change
	for _, c := range rec.all() {
		last = c
	}
	if last.Op != Updated || !last.RouteChanged || last.Binding.MAC != resolved {
		t.Errorf("the sinks' last change is %+v", last)
	}
}

// BenchmarkSetMAC is the cost of one resolution at 100k and 1M bindings,
// none of which it changes: SetClientMAC looks at one client's bindings,
// whatever the table's size. Each table is filled once.
func BenchmarkSetMAC(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		tb := NewTable(PortLimits{}, nil)
		for i := range n {
			if _, err := tb.Learn(t0, genLearned(i)); err != nil {
				b.Fatal(err)
			}
			if i%4096 == 0 {
				tb.TakeChanges()
			}
		}
		tb.TakeChanges()
		l := genLearned(0)
		runtime.GC()
		b.Run(fmt.Sprintf("client-%dk", n/1000), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				tb.SetClientMAC(l.Port, l.DUID, l.NextHop, l.MAC)
			}
		})
	}
}

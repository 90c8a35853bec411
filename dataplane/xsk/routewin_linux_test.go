package xsk

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// inRange is the i-th prefix of length l in the r-th test range: ranges
// are 2400:r::/32-based (r < 2^16), so each is a different window for
// any length from winMinLen+16 up.
func inRange(r, i, l int) netip.Prefix {
	hi := uint64(0x2400)<<48 | uint64(r)<<32 | uint64(i)<<(64-l)
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], hi)
	return netip.PrefixFrom(netip.AddrFrom16(a), l)
}

// TestRouteWindows checks the windows against the hash (Contains) and a
// set of the prefixes added, over more ranges than there are slots, more
// windows of one length than the program tries, lengths with and
// without windows, and windows freed and reused: every verdict must be
// the set's.
func TestRouteWindows(t *testing.T) {
	requireRoot(t)
	r, err := NewRoutes(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p := programWithSocketRoutes(t, r)
	rng := rand.New(rand.NewPCG(3, 4))
	set := map[netip.Prefix]bool{}
	add := func(pfx netip.Prefix) {
		t.Helper()
		if err := r.Add(pfx); err != nil {
			t.Fatalf("Add %s: %v", pfx, err)
		}
		set[pfx] = true
	}
	del := func(pfx netip.Prefix) {
		t.Helper()
		if err := r.Delete(pfx); err != nil {
			t.Fatalf("Delete %s: %v", pfx, err)
		}
		delete(set, pfx)
	}
	want := func(a netip.Addr) bool {
		for pfx := range set {
			if pfx.Contains(a) {
				return true
			}
		}
		return false
	}
	// probe checks destinations in and next to every prefix of set, and
	// random ones in the ranges used.
	probe := func(step string) {
		t.Helper()
		var dsts []netip.Addr
		for pfx := range set {
			a := pfx.Addr().As16()
			a[15] = 1
			dsts = append(dsts, netip.AddrFrom16(a))
			if pfx.Bits() <= 64 {
				// The prefix after and before it, of the same length.
				hi := binary.BigEndian.Uint64(a[:8])
				for _, d := range []uint64{1, ^uint64(0)} {
					binary.BigEndian.PutUint64(a[:8], hi+d<<(64-pfx.Bits()))
					dsts = append(dsts, netip.AddrFrom16(a))
				}
			}
		}
		for range 300 {
			dsts = append(dsts, inRange(rng.IntN(12), rng.IntN(1<<12), 56).Addr().Next())
		}
		redirected := 0
		for _, d := range dsts {
			got := routedVerdict(t, p, d.String())
			if got != want(d) || r.Contains(d) != got {
				t.Fatalf("%s: dst %s redirected=%v, set says %v, Contains %v", step, d, got, want(d), r.Contains(d))
			}
			if got {
				redirected++
			}
		}
		if redirected == 0 && len(set) > 0 {
			t.Fatalf("%s: no destination redirected", step)
		}
	}

	// Ten ranges of /56s (more than winSlots): the first eight get
	// windows, the last two live in the hash alone. A few /48s and
	// /64s in the same ranges, and /128s.
	var ranges [10][]netip.Prefix
	for rg := range ranges {
		for _, i := range rng.Perm(1 << 12)[:40] {
			pfx := inRange(rg, i, 56)
			ranges[rg] = append(ranges[rg], pfx)
			add(pfx)
		}
	}
	for rg := range 3 {
		add(inRange(rg, 7, 48))
		add(inRange(rg+1, 3, 64))
		add(netip.PrefixFrom(inRange(rg, 9, 56).Addr().Next(), 128))
	}
	if n := len(r.wins); n != winSlots {
		t.Fatalf("%d windows, want %d (every slot)", n, winSlots)
	}
	for rg := range ranges {
		k, _, _ := rangeOf(ranges[rg][0])
		if _, ok := r.wins[k]; ok != (rg < winSlots) {
			t.Errorf("range %d has a window: %v", rg, ok)
		}
	}
	if w, in := r.Windows(); w != winSlots || in != 40*winSlots {
		t.Errorf("Windows() = %d, %d; want %d, %d", w, in, winSlots, 40*winSlots)
	}
	probe("10 ranges")

	// Empty range 0: its window goes, and a new range takes the slot;
	// range 8 (hash alone) never gets one, even with a slot free.
	for _, pfx := range ranges[0] {
		del(pfx)
	}
	k8, _, _ := rangeOf(ranges[8][0])
	if _, ok := r.wins[k8]; ok {
		t.Fatal("range 8 has a window")
	}
	add(inRange(8, 4000, 56))
	if _, ok := r.wins[k8]; ok {
		t.Error("range 8 got a window while prefixes of it were in the hash alone")
	}
	for i := range 30 {
		add(inRange(11, i*3, 56))
	}
	k11, _, _ := rangeOf(inRange(11, 0, 56))
	if _, ok := r.wins[k11]; !ok {
		t.Error("range 11 got no window from the freed slot")
	}
	probe("range 0 emptied, range 11 added")

	// Half of range 3 goes: its cleared bits must not redirect.
	for _, pfx := range ranges[3][:20] {
		del(pfx)
	}
	probe("half of range 3 deleted")

	// Everything goes: no window, no bit left.
	for pfx := range set {
		del(pfx)
	}
	if len(r.wins) != 0 || len(r.ranges) != 0 || r.Len() != 0 {
		t.Errorf("after deleting all: %d windows, %d ranges, Len %d", len(r.wins), len(r.ranges), r.Len())
	}
	bm := make([]byte, winSlots*winWords*8)
	if _, err := r.mem.ReadAt(bm, 0); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(bm, func(b byte) bool { return b != 0 }); i >= 0 {
		t.Errorf("bitmap word %d is not zero after deleting all", i/8)
	}
	for _, d := range []string{"2400:1::1", "2400:3:0:100::1"} {
		if routedVerdict(t, p, d) {
			t.Errorf("empty map: %s redirected", d)
		}
	}
}

package dataplane

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

// TestOverridesOracle checks the override lookup, as a list and as a bart
// table, against a scan of all overrides for the longest match, for
// addresses near the overrides and anywhere (outside the range of
// addresses the overrides hold, the lookup answers at once).
func TestOverridesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	addr := func(hi, lo uint64) netip.Addr {
		var a [16]byte
		binary.BigEndian.PutUint64(a[:], hi)
		binary.BigEndian.PutUint64(a[8:], lo)
		return netip.AddrFrom16(a)
	}
	// Addresses and prefixes near each other, so that they nest.
	near := func() netip.Addr {
		return addr(0x20010db8_00000000|r.Uint64N(4)<<16|r.Uint64N(4), r.Uint64N(4)<<62|r.Uint64N(4))
	}
	for round := range 300 {
		n := r.IntN(2 * maxOverrideList)
		seen := map[netip.Prefix]bool{}
		var os []LoopOverride
		for len(os) < n {
			p := netip.PrefixFrom(near(), []int{0, 16, 32, 48, 60, 62, 64, 126, 127, 128}[r.IntN(10)]).Masked()
			if !seen[p] {
				seen[p] = true
				os = append(os, LoopOverride{p, fib.LoopPolicy(1 + r.IntN(2))})
			}
		}
		o := newOverrides(os)
		if (o.tbl != nil) != (n > maxOverrideList) {
			t.Fatalf("%d overrides: table %v", n, o.tbl != nil)
		}
		for i := range 200 {
			a := near()
			if i%4 == 3 {
				a = addr(r.Uint64(), r.Uint64()) // mostly outside every override
			}
			want, wantOK, best := fib.LoopDefault, false, -1
			for _, x := range os {
				if x.Prefix.Contains(a) && x.Prefix.Bits() > best {
					want, wantOK, best = x.Policy, true, x.Prefix.Bits()
				}
			}
			b := a.As16()
			got, ok := fib.LoopDefault, false
			if o.mayHold(&b) { // as loopPolicy asks
				got, ok = o.lookup(&b)
			}
			if got != want || ok != wantOK {
				t.Fatalf("round %d, %d overrides, %v: %v %v, want %v %v", round, n, a, got, ok, want, wantOK)
			}
		}
	}
}

// TestManyOverrides runs Forward with overrides in a bart table.
func TestManyOverrides(t *testing.T) {
	cfg := testConfig(false)
	for i := range maxOverrideList + 4 {
		cfg.LoopOverrides = append(cfg.LoopOverrides, LoopOverride{
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x0f, byte(i)}), 56), fib.LoopDrop})
	}
	f := newForwarder(t, cfg)
	snap := testSnapshot(t, true)
	for _, c := range []struct {
		dst string
		v   Verdict
	}{
		{"2001:db8:a:30f::1", Drop},    // per-destination drop
		{"2001:db8:a:310::1", Forward}, // per-client forward
		{"2001:db8:a:1ff::1", Forward}, // per-destination forward
		{"2001:db8:a:100::1", Drop},    // port drop
	} {
		if v, _, _, _ := f.Forward(snap, portA, fromA(clientA1, c.dst).frame(t), 0); v != c.v {
			t.Errorf("%s: %v, want %v", c.dst, v, c.v)
		}
	}
	orig := fromA(clientA1, "2001:db8:a:30f::1").frame(t)
	buf := make([]byte, len(orig))
	if n := testing.AllocsPerRun(100, func() {
		copy(buf, orig)
		f.Forward(snap, portA, buf, 0)
	}); n != 0 {
		t.Errorf("%v allocations per Forward with the overrides in a table", n)
	}
}

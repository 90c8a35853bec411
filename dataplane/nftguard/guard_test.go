package nftguard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// newModelGuard returns an installed Guard on a modelKernel.
func newModelGuard(t *testing.T, cfg Config) (*Guard, *modelKernel) {
	t.Helper()
	if cfg.Ports == nil {
		cfg.Ports = []Port{{Name: "dl0"}, {Name: "dl1"}}
	}
	g, err := newGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &modelKernel{}
	g.k = m
	if err := g.install(); err != nil {
		t.Fatal(err)
	}
	return g, m
}

var (
	p56a = netip.MustParsePrefix("2001:db8:1:100::/56")
	p56b = netip.MustParsePrefix("2001:db8:1:200::/56")
	p64  = netip.MustParsePrefix("2001:db8:1:300::/64")
)

// TestLazySets: the first prefix of a length on a port creates that
// port's set (and rule) in the same transaction as its element; later
// ones of that length do not; a reinstall forgets them all.
func TestLazySets(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	if len(m.txs) != 1 || !m.txs[0].install || len(m.txs[0].newSets) != 0 || len(m.txs[0].layout.ports) != 2 ||
		m.txs[0].layout.ports[1].name != "dl1" {
		t.Fatalf("install: %+v", m.txs)
	}
	flush := func() *tx {
		t.Helper()
		n := len(m.txs)
		if err := g.Flush(); err != nil {
			t.Fatal(err)
		}
		if len(m.txs) != n+1 {
			t.Fatalf("Flush made %d transactions, want 1", len(m.txs)-n)
		}
		return &m.txs[len(m.txs)-1]
	}
	g.Add("dl0", p56a)
	tx := flush()
	if !slices.Equal(tx.newSets, []setKey{{port: 0, bits: 56}}) || tx.n != 1 || len(tx.elems[setKey{port: 0, bits: 56}].add) != 1 {
		t.Fatalf("first /56: %+v", tx)
	}
	g.Add("dl0", p56b)
	g.Add("dl1", p56b) // same length, other port: a set of its own
	g.Add("dl0", p64)
	tx = flush()
	if !slices.Equal(tx.newSets, []setKey{{port: 1, bits: 56}, {port: 0, bits: 64}}) || tx.n != 3 {
		t.Fatalf("second batch: new sets %v, %d changes", tx.newSets, tx.n)
	}
	// Emptying a set keeps it: its next element needs no new set.
	g.Delete("dl0", p64)
	flush()
	g.Add("dl0", p64)
	if tx = flush(); len(tx.newSets) != 0 {
		t.Fatalf("a set was created again: %v", tx.newSets)
	}
	g.mu.Lock()
	err := g.reinstallLocked()
	g.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for g.busyBulk() {
		g.step()
	}
	want := []string{"dl0 2001:db8:1:100::/56", "dl0 2001:db8:1:200::/56", "dl0 2001:db8:1:300::/64", "dl1 2001:db8:1:200::/56"}
	if got := m.contents(); !slices.Equal(got, want) {
		t.Fatalf("after reinstall the kernel holds %v, want %v", got, want)
	}
}

func (g *Guard) busyBulk() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.bulk) > 0 || len(g.restore) > 0 || g.broken
}

// TestRefcount: each Add needs its own Delete; a Delete of nothing is
// refused; an Add and Delete before one Flush cost the kernel nothing;
// prefixes are masked; unknown ports and IPv4 are refused.
func TestRefcount(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	if !g.Add("dl0", p56a) || !g.Add("dl0", netip.MustParsePrefix("2001:db8:1:1ff::1/56")) { // the same /56, host bits set
		t.Fatal("Add refused")
	}
	g.Flush()
	if got := m.contents(); !slices.Equal(got, []string{"dl0 2001:db8:1:100::/56"}) {
		t.Fatalf("kernel holds %v", got)
	}
	g.Delete("dl0", p56a)
	g.Flush()
	if len(m.contents()) != 1 {
		t.Fatal("the prefix went with one of its two holders")
	}
	if !g.Delete("dl0", p56a) {
		t.Fatal("second Delete refused")
	}
	g.Flush()
	if len(m.contents()) != 0 {
		t.Fatalf("kernel still holds %v", m.contents())
	}
	if g.Delete("dl0", p56a) {
		t.Fatal("a Delete of nothing was accepted")
	}
	n := len(m.txs)
	g.Add("dl1", p64)
	g.Delete("dl1", p64)
	g.Flush()
	if len(m.txs) != n {
		t.Fatalf("an Add undone before the Flush made %d transactions", len(m.txs)-n)
	}
	if g.Add("dl9", p64) || g.Add("dl0", netip.MustParsePrefix("192.0.2.0/24")) || g.Add("dl0", netip.Prefix{}) ||
		g.Add("dl0", netip.MustParsePrefix("::ffff:192.0.2.0/120")) {
		t.Fatal("an unknown port or a non-IPv6 prefix was accepted")
	}
	if len(g.refs) != 0 {
		t.Fatalf("entries left: %v", g.refs)
	}
}

// TestAllowedSources: a port's allowed_sources are in the kernel right
// after New, as ordinary holders.
func TestAllowedSources(t *testing.T) {
	g, m := newModelGuard(t, Config{Ports: []Port{{Name: "dl0", AllowedSources: []netip.Prefix{p64, p56a}}}})
	if got := m.contents(); !slices.Equal(got, []string{"dl0 2001:db8:1:100::/56", "dl0 2001:db8:1:300::/64"}) {
		t.Fatalf("after New the kernel holds %v", got)
	}
	g.Add("dl0", p64) // a binding of the same prefix
	g.Delete("dl0", p64)
	g.Flush()
	if len(m.contents()) != 2 {
		t.Fatal("the binding's end took an allowed source with it")
	}
}

// TestBatchSplit: more changes than Config.Batch take several
// transactions, each within the limit.
func TestBatchSplit(t *testing.T) {
	g, m := newModelGuard(t, Config{Batch: 10})
	for i := range 25 {
		g.Add("dl0", netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i)}), 48))
	}
	g.Flush()
	var sizes []int
	for _, tx := range m.txs[1:] {
		sizes = append(sizes, tx.n)
	}
	if !slices.Equal(sizes, []int{10, 10, 5}) || len(m.contents()) != 25 {
		t.Fatalf("transactions of %v changes, kernel holds %d", sizes, len(m.contents()))
	}
}

// TestFailedBatchRebuilds: when the kernel refuses a transaction, Flush
// returns its error, later Flushes wait, and Run's steps reinstall the
// table and write the whole desired state, changes made meanwhile
// included.
func TestFailedBatchRebuilds(t *testing.T) {
	var log strings.Builder
	g, m := newModelGuard(t, Config{Batch: 2, Log: newTextLog(&log)})
	g.Add("dl0", p56a)
	g.Flush()
	m.fail = func(*tx) error { return errModel }
	g.Add("dl0", p56b)
	if err := g.Flush(); !errors.Is(err, errModel) {
		t.Fatalf("Flush: %v", err)
	}
	if !strings.Contains(log.String(), "kernel guard out of sync") {
		t.Fatalf("the failure was not logged:\n%s", log.String())
	}
	g.Add("dl1", p64)
	g.Delete("dl0", p56a)
	if err := g.Flush(); err != nil { // waits for the rebuild
		t.Fatal(err)
	}
	// The reinstall itself fails while the kernel refuses: retried later.
	if wait, err := g.step(); err == nil || wait <= 0 {
		t.Fatalf("reinstall against a refusing kernel: wait %v, err %v", wait, err)
	}
	m.fail = nil
	steps := 0
	for g.busyBulk() {
		g.step()
		steps++
	}
	want := []string{"dl0 2001:db8:1:200::/56", "dl1 2001:db8:1:300::/64"}
	if got := m.contents(); !slices.Equal(got, want) {
		t.Fatalf("after the rebuild the kernel holds %v, want %v", got, want)
	}
	if steps != 2 { // reinstall, then 2 keys in one batch
		t.Errorf("rebuild took %d steps, want 2", steps)
	}
	if !g.Filled() {
		t.Error("not Filled after the rebuild")
	}
}

// TestVerify: Run's check notices a table deleted or rules changed from
// outside, and a whole table passes.
func TestVerify(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	g.Add("dl0", p56a)
	g.Flush()
	check := func() bool {
		g.mu.Lock()
		g.check = true
		g.mu.Unlock()
		g.step() // checks, and starts a reinstall if it must
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.rebuildStart.IsZero()
	}
	if !check() {
		t.Fatal("a whole table failed the check")
	}
	m.remove()
	if check() {
		t.Fatal("a deleted table passed the check")
	}
	for g.busyBulk() {
		g.step()
	}
	if got := m.contents(); !slices.Equal(got, []string{"dl0 2001:db8:1:100::/56"}) {
		t.Fatalf("after the reinstall the kernel holds %v", got)
	}
	m.rules[portChain("dl0")]-- // a rule gone
	if check() {
		t.Fatal("a table missing a rule passed the check")
	}
}

// TestRestore: restored sources are counted in by the steps, beside
// Adds and Deletes made meanwhile in any order, including a Delete of a
// restored source that the fill has not reached yet.
func TestRestore(t *testing.T) {
	g, m := newModelGuard(t, Config{Batch: 3})
	ps := []netip.Prefix{p56a, p56b, p64, netip.MustParsePrefix("2001:db8:9::/48")}
	g.Restore(func(yield func(string, netip.Prefix) bool) {
		for _, p := range ps {
			if !yield("dl0", p) {
				return
			}
		}
		yield("gone", p64) // a port no longer configured
	})
	if g.Filled() {
		t.Fatal("Filled before the fill")
	}
	g.Delete("dl0", ps[3]) // not yet counted in: goes negative
	g.Add("dl1", p64)
	g.Flush()
	g.step() // 3 restored
	g.Delete("dl0", ps[0])
	g.Flush()
	g.step() // the last one, which the Delete cancels
	if !g.Filled() {
		t.Fatal("not Filled")
	}
	want := []string{"dl0 2001:db8:1:200::/56", "dl0 2001:db8:1:300::/64", "dl1 2001:db8:1:300::/64"}
	if got := m.contents(); !slices.Equal(got, want) {
		t.Fatalf("kernel holds %v, want %v", got, want)
	}
	if g.neg != 0 || g.Len() != 3 {
		t.Fatalf("neg %d, len %d", g.neg, g.Len())
	}
	// After the fill a Delete of nothing is refused again.
	if g.Delete("dl0", ps[3]) {
		t.Fatal("Delete of nothing accepted after the fill")
	}
}

// TestRestoreUnmatchedDelete: a Delete no Add or restored source
// matches, made during the fill, is logged and forgotten when the fill
// ends, so a later Add allows the prefix.
func TestRestoreUnmatchedDelete(t *testing.T) {
	var log strings.Builder
	g, m := newModelGuard(t, Config{Log: newTextLog(&log)})
	g.Restore(func(yield func(string, netip.Prefix) bool) { yield("dl0", p56a) })
	g.Delete("dl0", p64)
	g.step()
	if !strings.Contains(log.String(), "deletes without an add") {
		t.Fatalf("not logged:\n%s", log.String())
	}
	g.Add("dl0", p64)
	g.Flush()
	if got := m.contents(); !slices.Equal(got, []string{"dl0 2001:db8:1:100::/56", "dl0 2001:db8:1:300::/64"}) {
		t.Fatalf("kernel holds %v", got)
	}
}

// TestEmptyRestore: Restore with nothing ends the fill at once.
func TestEmptyRestore(t *testing.T) {
	g, _ := newModelGuard(t, Config{})
	g.Restore(func(func(string, netip.Prefix) bool) {})
	if !g.Filled() {
		t.Fatal("not Filled after an empty restore")
	}
}

// TestOracle drives a Guard with random Adds, Deletes, Flushes, fill
// steps, refused transactions and checks against a plain map of
// reference counts: whenever the Guard is idle, the kernel holds exactly
// the prefixes with a count above zero.
func TestOracle(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		g, m := newModelGuard(t, Config{Batch: 1 + rng.IntN(8)})
		type pk struct {
			port string
			p    netip.Prefix
		}
		ref := map[pk]int{}
		var pool []pk
		for range 12 {
			bits := []int{48, 56, 60, 64, 128}[rng.IntN(5)]
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(rng.IntN(3)), byte(rng.IntN(3)), byte(rng.IntN(2) << 4), 0, 0, 0, 0, 0, 0, 0, 0, byte(rng.IntN(2))}
			pool = append(pool, pk{[]string{"dl0", "dl1"}[rng.IntN(2)], netip.PrefixFrom(netip.AddrFrom16(a), bits).Masked()})
		}
		// Some restored sources, counted in by the steps.
		var restored []pk
		for range rng.IntN(6) {
			restored = append(restored, pool[rng.IntN(len(pool))])
		}
		for _, r := range restored {
			ref[r]++
		}
		g.Restore(func(yield func(string, netip.Prefix) bool) {
			for _, r := range restored {
				if !yield(r.port, r.p) {
					return
				}
			}
		})
		for op := range 200 {
			x := pool[rng.IntN(len(pool))]
			switch r := rng.IntN(10); {
			case r < 4:
				g.Add(x.port, x.p)
				ref[x]++
			case r < 7:
				// Delete only what is held, as the binding table does.
				if ref[x] > 0 {
					if !g.Delete(x.port, x.p) {
						t.Fatalf("seed %d op %d: Delete of a held prefix refused", seed, op)
					}
					ref[x]--
				}
			case r < 8:
				g.step()
			case r < 9:
				if rng.IntN(4) == 0 {
					m.fail = func(*tx) error { return errModel }
				}
				g.Flush()
				m.fail = nil
			default:
				g.Flush()
			}
		}
		g.Flush()
		for i := 0; g.busyBulk(); i++ {
			if i > 1000 {
				t.Fatalf("seed %d: the Guard never settles", seed)
			}
			g.step()
		}
		var want []string
		for x, n := range ref {
			if n > 0 {
				want = append(want, fmt.Sprintf("%s %v", x.port, x.p))
			}
		}
		slices.Sort(want)
		if got := m.contents(); !slices.Equal(got, want) {
			t.Fatalf("seed %d: kernel holds\n%v\nwant\n%v", seed, got, want)
		}
		if g.Len() != len(want) {
			t.Fatalf("seed %d: Len %d, want %d", seed, g.Len(), len(want))
		}
	}
}

// TestNewChecks: bad configs are refused with the port named.
func TestNewChecks(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Table: "t", Ports: []Port{{Name: ""}}}, `port ""`},
		{Config{Table: "t", Ports: []Port{{Name: "a-very-long-name"}}}, `port "a-very-long-name"`},
		{Config{Table: "t", Ports: []Port{{Name: "dl0"}, {Name: "dl0"}}}, `port "dl0" given twice`},
		{Config{Table: "t", Ports: []Port{{Name: "dl0", AllowedSources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}, "allowed source 10.0.0.0/8"},
		{Config{Table: strings.Repeat("x", 201)}, "table name"},
	} {
		if _, err := newGuard(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestClose deletes the table once; a Flush after it writes nothing.
func TestClose(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	if err := g.Close(); err != nil || !m.removed {
		t.Fatalf("Close: %v, removed %v", err, m.removed)
	}
	n := len(m.txs)
	g.Add("dl0", p64)
	if err := g.Flush(); err != nil || len(m.txs) != n {
		t.Fatalf("Flush after Close: %v, %d transactions", err, len(m.txs)-n)
	}
}

// TestDrops maps the counters to every port, zero for one the kernel
// did not report.
func TestDrops(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	m.counts = map[string]uint64{"drops_dl0": 5, "drops_other": 9}
	d, err := g.Drops()
	if err != nil || !maps.Equal(d, map[string]uint64{"dl0": 5, "dl1": 0}) {
		t.Fatalf("Drops: %v, %v", d, err)
	}
}

func newTextLog(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestBeginRestore: between BeginRestore and Restore (the relay runs,
// the restored sources are still being read) a Delete of a restored
// source is kept, and cancels the source when Restore brings it.
func TestBeginRestore(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	g.BeginRestore()
	if !g.Delete("dl0", p56a) {
		t.Fatal("Delete refused between BeginRestore and Restore")
	}
	g.Add("dl0", p64)
	g.Flush()
	if g.Filled() {
		t.Fatal("Filled before Restore")
	}
	g.Restore(func(yield func(string, netip.Prefix) bool) {
		_ = yield("dl0", p56a) && yield("dl0", p56b)
	})
	for g.busyBulk() {
		g.step()
	}
	if got := m.contents(); !g.Filled() || !slices.Equal(got, []string{"dl0 2001:db8:1:200::/56", "dl0 2001:db8:1:300::/64"}) {
		t.Fatalf("filled %v, kernel holds %v", g.Filled(), got)
	}
}

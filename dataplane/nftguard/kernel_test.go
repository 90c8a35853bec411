package nftguard

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

// Unit tests of kernel mode on the model kernel.

var (
	macA = [6]byte{2, 0, 0, 0, 0, 0xa}
	macB = [6]byte{2, 0, 0, 0, 0, 0xb}
)

// kernelPorts: dl0 point-to-point, dl1 multi-access.
func kernelPorts() []Port {
	return []Port{{Name: "dl0"}, {Name: "dl1", MultiAccess: true}}
}

func newKernelGuard(t *testing.T, m *modelKernel, cfg Config) *Guard {
	t.Helper()
	cfg.Kernel = true
	if cfg.Ports == nil {
		cfg.Ports = kernelPorts()
	}
	g, err := newGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.k = m
	if err := g.install(); err != nil {
		t.Fatal(err)
	}
	return g
}

func mustFlush(t *testing.T, g *Guard) {
	t.Helper()
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
}

func settle(t *testing.T, g *Guard) {
	t.Helper()
	for i := 0; !g.Filled(); i++ {
		if i > 10000 {
			t.Fatal("the Guard never settles")
		}
		g.step()
	}
}

// TestDelegatePlan: a delegation is an element of the set of its port,
// length and loop code; on a multi-access port keyed by the MAC, and
// absent while the MAC is not known; a new code or MAC moves it in one
// transaction; Undelegate removes it.
func TestDelegatePlan(t *testing.T) {
	m := &modelKernel{}
	g := newKernelGuard(t, m, Config{})
	last := func() *tx { return &m.txs[len(m.txs)-1] }
	want := func(w ...string) {
		t.Helper()
		if got := m.dstContents(); !slices.Equal(got, w) {
			t.Fatalf("kernel holds\n%v\nwant\n%v", got, w)
		}
	}
	g.Delegate(Delegation{Port: "dl0", Prefix: p56a, MAC: macA})
	g.Delegate(Delegation{Port: "dl1", Prefix: p56b}) // MAC unknown
	mustFlush(t, g)
	want("dl0 2001:db8:1:100::/56 1") // point-to-point: the MAC is not used
	g.Delegate(Delegation{Port: "dl1", Prefix: p56b, MAC: macA, Loop: fib.LoopForward})
	mustFlush(t, g)
	want("dl0 2001:db8:1:100::/56 1", "dl1 2001:db8:1:200::/56 3 02000000000a")
	n := len(m.txs)
	g.Delegate(Delegation{Port: "dl1", Prefix: p56b, MAC: macB, Loop: fib.LoopForward}) // the client's new MAC
	g.Delegate(Delegation{Port: "dl0", Prefix: p56a, Loop: fib.LoopDrop})               // a new policy
	mustFlush(t, g)
	if len(m.txs) != n+1 || last().n != 4 {
		t.Fatalf("moves took %d transactions, the last of %d changes; want 1 of 4 (2 deletes, 2 adds)", len(m.txs)-n, last().n)
	}
	want("dl0 2001:db8:1:100::/56 2", "dl1 2001:db8:1:200::/56 3 02000000000b")
	n = len(m.txs)
	g.Delegate(Delegation{Port: "dl0", Prefix: p56a, Loop: fib.LoopDrop})
	mustFlush(t, g)
	if len(m.txs) != n {
		t.Fatal("a Delegate that changes nothing made a transaction")
	}
	if !g.Undelegate("dl1", p56b) || g.Undelegate("dl1", p56b) {
		t.Fatal("Undelegate: want true, then false")
	}
	mustFlush(t, g)
	want("dl0 2001:db8:1:100::/56 2")
	if g.Delegations() != 1 || len(g.dsts) != 1 {
		t.Fatalf("%d delegations, %d entries", g.Delegations(), len(g.dsts))
	}
	if g.Delegate(Delegation{Port: "dl9", Prefix: p56a}) || g.Delegate(Delegation{Port: "dl0", Prefix: netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Fatal("an unknown port or a non-IPv6 prefix was accepted")
	}
	// Sources are separate: none was added.
	if len(m.contents()) != 0 {
		t.Fatalf("sources %v", m.contents())
	}
}

// TestDelegateOutsideKernelMode: the xdp modes have no destinations.
func TestDelegateOutsideKernelMode(t *testing.T) {
	g, m := newModelGuard(t, Config{})
	if g.Delegate(Delegation{Port: "dl0", Prefix: p56a}) || g.Undelegate("dl0", p56a) {
		t.Fatal("Delegate accepted outside kernel mode")
	}
	g.RestoreDelegations(func(yield func(Delegation) bool) { yield(Delegation{Port: "dl0", Prefix: p56a, MAC: macA}) })
	for g.busyBulk() {
		g.step()
	}
	if got := m.contents(); !slices.Equal(got, []string{"dl0 2001:db8:1:100::/56"}) {
		t.Fatalf("RestoreDelegations outside kernel mode: sources %v", got)
	}
	if m.layout.kernel || len(m.layout.chains()) != 3 {
		t.Fatalf("xdp layout has kernel mode chains: %v", m.layout.chains())
	}
}

// TestRestoreDelegations: restored delegations are written by the fill;
// a change made during the restore wins over the restored entry, in
// either order.
func TestRestoreDelegations(t *testing.T) {
	m := &modelKernel{}
	g := newKernelGuard(t, m, Config{Batch: 2})
	g.BeginRestore()
	g.Undelegate("dl0", p56a) // the binding ended before the fill
	g.Delete("dl0", p56a)
	g.Delegate(Delegation{Port: "dl1", Prefix: p56b, MAC: macB}) // renewed with a new MAC
	mustFlush(t, g)
	g.RestoreDelegations(func(yield func(Delegation) bool) {
		_ = yield(Delegation{Port: "dl0", Prefix: p56a}) &&
			yield(Delegation{Port: "dl1", Prefix: p56b, MAC: macA}) &&
			yield(Delegation{Port: "dl0", Prefix: p64, Loop: fib.LoopForward}) &&
			yield(Delegation{Port: "gone", Prefix: p64})
	})
	settle(t, g)
	if got, want := m.dstContents(), []string{"dl0 2001:db8:1:300::/64 3", "dl1 2001:db8:1:200::/56 1 02000000000b"}; !slices.Equal(got, want) {
		t.Fatalf("destinations %v, want %v", got, want)
	}
	if got, want := m.contents(), []string{"dl0 2001:db8:1:300::/64", "dl1 2001:db8:1:200::/56"}; !slices.Equal(got, want) {
		t.Fatalf("sources %v, want %v", got, want)
	}
	// After the fill an Undelegate of nothing is refused again.
	if g.Undelegate("dl0", p56a) {
		t.Fatal("Undelegate of nothing accepted after the fill")
	}
	for k, e := range g.dsts {
		if e.touched {
			t.Fatalf("%v still marked as changed during the restore", k)
		}
	}
}

// keptTable returns a model kernel holding the table a kernel-mode relay
// left at Close with Keep: sources and delegations for p56a and p56b on
// dl0.
func keptTable(t *testing.T) *modelKernel {
	t.Helper()
	m := &modelKernel{}
	old := newKernelGuard(t, m, Config{Keep: true})
	for _, p := range []netip.Prefix{p56a, p56b} {
		old.Add("dl0", p)
		old.Delegate(Delegation{Port: "dl0", Prefix: p})
	}
	mustFlush(t, old)
	if err := old.Close(); err != nil || m.removed || !m.installed {
		t.Fatalf("Close with Keep: %v, removed %v", err, m.removed)
	}
	return m
}

// TestAdopt: New adopts a table a relay left: it writes nothing over it,
// builds the restored state into a new generation beside it, and
// switches in one transaction that deletes the old generation with its
// stale elements; until then the old table's rules are in force.
func TestAdopt(t *testing.T) {
	m := keptTable(t)
	before := m.contents()
	n := len(m.txs)
	g := newKernelGuard(t, m, Config{Batch: 1})
	for _, x := range m.txs[n:] {
		if x.install || x.rewrite {
			t.Fatalf("New rewrote the adopted table: %+v", x)
		}
	}
	g.BeginRestore()
	for range 3 { // Run may start before the restore is handed over
		g.step()
	}
	if !g.building || !slices.Equal(m.contents(), before) {
		t.Fatal("switched before the restore was handed over")
	}
	g.RestoreDelegations(func(yield func(Delegation) bool) {
		yield(Delegation{Port: "dl0", Prefix: p56a}) // p56b did not survive
	})
	g.Add("dl0", p64) // a new binding during the fill
	g.Delegate(Delegation{Port: "dl0", Prefix: p64})
	mustFlush(t, g)
	for !g.Filled() {
		if !slices.Equal(m.contents(), before) {
			t.Fatalf("the live sources changed before the switch: %v", m.contents())
		}
		g.step()
	}
	if got, want := m.contents(), []string{"dl0 2001:db8:1:100::/56", "dl0 2001:db8:1:300::/64"}; !slices.Equal(got, want) {
		t.Fatalf("after the switch sources %v, want %v", got, want)
	}
	if got, want := m.dstContents(), []string{"dl0 2001:db8:1:100::/56 1", "dl0 2001:db8:1:300::/64 1"}; !slices.Equal(got, want) {
		t.Fatalf("after the switch destinations %v, want %v", got, want)
	}
	if names := m.setNames(); strings.Contains(names, "_g1") || !strings.Contains(names, "src_dl0_56_g2") {
		t.Fatalf("sets after the switch: %s", names)
	}
	sw := m.txs[len(m.txs)-1]
	if !sw.rewrite || !sw.strict || sw.n != 0 {
		t.Fatalf("the switch: %+v", sw)
	}
}

// TestAdoptNewPort: a port the adopted table has no chain for gets one
// (which drops everything) at New.
func TestAdoptNewPort(t *testing.T) {
	m := keptTable(t)
	n := len(m.txs)
	g := newKernelGuard(t, m, Config{Ports: append(kernelPorts(), Port{Name: "dl2"})})
	if len(m.txs) != n+1 || len(m.txs[n].ensure) != 1 || m.txs[n].ensure[0].name != "dl2" {
		t.Fatalf("New's transactions: %+v", m.txs[n:])
	}
	g.RestoreDelegations(func(func(Delegation) bool) {})
	settle(t, g)
	if m.rules[dstChain("dl2")] != 1 {
		t.Fatalf("dl2 has no loop chain after the switch: %v", m.rules)
	}
}

// TestNoAdoptWithoutKernelMode: the xdp modes replace a left table.
func TestNoAdoptWithoutKernelMode(t *testing.T) {
	m := keptTable(t)
	g, err := newGuard(Config{Ports: kernelPorts()})
	if err != nil {
		t.Fatal(err)
	}
	g.k = m
	if err := g.install(); err != nil {
		t.Fatal(err)
	}
	if x := m.txs[len(m.txs)-1]; !x.install || len(m.contents()) != 0 {
		t.Fatalf("xdp mode kept the table: %+v, %v", x, m.contents())
	}
}

// TestKernelRepairKeepsTable: after a failed transaction kernel mode
// writes a new generation and switches, never reinstalling an existing
// table; a table gone is reinstalled; rules changed from outside are
// rewritten in place before the new generation is written.
func TestKernelRepairKeepsTable(t *testing.T) {
	m := &modelKernel{}
	g := newKernelGuard(t, m, Config{Batch: 2})
	for _, p := range []netip.Prefix{p56a, p56b, p64} {
		g.Add("dl0", p)
		g.Delegate(Delegation{Port: "dl0", Prefix: p})
	}
	mustFlush(t, g)
	m.fail = func(*tx) error { return errModel }
	g.Delete("dl0", p56a)
	if err := g.Flush(); !errors.Is(err, errModel) {
		t.Fatal(err)
	}
	m.fail = nil
	n := len(m.txs)
	for !g.Filled() {
		if !slices.Contains(m.contents(), "dl0 2001:db8:1:100::/56") {
			t.Fatal("the old generation changed before the switch")
		}
		g.step()
	}
	for _, x := range m.txs[n:] {
		if x.install {
			t.Fatal("the repair reinstalled the table")
		}
	}
	if got := m.contents(); !slices.Equal(got, []string{"dl0 2001:db8:1:200::/56", "dl0 2001:db8:1:300::/64"}) {
		t.Fatalf("after the repair: %v", got)
	}
	if len(m.dstContents()) != 3 || g.gen != 2 {
		t.Fatalf("destinations %v, generation %d", m.dstContents(), g.gen)
	}

	// Rules changed from outside: a rewrite in place first.
	m.rules[portChain("dl0")] = 0
	g.mu.Lock()
	g.check = true
	g.mu.Unlock()
	n = len(m.txs)
	g.step()
	if x := m.txs[n]; !x.rewrite || x.strict || x.layout.gen != 2 {
		t.Fatalf("first step after the check: %+v", x)
	}
	settle(t, g)
	if g.gen != 3 || len(m.contents()) != 2 {
		t.Fatalf("generation %d, sources %v", g.gen, m.contents())
	}

	// The table gone: reinstalled (fail closed), then filled.
	m.remove()
	m.removed = false
	g.mu.Lock()
	g.check = true
	g.mu.Unlock()
	n = len(m.txs)
	settle(t, g)
	g.step()
	settle(t, g)
	if !m.txs[n].install || len(m.contents()) != 2 || len(m.dstContents()) != 3 {
		t.Fatalf("after the table was deleted: first tx %+v, sources %v, destinations %v", m.txs[n], m.contents(), m.dstContents())
	}
}

// TestReconfigure: ports added and removed, allowed_sources changed and
// a port's link type changed, in one transaction that rewrites the
// skeleton in place.
func TestReconfigure(t *testing.T) {
	m := &modelKernel{}
	a := netip.MustParsePrefix("2001:db8:aa::/48")
	b := netip.MustParsePrefix("2001:db8:bb::/48")
	ports := kernelPorts()
	ports[0].AllowedSources = []netip.Prefix{a, p56a}
	g := newKernelGuard(t, m, Config{Ports: ports})
	g.Add("dl0", p56a) // a binding of an allowed prefix too
	g.Delegate(Delegation{Port: "dl0", Prefix: p56a})
	g.Add("dl1", p56b)
	g.Delegate(Delegation{Port: "dl1", Prefix: p56b, MAC: macA})
	mustFlush(t, g)
	// dl0: allowed a goes, b comes, p56a stays allowed; dl1 goes; dl2
	// comes; dl0 becomes multi-access.
	next := []Port{{Name: "dl0", MultiAccess: true, AllowedSources: []netip.Prefix{b}}, {Name: "dl2", AllowedSources: []netip.Prefix{p64}}}
	n := len(m.txs)
	if err := g.Reconfigure(Config{Kernel: true, Ports: next}); err != nil {
		t.Fatal(err)
	}
	if len(m.txs) != n+1 || !m.txs[n].rewrite || !m.txs[n].strict {
		t.Fatalf("Reconfigure's transactions: %+v", m.txs[n:])
	}
	want := []string{"dl0 2001:db8:1:100::/56", "dl0 2001:db8:bb::/48", "dl2 2001:db8:1:300::/64"}
	if got := m.contents(); !slices.Equal(got, want) {
		t.Fatalf("sources after the reload %v, want %v", got, want)
	}
	if got := m.dstContents(); len(got) != 0 {
		t.Fatalf("destinations right after the reload: %v (dl0's go to multi-access sets, and it has no MAC)", got)
	}
	g.Delegate(Delegation{Port: "dl0", Prefix: p56a, MAC: macB})
	mustFlush(t, g)
	settle(t, g)
	if got := m.dstContents(); !slices.Equal(got, []string{"dl0 2001:db8:1:100::/56 1 02000000000b"}) {
		t.Fatalf("destinations %v", got)
	}
	if g.Add("dl1", p64) || g.Delete("dl1", p56b) || g.Delegate(Delegation{Port: "dl1", Prefix: p56b}) {
		t.Fatal("a removed port's entries are still taken")
	}
	if !g.Delete("dl0", p56a) {
		t.Fatal("the binding's hold on p56a is gone")
	}
	mustFlush(t, g)
	if slices.Contains(m.contents(), "dl0 2001:db8:1:100::/56") {
		t.Fatal("p56a stayed after its last holder went")
	}
	if m.rules[portChain("dl1")] != 0 || m.rules[portChain("dl2")] != 2 {
		t.Fatalf("chains after the reload: %v", m.rules)
	}
	for n := range m.sets {
		if strings.Contains(n, "dl1") {
			t.Fatalf("set %s of the removed port", n)
		}
	}
	if err := g.Reconfigure(Config{Ports: next}); err == nil {
		t.Fatal("a change of mode was accepted")
	}
	if err := g.Reconfigure(Config{Kernel: true, Ports: []Port{{Name: "dl0"}, {Name: "dl0"}}}); err == nil || len(g.index) != 2 {
		t.Fatalf("a bad config: %v, ports %v", err, g.index)
	}
}

// TestReconfigureWhileBuilding: during an adopted table's build the
// rules stay the old table's; an added port gets a closed chain at once,
// and the switch writes the new layout.
func TestReconfigureWhileBuilding(t *testing.T) {
	m := keptTable(t)
	g := newKernelGuard(t, m, Config{})
	n := len(m.txs)
	ports := append(kernelPorts(), Port{Name: "dl3", LoopICMP: true})
	if err := g.Reconfigure(Config{Kernel: true, Ports: ports, ICMPRate: 5}); err != nil {
		t.Fatal(err)
	}
	if x := m.txs[n]; x.rewrite || len(x.ensure) != 1 {
		t.Fatalf("Reconfigure during the build: %+v", x)
	}
	g.RestoreDelegations(func(func(Delegation) bool) {})
	settle(t, g)
	if m.layout.icmpRate != 5 || m.rules[actChain("dl3")] != 3 {
		t.Fatalf("after the switch: layout %+v, rules %v", m.layout, m.rules)
	}
}

// TestCounters maps the named counters to ports and reasons.
func TestCounters(t *testing.T) {
	m := &modelKernel{}
	g := newKernelGuard(t, m, Config{Uplink: "up0"})
	m.counts = map[string]uint64{"drops_dl0": 1, "loop_dl0": 2, "icmp_dl0": 3, "icmprl_dl0": 4, "fwd_dl0": 5, "fwd_up0": 6, "loop_dl1": 7}
	c, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]uint64{
		"dl0": {"spoofed": 1, "loop": 2, "icmp_sent": 3, "icmp_rate_limited": 4, "forwarded": 5},
		"dl1": {"spoofed": 0, "loop": 7, "icmp_sent": 0, "icmp_rate_limited": 0, "forwarded": 0},
		"up0": {"forwarded": 6},
	}
	if !maps.EqualFunc(c, want, maps.Equal) {
		t.Fatalf("Counters %v, want %v", c, want)
	}
	gx, mx := newModelGuard(t, Config{})
	mx.counts = map[string]uint64{"drops_dl1": 3}
	if c, _ := gx.Counters(); len(c) != 2 || !maps.Equal(c["dl1"], map[string]uint64{"spoofed": 3}) {
		t.Fatalf("xdp mode Counters %v", c)
	}
}

// TestCloseKeep: with Keep, Close leaves the table.
func TestCloseKeep(t *testing.T) {
	m := &modelKernel{}
	g := newKernelGuard(t, m, Config{Keep: true})
	if err := g.Close(); err != nil || m.removed || !m.installed {
		t.Fatalf("Close with Keep: %v, removed %v", err, m.removed)
	}
	m2 := &modelKernel{}
	g = newKernelGuard(t, m2, Config{})
	if err := g.Close(); err != nil || !m2.removed {
		t.Fatalf("Close without Keep: %v, removed %v", err, m2.removed)
	}
}

// TestKernelConfigChecks: bad kernel-mode settings are refused, naming
// the port.
func TestKernelConfigChecks(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Ports: []Port{{Name: "dl0", Loop: 7}}}, "port dl0: loop policy"},
		{Config{Ports: []Port{{Name: "dl0", LoopOverrides: []LoopOverride{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Policy: fib.LoopDrop}}}}}, "port dl0: loop override 10.0.0.0/8"},
		{Config{Ports: []Port{{Name: "dl0", LoopOverrides: []LoopOverride{{Prefix: p64, Policy: fib.LoopDefault}}}}}, "port dl0: loop override"},
		{Config{Ports: []Port{{Name: "dl0", LoopOverrides: []LoopOverride{{Prefix: p64, Policy: fib.LoopDrop}, {Prefix: netip.MustParsePrefix("2001:db8:1:300::1/64"), Policy: fib.LoopForward}}}}}, "given twice"},
		{Config{ICMPRate: -1}, "icmp rate"},
		{Config{Uplink: "a-very-long-name"}, `uplink "a-very-long-name"`},
	} {
		c.cfg.Kernel = true
		if _, err := newGuard(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestLayoutOverridesSorted: the overrides reach the layout longest
// first, masked.
func TestLayoutOverridesSorted(t *testing.T) {
	g, err := newGuard(Config{Kernel: true, Ports: []Port{{Name: "dl0", LoopOverrides: []LoopOverride{
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Policy: fib.LoopDrop},
		{Prefix: netip.MustParsePrefix("2001:db8:1::5/64"), Policy: fib.LoopForward},
		{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Policy: fib.LoopDrop},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range g.layoutLocked().ports[0].overrides {
		got = append(got, o.Prefix.String())
	}
	if want := []string{"2001:db8:1::/64", "2001:db8:1::/48", "2001:db8::/32"}; !slices.Equal(got, want) {
		t.Fatalf("overrides %v, want %v", got, want)
	}
}

// TestKernelOracle drives a kernel-mode Guard (on a fresh or an adopted
// table) with random source and delegation changes, a restore, flushes,
// steps, refused transactions, repairs and reloads that flip a port's
// link type, against plain maps: whenever the
// Guard is settled, the live sets hold exactly the sources with holders
// and the delegations (multi-access: those with a MAC) with their codes.
func TestKernelOracle(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 11))
		m := &modelKernel{}
		if seed%3 == 0 {
			m = keptTable(t) // adopted: none of its elements is wanted
		}
		ports := kernelPorts()
		g := newKernelGuard(t, m, Config{Batch: 1 + rng.IntN(6), Ports: ports})
		type pk struct {
			port string
			p    netip.Prefix
		}
		type dv struct {
			mac  [6]byte
			code uint8
		}
		src := map[pk]int{}
		dst := map[pk]dv{}
		var pool []pk
		for range 10 {
			bits := []int{48, 56, 64}[rng.IntN(3)]
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(rng.IntN(3)), byte(rng.IntN(3)), byte(rng.IntN(2) << 4), 0}
			pool = append(pool, pk{[]string{"dl0", "dl1"}[rng.IntN(2)], netip.PrefixFrom(netip.AddrFrom16(a), bits).Masked()})
		}
		randDelegation := func(x pk) Delegation {
			var mac [6]byte
			if rng.IntN(4) > 0 {
				mac = [6]byte{2, 0, 0, 0, 0, byte(1 + rng.IntN(3))}
			}
			return Delegation{Port: x.port, Prefix: x.p, MAC: mac, Loop: fib.LoopPolicy(rng.IntN(3))}
		}
		var restored []Delegation
		for range rng.IntN(5) {
			d := randDelegation(pool[rng.IntN(len(pool))])
			restored = append(restored, d)
		}
		g.BeginRestore()
		restoreDone := false
		for op := range 150 {
			x := pool[rng.IntN(len(pool))]
			switch r := rng.IntN(13); {
			case r < 3:
				g.Add(x.port, x.p)
				src[x]++
			case r < 5:
				if src[x] > 0 {
					if !g.Delete(x.port, x.p) {
						t.Fatalf("seed %d op %d: Delete refused", seed, op)
					}
					src[x]--
				}
			case r < 7:
				d := randDelegation(x)
				g.Delegate(d)
				dst[x] = dv{d.MAC, loopCode(d.Loop)}
			case r < 8:
				if _, ok := dst[x]; ok {
					if !g.Undelegate(x.port, x.p) {
						t.Fatalf("seed %d op %d: Undelegate refused", seed, op)
					}
					delete(dst, x)
				}
			case r < 9:
				g.step()
			case r < 10:
				if rng.IntN(3) == 0 {
					m.fail = func(*tx) error { return errModel }
				}
				g.Flush()
				m.fail = nil
			case r < 11:
				if !restoreDone {
					restoreDone = true
					// Changes made since BeginRestore win: only
					// untouched keys take the restored values (the last
					// of duplicates).
					for _, d := range restored {
						x := pk{d.Port, d.Prefix}
						src[x]++
						if !touched(g, x.port, x.p) {
							dst[x] = dv{d.MAC, loopCode(d.Loop)}
						}
					}
					g.RestoreDelegations(slices.Values(restored))
				}
			case r < 12:
				ports[1].MultiAccess = !ports[1].MultiAccess
				if err := g.Reconfigure(Config{Kernel: true, Ports: ports, Batch: g.batch}); err != nil {
					t.Fatalf("seed %d op %d: %v", seed, op, err)
				}
			default:
				g.Flush()
			}
		}
		if !restoreDone {
			for _, d := range restored {
				x := pk{d.Port, d.Prefix}
				src[x]++
				if !touched(g, x.port, x.p) {
					dst[x] = dv{d.MAC, loopCode(d.Loop)}
				}
			}
			g.RestoreDelegations(slices.Values(restored))
		}
		mustFlush(t, g)
		settle(t, g)
		var want []string
		for x, n := range src {
			if n > 0 {
				want = append(want, fmt.Sprintf("%s %v", x.port, x.p))
			}
		}
		slices.Sort(want)
		if got := m.contents(); !slices.Equal(got, want) {
			t.Fatalf("seed %d: sources\n%v\nwant\n%v", seed, got, want)
		}
		want = want[:0]
		for x, v := range dst {
			multi := x.port == "dl1" && ports[1].MultiAccess
			switch {
			case !multi:
				want = append(want, fmt.Sprintf("%s %v %d", x.port, x.p, v.code))
			case v.mac != [6]byte{}:
				want = append(want, fmt.Sprintf("%s %v %d %x", x.port, x.p, v.code, v.mac))
			}
		}
		slices.Sort(want)
		if got := m.dstContents(); !slices.Equal(got, want) {
			t.Fatalf("seed %d: destinations\n%v\nwant\n%v", seed, got, want)
		}
		if exists, diff, _ := m.check(g.layoutLocked()); !exists || diff != "" {
			t.Fatalf("seed %d: rules %s", seed, diff)
		}
	}
}

// touched reports whether the delegation of p on port was changed during
// the restore (and so wins over a restored one).
func touched(g *Guard, port string, p netip.Prefix) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.dstKey(port, p)
	return ok && g.dsts[k].touched
}

package kroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// modelKernel is rtnetlink as the Router uses it, in memory: routes of
// Protocol keyed by prefix and metric, neighbour entries keyed by
// interface and address, interfaces by name. Writing a route through an
// absent interface fails with ENODEV and through a down one with
// ENETDOWN; deleting what is not there fails with ESRCH (routes) and
// ENOENT (neighbours), as in the kernel. Taking an interface down
// removes its routes and neighbour entries, as the kernel does.
type modelKernel struct {
	rts    map[mroute]kernelRoute
	nbs    map[mneigh]kernelNeigh
	ifs    map[string]link
	nextIf int32
	// log is every op applied, in order.
	log []op
	// fail, when set, may refuse an op with an error.
	fail func(o *op) error
	// lose, when set, makes write stop after n ops and return an error:
	// the answers of the rest are lost (they are not applied either).
	lose int
	// onDump runs inside routes(), between reading and returning: a
	// binding change that races a check.
	onDump func()
	ev     events
	dumps  int // routes() calls
}

type mroute struct {
	prefix netip.Prefix
	metric uint32
}

type mneigh struct {
	index int32
	addr  netip.Addr
}

func newModel(ports ...string) *modelKernel {
	m := &modelKernel{rts: map[mroute]kernelRoute{}, nbs: map[mneigh]kernelNeigh{}, ifs: map[string]link{}, nextIf: 10}
	for _, p := range ports {
		m.addIf(p, true)
	}
	return m
}

func (m *modelKernel) addIf(name string, up bool) {
	m.nextIf++
	m.ifs[name] = link{index: m.nextIf, up: up, carrier: up}
}

// setUp takes an interface up or down; down removes its routes and
// neighbour entries.
func (m *modelKernel) setUp(name string, up bool) {
	l := m.ifs[name]
	l.up, l.carrier = up, up
	m.ifs[name] = l
	m.ev.links = true
	if !up {
		m.dropIf(l.index)
	}
}

// setCarrier takes an interface's carrier away or back; away flushes its
// neighbour entries (the routes stay), as the kernel does.
func (m *modelKernel) setCarrier(name string, on bool) {
	l := m.ifs[name]
	l.carrier = on && l.up
	m.ifs[name] = l
	m.ev.links = true
	if !on {
		for k := range m.nbs {
			if k.index == l.index {
				delete(m.nbs, k)
			}
		}
		if m.ev.flapped == nil {
			m.ev.flapped = map[string]bool{}
		}
		m.ev.flapped[name] = true
	}
}

// delIf removes an interface, with its routes and neighbour entries.
func (m *modelKernel) delIf(name string) {
	m.dropIf(m.ifs[name].index)
	delete(m.ifs, name)
}

func (m *modelKernel) events() events {
	ev := m.ev
	m.ev = events{}
	return ev
}

// handDelete deletes a route from outside; with event, the kernel's
// notification reaches the Router.
func (m *modelKernel) handDelete(k mroute, event bool) {
	delete(m.rts, k)
	if event {
		m.ev.gone = append(m.ev.gone, k.prefix)
	}
}

func (m *modelKernel) dropIf(index int32) {
	for n, l := range m.ifs {
		if l.index == index {
			if m.ev.flapped == nil {
				m.ev.flapped = map[string]bool{}
			}
			m.ev.flapped[n] = true
		}
	}
	for k, r := range m.rts {
		if r.index == index {
			m.handDelete(k, true)
		}
	}
	for k := range m.nbs {
		if k.index == index {
			delete(m.nbs, k)
		}
	}
}

func (m *modelKernel) upIndex(index int32) (up, exists bool) {
	for _, l := range m.ifs {
		if l.index == index {
			return l.up, true
		}
	}
	return false, false
}

func (m *modelKernel) write(ops []op) error {
	for i := range ops {
		if m.lose > 0 && i == m.lose {
			m.lose = 0
			return errors.New("model: socket failed")
		}
		o := &ops[i]
		if m.fail != nil {
			if o.err = m.fail(o); o.err != nil {
				continue
			}
		}
		o.err = m.apply(o)
		if o.err == nil {
			m.log = append(m.log, *o)
		}
	}
	return nil
}

func (m *modelKernel) apply(o *op) error {
	switch o.kind {
	case opRoute:
		up, ok := m.upIndex(o.index)
		switch {
		case !ok:
			return syscall.ENODEV
		case !up:
			return syscall.ENETDOWN
		}
		m.rts[mroute{o.prefix, Metric}] = kernelRoute{prefix: o.prefix, index: o.index, via: o.addr, metric: Metric}
	case opUnroute:
		for k := range m.rts {
			if k.prefix == o.prefix && (o.metric == 0 || o.metric == k.metric) {
				m.handDelete(k, true) // the Router's own delete is notified too
				return nil
			}
		}
		return syscall.ESRCH
	case opNeigh:
		if _, ok := m.upIndex(o.index); !ok {
			return syscall.ENODEV
		}
		m.nbs[mneigh{o.index, o.addr}] = kernelNeigh{index: o.index, addr: o.addr, mac: o.mac, ours: true}
	case opUnneigh:
		k := mneigh{o.index, o.addr}
		if _, ok := m.nbs[k]; !ok {
			return syscall.ENOENT
		}
		delete(m.nbs, k)
	}
	return nil
}

func (m *modelKernel) routes(uint32, int) ([]kernelRoute, error) {
	m.dumps++
	var out []kernelRoute
	for _, r := range m.rts {
		out = append(out, r)
	}
	if m.onDump != nil {
		f := m.onDump
		m.onDump = nil
		f()
	}
	return out, nil
}

func (m *modelKernel) neighs() ([]kernelNeigh, error) {
	var out []kernelNeigh
	for _, n := range m.nbs {
		out = append(out, n)
	}
	return out, nil
}

func (m *modelKernel) links(names []string) ([]link, error) {
	out := make([]link, len(names))
	for i, n := range names {
		out[i] = m.ifs[n]
	}
	return out, nil
}

func (m *modelKernel) watch(<-chan struct{}) <-chan struct{} { return nil }
func (m *modelKernel) close()                                {}

// table returns the model's routes as "prefix via nexthop dev name"
// lines, sorted, and its neighbour entries as "addr mac dev name".
func (m *modelKernel) table() (routes, neighs []string) {
	name := func(idx int32) string {
		for n, l := range m.ifs {
			if l.index == idx {
				return n
			}
		}
		return fmt.Sprint("if", idx)
	}
	for k, r := range m.rts {
		s := fmt.Sprintf("%v via %v dev %s", k.prefix, r.via, name(r.index))
		if k.metric != Metric {
			s += fmt.Sprintf(" metric %d", k.metric)
		}
		routes = append(routes, s)
	}
	for _, n := range m.nbs {
		s := fmt.Sprintf("%v %x dev %s", n.addr, n.mac[5], name(n.index))
		if !n.ours {
			s += " kernel"
		}
		neighs = append(neighs, s)
	}
	slices.Sort(routes)
	slices.Sort(neighs)
	return routes, neighs
}

// newModelRouter returns a Router on a modelKernel with ports dl0 and
// dl1 (up), and a buffer of its log.
func newModelRouter(t *testing.T, cfg Config, m *modelKernel) (*Router, *strings.Builder) {
	t.Helper()
	if cfg.Ports == nil {
		cfg.Ports = []string{"dl0", "dl1"}
	}
	if m == nil {
		m = newModel(cfg.Ports...)
	}
	var log strings.Builder
	cfg.Log = slog.New(slog.NewTextHandler(&log, nil))
	r, err := newRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.k = m
	r.lookupLinks()
	return r, &log
}

// settle runs Run's steps until no work is queued (retries included).
func settle(t *testing.T, r *Router) {
	t.Helper()
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("the Router never settles")
		}
		busy, err := r.step()
		if err != nil {
			t.Fatal(err)
		}
		if busy {
			continue
		}
		r.mu.Lock()
		more := len(r.retryR)+len(r.retryN) > 0
		r.bulk = append(r.bulk, r.retryR...)
		r.bulkN = append(r.bulkN, r.retryN...)
		r.retryR, r.retryN = nil, nil
		r.mu.Unlock()
		if !more {
			return
		}
	}
}

func mustFlush(t *testing.T, r *Router) {
	t.Helper()
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, m *modelKernel, routes, neighs []string) {
	t.Helper()
	gr, gn := m.table()
	if !slices.Equal(gr, routes) {
		t.Errorf("kernel routes:\n  %s\nwant\n  %s", strings.Join(gr, "\n  "), strings.Join(routes, "\n  "))
	}
	if !slices.Equal(gn, neighs) {
		t.Errorf("kernel neighbours:\n  %s\nwant\n  %s", strings.Join(gn, "\n  "), strings.Join(neighs, "\n  "))
	}
}

var (
	pA   = netip.MustParsePrefix("2001:db8:1:100::/56")
	pB   = netip.MustParsePrefix("2001:db8:1:200::/56")
	pC   = netip.MustParsePrefix("2001:db8:2::/48")
	hop1 = netip.MustParseAddr("fe80::1")
	hop2 = netip.MustParseAddr("fe80::2")
	mac1 = [6]byte{2, 0, 0, 0, 0, 0x01}
	mac2 = [6]byte{2, 0, 0, 0, 0, 0x02}
)

// TestAddFlush: routes of exactly the delegated prefix via the next hop
// on its port; a neighbour entry per next hop with a known MAC, written
// before the routes through it; a next hop shared by two prefixes has
// one entry.
func TestAddFlush(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	r.Add(Route{Prefix: netip.MustParsePrefix("2001:db8:1:1ff::1/56"), Port: "dl0", NextHop: hop1, MAC: mac1}) // host bits set: masked
	r.Add(Route{Prefix: pC, Port: "dl0", NextHop: hop1})                                                       // same next hop, MAC from the first
	r.Add(Route{Prefix: pB, Port: "dl1", NextHop: hop2.WithZone("dl1"), MAC: mac2})                            // zone dropped
	mustFlush(t, r)
	expect(t, m,
		[]string{"2001:db8:1:100::/56 via fe80::1 dev dl0", "2001:db8:1:200::/56 via fe80::2 dev dl1", "2001:db8:2::/48 via fe80::1 dev dl0"},
		[]string{"fe80::1 1 dev dl0", "fe80::2 2 dev dl1"})
	var kinds []opKind
	for _, o := range m.log {
		kinds = append(kinds, o.kind)
	}
	if !slices.Equal(kinds, []opKind{opNeigh, opNeigh, opRoute, opRoute, opRoute}) {
		t.Errorf("ops in order %v: want the neighbour entries first", kinds)
	}
	n := len(m.log)
	mustFlush(t, r)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1}) // the same again
	mustFlush(t, r)
	if len(m.log) != n {
		t.Errorf("an unchanged route was written again: %v", m.log[n:])
	}
	if r.Len() != 3 || r.Waiting() != 0 {
		t.Errorf("Len %d Waiting %d", r.Len(), r.Waiting())
	}
	if r.Add(Route{Prefix: pA, Port: "dl9", NextHop: hop1}) || r.Add(Route{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Port: "dl0", NextHop: hop1}) ||
		r.Add(Route{Prefix: netip.Prefix{}, Port: "dl0"}) {
		t.Error("an unknown port or a prefix that is not IPv6 was accepted")
	}
}

// TestDelete: Delete takes a route only by its own port; a neighbour
// entry stays while a route through its next hop does; an Add and a
// Delete before one Flush cost the kernel nothing.
func TestDelete(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
	r.Add(Route{Prefix: pC, Port: "dl0", NextHop: hop1, MAC: mac1})
	mustFlush(t, r)
	if r.Delete(pA, "dl1") {
		t.Fatal("Delete by another port accepted")
	}
	if !r.Delete(pA, "dl0") || r.Delete(pA, "dl0") {
		t.Fatal("Delete: want true once")
	}
	mustFlush(t, r)
	expect(t, m, []string{"2001:db8:2::/48 via fe80::1 dev dl0"}, []string{"fe80::1 1 dev dl0"})
	r.Delete(pC, "dl0")
	mustFlush(t, r)
	expect(t, m, nil, nil)
	n := len(m.log)
	r.Add(Route{Prefix: pB, Port: "dl1", NextHop: hop2, MAC: mac2})
	r.Delete(pB, "dl1")
	mustFlush(t, r)
	if len(m.log) != n {
		t.Errorf("an Add undone before the Flush wrote %v", m.log[n:])
	}
	if len(r.routes) != 0 || len(r.neighs) != 0 {
		t.Errorf("state left: %d routes, %d neighbours", len(r.routes), len(r.neighs))
	}
}

// TestUpdate: a new next hop replaces the route in one op (never a
// delete first: no gap), moves the neighbour entry; a new MAC rewrites
// only the entry; a move to another port replaces the route there.
func TestUpdate(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
	mustFlush(t, r)
	n := len(m.log)
	r.Update(Route{Prefix: pA, Port: "dl0", NextHop: hop2, MAC: mac2})
	mustFlush(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::2 dev dl0"}, []string{"fe80::2 2 dev dl0"})
	for _, o := range m.log[n:] {
		if o.kind == opUnroute {
			t.Errorf("the update deleted the route before replacing it: %v", m.log[n:])
		}
	}
	n = len(m.log)
	r.Update(Route{Prefix: pA, Port: "dl0", NextHop: hop2, MAC: mac1})
	mustFlush(t, r)
	if got := m.log[n:]; len(got) != 1 || got[0].kind != opNeigh {
		t.Errorf("a MAC change wrote %v, want one neighbour entry", got)
	}
	// The binding table removes the old port's binding, then adds the
	// new one (a replaced CPE on another port).
	r.Delete(pA, "dl0")
	r.Add(Route{Prefix: pA, Port: "dl1", NextHop: hop1, MAC: mac1})
	mustFlush(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl1"}, []string{"fe80::1 1 dev dl1"})
}

// TestNoNextHop: a route without a next hop waits (no route "dev dl0"
// alone: the kernel would ask neighbour discovery for every address in
// the prefix); the update that brings one writes it.
func TestNoNextHop(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	r.Add(Route{Prefix: pA, Port: "dl0"})
	mustFlush(t, r)
	expect(t, m, nil, nil)
	if r.Waiting() != 1 {
		t.Fatalf("Waiting %d, want 1", r.Waiting())
	}
	r.Update(Route{Prefix: pA, Port: "dl0", NextHop: hop1})
	mustFlush(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0"}, nil) // MAC unknown: no entry
	if r.Waiting() != 0 {
		t.Fatalf("Waiting %d, want 0", r.Waiting())
	}
}

// TestPortDown: a downlink down or absent at start holds its routes back
// (logged once, no retries); a check after it comes up writes them. A
// port that goes down under a Flush (ENETDOWN) is marked down; when it
// comes back, the kernel having dropped its routes, they are written
// again.
func TestPortDown(t *testing.T) {
	m := newModel("dl0")
	m.addIf("dl1", false)
	r, log := newModelRouter(t, Config{}, m)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
	r.Add(Route{Prefix: pB, Port: "dl1", NextHop: hop2, MAC: mac2})
	mustFlush(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0"}, []string{"fe80::1 1 dev dl0"})
	if r.Waiting() != 1 || !strings.Contains(log.String(), "downlink down or absent") {
		t.Fatalf("Waiting %d; log:\n%s", r.Waiting(), log)
	}
	m.setUp("dl1", true)
	r.requestCheck()
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0", "2001:db8:1:200::/56 via fe80::2 dev dl1"},
		[]string{"fe80::1 1 dev dl0", "fe80::2 2 dev dl1"})

	// dl0 goes down: the kernel drops its route and entry; a change
	// through it meets ENETDOWN.
	m.setUp("dl0", false)
	r.Add(Route{Prefix: pC, Port: "dl0", NextHop: hop1, MAC: mac1})
	if err := r.Flush(); err != nil {
		t.Fatalf("Flush through a down port: %v (want it to wait, not fail)", err)
	}
	settle(t, r)
	if r.Stats().Failed != 0 {
		t.Errorf("a down port counted as failures: %+v", r.Stats())
	}
	m.setUp("dl0", true)
	r.requestCheck()
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0", "2001:db8:1:200::/56 via fe80::2 dev dl1", "2001:db8:2::/48 via fe80::1 dev dl0"},
		[]string{"fe80::1 1 dev dl0", "fe80::2 2 dev dl1"})

	// dl1 is deleted and made anew (another index): its route follows.
	m.delIf("dl1")
	r.requestCheck()
	settle(t, r)
	m.addIf("dl1", true)
	r.requestCheck()
	settle(t, r)
	if got, _ := m.table(); !slices.Contains(got, "2001:db8:1:200::/56 via fe80::2 dev dl1") {
		t.Errorf("after dl1 was made anew the kernel holds %v", got)
	}
}

// TestMoveToDownPort: a route that moves to a port that is down is
// deleted from the old one, not left to send the prefix's traffic to
// the old client.
func TestMoveToDownPort(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
	mustFlush(t, r)
	m.setUp("dl1", false)
	r.requestCheck()
	settle(t, r)
	r.Delete(pA, "dl0")
	r.Add(Route{Prefix: pA, Port: "dl1", NextHop: hop2, MAC: mac2})
	mustFlush(t, r)
	settle(t, r)
	expect(t, m, nil, nil)
	m.setUp("dl1", true)
	r.requestCheck()
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::2 dev dl1"}, []string{"fe80::2 2 dev dl1"})
}

// kernelHolds puts routes and entries in the model as a previous run (or
// an operator) left them.
func (m *modelKernel) holds(p netip.Prefix, port string, via netip.Addr, metric uint32) {
	m.rts[mroute{p, metric}] = kernelRoute{prefix: p, index: m.ifs[port].index, via: via, metric: metric}
}

// TestReconcile: at start the kernel holds routes of Protocol from a
// previous run. Those no restored route backs go; a different one is
// replaced; an equal one is not touched; a missing one is written; one
// at another metric goes; at no point is a wanted route deleted.
func TestReconcile(t *testing.T) {
	m := newModel("dl0", "dl1")
	stale := netip.MustParsePrefix("2001:db8:9::/48")
	m.holds(stale, "dl0", hop1, Metric)
	m.holds(pA, "dl0", hop1, Metric)    // equal
	m.holds(pB, "dl0", hop1, Metric)    // wanted via dl1
	m.holds(pA, "dl0", hop1, Metric+10) // another metric
	r, log := newModelRouter(t, Config{}, m)
	wanted := []Route{
		{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1},
		{Prefix: pB, Port: "dl1", NextHop: hop2, MAC: mac2},
		{Prefix: pC, Port: "dl1", NextHop: hop2},
		{Prefix: netip.MustParsePrefix("2001:db8:7::/48"), Port: "gone", NextHop: hop2}, // a port no longer configured
	}
	if n := r.Restore(slices.Values(wanted)); n != 3 {
		t.Fatalf("Restore took %d, want 3", n)
	}
	if r.Reconciled() {
		t.Fatal("Reconciled before Run")
	}
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0", "2001:db8:1:200::/56 via fe80::2 dev dl1", "2001:db8:2::/48 via fe80::2 dev dl1"},
		[]string{"fe80::1 1 dev dl0", "fe80::2 2 dev dl1"})
	var touched []string
	for _, o := range m.log {
		if o.kind == opUnroute && o.metric == 0 && (o.prefix == pA || o.prefix == pB || o.prefix == pC) {
			t.Errorf("a wanted route was deleted: %v", o.prefix)
		}
		if o.kind == opRoute || o.kind == opUnroute {
			touched = append(touched, o.prefix.String())
		}
	}
	slices.Sort(touched)
	if want := []string{"2001:db8:1:100::/56", "2001:db8:1:200::/56", "2001:db8:2::/48", "2001:db8:9::/48"}; !slices.Equal(touched, want) {
		t.Errorf("routes touched %v, want %v (the metric-1034 one, dl1's, the missing one, the stale one)", touched, want)
	}
	for _, o := range m.log {
		if o.kind == opRoute && o.prefix == pA {
			t.Error("the equal route was written again")
		}
	}
	if !r.Reconciled() || !strings.Contains(log.String(), `msg="kernel routes reconciled" routes=3 written=2 removed=2`) {
		t.Errorf("reconciled %v; log:\n%s", r.Reconciled(), log)
	}
}

// TestReconcileNeighbours: an entry of Protocol that no route needs goes;
// the kernel's own entry for a wanted next hop stands (whatever its MAC:
// the kernel follows the client); a wanted one that is missing is
// written; entries on other interfaces are not pdrelay's business.
func TestReconcileNeighbours(t *testing.T) {
	m := newModel("dl0", "dl1", "up0")
	i0, up := m.ifs["dl0"].index, m.ifs["up0"].index
	staleHop := netip.MustParseAddr("fe80::99")
	m.nbs[mneigh{i0, staleHop}] = kernelNeigh{index: i0, addr: staleHop, mac: mac1, ours: true}
	m.nbs[mneigh{i0, hop1}] = kernelNeigh{index: i0, addr: hop1, mac: [6]byte{2, 0, 0, 0, 0, 0x77}} // learned by the kernel
	m.nbs[mneigh{up, staleHop}] = kernelNeigh{index: up, addr: staleHop, mac: mac1, ours: true}     // not a downlink
	r, _ := newModelRouter(t, Config{Ports: []string{"dl0", "dl1"}}, m)
	r.Restore(slices.Values([]Route{
		{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1},
		{Prefix: pB, Port: "dl1", NextHop: hop2, MAC: mac2},
	}))
	settle(t, r)
	_, neighs := m.table()
	want := []string{"fe80::1 77 dev dl0 kernel", "fe80::2 2 dev dl1", "fe80::99 1 dev up0"}
	if !slices.Equal(neighs, want) {
		t.Errorf("neighbours %v, want %v", neighs, want)
	}
	// A later MAC from a binding change is written over the kernel's.
	r.Update(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac2})
	mustFlush(t, r)
	if _, neighs = m.table(); !slices.Contains(neighs, "fe80::1 2 dev dl0") {
		t.Errorf("after the update neighbours %v", neighs)
	}
	// The last route through it gone, the entry goes, whoever made it.
	r.Delete(pA, "dl0")
	mustFlush(t, r)
	if _, neighs = m.table(); slices.ContainsFunc(neighs, func(s string) bool { return strings.HasPrefix(s, "fe80::1 ") }) {
		t.Errorf("the next hop's entry outlived its route: %v", neighs)
	}
}

// TestRetry: a change the kernel refuses is logged and reported by
// Flush, kept wanted, and written by Run's retry.
func TestRetry(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, log := newModelRouter(t, Config{}, m)
	m.fail = func(o *op) error {
		if o.kind == opRoute && o.prefix == pB {
			return syscall.ENOMEM
		}
		return nil
	}
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1})
	r.Add(Route{Prefix: pB, Port: "dl0", NextHop: hop1})
	if err := r.Flush(); !errors.Is(err, syscall.ENOMEM) {
		t.Fatalf("Flush: %v, want ENOMEM", err)
	}
	if !strings.Contains(log.String(), "changes refused; retrying") || r.Waiting() != 1 {
		t.Fatalf("Waiting %d; log:\n%s", r.Waiting(), log)
	}
	if r.retryAt.IsZero() || r.retryWait != 100e6 {
		t.Errorf("retry in %v", r.retryWait)
	}
	m.fail = nil
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0", "2001:db8:1:200::/56 via fe80::1 dev dl0"}, nil)
	// A refused delete is retried as well: the route must not outlive
	// its binding.
	m.fail = func(o *op) error {
		if o.kind == opUnroute {
			return syscall.EBUSY
		}
		return nil
	}
	r.Delete(pA, "dl0")
	if err := r.Flush(); err == nil {
		t.Fatal("a refused delete was not reported")
	}
	m.fail = nil
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:200::/56 via fe80::1 dev dl0"}, nil)
}

// TestLostAnswers: when the socket fails mid-batch, the changes whose
// answer was lost are unknown; Run reads the kernel back and finishes
// them.
func TestLostAnswers(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	m.lose = 2
	for i := range 5 {
		r.Add(Route{Prefix: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 0, byte(i)}), 48), Port: "dl0", NextHop: hop1})
	}
	if err := r.Flush(); err == nil {
		t.Fatal("a lost batch was not reported")
	}
	if got, _ := m.table(); len(got) != 2 {
		t.Fatalf("model holds %d routes: the test does not lose answers", len(got))
	}
	settle(t, r)
	if got, _ := m.table(); len(got) != 5 || r.Waiting() != 0 {
		t.Errorf("after Run the kernel holds %d routes, Waiting %d", len(got), r.Waiting())
	}
}

// TestHandDeleted: a route deleted from outside is written again at
// once from the kernel's notification (no read of the whole table), or,
// when the notification was lost, by the next check; one added by hand
// with pdrelay's protocol is deleted by the check.
func TestHandDeleted(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	settle(t, r) // the reconcile
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
	r.Add(Route{Prefix: pB, Port: "dl0", NextHop: hop1})
	mustFlush(t, r)
	r.Delete(pB, "dl0") // the Router's own delete: notified, and ignored
	mustFlush(t, r)
	delete(m.nbs, mneigh{m.ifs["dl0"].index, hop1})
	m.handDelete(mroute{pA, Metric}, true)
	dumps, writes := m.dumps, len(m.log)
	r.takeEvents()
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0"}, []string{"fe80::1 1 dev dl0"})
	if m.dumps != dumps || len(m.log) != writes+2 {
		t.Errorf("the repair read the table %d times and wrote %v, want the route and its entry alone", m.dumps-dumps, m.log[writes:])
	}
	m.handDelete(mroute{pA, Metric}, false)
	m.holds(pC, "dl1", hop2, Metric)
	r.requestCheck()
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:100::/56 via fe80::1 dev dl0"}, []string{"fe80::1 1 dev dl0"})
}

// TestCheckRace: a Flush between a check's read of the kernel and its
// comparison (here: inside the read) is not undone by the check.
func TestCheckRace(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	settle(t, r)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1})
	mustFlush(t, r)
	r.Add(Route{Prefix: pC, Port: "dl0", NextHop: hop1})
	mustFlush(t, r)
	m.onDump = func() {
		r.Delete(pA, "dl0")
		r.Add(Route{Prefix: pB, Port: "dl0", NextHop: hop1})
		r.Update(Route{Prefix: pC, Port: "dl0", NextHop: hop2})
		mustFlush(t, r)
	}
	r.requestCheck()
	n := len(m.log)
	settle(t, r)
	expect(t, m, []string{"2001:db8:1:200::/56 via fe80::1 dev dl0", "2001:db8:2::/48 via fe80::2 dev dl0"}, nil)
	// What the check read before the Flush does not overwrite what the
	// Router knows: the same route again writes nothing.
	r.Add(Route{Prefix: pC, Port: "dl0", NextHop: hop2})
	mustFlush(t, r)
	if len(m.log) != n+3 {
		t.Errorf("the check wrote again what the Flush during its read wrote: %v", m.log[n+3:])
	}
	for _, o := range m.log {
		if o.prefix == pB && o.kind == opUnroute {
			t.Error("the check deleted the route added during its read")
		}
	}
	if r.Waiting() != 0 || r.Len() != 2 {
		t.Errorf("Waiting %d Len %d", r.Waiting(), r.Len())
	}
}

// TestClose: by default the routes and entries stay; with FlushOnStop
// every route and entry of Protocol goes, including a previous run's.
func TestClose(t *testing.T) {
	for _, flush := range []bool{false, true} {
		m := newModel("dl0", "dl1")
		m.holds(pC, "dl1", hop2, Metric) // a previous run's
		r, _ := newModelRouter(t, Config{FlushOnStop: flush}, m)
		r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
		mustFlush(t, r)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		routes, neighs := m.table()
		if flush && (len(routes) != 0 || len(neighs) != 0) {
			t.Errorf("flush on stop left %v %v", routes, neighs)
		}
		if !flush && (len(routes) != 2 || len(neighs) != 1) {
			t.Errorf("close without flush removed something: %v %v", routes, neighs)
		}
		n := len(m.log)
		r.Add(Route{Prefix: pB, Port: "dl0", NextHop: hop1})
		if err := r.Flush(); err != nil || len(m.log) != n {
			t.Errorf("Flush after Close: %v, wrote %v", err, m.log[n:])
		}
	}
}

// TestNewChecks: bad configs are refused with the port or table named.
func TestNewChecks(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Ports: []string{""}}, `port ""`},
		{Config{Ports: []string{"a-very-long-name"}}, `port "a-very-long-name"`},
		{Config{Ports: []string{"dl0", "dl0"}}, `port "dl0" given twice`},
		{Config{Table: 255}, "table 255 is the kernel's local table"},
		{Config{Table: 253}, "table 253 is the kernel's default table"},
	} {
		if _, err := newRouter(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestOracle drives a Router with random Adds, Updates, Deletes,
// Flushes, Run steps, refused and lost writes, ports going down and up,
// routes deleted by hand and checks, against a plain map of the wanted
// routes: once every port is up and the Router settles, the kernel holds
// exactly the wanted routes, and an entry for each next hop with a known
// MAC.
func TestOracle(t *testing.T) {
	ports := []string{"dl0", "dl1", "dl2"}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 14))
		m := newModel(ports...)
		r, _ := newModelRouter(t, Config{Ports: ports, Batch: 1 + rng.IntN(6)}, m)
		want := map[netip.Prefix]Route{}
		// The wanted routes through each next hop, and its MAC: the last
		// one given while some route went through it.
		type hop struct {
			port string
			addr netip.Addr
		}
		hopRefs := map[hop]int{}
		hopMAC := map[hop][6]byte{}
		set := func(rt Route) {
			if rt.NextHop.IsValid() {
				h := hop{rt.Port, rt.NextHop}
				hopRefs[h]++
				if rt.MAC != ([6]byte{}) {
					hopMAC[h] = rt.MAC
				}
			}
			if old, ok := want[rt.Prefix]; ok && old.NextHop.IsValid() {
				h := hop{old.Port, old.NextHop}
				if hopRefs[h]--; hopRefs[h] == 0 {
					delete(hopMAC, h)
				}
			}
			want[rt.Prefix] = rt
		}
		unset := func(p netip.Prefix) {
			if old := want[p]; old.NextHop.IsValid() {
				h := hop{old.Port, old.NextHop}
				if hopRefs[h]--; hopRefs[h] == 0 {
					delete(hopMAC, h)
				}
			}
			delete(want, p)
		}
		var pool []netip.Prefix
		for range 10 {
			bits := []int{48, 56, 60, 64}[rng.IntN(4)]
			pool = append(pool, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(2) << 4)}), bits).Masked())
		}
		hops := []netip.Addr{hop1, hop2, netip.MustParseAddr("fe80::3"), {}}
		macs := [][6]byte{mac1, mac2, {}}
		// A previous run's routes, some wanted again.
		for _, p := range pool[:rng.IntN(5)] {
			m.holds(p, ports[rng.IntN(3)], hop1, Metric)
		}
		var restored []Route
		for _, p := range pool[:rng.IntN(6)] {
			rt := Route{Prefix: p, Port: ports[rng.IntN(3)], NextHop: hops[rng.IntN(3)], MAC: macs[rng.IntN(3)]}
			restored = append(restored, rt)
			set(rt)
		}
		r.Restore(slices.Values(restored))
		for step := range 150 {
			p := pool[rng.IntN(len(pool))]
			switch x := rng.IntN(20); {
			case x < 6:
				rt := Route{Prefix: p, Port: ports[rng.IntN(3)], NextHop: hops[rng.IntN(4)], MAC: macs[rng.IntN(3)]}
				if old, ok := want[p]; ok && rng.IntN(2) == 0 {
					// The binding table removes before it adds on
					// another port.
					r.Delete(p, old.Port)
					unset(p)
				}
				r.Add(rt)
				set(rt)
			case x < 9:
				if old, ok := want[p]; ok {
					if !r.Delete(p, old.Port) {
						t.Fatalf("seed %d step %d: Delete of a wanted route refused", seed, step)
					}
					unset(p)
				}
			case x < 12:
				r.Flush()
			case x < 14:
				r.step()
			case x < 15:
				m.fail = func(*op) error {
					if rng.IntN(3) == 0 {
						return syscall.EINVAL
					}
					return nil
				}
				r.Flush()
				m.fail = nil
			case x < 16:
				m.lose = 1 + rng.IntN(3)
				r.Flush()
				m.lose = 0
			case x < 17:
				port := ports[rng.IntN(3)]
				if rng.IntN(2) == 0 {
					m.setUp(port, !m.ifs[port].up)
				} else {
					m.setCarrier(port, !m.ifs[port].carrier)
				}
				if rng.IntN(2) == 0 {
					r.requestCheck()
				}
			case x < 18:
				for k := range m.rts {
					m.handDelete(k, rng.IntN(2) == 0) // an operator's, notified or not
					break
				}
			case x < 19:
				r.takeEvents()
			default:
				r.requestCheck()
				r.step()
			}
		}
		for _, port := range ports {
			if !m.ifs[port].up {
				m.setUp(port, true)
			}
			if !m.ifs[port].carrier {
				m.setCarrier(port, true)
			}
		}
		r.Flush()
		r.requestCheck()
		settle(t, r)
		var wr, wn []string
		for _, rt := range want {
			if rt.NextHop.IsValid() {
				wr = append(wr, fmt.Sprintf("%v via %v dev %s", rt.Prefix, rt.NextHop, rt.Port))
			}
		}
		for k, n := range hopRefs {
			if n > 0 && hopMAC[k] != ([6]byte{}) {
				wn = append(wn, fmt.Sprintf("%v %x dev %s", k.addr, hopMAC[k][5], k.port))
			}
		}
		slices.Sort(wr)
		slices.Sort(wn)
		gr, gn := m.table()
		if !slices.Equal(gr, wr) {
			t.Fatalf("seed %d: kernel routes\n%v\nwant\n%v", seed, gr, wr)
		}
		if !slices.Equal(gn, wn) {
			for k, n := range r.neighs {
				t.Logf("router neigh %v: %+v", k, *n)
			}
			for p, e := range r.routes {
				t.Logf("router route %v: %+v", p, *e)
			}
			t.Logf("hopRefs %v", hopRefs)
			t.Fatalf("seed %d: kernel neighbours\n%v\nwant\n%v", seed, gn, wn)
		}
		if r.Len() != len(want) {
			t.Fatalf("seed %d: Len %d, want %d", seed, r.Len(), len(want))
		}
	}
}

func newTextLog(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestAddPorts: a downlink added to a running Router (a reload) takes
// routes at once; one the Router knows is not numbered twice; and the
// ports it had keep their routes.
func TestAddPorts(t *testing.T) {
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{Ports: []string{"dl0"}}, m)
	r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
	if r.Add(Route{Prefix: pB, Port: "dl1", NextHop: hop2, MAC: mac2}) {
		t.Fatal("a route by a port the Router does not know was accepted")
	}
	mustFlush(t, r)
	if err := r.AddPorts("dl0", "dl1"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPorts("dl1", "no such name, too long"); err == nil {
		t.Error("AddPorts took a name that is no interface name")
	}
	if !r.Add(Route{Prefix: pB, Port: "dl1", NextHop: hop2, MAC: mac2}) {
		t.Fatal("a route by the added port was refused")
	}
	mustFlush(t, r)
	expect(t, m,
		[]string{"2001:db8:1:100::/56 via fe80::1 dev dl0", "2001:db8:1:200::/56 via fe80::2 dev dl1"},
		[]string{"fe80::1 1 dev dl0", "fe80::2 2 dev dl1"})
	if r.index["dl1"] != 1 || len(r.names) != 2 {
		t.Errorf("ports %v %v: want dl0 0, dl1 1", r.index, r.names)
	}
}

// slowDumps is a model kernel whose route dumps take delay, as a dump of
// a million routes takes seconds.
type slowDumps struct {
	*modelKernel
	delay time.Duration
	n     atomic.Int32
}

func (s *slowDumps) routes(table uint32, about int) ([]kernelRoute, error) {
	time.Sleep(s.delay)
	s.n.Add(1)
	return s.modelKernel.routes(table, about)
}

// TestCheckInterval: the periodic checks come every Config.Check, or
// every checkShare times the last check's duration when that is longer,
// so that they take at most 1/checkShare of the time.
func TestCheckInterval(t *testing.T) {
	for _, c := range []struct{ every, last, want time.Duration }{
		{30 * time.Second, 0, 30 * time.Second},
		{30 * time.Second, time.Second, 30 * time.Second},
		{30 * time.Second, 10 * time.Second, 200 * time.Second},
	} {
		if got := nextCheck(c.every, c.last); got != c.want {
			t.Errorf("nextCheck(%v, %v) = %v, want %v", c.every, c.last, got, c.want)
		}
	}

	// Run with checks every 10 ms that take 30 ms each: at the interval
	// alone Run would check all the time (some 40 times in 1.3 s); it
	// checks at start, at the first 10 ms tick, then every 600 ms.
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{Check: 10 * time.Millisecond}, m)
	slow := &slowDumps{modelKernel: m, delay: 30 * time.Millisecond}
	r.k = slow
	ctx, cancel := context.WithTimeout(context.Background(), 1300*time.Millisecond)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := slow.n.Load(); n < 3 || n > 6 {
		t.Errorf("%d checks in 1.3 s, want 3 to 6 (at start, at 10 ms, then every 600 ms)", n)
	}
}

// TestCheckWaitsForQuiet: a periodic check waits while routes are being
// written (a dump taken under writes costs about the square of the
// table), for at most checkMaxDefer periods, and comes once they stop.
func TestCheckWaitsForQuiet(t *testing.T) {
	defer func(q time.Duration, d int) { checkQuiet, checkMaxDefer = q, d }(checkQuiet, checkMaxDefer)
	checkQuiet, checkMaxDefer = 200*time.Millisecond, 10 // at most 10 periods: 500 ms
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{Check: 50 * time.Millisecond}, m)
	dumps := &slowDumps{modelKernel: m}
	r.k = dumps
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	waitFor(t, "the start's check", func() bool { return dumps.n.Load() >= 1 })
	on := false
	write := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if on = !on; on {
				r.Add(Route{Prefix: pA, Port: "dl0", NextHop: hop1, MAC: mac1})
			} else {
				r.Delete(pA, "dl0")
			}
			mustFlush(t, r)
		}
	}
	time.Sleep(300 * time.Millisecond) // quiet: periodic checks run
	if n := dumps.n.Load(); n < 3 {
		t.Fatalf("%d checks in 300 ms of quiet with a 50 ms period, want at least 3", n)
	}
	n0 := dumps.n.Load()
	write(350 * time.Millisecond)
	if n := dumps.n.Load(); n != n0 {
		t.Errorf("%d checks while routes were written for 350 ms, want none", n-n0)
	}
	start := time.Now()
	waitFor(t, "a check once the writes stopped", func() bool { return dumps.n.Load() > n0 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("the check came %v after the writes stopped", d)
	}
	n1 := dumps.n.Load()
	write(900 * time.Millisecond)
	if dumps.n.Load() == n1 {
		t.Error("no check in 900 ms of writes; want one after checkMaxDefer periods (500 ms)")
	}
}

// TestCheckYields: a check lets Flush in every checkChunk routes; the
// routes added, deleted and moved by Flushes during its comparison end
// as the Router wants them, and the check repairs what it should (a route
// deleted by hand with no event, a stale route of Protocol).
func TestCheckYields(t *testing.T) {
	defer func(n int) { checkChunk = n }(checkChunk)
	checkChunk = 3
	m := newModel("dl0", "dl1")
	r, _ := newModelRouter(t, Config{}, m)
	settle(t, r)
	pfx := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 5: byte(i)}), 56)
	}
	for i := range 40 {
		r.Add(Route{Prefix: pfx(i), Port: "dl0", NextHop: hop1})
	}
	mustFlush(t, r)
	m.handDelete(mroute{pfx(7), Metric}, false) // no event: the check finds it
	m.holds(pfx(200), "dl1", hop2, Metric)      // ours, backed by no binding
	want := map[netip.Prefix]string{}
	for i := range 40 {
		want[pfx(i)] = "dl0"
	}
	step := 0
	checkYielded = func() {
		step++
		switch step % 3 {
		case 0:
			p := pfx(100 + step)
			r.Add(Route{Prefix: p, Port: "dl1", NextHop: hop2})
			want[p] = "dl1"
		case 1:
			p := pfx(step % 40)
			if port, ok := want[p]; ok {
				r.Delete(p, port)
				delete(want, p)
			}
		case 2:
			p := pfx((step + 20) % 40)
			if _, ok := want[p]; ok {
				r.Update(Route{Prefix: p, Port: "dl1", NextHop: hop2})
				want[p] = "dl1"
			}
		}
		mustFlush(t, r)
	}
	defer func() { checkYielded = nil }()
	r.requestCheck()
	settle(t, r)
	checkYielded = nil
	if step < 10 {
		t.Fatalf("the check let Flush in %d times, want one every %d routes", step, checkChunk)
	}
	var wantRoutes []string
	for p, port := range want {
		via := hop1
		if port == "dl1" {
			via = hop2
		}
		wantRoutes = append(wantRoutes, fmt.Sprintf("%v via %v dev %s", p, via, port))
	}
	slices.Sort(wantRoutes)
	got, _ := m.table()
	if !slices.Equal(got, wantRoutes) {
		t.Errorf("after a check with %d Flushes in it, the kernel holds\n%v\nwant\n%v", step, got, wantRoutes)
	}
}

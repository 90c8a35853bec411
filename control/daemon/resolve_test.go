package daemon

import (
	"github.com/pdrelay/pdrelay/internal/testutil"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/fib"
)

// fakeResolver records what nextHops asks of the resolver.
type fakeResolver struct {
	mu       sync.Mutex
	resolve  map[hopKey]int
	forget   map[hopKey]int
	tracking map[hopKey]bool
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{resolve: map[hopKey]int{}, forget: map[hopKey]int{}, tracking: map[hopKey]bool{}}
}

func (f *fakeResolver) Resolve(ifname string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolve[hopKey{ifname, addr}]++
	f.tracking[hopKey{ifname, addr}] = true
}

func (f *fakeResolver) Forget(ifname string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forget[hopKey{ifname, addr}]++
	delete(f.tracking, hopKey{ifname, addr})
}

func (f *fakeResolver) counts(h hopKey) (resolve, forget int, tracking bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resolve[h], f.forget[h], f.tracking[h]
}

var (
	nhA      = netip.MustParseAddr("fe80::a")
	nhB      = netip.MustParseAddr("fe80::b")
	duidA    = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0a"
	duidB    = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0b"
	resolved = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a}
)

func learnedNoMAC(port, duid string, iaid uint32, prefix string, nh netip.Addr) binding.Learned {
	return binding.Learned{
		Key:     binding.Key{Port: port, DUID: duid, IAID: iaid, Prefix: netip.MustParsePrefix(prefix)},
		NextHop: nh, Valid: time.Hour, Preferred: time.Hour,
	}
}

// resolveRig is a running Manager with the FIB sink and nextHops, and a
// fake resolver.
type resolveRig struct {
	tab  *binding.Table
	mgr  *binding.Manager
	ft   *fib.Table
	n    *nextHops
	res  *fakeResolver
	logs *testutil.SyncBuffer
}

func newResolveRig(t *testing.T, restored ...binding.Binding) *resolveRig {
	t.Helper()
	r := &resolveRig{tab: binding.NewTable(binding.PortLimits{}, nil), ft: fib.NewTable(), res: newFakeResolver(), logs: &testutil.SyncBuffer{}}
	log := slog.New(slog.NewTextHandler(r.logs, nil))
	fs := &fibWriter{t: r.ft, ports: map[string]fib.PortID{"up0": 0, "dl1": 1, "dl2": 2}, log: log}
	for _, b := range restored {
		if b, _ := r.tab.RestoreRef(time.Now(), b); b != nil {
			fs.add(b, true)
		}
	}
	r.ft.Publish()
	r.n = newNextHops(r.res, log)
	r.n.seed(r.tab)
	r.mgr = binding.NewManager(r.tab, nil, log, fs.Sink, r.n.Sink)
	r.n.mgr = r.mgr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("manager: %v", err)
		}
	})
	return r
}

// sync waits until every event posted so far has run (its changes may
// still be on their way to the sinks: see eventually).
func (r *resolveRig) sync(t *testing.T) {
	t.Helper()
	if err := r.mgr.Do(t.Context(), func(*binding.Table) {}); err != nil {
		t.Fatal(err)
	}
}

// eventually waits up to 5 s for cond: the sinks get a batch after the
// events queued with it have run.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
	}
}

func (r *resolveRig) get(t *testing.T, port, duid string, iaid uint32, prefix string) binding.Binding {
	t.Helper()
	r.sync(t)
	var b binding.Binding
	var ok bool
	r.mgr.Do(t.Context(), func(tab *binding.Table) {
		b, ok = tab.Get(binding.Key{Port: port, DUID: duid, IAID: iaid, Prefix: netip.MustParsePrefix(prefix)})
	})
	if !ok {
		t.Fatalf("no binding %s %s", port, prefix)
	}
	return b
}

// routeMAC waits for the published route to dst to have MAC want.
func (r *resolveRig) routeMAC(t *testing.T, dst string, want [6]byte) {
	t.Helper()
	r.sync(t)
	eventually(t, fmt.Sprintf("route to %s with MAC %x", dst, want), func() bool {
		rt, ok := r.ft.Load().Lookup(netip.MustParseAddr(dst))
		return ok && rt.MAC == want
	})
}

// forgotten waits for h to be forgotten n times in all, and no longer
// asked for.
func (r *resolveRig) forgotten(t *testing.T, h hopKey, n int) {
	t.Helper()
	r.sync(t)
	eventually(t, fmt.Sprintf("%v forgotten %d times", h, n), func() bool {
		_, forget, tr := r.res.counts(h)
		return forget == n && !tr
	})
}

// TestNextHopsResolveFillsMAC: a binding learned without a MAC is routed
// at once with MAC zero, its next hop is asked for, and the MAC found is
// set on it and on every binding waiting for that next hop on that port,
// and reaches the FIB.
func TestNextHopsResolveFillsMAC(t *testing.T) {
	r := newResolveRig(t)
	r.mgr.Apply(binding.Update{Learn: []binding.Learned{
		learnedNoMAC("dl1", duidA, 1, "2001:db8:1::/56", nhA),
		learnedNoMAC("dl1", duidA, 2, "2001:db8:2::/56", nhA),
		learnedNoMAC("dl1", duidB, 1, "2001:db8:3::/56", nhA), // another client behind the same next hop
		learnedNoMAC("dl2", duidA, 1, "2001:db8:4::/56", nhA), // the same address on another port
	}})
	r.routeMAC(t, "2001:db8:1::1", [6]byte{}) // routed at once, MAC zero
	h1, h2 := hopKey{"dl1", nhA}, hopKey{"dl2", nhA}
	for _, h := range []hopKey{h1, h2} {
		eventually(t, fmt.Sprintf("%v asked for", h), func() bool {
			res, _, tr := r.res.counts(h)
			return res > 0 && tr
		})
	}
	eventually(t, "four bindings waiting", func() bool { return r.n.waitingBindings() == 4 })

	// The resolver reports with the port as zone.
	r.n.found("dl1", nhA.WithZone("dl1"), resolved)
	for _, k := range []struct {
		duid   string
		iaid   uint32
		prefix string
	}{{duidA, 1, "2001:db8:1::/56"}, {duidA, 2, "2001:db8:2::/56"}, {duidB, 1, "2001:db8:3::/56"}} {
		if b := r.get(t, "dl1", k.duid, k.iaid, k.prefix); b.MAC != resolved {
			t.Errorf("%s: MAC %x, want %x", k.prefix, b.MAC, resolved)
		}
	}
	if b := r.get(t, "dl2", duidA, 1, "2001:db8:4::/56"); b.MAC != ([6]byte{}) {
		t.Errorf("dl2's binding took dl1's MAC: %x", b.MAC)
	}
	r.routeMAC(t, "2001:db8:1::1", resolved)
	r.forgotten(t, h1, 1) // once its last binding got a MAC
	if _, _, tr := r.res.counts(h2); !tr {
		t.Error("dl2 fe80::a is no longer asked for")
	}
	if got := r.n.waitingBindings(); got != 1 {
		t.Errorf("%d bindings waiting, want 1 (dl2)", got)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, `msg="binding next hop resolved" port=dl1 next_hop=fe80::a mac=02:00:5e:00:53:0a bindings=3`) {
		t.Errorf("no resolution line in the log:\n%s", logs)
	}

	// Found again (nothing waits): nothing changes.
	r.n.found("dl1", nhA, [6]byte{2, 0, 0, 0, 0, 0x99})
	if b := r.get(t, "dl1", duidA, 1, "2001:db8:1::/56"); b.MAC != resolved {
		t.Errorf("a report nobody waited for changed the MAC to %x", b.MAC)
	}
}

// TestNextHopsForget: the next hop is forgotten when its last waiting
// binding goes (removed, or given a MAC by a matched request), not
// before; a binding that has a MAC is never asked for.
func TestNextHopsForget(t *testing.T) {
	r := newResolveRig(t)
	withMAC := learnedNoMAC("dl1", duidB, 1, "2001:db8:9::/56", nhB)
	withMAC.MAC, withMAC.MACKnown = [6]byte{2, 0, 0, 0, 0, 0xb}, true
	r.mgr.Apply(binding.Update{Learn: []binding.Learned{
		learnedNoMAC("dl1", duidA, 1, "2001:db8:1::/56", nhA),
		learnedNoMAC("dl1", duidA, 2, "2001:db8:2::/56", nhA),
		withMAC,
	}})
	eventually(t, "two bindings waiting", func() bool { return r.n.waitingBindings() == 2 })
	h := hopKey{"dl1", nhA}
	if res, _, _ := r.res.counts(hopKey{"dl1", nhB}); res != 0 {
		t.Errorf("a binding with a MAC was asked for")
	}
	r.mgr.Apply(binding.Update{RemoveIAs: []binding.RemoveIA{{Port: "dl1", DUID: duidA, IAID: 1, Reason: binding.ReasonReleased}}})
	eventually(t, "one binding waiting", func() bool { return r.n.waitingBindings() == 1 })
	if _, forget, tr := r.res.counts(h); forget != 0 || !tr {
		t.Fatalf("forgotten with a binding still waiting (forget %d)", forget)
	}
	// A matched renewal brings the MAC of the request's frame.
	l := learnedNoMAC("dl1", duidA, 2, "2001:db8:2::/56", nhA)
	l.MAC, l.MACKnown = [6]byte{2, 0, 0, 0, 0, 0xa}, true
	r.mgr.Apply(binding.Update{Learn: []binding.Learned{l}})
	r.forgotten(t, h, 1)
	if got := r.n.waitingBindings(); got != 0 {
		t.Errorf("%d bindings waiting", got)
	}

	// A waiting binding whose next hop changes moves to the new one.
	r.mgr.Apply(binding.Update{Learn: []binding.Learned{learnedNoMAC("dl1", duidA, 3, "2001:db8:3::/56", nhA)}})
	r.mgr.Apply(binding.Update{Learn: []binding.Learned{learnedNoMAC("dl1", duidA, 3, "2001:db8:3::/56", nhB)}})
	r.forgotten(t, h, 2)
	// want forgets the old next hop before it asks for the new one, on the
	// manager's goroutine: the ask may come just after the forget.
	eventually(t, "new next hop asked for", func() bool {
		_, _, tr := r.res.counts(hopKey{"dl1", nhB})
		return tr
	})
}

// TestNextHopsSeed: restored bindings with MAC zero (a store written
// before MACs were resolved) are asked for at start and filled in.
func TestNextHopsSeed(t *testing.T) {
	now := time.Now()
	zero := binding.Binding{
		Key:     binding.Key{Port: "dl1", DUID: duidA, IAID: 1, Prefix: netip.MustParsePrefix("2001:db8:1::/56")},
		NextHop: nhA, Expires: now.Add(time.Hour), Preferred: now.Add(time.Hour), Updated: now.Add(-time.Minute),
	}
	known := zero
	known.Key.DUID, known.Key.Prefix, known.NextHop, known.MAC = duidB, netip.MustParsePrefix("2001:db8:2::/56"), nhB, [6]byte{2, 0, 0, 0, 0, 0xb}
	r := newResolveRig(t, zero, known)
	if res, _, _ := r.res.counts(hopKey{"dl1", nhA}); res != 1 {
		t.Fatalf("restored binding without MAC asked for %d times, want 1", res)
	}
	if res, _, _ := r.res.counts(hopKey{"dl1", nhB}); res != 0 {
		t.Fatal("restored binding with a MAC asked for")
	}
	if !strings.Contains(r.logs.String(), "restored bindings without a next hop MAC: resolving") {
		t.Errorf("seed not logged:\n%s", r.logs.String())
	}
	r.n.found("dl1", nhA, resolved)
	if b := r.get(t, "dl1", duidA, 1, "2001:db8:1::/56"); b.MAC != resolved || !b.Updated.Equal(zero.Updated) {
		t.Errorf("restored binding after resolution: %+v", b)
	}
	r.routeMAC(t, "2001:db8:1::1", resolved)
}

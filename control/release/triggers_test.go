package release

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// fakeRelease records what the triggers release and answers with status
// (clearing what it releases, as the Releaser does).
type fakeRelease struct {
	mgr    *binding.Manager
	status uint16
	gate   chan struct{} // when set, each release waits for a value

	mu    sync.Mutex
	calls []releaseCall
}

type releaseCall struct {
	trigger string
	keys    []binding.Key
}

func (f *fakeRelease) release(ctx context.Context, trigger string, bs []binding.Binding) ([]Result, error) {
	if f.gate != nil {
		<-f.gate
	}
	c := releaseCall{trigger: trigger}
	var out []Result
	for _, b := range bs {
		c.keys = append(c.keys, b.Key)
		out = append(out, Result{Binding: b, Answered: true, Status: f.status})
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	if f.status == dhcp6.StatusSuccess {
		f.mgr.Do(ctx, func(t *binding.Table) {
			for _, k := range c.keys {
				t.Remove(k, ReasonReleased)
			}
		})
	}
	return out, nil
}

func (f *fakeRelease) wait(t *testing.T, n int) []releaseCall {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		c := slices.Clone(f.calls)
		f.mu.Unlock()
		if len(c) >= n {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d releases, want %d", len(f.calls), n)
	return nil
}

// triggerRig is a binding manager with the triggers as sink and refusal
// hook, and the triggers running.
type triggerRig struct {
	mgr *binding.Manager
	tr  *Triggers
	rel *fakeRelease
	met *Metrics
}

func newTriggerRig(t *testing.T, cfg TriggerConfig, perPort map[string]binding.PortLimits) *triggerRig {
	t.Helper()
	tb := binding.NewTable(binding.PortLimits{}, perPort)
	rig := &triggerRig{rel: &fakeRelease{}, met: NewMetrics()}
	var tr *Triggers
	mgr := binding.NewManager(tb, nil, nil, func(c []binding.Change) { tr.Sink(c) })
	tr = NewTriggers(cfg, rig.rel.release, mgr, rig.met, nil)
	mgr.OnRefusedKey = tr.Refused
	rig.mgr, rig.tr, rig.rel.mgr = mgr, tr, mgr
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); mgr.Run(ctx) }()
	go func() { defer wg.Done(); tr.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return rig
}

// learn applies a snooped Reply's prefix and waits for it to be applied.
func (r *triggerRig) learn(t *testing.T, port, duid string, iaid uint32, prefix string, hop string) {
	t.Helper()
	r.mgr.Apply(binding.Update{Learn: []binding.Learned{{
		Key:     binding.Key{Port: port, DUID: duid, IAID: iaid, Prefix: netip.MustParsePrefix(prefix)},
		NextHop: netip.MustParseAddr(hop), Preferred: time.Hour, Valid: time.Hour, ServerDUID: serverDUID,
	}}})
	if err := r.mgr.Do(context.Background(), func(*binding.Table) {}); err != nil {
		t.Fatal(err)
	}
}

func prefixes(keys []binding.Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Prefix.String())
	}
	slices.Sort(out)
	return out
}

// TestTriggerReplaced: a new DUID's first prefix on a point-to-point port
// releases the old DUID's bindings there, once; not on a multi-access
// port, and not for the old client's renewals.
func TestTriggerReplaced(t *testing.T) {
	rig := newTriggerRig(t, TriggerConfig{Replaced: true, PointToPoint: map[string]bool{"p2p": true}}, nil)
	rig.learn(t, "p2p", clientA, 1, "2001:db8:1::/56", "fe80::a")
	rig.learn(t, "p2p", clientA, 2, "2001:db8:1:100::/60", "fe80::a")
	rig.learn(t, "p2p", clientA, 1, "2001:db8:1::/56", "fe80::a") // a renewal
	rig.learn(t, "shared", clientA, 1, "2001:db8:7::/56", "fe80::a")
	rig.learn(t, "shared", clientB, 1, "2001:db8:8::/56", "fe80::b") // another client on a shared link: fine
	rig.learn(t, "p2p", clientB, 1, "2001:db8:2::/56", "fe80::b")    // the CPE was replaced
	calls := rig.rel.wait(t, 1)
	if calls[0].trigger != TriggerClientReplaced || !slices.Equal(prefixes(calls[0].keys), []string{"2001:db8:1:100::/60", "2001:db8:1::/56"}) {
		t.Errorf("release %+v, want client A's two p2p bindings for client_replaced", calls[0])
	}
	rig.learn(t, "p2p", clientB, 2, "2001:db8:2:100::/60", "fe80::b") // B's second prefix: no new trigger
	time.Sleep(50 * time.Millisecond)
	if c := rig.rel.wait(t, 1); len(c) != 1 {
		t.Errorf("%d releases, want 1: %+v", len(c), c)
	}
	bs, _ := rig.mgr.List(context.Background())
	for _, b := range bs {
		if b.Port == "p2p" && b.DUID == clientA {
			t.Errorf("replaced client's binding %s kept", b.Prefix)
		}
	}
}

// TestTriggerMoved: unique_client refuses client A on a new port; its
// bindings on the old port are released once (however many refusals
// come meanwhile), and its next exchange on the new port succeeds.
func TestTriggerMoved(t *testing.T) {
	uniq := binding.PortLimits{UniqueClient: true}
	rig := newTriggerRig(t, TriggerConfig{Moved: true}, map[string]binding.PortLimits{"eth1": uniq, "eth2": uniq})
	rig.rel.gate = make(chan struct{})
	rig.learn(t, "eth1", clientA, 1, "2001:db8:1::/56", "fe80::a")
	for range 3 { // the Reply, and two retransmissions' Replies, refused
		rig.learn(t, "eth2", clientA, 1, "2001:db8:9::/56", "fe80::a")
	}
	rig.rel.gate <- struct{}{}
	calls := rig.rel.wait(t, 1)
	if calls[0].trigger != TriggerClientMoved || !slices.Equal(prefixes(calls[0].keys), []string{"2001:db8:1::/56"}) {
		t.Errorf("release %+v, want client A's eth1 binding for client_moved", calls[0])
	}
	close(rig.rel.gate)
	// The release clears the eth1 binding when it returns, on the
	// trigger's worker: wait for that, as the client's next exchange
	// would come seconds later.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		bs, _ := rig.mgr.List(context.Background())
		if len(bs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client A's eth1 binding not cleared after its release: %+v", bs)
		}
	}
	rig.learn(t, "eth2", clientA, 1, "2001:db8:9::/56", "fe80::a")
	bs, _ := rig.mgr.List(context.Background())
	if len(bs) != 1 || bs[0].Port != "eth2" {
		t.Errorf("bindings %+v, want client A on eth2 only", bs)
	}
	if c := rig.rel.wait(t, 1); len(c) != 1 {
		t.Errorf("%d releases: the refusals while in flight should not release again", len(c))
	}
}

// TestTriggerMovedFailedCoolsDown: a release the server refuses is not
// tried again by the next refusal within the cooldown.
func TestTriggerMovedFailedCoolsDown(t *testing.T) {
	uniq := binding.PortLimits{UniqueClient: true}
	rig := newTriggerRig(t, TriggerConfig{Moved: true}, map[string]binding.PortLimits{"eth1": uniq, "eth2": uniq})
	rig.rel.status = dhcp6.StatusUnspecFail
	rig.learn(t, "eth1", clientA, 1, "2001:db8:1::/56", "fe80::a")
	rig.learn(t, "eth2", clientA, 1, "2001:db8:9::/56", "fe80::a")
	rig.rel.wait(t, 1)
	time.Sleep(20 * time.Millisecond) // the first job ends
	rig.learn(t, "eth2", clientA, 1, "2001:db8:9::/56", "fe80::a")
	time.Sleep(50 * time.Millisecond)
	if c := rig.rel.wait(t, 1); len(c) != 1 {
		t.Errorf("%d releases within the cooldown, want 1", len(c))
	}
}

// fakeProber is a neighbour table in a map.
type fakeProber struct {
	mu     sync.Mutex
	reach  map[hopKey]Reach
	asked  []hopKey
	failed bool
}

func (p *fakeProber) Snapshot() (func(string, netip.Addr) Reach, error) {
	p.mu.Lock()
	m := make(map[hopKey]Reach, len(p.reach))
	for k, v := range p.reach {
		m[k] = v
	}
	p.mu.Unlock()
	return func(port string, a netip.Addr) Reach {
		if r, ok := m[hopKey{port, a}]; ok {
			return r
		}
		return ReachFailed
	}, nil
}

func (p *fakeProber) Solicit(port string, a netip.Addr) error {
	p.mu.Lock()
	p.asked = append(p.asked, hopKey{port, a})
	p.mu.Unlock()
	return nil
}

func (p *fakeProber) set(port, addr string, r Reach) {
	p.mu.Lock()
	p.reach[hopKey{port, netip.MustParseAddr(addr)}] = r
	p.mu.Unlock()
}

// TestTriggerUnavailable: a next hop confirmed stays; one whose entry
// has failed for the configured time has its bindings released; a STALE
// one is asked about, not released.
func TestTriggerUnavailable(t *testing.T) {
	p := &fakeProber{reach: map[hopKey]Reach{}}
	const after = 10 * time.Minute
	rig := newTriggerRig(t, TriggerConfig{Unavailable: after, Prober: p}, nil)
	now := time.Now()
	rig.tr.now = func() time.Time { return now }
	rig.learn(t, "eth1", clientA, 1, "2001:db8:1::/56", "fe80::a")
	rig.learn(t, "eth1", clientA, 2, "2001:db8:1:100::/60", "fe80::a")
	rig.learn(t, "eth1", clientB, 1, "2001:db8:2::/56", "fe80::b")
	rig.learn(t, "eth2", clientB, 1, "2001:db8:3::/56", "fe80::c")
	p.set("eth1", "fe80::a", ReachConfirmed)
	p.set("eth1", "fe80::b", ReachFailed)
	p.set("eth2", "fe80::c", ReachUnknown) // STALE: ask
	rig.tr.probeRound(now.Add(after / 2))
	p.set("eth1", "fe80::a", ReachFailed) // fails now: its time starts from its last confirmation
	rig.tr.probeRound(now.Add(after))
	calls := rig.rel.wait(t, 1)
	if calls[0].trigger != TriggerClientUnavailable || !slices.Equal(prefixes(calls[0].keys), []string{"2001:db8:2::/56"}) {
		t.Errorf("release %+v, want fe80::b's binding for client_unavailable", calls[0])
	}
	rig.tr.probeRound(now.Add(after/2 + after))
	calls = rig.rel.wait(t, 2)
	if !slices.Equal(prefixes(calls[1].keys), []string{"2001:db8:1:100::/60", "2001:db8:1::/56"}) {
		t.Errorf("second release %+v, want fe80::a's two bindings", calls[1])
	}
	time.Sleep(20 * time.Millisecond)
	if c := rig.rel.wait(t, 2); len(c) != 2 {
		t.Errorf("%d releases, want 2 (the STALE next hop stays)", len(c))
	}
	p.mu.Lock()
	asked := slices.Contains(p.asked, hopKey{"eth2", netip.MustParseAddr("fe80::c")})
	p.mu.Unlock()
	if !asked {
		t.Error("the STALE next hop was not asked to be confirmed")
	}
	rig.tr.probeRound(now.Add(2 * after))
	if n := counterValue(rig.met.unavailable); n != 1 {
		t.Errorf("watched next hops %v after the releases, want 1", n)
	}
}

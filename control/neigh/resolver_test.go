package neigh

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// fakeTable answers plan's looks from a map; a next hop not in it has no
// entry.
type fakeTable map[hop]entryClass

var fakeMAC = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x77}

func (f fakeTable) look(h hop) (entryClass, [6]byte) {
	c := f[h]
	if c == entryUsable {
		return c, fakeMAC
	}
	return c, [6]byte{}
}

func testResolver(opt ResolverOptions) *Resolver {
	return NewResolver(opt, nil, nil)
}

// roundAt runs one round of the planning at now, as Run does.
func roundAt(r *Resolver, now time.Time, f fakeTable) roundPlan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.plan(now, r.due(now, false), f.look)
}

func (r *Resolver) target(ifname, addr string) *target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.targets[hop{ifname, netip.MustParseAddr(addr)}]
}

// TestResolverPlanBackoff follows one next hop that never answers:
// nothing within the grace, then requests at Retry, 2, 4, 8 Retry, capped
// at MaxRetry, none while the kernel is resolving, one warning.
func TestResolverPlanBackoff(t *testing.T) {
	r := testResolver(ResolverOptions{Grace: 500 * time.Millisecond, Retry: time.Second,
		MaxRetry: 4 * time.Second, WarnAfter: 10 * time.Second})
	r.Resolve("dl0", netip.MustParseAddr("fe80::99%dl0"))
	tg := r.target("dl0", "fe80::99")
	if tg == nil {
		t.Fatal("not tracked (zone not stripped?)")
	}
	h := tg.hop
	t0 := tg.added
	f := fakeTable{}

	if p := roundAt(r, t0, f); len(p.requests) != 0 || !tg.next.Equal(t0.Add(500*time.Millisecond)) {
		t.Fatalf("within the grace: requests %d, next +%v", len(p.requests), tg.next.Sub(t0))
	}
	var sentAt []time.Duration
	warnings := 0
	for now := t0; now.Before(t0.Add(30 * time.Second)); now = now.Add(100 * time.Millisecond) {
		// The kernel resolves for 300 ms after each request, then fails.
		f[h] = entryMissing
		if tg.tries > 0 && now.Sub(tg.last) < 300*time.Millisecond {
			f[h] = entryResolving
		}
		if tg.next.After(now) {
			continue // not due: Run would not look
		}
		p := roundAt(r, now, f)
		if len(p.requests) > 0 {
			if f[h] == entryResolving {
				t.Fatalf("request at +%v while the kernel was resolving", now.Sub(t0))
			}
			sentAt = append(sentAt, now.Sub(t0))
		}
		warnings += len(p.warn)
		if len(p.warn) == 1 && (p.warn[0].tries == 0 || !p.warn[0].link) {
			t.Errorf("warning %+v", p.warn[0])
		}
	}
	var want []time.Duration
	for _, ms := range []time.Duration{500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500} {
		want = append(want, ms*time.Millisecond)
	}
	if !slices.Equal(sentAt, want) {
		t.Fatalf("requests at %v, want at %v", sentAt, want)
	}
	if warnings != 1 {
		t.Errorf("%d warnings, want 1", warnings)
	}
	if s := r.Stats(); s.Tracked != 1 || s.Resolved != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestResolverPlanReports: a usable entry is reported once and the next
// hop is no longer tracked; a resolving one is looked at again later.
func TestResolverPlanReports(t *testing.T) {
	r := testResolver(ResolverOptions{Retry: time.Second})
	a, b := netip.MustParseAddr("fe80::a"), netip.MustParseAddr("fe80::b")
	r.Resolve("dl0", a)
	r.Resolve("dl0", a) // idempotent
	r.Resolve("dl1", a) // another port: another next hop
	r.Resolve("dl0", b)
	f := fakeTable{{"dl0", a}: entryUsable, {"dl1", a}: entryResolving}
	now := time.Now()
	p := roundAt(r, now, f)
	if len(p.reports) != 1 || p.reports[0] != (report{hop{"dl0", a}, fakeMAC}) {
		t.Fatalf("reports %+v", p.reports)
	}
	if tg := r.target("dl1", "fe80::a"); tg == nil || !tg.next.Equal(now.Add(time.Second)) || tg.tries != 0 {
		t.Fatalf("resolving target %+v", tg)
	}
	if p := roundAt(r, now, f); len(p.reports) != 0 {
		t.Fatalf("reported twice: %+v", p.reports)
	}
	// A notification reports at once.
	r.mu.Lock()
	rep, ok := r.notified(now, hop{"dl1", a}, entryUsable, fakeMAC)
	_, again := r.notified(now, hop{"dl1", a}, entryUsable, fakeMAC)
	r.mu.Unlock()
	if !ok || rep.ifname != "dl1" || again {
		t.Fatalf("notified: %+v %v, again %v", rep, ok, again)
	}
	if s := r.Stats(); s.Tracked != 1 || s.Resolved != 2 {
		t.Errorf("stats %+v, want dl0 fe80::b tracked, two resolved", s)
	}
}

// TestResolverPlanInFlight: no more than MaxInFlight requests at once,
// the rest wait for a slot; a failure frees a slot at once.
func TestResolverPlanInFlight(t *testing.T) {
	r := testResolver(ResolverOptions{Grace: time.Millisecond, Retry: time.Second, MaxInFlight: 3})
	for i := range 10 {
		r.Resolve("dl0", netip.MustParseAddr(fmt.Sprintf("fe80::%x", 0x100+i)))
	}
	now := time.Now().Add(time.Second) // past every grace
	f := fakeTable{}
	p := roundAt(r, now, f)
	if len(p.requests) != 3 {
		t.Fatalf("%d requests, want 3", len(p.requests))
	}
	if s := r.Stats(); s.InFlight != 3 {
		t.Fatalf("in flight %d", s.InFlight)
	}
	// The kernel is resolving those three: no new requests.
	for _, tg := range p.requests {
		f[tg.hop] = entryResolving
	}
	if p := roundAt(r, now.Add(time.Second/4), f); len(p.requests) != 0 {
		t.Fatalf("%d requests with every slot taken", len(p.requests))
	}
	// One fails (notification): its slot goes to the next.
	r.mu.Lock()
	r.notified(now, p.requests[0].hop, entryMissing, [6]byte{})
	r.mu.Unlock()
	delete(f, p.requests[0].hop)
	p2 := roundAt(r, now.Add(time.Second/2), f)
	if len(p2.requests) != 1 {
		t.Fatalf("%d requests after one slot freed, want 1", len(p2.requests))
	}
}

// TestResolverBounded: the tracked set holds MaxTracked next hops, more
// are refused and counted; Forget makes room; bad addresses are ignored.
func TestResolverBounded(t *testing.T) {
	r := testResolver(ResolverOptions{MaxTracked: 100})
	for i := range 1000 {
		r.Resolve("dl0", netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 14: byte(i >> 8), 15: byte(i)}))
	}
	if s := r.Stats(); s.Tracked != 100 || s.Dropped != 900 {
		t.Fatalf("stats %+v, want 100 tracked, 900 dropped", s)
	}
	r.Resolve("dl0", netip.MustParseAddr("fe80::1")) // tracked already: not a drop
	if s := r.Stats(); s.Dropped != 900 {
		t.Fatalf("re-asking a tracked next hop was dropped: %+v", s)
	}
	r.Forget("dl0", netip.MustParseAddr("fe80::1%dl0"))
	r.Resolve("dl1", netip.MustParseAddr("fe80::1"))
	if s := r.Stats(); s.Tracked != 100 || s.Dropped != 900 {
		t.Fatalf("after Forget: %+v", s)
	}
	for _, bad := range []netip.Addr{{}, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.1"),
		netip.MustParseAddr("::"), netip.MustParseAddr("ff02::1"), netip.MustParseAddr("::1")} {
		r.Forget("dl1", netip.MustParseAddr("fe80::1"))
		r.Resolve("dl1", bad)
		if s := r.Stats(); s.Tracked != 99 {
			t.Errorf("Resolve(%v) tracked it: %+v", bad, s)
		}
		r.Resolve("dl1", netip.MustParseAddr("fe80::1"))
	}
	r.Forget("dl0", netip.MustParseAddr("fe80::2"))
	r.Resolve("", netip.MustParseAddr("fe80::2"))
	if s := r.Stats(); s.Tracked != 99 {
		t.Errorf("Resolve with no port tracked it: %+v", s)
	}
}

func TestResolverBackoffFunc(t *testing.T) {
	var got []time.Duration
	for tries := 0; tries <= 7; tries++ {
		got = append(got, backoff(time.Second, 10*time.Second, tries))
	}
	want := []time.Duration{1, 1, 2, 4, 8, 10, 10, 10}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoffs %v, want %v seconds", got, want)
		}
	}
}

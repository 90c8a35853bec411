package neigh

import (
	"github.com/pdrelay/pdrelay/internal/testutil"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Resolver tests run in the topology of the watcher's: the Resolver looks
// at up0 in namespace A; fe80::1 (gw0 in B) answers neighbour discovery,
// nothing else does.

type found struct {
	ifname string
	addr   netip.Addr
	mac    [6]byte
}

// count counts substr in what the log holds so far.
func count(logs *testutil.SyncBuffer, substr string) int { return strings.Count(logs.String(), substr) }

// resolver starts a Resolver on namespace A; its reports go to the
// returned channel, its log to the test and to the buffer. stop ends Run
// and checks how it ended.
func (tp *topo) resolver(t *testing.T, opt ResolverOptions) (*Resolver, <-chan found, *testutil.SyncBuffer, func()) {
	t.Helper()
	opt.NetNS = tp.nsA
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	reports := make(chan found, 1024)
	r := NewResolver(opt, log, func(ifname string, addr netip.Addr, mac [6]byte) {
		reports <- found{ifname, addr, mac}
	})
	stop := testutil.Start(t, "Run", r.Run)
	return r, reports, logs, stop
}

func awaitFound(t *testing.T, reports <-chan found, timeout time.Duration) found {
	t.Helper()
	select {
	case f := <-reports:
		return f
	case <-time.After(timeout):
		t.Fatalf("nothing resolved within %v", timeout)
	}
	panic("unreachable")
}

func noFound(t *testing.T, reports <-chan found, d time.Duration) {
	t.Helper()
	select {
	case f := <-reports:
		t.Fatalf("unexpected report %+v", f)
	case <-time.After(d):
	}
}

// slowProbes makes up0 in A give up on a neighbour after one
// solicitation, 100 ms: a next hop that never answers is failed quickly,
// so the Resolver's own backoff, not the kernel's probing, sets the pace.
func (tp *topo) slowProbes(t *testing.T) {
	tp.sysctl(t, tp.a, "ipv6/neigh/"+upIf+"/mcast_solicit", "1")
	tp.sysctl(t, tp.a, "ipv6/neigh/"+upIf+"/retrans_time_ms", "100")
}

// incomplete counts the INCOMPLETE entries on up0 in A.
func (tp *topo) incomplete(t *testing.T, h *netlink.Handle) int {
	t.Helper()
	list, err := h.NeighList(tp.ifindex, netlink.FAMILY_V6)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("list neighbours: %v", err)
	}
	n := 0
	for _, e := range list {
		if e.State&netlink.NUD_INCOMPLETE != 0 {
			n++
		}
	}
	return n
}

// TestResolverAsks: a next hop with no entry and no traffic is resolved
// because the Resolver asks the kernel, and reported once.
func TestResolverAsks(t *testing.T) {
	for _, discard := range []bool{false, true} {
		t.Run(fmt.Sprintf("discard=%v", discard), func(t *testing.T) {
			tp := newTopo(t)
			r, reports, _, _ := tp.resolver(t, ResolverOptions{Grace: 10 * time.Millisecond,
				Retry: 200 * time.Millisecond, discardOnly: discard})
			r.Resolve(upIf, ll1.WithZone(upIf))
			r.Resolve(upIf, ll1) // idempotent
			f := awaitFound(t, reports, 5*time.Second)
			if f != (found{upIf, ll1, gwMAC}) {
				t.Fatalf("reported %+v, want up0 fe80::1 %s", f, mac(gwMAC))
			}
			noFound(t, reports, time.Second)
			s := r.Stats()
			if s.Tracked != 0 || s.Resolved != 1 || s.Requests < 1 || s.Failed != 0 {
				t.Errorf("stats %+v: want nothing tracked, one resolved by at least one request", s)
			}
		})
	}
}

// TestResolverSeesEntryAppear: an entry the kernel makes for its own
// reasons (here: a datagram from A to the neighbour, as the relay's Reply
// to a client is) is reported from the notification, with no request.
func TestResolverSeesEntryAppear(t *testing.T) {
	tp := newTopo(t)
	r, reports, _, _ := tp.resolver(t, ResolverOptions{Grace: time.Minute, Poll: time.Minute})
	r.Resolve(upIf, ll1)
	noFound(t, reports, 500*time.Millisecond) // no entry yet, and no request within the grace
	if err := sendDiscard(tp.nsA, upIf, tp.ifindex, ll1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f := awaitFound(t, reports, 5*time.Second)
	if f != (found{upIf, ll1, gwMAC}) {
		t.Fatalf("reported %+v", f)
	}
	t.Logf("reported %v after the datagram", time.Since(start).Round(time.Millisecond))
	if s := r.Stats(); s.Requests != 0 || s.Resolved != 1 || s.Tracked != 0 {
		t.Errorf("stats %+v: want resolved with no request", s)
	}
}

// TestResolverUnanswered: a next hop nobody answers for is asked for
// again and again, backing off, with one warning; it holds one place in
// the tracked set and one entry in the kernel; Forget stops it, and
// stopping leaves no goroutine behind.
func TestResolverUnanswered(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short: watches a next hop back off for 8 s")
	}
	tp := newTopo(t)
	tp.slowProbes(t)
	before := runtime.NumGoroutine()
	opt := ResolverOptions{Grace: 10 * time.Millisecond, Retry: 200 * time.Millisecond,
		MaxRetry: 1600 * time.Millisecond, WarnAfter: time.Second}
	r, reports, logs, stop := tp.resolver(t, opt)
	nobody := netip.MustParseAddr("fe80::99")
	r.Resolve(upIf, nobody)

	var at []time.Duration // when Requests grew
	start := time.Now()
	last := uint64(0)
	for time.Since(start) < 5*time.Second {
		s := r.Stats()
		if s.Tracked != 1 {
			t.Fatalf("stats %+v: want one next hop tracked", s)
		}
		if s.Requests > last {
			for range s.Requests - last {
				at = append(at, time.Since(start))
			}
			last = s.Requests
		}
		time.Sleep(10 * time.Millisecond)
	}
	noFound(t, reports, 0)
	t.Logf("requests at %v", at)
	// Expected about 0.05, 0.25, 0.65, 1.45, 3.05, 4.65 s: gaps of 200,
	// 400, 800, 1600, 1600 ms. Without backoff there would be ~16.
	if len(at) < 4 || len(at) > 8 {
		t.Fatalf("%d requests in 5 s, want 4 to 8", len(at))
	}
	first, lastGap := at[1]-at[0], at[len(at)-1]-at[len(at)-2]
	if first > 700*time.Millisecond || lastGap < 1200*time.Millisecond {
		t.Errorf("gaps %v then %v: the requests do not back off to MaxRetry", first, lastGap)
	}
	if n := count(logs, "next hop unresolved"); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
	list := tp.ip(t, tp.a, "-6", "neigh", "show", "dev", upIf)
	if n := strings.Count(list, "fe80::99 "); n > 1 {
		t.Errorf("%d kernel entries for fe80::99:\n%s", n, list)
	}

	r.Forget(upIf, nobody)
	requests := r.Stats().Requests
	time.Sleep(2 * opt.MaxRetry)
	if s := r.Stats(); s.Tracked != 0 || s.Requests != requests {
		t.Errorf("after Forget: stats %+v (requests were %d)", s, requests)
	}
	stop()
	testutil.NoLeak(t, before, "Run returned")
}

// TestResolverBoundedUnderLoad: 500 next hops that never answer and one
// that does. The tracked set holds MaxTracked, the rest are counted as
// dropped; no more than MaxInFlight requests are ever outstanding, in the
// Resolver's count and in the kernel's table; the one that answers is
// still resolved.
func TestResolverBoundedUnderLoad(t *testing.T) {
	tp := newTopo(t)
	tp.slowProbes(t)
	opt := ResolverOptions{Grace: 10 * time.Millisecond, Retry: 200 * time.Millisecond,
		MaxRetry: 400 * time.Millisecond, MaxTracked: 50, MaxInFlight: 4}
	r, reports, logs, _ := tp.resolver(t, opt)
	r.Resolve(upIf, ll1) // first: it gets a place
	for i := range 500 {
		r.Resolve(upIf, netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: 1, 14: byte(i >> 8), 15: byte(i)}))
	}
	if s := r.Stats(); s.Tracked != 50 || s.Dropped != 451 {
		t.Fatalf("stats %+v: want 50 tracked, 451 dropped", s)
	}
	h, err := netlink.NewHandleAt(tp.nsA, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	start := time.Now()
	resolved := false
	maxInFlight, maxIncomplete := 0, 0
	// Three seconds at least; on a loaded machine, until every tracked
	// next hop has been asked for (at most 15 s).
	askedFor := func() map[string]bool {
		asked := map[string]bool{}
		for _, l := range strings.Split(logs.String(), "\n") {
			if _, a, ok := strings.Cut(l, `msg="asked the kernel to resolve a next hop" interface=up0 next_hop=`); ok {
				asked[a] = true
			}
		}
		return asked
	}
	for el := time.Duration(0); el < 3*time.Second || (el < 15*time.Second && (!resolved || len(askedFor()) < 50)); el = time.Since(start) {
		select {
		case f := <-reports:
			if f != (found{upIf, ll1, gwMAC}) {
				t.Fatalf("reported %+v", f)
			}
			resolved = true
		default:
		}
		s := r.Stats()
		maxInFlight = max(maxInFlight, s.InFlight)
		maxIncomplete = max(maxIncomplete, tp.incomplete(t, h))
		time.Sleep(5 * time.Millisecond)
	}
	s := r.Stats()
	elapsed := time.Since(start)
	t.Logf("stats %+v; at most %d in flight, %d INCOMPLETE in the kernel", s, maxInFlight, maxIncomplete)
	if !resolved {
		t.Error("the next hop that answers was not resolved")
	}
	if maxInFlight > opt.MaxInFlight || maxIncomplete > opt.MaxInFlight {
		t.Errorf("%d in flight, %d INCOMPLETE entries; the bound is %d", maxInFlight, maxIncomplete, opt.MaxInFlight)
	}
	// A slot is held for at least the kernel's 100 ms of probing.
	if most := uint64(opt.MaxInFlight) * uint64(elapsed/(100*time.Millisecond)+1); s.Requests > most {
		t.Errorf("%d requests in %v, more than %d", s.Requests, elapsed, most)
	}
	if s.Requests < 10 {
		t.Errorf("only %d requests: the unanswered next hops are not being retried", s.Requests)
	}
	// Slots go to the longest waiting: every next hop was asked for.
	if asked := askedFor(); len(asked) != 50 {
		t.Errorf("%d next hops asked for, want all 50 tracked", len(asked))
	}
	if s.Tracked != 49 {
		t.Errorf("tracked %d, want 49 (50 less the one resolved)", s.Tracked)
	}
}

// TestResolverRunOnce: a Resolver runs once.
func TestResolverRunOnce(t *testing.T) {
	tp := newTopo(t)
	r, _, _, _ := tp.resolver(t, ResolverOptions{})
	for !r.ran.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v", err)
	}
}

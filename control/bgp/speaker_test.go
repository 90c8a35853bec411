package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pdrelay/pdrelay/control/binding"
)

// At start the peer gets the restored prefixes and the aggregates, each
// with the configured next hop, communities and pdrelay's ASN, and then
// End-of-RIB.
func TestAnnouncesRestoredAndAggregates(t *testing.T) {
	p := newPeer(t, peerOptions{})
	cfg := testConfig(p)
	cfg.Communities = []uint32{65001<<16 | 100, 65001<<16 | 200}
	cfg.Aggregates = prefixes("2001:db8:8000::/40")
	s, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	restored := prefixes("2001:db8:100::/56", "2001:db8:100:100::/56", "2001:db8:200::/48")
	s.Restore(seqOf(restored))
	runSpeaker(t, s)

	want := append(slices.Clone(restored), cfg.Aggregates...)
	p.waitRIB(want...)
	waitFor(t, 5*time.Second, func() bool { return p.eorCount() == 1 }, func() string { return "no End-of-RIB" })
	ev := p.log()
	if len(ev) != len(want) {
		t.Fatalf("peer received %d announcements, want %d: %+v", len(ev), len(want), ev)
	}
	p.mu.Lock()
	if p.eors[0] != len(want) {
		t.Errorf("End-of-RIB came after %d announcements, want after all %d", p.eors[0], len(want))
	}
	p.mu.Unlock()
	for _, e := range ev {
		if e.withdraw || e.nextHop != testNextHop || !slices.Equal(e.communities, cfg.Communities) ||
			!slices.Equal(e.asPath, []uint32{speakerASN}) {
			t.Errorf("announcement %+v: want next hop %s, communities %v, AS path [%d]", e, testNextHop, cfg.Communities, speakerASN)
		}
	}
}

// A binding change handed to Sink reaches the peer within a second (in
// practice milliseconds); a removal withdraws the prefix; a renewal
// (Updated) sends nothing.
func TestSinkReachesPeer(t *testing.T) {
	p := newPeer(t, peerOptions{})
	s, err := New(testConfig(p), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	runSpeaker(t, s)
	waitFor(t, 15*time.Second, p.established, func() string { return "session not established" })
	waitFor(t, 5*time.Second, func() bool { return p.eorCount() == 1 }, func() string { return "no End-of-RIB" })

	var lat []time.Duration
	for i := range 20 {
		pfx := fmt.Sprintf("2001:db8:%x::/48", 0x100+i)
		n := len(p.log())
		sent := time.Now()
		s.Sink([]binding.Change{change(binding.Added, pfx)})
		waitFor(t, time.Second, func() bool { return len(p.log()) > n },
			func() string { return "announcement of " + pfx + " not received within 1s" })
		e := p.log()[n]
		if e.prefix.String() != pfx || e.withdraw {
			t.Fatalf("peer received %+v, want announcement of %s", e, pfx)
		}
		lat = append(lat, e.at.Sub(sent))

		n++
		sent = time.Now()
		s.Sink([]binding.Change{change(binding.Removed, pfx)})
		waitFor(t, time.Second, func() bool { return len(p.log()) > n },
			func() string { return "withdrawal of " + pfx + " not received within 1s" })
		e = p.log()[n]
		if e.prefix.String() != pfx || !e.withdraw {
			t.Fatalf("peer received %+v, want withdrawal of %s", e, pfx)
		}
		lat = append(lat, e.at.Sub(sent))
	}
	slices.Sort(lat)
	t.Logf("binding change to peer's receipt: median %v, max %v (%d changes)", lat[len(lat)/2], lat[len(lat)-1], len(lat))

	// A renewal changes nothing at the peer.
	s.Sink([]binding.Change{change(binding.Added, "2001:db8:400::/48")})
	p.waitRIB(prefixes("2001:db8:400::/48")...)
	p.waitLogged(0, prefixes("2001:db8:400::/48"), nil)
	n, handed := len(p.log()), s.stats.announces.Load()
	s.Sink([]binding.Change{change(binding.Updated, "2001:db8:400::/48")})
	s.Sink([]binding.Change{change(binding.Added, "2001:db8:401::/48")}) // a marker after it
	p.waitRIB(prefixes("2001:db8:400::/48", "2001:db8:401::/48")...)
	p.waitLogged(n, prefixes("2001:db8:401::/48"), nil)
	if ev := p.log()[n:]; len(ev) != 1 || ev[0].prefix.String() != "2001:db8:401::/48" {
		t.Errorf("after a renewal and one addition the peer received %+v, want only the addition", ev)
	}
	if d := s.stats.announces.Load() - handed; d != 1 {
		t.Errorf("a renewal and one addition handed GoBGP %d announcements, want 1", d)
	}
}

// Changes that undo each other before Run applies them send nothing: a
// prefix moved from one client to another (removed, then added) is not
// withdrawn, and one added then removed is never announced.
func TestCoalesces(t *testing.T) {
	p := newPeer(t, peerOptions{})
	s, err := New(testConfig(p), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:1::/48")))
	runSpeaker(t, s)
	p.waitRIB(prefixes("2001:db8:1::/48")...)
	p.waitLogged(0, prefixes("2001:db8:1::/48"), nil)
	n := len(p.log())

	moved := change(binding.Added, "2001:db8:1::/48")
	moved.Binding.DUID = "\x00\x04" // another client
	s.Sink([]binding.Change{
		change(binding.Removed, "2001:db8:1::/48"), moved, // moved in one batch
		change(binding.Added, "2001:db8:2::/48"), change(binding.Removed, "2001:db8:2::/48"),
		change(binding.Added, "2001:db8:3::/48"),
	})
	p.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:3::/48")...)
	p.waitLogged(n, prefixes("2001:db8:3::/48"), nil)
	if ev := p.log()[n:]; len(ev) != 1 || ev[0].prefix.String() != "2001:db8:3::/48" || ev[0].withdraw {
		t.Errorf("peer received %+v, want only the announcement of 2001:db8:3::/48", ev)
	}
}

// Sink does not wait for Run: with no Run at all, a hundred thousand
// changes are recorded and Sink returns.
func TestSinkDoesNotWaitForRun(t *testing.T) {
	s, err := New(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100_000 {
			p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)}), 56)
			s.Sink([]binding.Change{{Op: binding.Added, Binding: binding.Binding{Key: binding.Key{Prefix: p}}}})
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Sink blocked without Run")
	}
	if n := s.stats.pending.Load(); n != 100_000 {
		t.Errorf("pending = %d, want 100000", n)
	}
}

// Changes recorded before Run are newer than the restored bindings: a
// restored prefix removed since is not announced, one added is.
func TestRestorePendingWins(t *testing.T) {
	p := newPeer(t, peerOptions{})
	s, err := New(testConfig(p), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:1::/48", "2001:db8:2::/48")))
	s.Sink([]binding.Change{change(binding.Removed, "2001:db8:1::/48"), change(binding.Added, "2001:db8:3::/48")})
	runSpeaker(t, s)
	p.waitRIB(prefixes("2001:db8:2::/48", "2001:db8:3::/48")...)
}

// A clean stop closes the session without a NOTIFICATION: the peer keeps
// the routes, stale. The next Speaker opens with the Restart State and
// Forwarding State bits, announces its table and End-of-RIB, and the
// peer drops the stale prefix not announced again. The kept prefixes are
// never withdrawn at the peer.
func TestGracefulRestart(t *testing.T) {
	p := newPeer(t, peerOptions{})
	cfg := testConfig(p)
	s1, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s1.Restore(seqOf(prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:3::/48")))
	stop := runSpeaker(t, s1)
	p.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:3::/48")...)
	// Every start is a restart as far as pdrelay can tell: the peer may
	// hold routes of a run before.
	if caps := p.session().State.RemoteCap; grFlags(caps) != 0x0c || grForwarding(caps) != 0x80 {
		t.Errorf("OPEN's graceful restart flags = %#x and %#x, want 0xc (R, N) and 0x80 (F)", grFlags(caps), grForwarding(caps))
	}

	stop()
	waitFor(t, 5*time.Second, func() bool { return !p.established() }, func() string { return "session still up after stop" })
	if n := p.notifications(); n != 0 {
		t.Errorf("the peer received %d NOTIFICATIONs, want none (a closed connection)", n)
	}
	if rib := p.rib(); !sameSet(rib, prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:3::/48"), true) {
		t.Fatalf("after a clean stop the peer holds %v, want the three prefixes, stale", rib)
	}
	n := len(p.log())

	// The next run: 2001:db8:2::/48 ended while pdrelay was down.
	s2, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s2.Restore(seqOf(prefixes("2001:db8:1::/48", "2001:db8:3::/48")))
	runSpeaker(t, s2)
	p.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:3::/48")...)
	caps := p.session().State.RemoteCap
	if f := grFlags(caps); f&0x08 == 0 {
		t.Errorf("restart OPEN's graceful restart flags = %#x, want the Restart State bit (0x8)", f)
	}
	if f := grForwarding(caps); f != 0x80 {
		t.Errorf("restart OPEN's IPv6 unicast flags = %#x, want the Forwarding State bit (0x80)", f)
	}
	for _, e := range p.log()[n:] {
		if e.withdraw {
			t.Errorf("the peer received a withdrawal of %s across the restart", e.prefix)
		}
	}
}

// A peer without graceful restart is told with a Cease, and withdraws.
func TestStopWithoutGracefulRestart(t *testing.T) {
	p := newPeer(t, peerOptions{noGR: true})
	s, err := New(testConfig(p), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:1::/48")))
	stop := runSpeaker(t, s)
	p.waitRIB(prefixes("2001:db8:1::/48")...)
	stop()
	waitFor(t, 5*time.Second, func() bool { return !p.established() }, func() string { return "session still up after stop" })
	if n := p.notifications(); n != 1 {
		t.Errorf("the peer received %d NOTIFICATIONs, want 1 (Cease)", n)
	}
	if rib := p.rib(); len(rib) != 0 {
		t.Errorf("peer without graceful restart still holds %v", rib)
	}
}

// grFlags returns the flags of the graceful restart capability in caps.
func grFlags(caps []*api.Capability) uint32 {
	for _, c := range caps {
		if g := c.GetGracefulRestart(); g != nil {
			return g.Flags
		}
	}
	return 0xffff
}

// grForwarding returns the IPv6 unicast tuple's flags of the graceful
// restart capability in caps.
func grForwarding(caps []*api.Capability) uint32 {
	for _, c := range caps {
		if g := c.GetGracefulRestart(); g != nil {
			for _, tu := range g.Tuples {
				if tu.Family.GetAfi() == api.Family_AFI_IP6 && tu.Family.GetSafi() == api.Family_SAFI_UNICAST {
					return tu.Flags
				}
			}
		}
	}
	return 0xffff
}

// Status and the metrics show the session, what it carries, and the
// local table.
func TestStatusAndMetrics(t *testing.T) {
	p := newPeer(t, peerOptions{})
	cfg := testConfig(p)
	cfg.Aggregates = prefixes("2001:db8:8000::/40")
	s, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:1::/48", "2001:db8:2::/48")))
	runSpeaker(t, s)
	p.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:8000::/40")...)

	var st Status
	waitFor(t, 5*time.Second, func() bool {
		st, err = s.Status(context.Background())
		return err == nil && len(st.Sessions) == 1 && st.Sessions[0].PrefixesSent == 3
	}, func() string { return fmt.Sprintf("status %+v, err %v", st, err) })
	se := st.Sessions[0]
	if se.Peer != p.addr || se.PeerASN != peerASN || !se.Established() || se.Since.IsZero() ||
		time.Since(se.Since) > time.Minute || !se.GracefulRestart || se.UpdatesSent == 0 {
		t.Errorf("session %+v", se)
	}
	if st.ASN != speakerASN || st.Prefixes != 3 || st.Delegated != 2 || st.NextHop != testNextHop {
		t.Errorf("status %+v", st)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	peer := p.addr.String()
	want := fmt.Sprintf(`
# HELP pdrelay_bgp_prefixes_advertised Prefixes the BGP session carries to the peer (its Adj-RIB-Out).
# TYPE pdrelay_bgp_prefixes_advertised gauge
pdrelay_bgp_prefixes_advertised{peer=%q} 3
# HELP pdrelay_bgp_session_up 1 while the BGP session to the peer is established, else 0.
# TYPE pdrelay_bgp_session_up gauge
pdrelay_bgp_session_up{peer=%q} 1
# HELP pdrelay_bgp_prefixes_announced Prefixes in the speaker's table: the delegated ones and the aggregates.
# TYPE pdrelay_bgp_prefixes_announced gauge
pdrelay_bgp_prefixes_announced 3
# HELP pdrelay_bgp_delegated_prefixes Delegated prefixes in the speaker's table.
# TYPE pdrelay_bgp_delegated_prefixes gauge
pdrelay_bgp_delegated_prefixes 2
`, peer, peer)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pdrelay_bgp_prefixes_advertised",
		"pdrelay_bgp_session_up", "pdrelay_bgp_prefixes_announced", "pdrelay_bgp_delegated_prefixes"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 13 {
		t.Errorf("%d series (%v), want every metric", n, err)
	}
}

// Reconfigure changes a running Speaker without touching the sessions
// that stay: new communities and next hop replace the announcements (no
// withdrawal), aggregates come and go (one that is also delegated stays),
// a new neighbour gets the table, a removed one withdraws.
func TestReconfigure(t *testing.T) {
	p1, p2 := newPeer(t, peerOptions{}), newPeer(t, peerOptions{})
	cfg := testConfig(p1)
	cfg.Aggregates = prefixes("2001:db8:8000::/40", "2001:db8:1::/48")
	s, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:1::/48", "2001:db8:2::/48")))
	runSpeaker(t, s)
	p1.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:8000::/40")...)
	up := p1.session().GetTimers().GetState().GetUptime().AsTime()

	// A binding that ends on a prefix that is also an aggregate leaves it
	// announced.
	n := len(p1.log())
	s.Sink([]binding.Change{change(binding.Removed, "2001:db8:1::/48"), change(binding.Removed, "2001:db8:2::/48")})
	p1.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:8000::/40")...)
	p1.waitLogged(n, nil, prefixes("2001:db8:2::/48"))
	for _, e := range p1.log()[n:] {
		if e.withdraw && e.prefix.String() != "2001:db8:2::/48" {
			t.Errorf("peer received a withdrawal of %s, want only that of 2001:db8:2::/48", e.prefix)
		}
	}
	s.Sink([]binding.Change{change(binding.Added, "2001:db8:1::/48"), change(binding.Added, "2001:db8:2::/48")})
	p1.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:8000::/40")...)
	p1.waitLogged(n, prefixes("2001:db8:2::/48"), nil)
	n = len(p1.log())

	// New attributes and aggregates, and a second neighbour.
	cfg2 := cfg
	cfg2.Neighbors = append(slices.Clone(cfg.Neighbors), p2.neighbor())
	cfg2.Communities = []uint32{65001<<16 | 7}
	cfg2.NextHop = netip.MustParseAddr("2001:db8:ffff::2")
	cfg2.Aggregates = prefixes("2001:db8:9000::/40")
	if err := s.Reconfigure(context.Background(), cfg2); err != nil {
		t.Fatal(err)
	}
	want := prefixes("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:9000::/40")
	p1.waitRIB(want...)
	p2.waitRIB(want...)
	// What counts is that each prefix ends with the new attributes and
	// that nothing but the dropped aggregate was withdrawn.
	p1.waitAnnounced(n, want, cfg2.NextHop, cfg2.Communities)
	p2.waitAnnounced(0, want, cfg2.NextHop, cfg2.Communities)
	for _, e := range p1.log()[n:] {
		if e.withdraw && e.prefix.String() != "2001:db8:8000::/40" {
			t.Errorf("peer 1 received a withdrawal of %s", e.prefix)
		}
	}
	if !p1.established() || !p1.session().GetTimers().GetState().GetUptime().AsTime().Equal(up) {
		t.Errorf("peer 1's session restarted")
	}

	// Remove the first neighbour: it is told (Cease) and withdraws; the
	// second keeps everything.
	cfg3 := cfg2
	cfg3.Neighbors = []Neighbor{p2.neighbor()}
	n2 := len(p2.log())
	if err := s.Reconfigure(context.Background(), cfg3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return !p1.established() }, func() string { return "peer 1 still up" })
	if rib := p1.rib(); len(rib) != 0 {
		t.Errorf("removed neighbour still holds %v", rib)
	}
	if ev := p2.log()[n2:]; len(ev) != 0 {
		t.Errorf("peer 2 received %+v on a change that is not its own", ev)
	}
}

// A new router ID (or ASN, or listen port) restarts the BGP server the
// way a pdrelay restart does: the peer keeps the routes throughout and is
// sent them again, never a withdrawal.
func TestReconfigureRouterID(t *testing.T) {
	p := newPeer(t, peerOptions{})
	cfg := testConfig(p)
	s, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:1::/48", "2001:db8:2::/48")))
	runSpeaker(t, s)
	p.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:2::/48")...)
	n := len(p.log())

	cfg.RouterID = netip.MustParseAddr("192.0.2.99")
	if err := s.Reconfigure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, func() bool {
		ps := p.session()
		return ps != nil && ps.State.RouterId == "192.0.2.99" && ps.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
	}, func() string { return "no session with the new router id" })
	p.waitRIB(prefixes("2001:db8:1::/48", "2001:db8:2::/48")...)
	for _, e := range p.log()[n:] {
		if e.withdraw {
			t.Errorf("the peer received a withdrawal of %s", e.prefix)
		}
	}
	if n := p.notifications(); n != 0 {
		t.Errorf("the peer received %d NOTIFICATIONs", n)
	}
	if got := s.stats.restarts.Load(); got != 2 {
		t.Errorf("server starts = %d, want 2", got)
	}
}

// TCP MD5 (RFC 2385): a session comes up only with the peer's key.
func TestPassword(t *testing.T) {
	good := newPeer(t, peerOptions{password: "s3cret"})
	bad := newPeer(t, peerOptions{password: "s3cret"})
	none := newPeer(t, peerOptions{password: "s3cret"})
	cfg := testConfig(good, bad, none)
	cfg.Neighbors[0].Password = "s3cret"
	cfg.Neighbors[1].Password = "wrong"
	s, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	runSpeaker(t, s)
	waitFor(t, 15*time.Second, good.established, func() string { return "no session with the right key" })
	// The others had as long, and their connect loops run alike; give
	// them a retry more.
	time.Sleep(connectRetry * time.Second)
	if bad.established() || none.established() {
		t.Errorf("a session came up with a wrong key (%v) or none (%v)", bad.established(), none.established())
	}
}

// Sink, Status, the collector and Reconfigure run concurrently with Run
// (under -race too): every change is applied, in order per prefix.
func TestConcurrentUse(t *testing.T) {
	cfg := testConfig()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(seqOf(prefixes("2001:db8:ff::/48")))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()

	const writers, rounds = 4, 300
	done := make(chan struct{})
	want := prefixes("2001:db8:ff::/48") // the restored one
	for w := range writers {
		for i := range rounds {
			if i%3 != 2 { // every third is removed again
				want = append(want, testPrefix(w, i))
			}
		}
	}
	for w := range writers {
		go func() {
			for i := range rounds {
				p := testPrefix(w, i).String()
				s.Sink([]binding.Change{change(binding.Added, p)})
				if i%3 == 2 {
					s.Sink([]binding.Change{change(binding.Updated, p), change(binding.Removed, p)})
				}
			}
			done <- struct{}{}
		}()
	}
	go func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(s)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				done <- struct{}{}
				return
			default:
			}
			if _, err := s.Status(context.Background()); err != nil {
				t.Errorf("Status: %v", err)
			}
			if _, err := reg.Gather(); err != nil {
				t.Errorf("Gather: %v", err)
			}
			c := cfg
			c.Communities = []uint32{uint32(65001<<16 | i)}
			c.Aggregates = prefixes("2001:db8:ff::/48", "2001:db8:fe::/48")[:i%2+1]
			if err := s.Reconfigure(context.Background(), c); err != nil {
				t.Errorf("Reconfigure: %v", err)
			}
		}
	}()
	for range writers {
		<-done
	}
	// Sink's last changes are applied once Run has been woken after them.
	waitFor(t, 5*time.Second, func() bool { return s.stats.pending.Load() == 0 && s.stats.delegated.Load() == int64(len(want)) },
		func() string {
			return fmt.Sprintf("delegated %d, pending %d, want %d", s.stats.delegated.Load(), s.stats.pending.Load(), len(want))
		})
	cancel()
	<-done
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Run has returned: its table is ours to read.
	if len(s.delegated) != len(want) {
		t.Fatalf("%d delegated prefixes, want %d", len(s.delegated), len(want))
	}
	for _, p := range want {
		if _, ok := s.delegated[p]; !ok {
			t.Fatalf("%s missing", p)
		}
	}
}

func testPrefix(w, i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(w), byte(i >> 8), byte(i)}), 56)
}

// With the binding manager in front, as the daemon wires it: a learned
// prefix is announced, and withdrawn when the operator clears it, when it
// expires and when the client releases it; a prefix moved to another
// client is never withdrawn; a refused delegation announces nothing.
func TestWithBindingManager(t *testing.T) {
	p := newPeer(t, peerOptions{})
	s, err := New(testConfig(p), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	table := binding.NewTable(binding.PortLimits{MaxPerClient: 8}, nil)
	table.SetPolicy(binding.Policy{MinLen: 48, MaxLen: 64})
	mgr := binding.NewManager(table, nil, nil, s.Sink)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go mgr.Run(ctx)
	runSpeaker(t, s)
	waitFor(t, 15*time.Second, p.established, func() string { return "session not established" })

	learn := func(duid, pfx string, valid time.Duration) binding.Learned {
		return binding.Learned{Key: binding.Key{Port: "dl0", DUID: duid, IAID: 1, Prefix: netip.MustParsePrefix(pfx)},
			NextHop: netip.MustParseAddr("fe80::2"), MACKnown: true, Preferred: valid, Valid: valid}
	}
	mgr.Apply(binding.Update{Learn: []binding.Learned{
		learn("\x00\x01", "2001:db8:1::/56", time.Hour),
		learn("\x00\x02", "2001:db8:2::/56", time.Hour),
		learn("\x00\x03", "2001:db8:3::/56", 1500*time.Millisecond), // expires
		learn("\x00\x04", "2001:db8:4::/40", time.Hour),             // refused: too short
	}})
	p.waitRIB(prefixes("2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:3::/56")...)

	// The expiry, then the operator's clear.
	p.waitRIB(prefixes("2001:db8:1::/56", "2001:db8:2::/56")...)
	if _, err := mgr.Clear(context.Background(), binding.Filter{Prefix: netip.MustParsePrefix("2001:db8:2::/56")}); err != nil {
		t.Fatal(err)
	}
	p.waitRIB(prefixes("2001:db8:1::/56")...)
	p.waitLogged(0, prefixes("2001:db8:1::/56"), prefixes("2001:db8:2::/56", "2001:db8:3::/56"))

	// The server gives 2001:db8:1::/56 to another client (a replaced
	// CPE): not withdrawn (2001:db8:9::/56, learned after, shows the move
	// has been applied). Then that client releases it.
	n := len(p.log())
	mgr.Apply(binding.Update{Learn: []binding.Learned{learn("\x00\x05", "2001:db8:1::/56", time.Hour)}})
	mgr.Apply(binding.Update{Learn: []binding.Learned{learn("\x00\x09", "2001:db8:9::/56", time.Hour)}})
	p.waitRIB(prefixes("2001:db8:1::/56", "2001:db8:9::/56")...)
	p.waitLogged(n, prefixes("2001:db8:9::/56"), nil)
	if ev := p.log()[n:]; len(ev) != 1 || ev[0].prefix.String() != "2001:db8:9::/56" {
		t.Errorf("after the move the peer received %+v, want only 2001:db8:9::/56", ev)
	}
	mgr.Apply(binding.Update{RemoveIAs: []binding.RemoveIA{{Port: "dl0", DUID: "\x00\x05", IAID: 1, Reason: binding.ReasonReleased}}})
	p.waitRIB(prefixes("2001:db8:9::/56")...)
}

package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/pdrelay/pdrelay/control/binding"
)

// The tests run the Speaker against a second GoBGP server in the same
// process, over loopback: a real BGP peer, with a TCP session, OPENs,
// UPDATEs, End-of-RIB and graceful restart, that the test can inspect.
// Each peer listens on an address of its own in 127.0.0.0/8, so tests
// never share a socket; the Speaker connects from 127.0.0.1 and does not
// listen.

const (
	speakerASN = 65001
	peerASN    = 65000
)

var (
	speakerAddr = netip.MustParseAddr("127.0.0.1")
	testNextHop = netip.MustParseAddr("2001:db8:ffff::1")
	nextPeer    atomic.Uint32
)

// peerAddr returns a loopback address no other peer of this test binary
// uses.
func peerAddr() netip.Addr {
	n := 10 + nextPeer.Add(1)
	return netip.AddrFrom4([4]byte{127, 0, byte(n >> 8), byte(n)})
}

// freePort returns a TCP port free on addr.
func freePort(t testing.TB, addr netip.Addr) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("loopback listen: %v", err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// testLog logs to the test at debug level when -v is given with
// PDRELAY_TEST_LOG=1, else nowhere.
func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("PDRELAY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// peerOptions configure a test peer.
type peerOptions struct {
	noGR     bool   // do not advertise graceful restart
	password string // TCP MD5 key
	asn      uint32 // its ASN; 0 means peerASN
}

// testPeer is a GoBGP server peering with the Speaker, recording every
// UPDATE and End-of-RIB it receives.
type testPeer struct {
	t    testing.TB
	srv  *server.BgpServer
	addr netip.Addr
	port uint16

	mu     sync.Mutex
	events []pathEvent
	eors   []int         // len(events) when each End-of-RIB came
	seen   chan struct{} // a token per batch of events
}

// pathEvent is one prefix in an UPDATE the peer received.
type pathEvent struct {
	at          time.Time
	prefix      netip.Prefix
	withdraw    bool
	nextHop     netip.Addr
	communities []uint32
	asPath      []uint32
}

func newPeer(t testing.TB, o peerOptions) *testPeer {
	t.Helper()
	if raceEnabled {
		// Two GoBGP servers in one process race in GoBGP itself: StartBgp
		// writes the package variable table.SelectionOptions that the
		// other server reads, and ListPath reads paths outside the
		// server's loop while its FSM marks them stale. The Speaker's own
		// concurrency is checked under -race by TestConcurrentUse.
		t.Skip("skipping under -race: GoBGP v4.8.0 races with itself when two servers share a process")
	}
	addr := peerAddr()
	p := &testPeer{t: t, addr: addr, port: freePort(t, addr), seen: make(chan struct{}, 1)}
	if o.asn == 0 {
		o.asn = peerASN
	}
	p.srv = server.NewBgpServer()
	go p.srv.Serve()
	err := p.srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: o.asn, RouterId: "192.0.2.2", ListenPort: int32(p.port),
		ListenAddresses: []string{addr.String()}, Families: []uint32{globalIPv6Unicast},
	}})
	if err != nil {
		t.Fatalf("test peer: %v", err)
	}
	t.Cleanup(p.srv.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err = p.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPathUpdate: p.onUpdate,
		OnPathEor: func(*apiutil.Path, time.Time) {
			p.mu.Lock()
			p.eors = append(p.eors, len(p.events))
			p.mu.Unlock()
			p.poke()
		},
	}, server.WatchUpdate(false, "", ""), server.WatchEor(false))
	if err != nil {
		t.Fatal(err)
	}
	gr := &api.GracefulRestart{Enabled: !o.noGR, RestartTime: 120, NotificationEnabled: !o.noGR}
	mpgr := &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: !o.noGR}}
	err = p.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:            &api.PeerConf{NeighborAddress: speakerAddr.String(), PeerAsn: speakerASN, AuthPassword: o.password},
		Transport:       &api.Transport{PassiveMode: true, LocalAddress: addr.String()},
		GracefulRestart: gr,
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: ipv6Unicast, Enabled: true},
			MpGracefulRestart: mpgr,
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// neighbor is the Speaker's neighbour entry for p.
func (p *testPeer) neighbor() Neighbor {
	return Neighbor{Address: p.addr, ASN: peerASN, Port: p.port}
}

func (p *testPeer) poke() {
	select {
	case p.seen <- struct{}{}:
	default:
	}
}

func (p *testPeer) onUpdate(paths []*apiutil.Path, at time.Time) {
	p.mu.Lock()
	for _, ap := range paths {
		if ap.Nlri == nil {
			continue
		}
		pfx, err := netip.ParsePrefix(ap.Nlri.String())
		if err != nil {
			continue
		}
		e := pathEvent{at: at, prefix: pfx, withdraw: ap.Withdrawal}
		for _, a := range ap.Attrs {
			switch a := a.(type) {
			case *bgp.PathAttributeMpReachNLRI:
				e.nextHop = a.Nexthop
			case *bgp.PathAttributeCommunities:
				e.communities = a.Value
			case *bgp.PathAttributeAsPath:
				for _, seg := range a.Value {
					e.asPath = append(e.asPath, seg.GetAS()...)
				}
			}
		}
		p.events = append(p.events, e)
	}
	p.mu.Unlock()
	p.poke()
}

// log returns a copy of the events so far.
func (p *testPeer) log() []pathEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

func (p *testPeer) eorCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.eors)
}

// rib returns what the peer holds from the Speaker: prefix -> stale.
func (p *testPeer) rib() map[netip.Prefix]bool {
	p.t.Helper()
	out := map[netip.Prefix]bool{}
	err := p.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN,
		Name: speakerAddr.String(), Family: bgp.RF_IPv6_UC}, func(n bgp.NLRI, paths []*apiutil.Path) {
		pfx, err := netip.ParsePrefix(n.String())
		if err != nil {
			return
		}
		for _, ap := range paths {
			if !ap.Withdrawal {
				out[pfx] = ap.Stale
			}
		}
	})
	if err != nil {
		return nil // the session is not up: nothing held
	}
	return out
}

// session is the peer's view of its session with the Speaker.
func (p *testPeer) session() *api.Peer {
	var out *api.Peer
	_ = p.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: speakerAddr.String()}, func(ap *api.Peer) { out = ap })
	return out
}

// notifications is how many NOTIFICATIONs the peer received from the
// Speaker.
func (p *testPeer) notifications() uint64 {
	return p.session().GetState().GetMessages().GetReceived().GetNotification()
}

func (p *testPeer) established() bool {
	s := p.session()
	return s != nil && s.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
}

// The peers' event logs trail their tables: GoBGP's watcher delivers
// them asynchronously, in order. A test that reads the events since some
// index first waits for the events it expects with waitLogged or
// waitAnnounced, so that both the index and the window are complete.

// lastEvents returns the last event for each prefix logged from index
// from on.
func (p *testPeer) lastEvents(from int) map[netip.Prefix]pathEvent {
	m := map[netip.Prefix]pathEvent{}
	for _, e := range p.log()[from:] {
		m[e.prefix] = e
	}
	return m
}

// waitLogged waits until, among the events logged from index from on,
// the last one for each prefix of announced announces it and the last one
// for each of withdrawn withdraws it.
func (p *testPeer) waitLogged(from int, announced, withdrawn []netip.Prefix) {
	p.t.Helper()
	p.waitLast(from, func(m map[netip.Prefix]pathEvent) bool {
		for _, w := range announced {
			if e, ok := m[w]; !ok || e.withdraw {
				return false
			}
		}
		for _, w := range withdrawn {
			if e, ok := m[w]; !ok || !e.withdraw {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%v announced and %v withdrawn", announced, withdrawn))
}

// waitAnnounced is waitLogged for announcements that carry nextHop and
// communities.
func (p *testPeer) waitAnnounced(from int, want []netip.Prefix, nextHop netip.Addr, communities []uint32) {
	p.t.Helper()
	p.waitLast(from, func(m map[netip.Prefix]pathEvent) bool {
		for _, w := range want {
			e, ok := m[w]
			if !ok || e.withdraw || e.nextHop != nextHop || !slices.Equal(e.communities, communities) {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%v announced via %s with communities %v", want, nextHop, communities))
}

func (p *testPeer) waitLast(from int, ok func(map[netip.Prefix]pathEvent) bool, want string) {
	p.t.Helper()
	waitFor(p.t, 15*time.Second, func() bool { return ok(p.lastEvents(from)) }, func() string {
		return fmt.Sprintf("peer %s: last events %+v, want %s", p.addr, p.lastEvents(from), want)
	})
}

// waitRIB waits until the peer holds exactly want (not stale).
func (p *testPeer) waitRIB(want ...netip.Prefix) {
	p.t.Helper()
	waitFor(p.t, 15*time.Second, func() bool { return sameSet(p.rib(), want, false) },
		func() string { return fmt.Sprintf("peer %s holds %v, want %v", p.addr, p.rib(), want) })
}

// sameSet reports whether rib holds exactly want, all with the stale
// flag given.
func sameSet(rib map[netip.Prefix]bool, want []netip.Prefix, stale bool) bool {
	if len(rib) != len(want) {
		return false
	}
	for _, w := range want {
		st, ok := rib[w]
		if !ok || st != stale {
			return false
		}
	}
	return true
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testConfig is a Speaker config towards peers, connecting only.
func testConfig(peers ...*testPeer) Config {
	c := Config{ASN: speakerASN, RouterID: netip.MustParseAddr("192.0.2.1"), NextHop: testNextHop, ListenPort: -1}
	for _, p := range peers {
		c.Neighbors = append(c.Neighbors, p.neighbor())
	}
	return c
}

// runSpeaker starts s.Run and returns a function that stops it and waits.
func runSpeaker(t testing.TB, s *Speaker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// change builds a binding change for prefix p.
func change(op binding.Op, p string) binding.Change {
	return binding.Change{Op: op, Binding: binding.Binding{Key: binding.Key{Port: "dl0", DUID: "\x00\x03", Prefix: netip.MustParsePrefix(p)}}}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func seqOf(ps []netip.Prefix) func(func(netip.Prefix) bool) {
	return slices.Values(ps)
}

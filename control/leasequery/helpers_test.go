package leasequery

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Wire builders for the fake server's side of the exchange.

var (
	testRelayID  = []byte{0, 3, 0, 1, 0x02, 0, 0x5e, 0, 0x53, 0xaa} // DUID-LL of the relay
	testServerID = []byte{0, 3, 0, 1, 0x02, 0, 0x5e, 0, 0x53, 0xfe} // DUID-LL of the server
	otherServer  = []byte{0, 3, 0, 1, 0x02, 0, 0x5e, 0, 0x53, 0xfd}
)

func msg(t dhcp6.MessageType, xid [3]byte, opts ...[]byte) []byte {
	b := dhcp6.AppendHeader(nil, t, xid)
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

func opt(code uint16, data []byte) []byte { return dhcp6.AppendOption(nil, code, data) }

func statusOpt(code uint16, text string) []byte { return dhcp6.AppendStatus(nil, code, text) }

func iaprefix(p string, pref, valid uint32) []byte {
	return dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Preferred: pref, Valid: valid, Prefix: netip.MustParsePrefix(p)})
}

// relayForw is a Relay-Forward header with Interface-ID, Relay-ID and
// the client's link-layer address, without the client's message, as RFC
// 5007 has a server return it.
func relayForw(link, peer string, ifaceID string, mac []byte, extra ...[]byte) []byte {
	b := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.MustParseAddr(link), netip.MustParseAddr(peer))
	if ifaceID != "" {
		b = dhcp6.AppendOption(b, dhcp6.OptInterfaceID, []byte(ifaceID))
	}
	b = dhcp6.AppendOption(b, dhcp6.OptRelayID, testRelayID)
	if mac != nil {
		b = dhcp6.AppendClientLinkLayer(b, [6]byte(mac))
	}
	for _, e := range extra {
		b = append(b, e...)
	}
	return b
}

// clientData is an OPTION_CLIENT_DATA for client duid with the given
// inner options (IAPREFIX, IA_PD, CLT_TIME, LQ_RELAY_DATA).
func clientData(duid []byte, inner ...[]byte) []byte {
	var d []byte
	d = dhcp6.AppendOption(d, dhcp6.OptClientID, duid)
	for _, o := range inner {
		d = append(d, o...)
	}
	return opt(dhcp6.OptClientData, d)
}

func relayData(peer string, relay []byte) []byte {
	return dhcp6.AppendLQRelayData(nil, netip.MustParseAddr(peer), relay)
}

func duidN(n int) []byte {
	return []byte{0, 3, 0, 1, 2, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// simpleClient is client n on port dl<port> with one /56 and a MAC.
func simpleClient(n, port int, clt uint32) []byte {
	p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(n >> 16), byte(n >> 8), byte(n)}), 56)
	peer := netip.AddrFrom16([16]byte{0xfe, 0x80, 12: byte(n >> 24), 13: byte(n >> 16), 14: byte(n >> 8), 15: byte(n)})
	return clientData(duidN(n),
		dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Preferred: 1800, Valid: 3600, Prefix: p}),
		dhcp6.AppendCLTTime(nil, clt),
		relayData("::", relayForw("::", peer.String(), "dl"+itoa(port), []byte{2, 0, byte(n >> 16), byte(n >> 8), byte(n), 1})))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func prefixN(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(n >> 16), byte(n >> 8), byte(n)}), 56)
}

// fakeServer is a Bulk Leasequery server on loopback run by a script.
type fakeServer struct {
	ln    net.Listener
	addr  netip.AddrPort
	conns int
	mu    sync.Mutex
	wg    sync.WaitGroup
}

// fakeConn is one connection of the fake server.
type fakeConn struct {
	t  testing.TB
	c  net.Conn
	fr *dhcp6.FrameReader
	n  int // which connection, from 0
}

type gotQuery struct {
	xid      [3]byte
	clientID []byte
	q        dhcp6.LQQuery
	raw      []byte
}

// readQuery reads one LEASEQUERY.
func (c *fakeConn) readQuery() gotQuery {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.fr.Next()
	if err != nil {
		c.t.Errorf("fake server: read query: %v", err)
		return gotQuery{}
	}
	m, err := dhcp6.ParseMessage(b)
	if err != nil || m.Type != dhcp6.MsgLeasequery {
		c.t.Errorf("fake server: not a leasequery: %x %v", b, err)
		return gotQuery{}
	}
	d, _ := m.Options.Get(dhcp6.OptLQQuery)
	q, err := dhcp6.ParseLQQuery(d)
	if err != nil {
		c.t.Errorf("fake server: lq_query: %v", err)
	}
	cid, _ := m.Options.Get(dhcp6.OptClientID)
	return gotQuery{xid: m.XID, clientID: cid, q: q, raw: append([]byte(nil), b...)}
}

// send writes messages, each framed.
func (c *fakeConn) send(msgs ...[]byte) error {
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = dhcp6.AppendFramed(out, m); err != nil {
			c.t.Errorf("fake server: frame: %v", err)
		}
	}
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.c.Write(out)
	return err
}

// newFakeServer serves each connection with script until the test ends.
func newFakeServer(t testing.TB, script func(c *fakeConn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
	}
	s := &fakeServer{ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String())}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			n := s.conns
			s.conns++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				script(&fakeConn{t: t, c: c, fr: dhcp6.NewFrameReader(c), n: n})
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *fakeServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// drain reads until the peer closes, so the server side does not reset
// the connection before the requestor has read what it was sent.
func (c *fakeConn) drain() {
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c.c)
}

// testManager runs a binding manager over a table with policy p until the
// test ends; refused collects what it refused.
type testManager struct {
	mgr     *binding.Manager
	tab     *binding.Table
	mu      sync.Mutex
	refused []error
}

func newTestManager(t testing.TB, p binding.Policy, lim binding.PortLimits) *testManager {
	tab := binding.NewTable(lim, nil)
	tab.SetPolicy(p)
	tm := &testManager{tab: tab}
	tm.mgr = binding.NewManager(tab, nil, nil)
	tm.mgr.OnRefused = func(_ string, err error) {
		tm.mu.Lock()
		tm.refused = append(tm.refused, err)
		tm.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tm.mgr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return tm
}

func (tm *testManager) list(t testing.TB) map[netip.Prefix]binding.Binding {
	t.Helper()
	bs, err := tm.mgr.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[netip.Prefix]binding.Binding, len(bs))
	for _, b := range bs {
		m[b.Prefix] = b
	}
	return m
}

// learn installs bindings as if snooped before the recovery.
func (tm *testManager) learn(t testing.TB, ls ...binding.Learned) {
	t.Helper()
	err := tm.mgr.Do(context.Background(), func(tab *binding.Table) {
		for _, l := range ls {
			if _, err := tab.Learn(time.Now().Add(-time.Minute), l); err != nil {
				t.Errorf("learn %v: %v", l.Prefix, err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

var testPorts = []Port{
	{Name: "dl0", InterfaceID: []byte("dl0"), LinkAddr: netip.MustParseAddr("2001:db8:ff:0::1")},
	{Name: "dl1", InterfaceID: []byte("dl1"), LinkAddr: netip.MustParseAddr("2001:db8:ff:1::1")},
	{Name: "dl2", InterfaceID: []byte("dl2"), LinkAddr: netip.MustParseAddr("2001:db8:ff:2::1")},
}

// sleeps records the backoff waits instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// newTestRequestor queries srv with qs; waits are recorded in sl.
func newTestRequestor(tm *testManager, sl *sleeps, servers []netip.AddrPort, qs ...Query) *Requestor {
	if len(qs) == 0 {
		qs = []Query{RelayIDQuery(testRelayID)}
	}
	return New(Config{
		Servers: servers, Queries: qs, ClientID: testRelayID,
		Converter:   Converter{Ports: testPorts, RelayID: testRelayID},
		ConnTimeout: 2 * time.Second, DataTimeout: 2 * time.Second,
		RetryBase: 100 * time.Millisecond, MaxRetry: 800 * time.Millisecond, Attempts: 4,
		Sleep: sl.sleep, Rand: func() float64 { return 0.5 },
	}, tm.mgr, slog.New(slog.DiscardHandler))
}

var errSentinel = errors.New("sentinel")

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

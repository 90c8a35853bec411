package lqserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

// A minimal Bulk Leasequery requestor for the tests: framing from the
// dhcp6 codec, no retries, no state beyond what a test checks.

var (
	testServerID = []byte{0, 2, 0, 0, 0x09, 0xbf, 's', 'r', 'v'}
	testClientID = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 0x42} // the requestor's DUID
	relayA       = []byte{0, 2, 0, 0, 0xab, 0xcd, 1}       // Relay-IDs
	relayB       = []byte{0, 2, 0, 0, 0xab, 0xcd, 2}
	linkA        = netip.MustParseAddr("fd00:0:0:1::1")
	linkB        = netip.MustParseAddr("fd00:0:0:2::1")
	subnetA      = netip.MustParsePrefix("fd00:0:0:1::/64")
)

// relayOpts builds the options Kea stores for a relay level: Interface-ID,
// Remote-ID (enterprise 9), Relay-ID, client link-layer address.
func relayOpts(ifname string, remoteID string, relayID []byte, mac [6]byte) []byte {
	o := dhcp6.AppendOption(nil, dhcp6.OptInterfaceID, []byte(ifname))
	o = dhcp6.AppendOption(o, dhcp6.OptRemoteID, append([]byte{0, 0, 0, 9}, remoteID...))
	o = dhcp6.AppendOption(o, dhcp6.OptRelayID, relayID)
	return dhcp6.AppendClientLinkLayer(o, mac)
}

// genLeases returns a generator of n /56 leases, two per client: client
// c = i/2 holds 2001:db8:1000::/40 + i; even clients come through relay
// A on link A (subnet 1), odd ones through relay B on link B (subnet 2,
// whose subnet Kea does not know by link). Client c's Remote-ID is
// "ri<c>".
func genLeases(n int, cltt int64) (int, func(int) keatest.Lease) {
	base := netip.MustParseAddr("2001:db8:1000::").As16()
	return n, func(i int) keatest.Lease {
		a := base
		binary.BigEndian.PutUint32(a[4:8], binary.BigEndian.Uint32(a[4:8])+uint32(i)<<8)
		c := i / 2
		duid := []byte{0, 3, 0, 1, 2, 0, 0, byte(c >> 16), byte(c >> 8), byte(c)}
		mac := [6]byte{2, 0, 0, byte(c >> 16), byte(c >> 8), byte(c)}
		l := keatest.Lease{
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 56), DUID: duid, IAID: uint32(i % 2),
			CLTT: cltt, Valid: 3600, Preferred: 1800,
		}
		peer := netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: byte(c >> 24), 13: byte(c >> 16), 14: byte(c >> 8), 15: byte(c)})
		if c%2 == 0 {
			l.SubnetID = 1
			l.Relays = []keatest.Relay{{Link: linkA, Peer: peer, Options: relayOpts("dl0", "ri"+strconv.Itoa(c), relayA, mac)}}
		} else {
			l.SubnetID = 2
			l.Relays = []keatest.Relay{{Link: linkB, Peer: peer, Options: relayOpts("dl1", "ri"+strconv.Itoa(c), relayB, mac)}}
		}
		return l
	}
}

type fixture struct {
	t      testing.TB
	kea    *keatest.Kea
	srv    *Server
	addr   string
	cancel context.CancelFunc
	done   chan error
	now    time.Time
}

// start runs a Server over a fake Kea on 127.0.0.1.
func start(t testing.TB, ko keatest.Options, o Options, pageSize int) *fixture {
	t.Helper()
	kea, err := keatest.Start(t.TempDir(), ko)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kea.Close() })
	o.Kea = &Kea{Socket: kea.Socket, PageSize: pageSize, Timeout: 5 * time.Second}
	if o.ServerID == nil {
		o.ServerID = testServerID
	}
	if o.Allow == nil {
		o.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	now := time.Unix(1_800_000_000, 0)
	if o.Now == nil {
		o.Now = func() time.Time { return now }
	}
	if o.Logger == nil && testing.Verbose() {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{t: t, kea: kea, srv: srv, addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1), now: now}
	go func() { f.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { f.stop() })
	return f
}

func (f *fixture) stop() error {
	if f.cancel == nil {
		return nil
	}
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		return err
	case <-time.After(10 * time.Second):
		f.t.Error("Serve did not return after shutdown")
		return nil
	}
}

type requestor struct {
	t  testing.TB
	c  net.Conn
	fr *dhcp6.FrameReader
}

func (f *fixture) dial() *requestor {
	f.t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return &requestor{t: f.t, c: c, fr: dhcp6.NewFrameReader(bufio.NewReader(c))}
}

// lqMessage builds a LEASEQUERY with the requestor's Client-ID.
func lqMessage(xid uint32, qt uint8, link netip.Addr, qopts []byte) []byte {
	m := dhcp6.AppendHeader(nil, dhcp6.MsgLeasequery, [3]byte{byte(xid >> 16), byte(xid >> 8), byte(xid)})
	m = dhcp6.AppendOption(m, dhcp6.OptClientID, testClientID)
	return dhcp6.AppendLQQuery(m, qt, link, qopts)
}

func (r *requestor) send(msg []byte) {
	r.t.Helper()
	b, err := dhcp6.AppendFramed(nil, msg)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// next reads one message; io.EOF when the server closed.
func (r *requestor) next() (dhcp6.Message, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := r.fr.Next()
	if err != nil {
		return dhcp6.Message{}, err
	}
	m, err := dhcp6.ParseMessage(append([]byte(nil), b...))
	if err != nil {
		r.t.Fatalf("server sent an unparsable message %x: %v", b, err)
	}
	return m, nil
}

// answer is one query's answer as the requestor saw it.
type answer struct {
	reply   dhcp6.Message
	status  uint16
	text    string
	clients []dhcp6.ClientData
	done    bool
	doneSt  uint16
	msgs    int
}

func xidOf(m dhcp6.Message) uint32 {
	return uint32(m.XID[0])<<16 | uint32(m.XID[1])<<8 | uint32(m.XID[2])
}

// collect reads until every xid in want is complete: a REPLY with no
// client data or an error, or a DONE. It returns each query's answer and
// the order of xids of the messages read.
func (r *requestor) collect(want ...uint32) (map[uint32]*answer, []uint32) {
	r.t.Helper()
	out := map[uint32]*answer{}
	pending := map[uint32]bool{}
	for _, x := range want {
		pending[x] = true
	}
	var order []uint32
	for len(pending) > 0 {
		m, err := r.next()
		if err != nil {
			r.t.Fatalf("reading answers (pending %v): %v", pending, err)
		}
		x := xidOf(m)
		if !pending[x] {
			r.t.Fatalf("message %s for xid %06x, not pending", m.Type, x)
		}
		order = append(order, x)
		a := out[x]
		if a == nil {
			a = &answer{}
			out[x] = a
		}
		a.msgs++
		switch m.Type {
		case dhcp6.MsgLeasequeryReply:
			if a.msgs != 1 {
				r.t.Fatalf("xid %06x: REPLY as message %d", x, a.msgs)
			}
			a.reply = m
			a.status = m.Status()
			if d, ok := m.Options.Get(dhcp6.OptStatusCode); ok {
				_, a.text, _ = dhcp6.StatusCode(d)
			}
			cds := r.clientData(m)
			a.clients = append(a.clients, cds...)
			if len(cds) == 0 {
				delete(pending, x) // no data: no DONE follows
			}
		case dhcp6.MsgLeasequeryData:
			if a.msgs == 1 {
				r.t.Fatalf("xid %06x: DATA before REPLY", x)
			}
			cds := r.clientData(m)
			if len(cds) != 1 {
				r.t.Fatalf("xid %06x: DATA with %d client data", x, len(cds))
			}
			a.clients = append(a.clients, cds...)
		case dhcp6.MsgLeasequeryDone:
			a.done, a.doneSt = true, m.Status()
			delete(pending, x)
		default:
			r.t.Fatalf("unexpected message type %s", m.Type)
		}
	}
	return out, order
}

func (r *requestor) clientData(m dhcp6.Message) []dhcp6.ClientData {
	var out []dhcp6.ClientData
	for d := range m.Options.Each(dhcp6.OptClientData) {
		cd, err := dhcp6.ParseClientData(d)
		if err != nil {
			r.t.Fatalf("bad client data: %v", err)
		}
		out = append(out, cd)
	}
	return out
}

// query sends one query and collects its answer.
func (r *requestor) query(xid uint32, qt uint8, link netip.Addr, qopts []byte) *answer {
	r.t.Helper()
	r.send(lqMessage(xid, qt, link, qopts))
	out, _ := r.collect(xid)
	return out[xid]
}

// expectClosed checks the server closes the connection within d.
func (r *requestor) expectClosed(d time.Duration) {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := r.c.Read(b[:])
	if err == nil {
		r.t.Fatal("connection still open: read a byte")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatalf("connection not closed within %v", d)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		// A reset is a close too.
		r.t.Logf("connection ended with %v", err)
	}
}

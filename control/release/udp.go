package release

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// udpTransport carries RELEASE-REQUESTs to the one server of
// release.server and its replies back. Its socket is connected to the
// server, so the kernel delivers nothing from anyone else, and bound to
// the uplink, so the request leaves by the relay's own path with the
// uplink's address as source. A reader goroutine (run) validates each
// reply and hands it to the exchange waiting for its transaction id.
type udpTransport struct {
	conn    *net.UDPConn
	typ     dhcp6.MessageType // RELEASE-REQUEST-REPLY
	discard func(reason string)

	mu      sync.Mutex
	waiting map[[3]byte]chan requestReply
}

// dialUDP opens the socket to server, bound to the interface uplink
// (none when empty: tests on loopback).
func dialUDP(ctx context.Context, server netip.AddrPort, uplink string) (*net.UDPConn, error) {
	d := net.Dialer{Control: bindToDevice(uplink)}
	c, err := d.DialContext(ctx, "udp6", server.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// register reserves xid for an exchange; false when it is in use.
func (u *udpTransport) register(xid [3]byte) (chan requestReply, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, busy := u.waiting[xid]; busy {
		return nil, false
	}
	c := make(chan requestReply, 1)
	u.waiting[xid] = c
	return c, true
}

func (u *udpTransport) unregister(xid [3]byte) {
	u.mu.Lock()
	delete(u.waiting, xid)
	u.mu.Unlock()
}

// run reads replies until the socket is closed.
func (u *udpTransport) run() {
	buf := make([]byte, 65536)
	for {
		n, err := u.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP port unreachable and the like: the exchange retransmits
		}
		u.deliver(buf[:n])
	}
}

// deliver validates one datagram and hands it to its exchange; what it
// discards is counted by reason.
func (u *udpTransport) deliver(b []byte) {
	r, err := parseRequestReply(b, u.typ)
	if err != nil {
		u.discard(discardReason(err))
		return
	}
	u.mu.Lock()
	c, ok := u.waiting[r.xid]
	u.mu.Unlock()
	if !ok {
		u.discard("xid")
		return
	}
	select {
	case c <- r:
	default: // a reply to a retransmission after the first: one is enough
	}
}

func discardReason(err error) string {
	switch {
	case errors.Is(err, ErrReplyType):
		return "type"
	case errors.Is(err, ErrReplyNoStatus):
		return "no_status"
	case errors.Is(err, ErrReplyXID):
		return "xid"
	}
	return "malformed"
}

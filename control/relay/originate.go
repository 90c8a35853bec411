package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Originated is a client message the relay sends on a client's behalf:
// the relay-initiated release's client-release mode builds a Release
// with the client's DUID and relays it as if the client had sent it.
type Originated struct {
	Port string     // the downlink the client is on, by name
	Peer netip.Addr // the client's address: the binding's next hop
	// MAC is the client's link-layer address, sent as OPTION_CLIENT_LINKLAYER_ADDR;
	// all zero leaves the option out, as for a message from a relay below.
	MAC     [6]byte
	Payload []byte // the client message; it must carry a Client Identifier
}

// Errors of Originate.
var (
	ErrOriginatedFull = errors.New("relay: too many relay-originated messages await their reply")
	ErrNoClientID     = errors.New("relay: originated message has no client identifier")
)

// maxOriginated bounds the relay-originated messages awaiting replies.
const maxOriginated = 4096

// originTable remembers the messages the relay originated, by port,
// transaction id and client DUID, for the pending TTL: every Reply that
// matches one (the first, and the answers to retransmissions) goes back
// to the originator and never to the client. It is apart from the pending
// table so that a flood of client messages cannot push an entry out and
// let the server's answer reach the client.
type originTable struct {
	m   map[pendingKey]time.Time
	ttl time.Duration
}

func (o *originTable) age(now time.Time) {
	for k, at := range o.m {
		if now.Sub(at) >= o.ttl {
			delete(o.m, k)
		}
	}
}

// Originate wraps o in a Relay-Forward exactly as HandleClient wraps a
// message the client sent on that port (link-address, peer-address,
// Interface-ID, Relay-ID, client link-layer address), and notes it so that
// the server's Reply is handed back (ToClient.Originated) instead of being
// delivered. Nothing is snooped from it: the originator decides what the
// Reply means. The returned bytes live in the engine's buffer until the
// next call.
func (e *Engine) Originate(now time.Time, o Originated) ([]byte, error) {
	i, ok := e.byName[o.Port]
	if !ok {
		return nil, fmt.Errorf("originate on port %q: %w", o.Port, errUnknownPort)
	}
	m, err := dhcp6.ParseMessage(o.Payload)
	if err != nil {
		return nil, fmt.Errorf("originate on port %s: %w", o.Port, err)
	}
	duid, ok := m.Options.Get(dhcp6.OptClientID)
	if !ok || len(duid) == 0 || len(duid) > maxDUIDLen {
		return nil, ErrNoClientID
	}
	if e.origin.m == nil {
		e.origin = originTable{m: make(map[pendingKey]time.Time), ttl: e.pending.ttl}
	}
	k := pendingKey{port: i, xid: m.XID, duid: string(duid)}
	if _, again := e.origin.m[k]; !again && len(e.origin.m) >= maxOriginated {
		e.origin.age(now)
		if len(e.origin.m) >= maxOriginated {
			return nil, ErrOriginatedFull
		}
	}
	e.origin.m[k] = now
	p := &e.ports[i]
	var mac *[6]byte
	if o.MAC != ([6]byte{}) {
		mac = &o.MAC
	}
	e.Counters.msg(Up, m.Type)
	e.buf = e.wrap(e.buf[:0], 0, p.LinkAddr, o.Peer.WithZone(""), p.InterfaceID, mac, o.Payload)
	return e.buf, nil
}

var errUnknownPort = errors.New("no such downlink")

// originated reports whether inner, a message from the server for port,
// answers a message the relay originated (a Reply whose transaction id and
// client DUID match one younger than the TTL).
func (e *Engine) originated(now time.Time, port int, inner []byte) bool {
	if len(e.origin.m) == 0 || len(inner) < dhcp6.HeaderLen || dhcp6.MessageType(inner[0]) != dhcp6.MsgReply {
		return false
	}
	m, err := dhcp6.ParseMessage(inner)
	if err != nil {
		return false
	}
	duid, ok := m.Options.Get(dhcp6.OptClientID)
	if !ok {
		return false
	}
	at, ok := e.origin.m[pendingKey{port: port, xid: m.XID, duid: string(duid)}]
	if !ok {
		return false
	}
	if now.Sub(at) >= e.origin.ttl {
		delete(e.origin.m, pendingKey{port: port, xid: m.XID, duid: string(duid)})
		return false
	}
	return true
}

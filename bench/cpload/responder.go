package cpload

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Responder is a DHCPv6 server with no state that answers every
// Relay-Forward at once (see the package doc). Its zero value is not
// usable: use NewResponder.
type Responder struct {
	// ServerID is the server's DUID.
	ServerID []byte
	// Lifetimes of the delegated prefixes (seconds) and the IA_PD's
	// T1 and T2.
	Preferred, Valid, T1, T2 uint32

	// Counters, safe to read while Serve runs.
	Received atomic.Uint64 // datagrams read
	Answered atomic.Uint64 // Relay-Replies sent
	Ignored  atomic.Uint64 // not a Relay-Forward of a message it answers, or malformed
	Failed   atomic.Uint64 // send errors
}

// NewResponder returns a Responder with server DUID-LL 02:00:00:00:ff:01
// and one-hour lifetimes.
func NewResponder() *Responder {
	return &Responder{
		ServerID:  []byte{0, 3, 0, 1, 0x02, 0, 0, 0, 0xff, 0x01},
		Preferred: 1800, Valid: 3600, T1: 900, T2: 1440,
	}
}

// Answer returns the Relay-Reply (appended to dst) for one Relay-Forward:
// the relay's hop count, link-address, peer-address and Interface-ID
// echoed (RFC 8415 19.3), and inside it
//
//   - for a Solicit: an Advertise, or a Reply when it asks for Rapid
//     Commit, delegating PrefixFor(client DUID) in the client's IA_PD;
//   - for a Request, Renew or Rebind: a Reply delegating it;
//   - for a Release: a Reply with status Success (RFC 8415 18.3.7).
//
// Anything else, a nested Relay-Forward included, is an error.
func (r *Responder) Answer(dst, relayForw []byte) ([]byte, error) {
	rf, err := dhcp6.ParseRelay(relayForw)
	if err != nil {
		return dst, fmt.Errorf("answer: %w", err)
	}
	if rf.Type != dhcp6.MsgRelayForw {
		return dst, fmt.Errorf("answer: %s is not a relay-forward", rf.Type)
	}
	m, err := dhcp6.ParseMessage(rf.Inner)
	if err != nil {
		return dst, fmt.Errorf("answer: %w", err)
	}
	duid, ok := m.Options.Get(dhcp6.OptClientID)
	if !ok {
		return dst, fmt.Errorf("answer %s: %w", m.Type, ErrNoClientID)
	}
	var iaid uint32
	iaData, hasIA := m.Options.Get(dhcp6.OptIAPD)
	if hasIA {
		ia, err := dhcp6.ParseIAPD(iaData)
		if err != nil {
			return dst, fmt.Errorf("answer %s: %w", m.Type, err)
		}
		iaid = ia.IAID
	}
	typ := dhcp6.MsgReply
	delegate := hasIA
	switch m.Type {
	case dhcp6.MsgSolicit:
		if _, rapid := m.Options.Get(dhcp6.OptRapidCommit); !rapid {
			typ = dhcp6.MsgAdvertise
		}
	case dhcp6.MsgRequest, dhcp6.MsgRenew, dhcp6.MsgRebind:
	case dhcp6.MsgRelease:
		delegate = false
	default:
		return dst, fmt.Errorf("answer: %s: %w", m.Type, errNotAnswered)
	}

	b := dhcp6.AppendRelayHeader(dst, dhcp6.MsgRelayRepl, rf.HopCount, rf.LinkAddr, rf.PeerAddr)
	if ifid, ok := rf.InterfaceID(); ok {
		b = dhcp6.AppendOption(b, dhcp6.OptInterfaceID, ifid)
	}
	// The Relay Message option's length is known once the inner message
	// is written: reserve its header and fill it in after.
	optAt := len(b)
	b = append(b, 0, 0, 0, 0)
	in := len(b)
	b = dhcp6.AppendHeader(b, typ, m.XID)
	b = dhcp6.AppendOption(b, dhcp6.OptServerID, r.ServerID)
	b = dhcp6.AppendOption(b, dhcp6.OptClientID, duid)
	if typ == dhcp6.MsgReply && m.Type == dhcp6.MsgSolicit {
		b = dhcp6.AppendOption(b, dhcp6.OptRapidCommit, nil)
	}
	if m.Type == dhcp6.MsgRelease {
		b = dhcp6.AppendStatus(b, dhcp6.StatusSuccess, "released")
	}
	if delegate {
		var pfx [29]byte
		p := dhcp6.AppendIAPrefix(pfx[:0], dhcp6.IAPrefix{Preferred: r.Preferred, Valid: r.Valid, Prefix: PrefixFor(duid)})
		b = dhcp6.AppendIAPD(b, iaid, r.T1, r.T2, p)
	}
	n := len(b) - in
	b[optAt], b[optAt+1] = byte(dhcp6.OptRelayMsg>>8), byte(dhcp6.OptRelayMsg)
	b[optAt+2], b[optAt+3] = byte(n>>8), byte(n)
	return b, nil
}

var errNotAnswered = errors.New("message type not answered")

// Serve answers the Relay-Forwards arriving on c, each to its sender,
// until c is closed (it then returns nil) or fails. It reads and writes
// up to ioBatch datagrams a system call.
func (r *Responder) Serve(c *net.UDPConn) error {
	in, out := newBatchReader(c, 16384, 0), newBatchWriter(c)
	for {
		ms, err := in.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("responder: read: %w", err)
		}
		r.Received.Add(uint64(len(ms)))
		for i := range ms {
			m := &ms[i]
			if truncated(m) {
				r.Ignored.Add(1)
				continue
			}
			b, err := r.Answer(out.next(), m.Buffers[0][:m.N])
			if err != nil {
				r.Ignored.Add(1)
				continue
			}
			out.push(m.Addr, b)
		}
		sent, failed := out.flush()
		r.Answered.Add(uint64(sent))
		r.Failed.Add(uint64(failed))
	}
}

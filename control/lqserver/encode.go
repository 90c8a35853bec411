package lqserver

import (
	"encoding/binary"
	"net/netip"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// The messages lqserver sends. Wire formats (every option as code,
// length, data):
//
//	LEASEQUERY-REPLY (15)  xid | Server-ID | Client-ID (the query's, if it
//	                       had one) | OPTION_STATUS_CODE (only on a
//	                       refusal) | OPTION_CLIENT_DATA (first client, if
//	                       any)
//	LEASEQUERY-DATA  (17)  xid | OPTION_CLIENT_DATA
//	LEASEQUERY-DONE  (16)  xid | OPTION_STATUS_CODE (only on an error)
//
//	OPTION_CLIENT_DATA (45)
//	  OPTION_CLIENTID (1)       the client's DUID
//	  OPTION_IAPREFIX (26)...   one per delegated prefix, lifetimes as Kea
//	                            granted them at CLT time, no sub-options
//	  OPTION_CLT_TIME (46)      now - Kea's cltt, seconds
//	  OPTION_LQ_RELAY_DATA (47) only when Kea stored relay data:
//	    peer-address            the peer-address of the relay closest to
//	                            the client (the client's address there)
//	    Relay-Forward (12)      rebuilt: hop-count, link-address and
//	                            peer-address and the stored options of
//	                            Kea's outermost relay, with each inner
//	                            relay level nested in an OPTION_RELAY_MSG;
//	                            the innermost level has no OPTION_RELAY_MSG
//	                            (Kea does not keep the client's message, and
//	                            RFC 5007 leaves it out)

// beginOption appends an option header whose length endOption fills in.
func beginOption(dst []byte, code uint16) ([]byte, int) {
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, 0, 0), len(dst) + 2
}

// endOption sets the length of the option begun at start (the offset
// beginOption returned). A body over 65535 bytes gets a wrong length; the
// caller's frame-size check refuses the message holding it.
func endOption(dst []byte, start int) []byte {
	binary.BigEndian.PutUint16(dst[start-2:start], uint16(len(dst)-start))
	return dst
}

func appendAddr(dst []byte, a netip.Addr) []byte {
	b := a.As16()
	return append(dst, b[:]...)
}

// appendRelayForw rebuilds the Relay-Forward Kea stored as relays
// (outermost first).
func appendRelayForw(dst []byte, relays []Relay) []byte {
	r := &relays[0]
	dst = dhcp6.AppendRelayHeader(dst, dhcp6.MsgRelayForw, r.Hop, r.Link, r.Peer)
	dst = append(dst, r.Options...)
	if len(relays) > 1 {
		var at int
		dst, at = beginOption(dst, dhcp6.OptRelayMsg)
		dst = appendRelayForw(dst, relays[1:])
		dst = endOption(dst, at)
	}
	return dst
}

// prefixGrant is one delegated prefix with its IA_PD and lifetimes.
type prefixGrant struct {
	prefix           netip.Prefix
	iaid             uint32
	preferred, valid uint32
}

// appendClientData appends an OPTION_CLIENT_DATA for the client of l
// holding prefixes, clt seconds after its last transmission. With bare,
// each prefix is an OPTION_IAPREFIX of its own, as RFC 5007 has it;
// otherwise the prefixes of each IA_PD are wrapped in an OPTION_IA_PD
// (T1 and T2 0) so that the requestor learns the IAID, which RFC 5007's
// form loses and a Release on the client's behalf must name.
func appendClientData(dst []byte, l *Lease, prefixes []prefixGrant, clt uint32, bare bool) []byte {
	dst, at := beginOption(dst, dhcp6.OptClientData)
	dst = dhcp6.AppendOption(dst, dhcp6.OptClientID, l.DUID)
	for i := 0; i < len(prefixes); {
		if bare {
			p := prefixes[i]
			dst = dhcp6.AppendIAPrefix(dst, dhcp6.IAPrefix{Preferred: p.preferred, Valid: p.valid, Prefix: p.prefix})
			i++
			continue
		}
		var ia int
		dst, ia = beginOption(dst, dhcp6.OptIAPD)
		dst = binary.BigEndian.AppendUint32(dst, prefixes[i].iaid)
		dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0) // T1, T2: not the server's to say here
		for iaid := prefixes[i].iaid; i < len(prefixes) && prefixes[i].iaid == iaid; i++ {
			p := prefixes[i]
			dst = dhcp6.AppendIAPrefix(dst, dhcp6.IAPrefix{Preferred: p.preferred, Valid: p.valid, Prefix: p.prefix})
		}
		dst = endOption(dst, ia)
	}
	dst = dhcp6.AppendCLTTime(dst, clt)
	if in := l.Inner(); in != nil {
		var rd int
		dst, rd = beginOption(dst, dhcp6.OptLQRelayData)
		dst = appendAddr(dst, in.Peer)
		dst = appendRelayForw(dst, l.Relays)
		dst = endOption(dst, rd)
	}
	return endOption(dst, at)
}

// beginFrame appends a TCP frame's length field and a message header;
// endFrame fills in the length.
func beginFrame(dst []byte, t dhcp6.MessageType, xid [3]byte) ([]byte, int) {
	dst = append(dst, 0, 0)
	at := len(dst)
	return dhcp6.AppendHeader(dst, t, xid), at
}

// endFrame completes the frame begun at start. A message too large for
// a frame is removed again and endFrame reports false.
func endFrame(dst []byte, start int) ([]byte, bool) {
	n := len(dst) - start
	if n > dhcp6.MaxFrame {
		return dst[:start-2], false
	}
	binary.BigEndian.PutUint16(dst[start-2:start], uint16(n))
	return dst, true
}

// appendReplyHead appends the options every LEASEQUERY-REPLY starts with.
func appendReplyHead(dst []byte, serverID, clientID []byte) []byte {
	dst = dhcp6.AppendOption(dst, dhcp6.OptServerID, serverID)
	if clientID != nil {
		dst = dhcp6.AppendOption(dst, dhcp6.OptClientID, clientID)
	}
	return dst
}

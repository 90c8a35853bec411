package cpload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// OptElapsedTime is RFC 8415's Elapsed Time option (21.9), which every
// client message carries.
const optElapsedTime uint16 = 8

// duidLen is the length of a generator client's DUID: DUID-LL (type 3),
// hardware type 1, and the link-layer address 0a:00:<index, 4 bytes>.
const duidLen = 10

// MaxClients is how many clients a Generator can emulate: the responder
// delegates /56s out of 2001:db8::/32 by client index.
const MaxClients = 1 << 24

// ClientDUID returns the DUID of generator client i.
func ClientDUID(i uint32) []byte {
	d := []byte{0, 3, 0, 1, 0x0a, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(d[6:], i)
	return d
}

// clientIndex is the inverse of ClientDUID; ok is false for any other
// DUID.
func clientIndex(duid []byte) (i uint32, ok bool) {
	if len(duid) != duidLen || duid[0] != 0 || duid[1] != 3 || duid[2] != 0 || duid[3] != 1 || duid[4] != 0x0a || duid[5] != 0 {
		return 0, false
	}
	return binary.BigEndian.Uint32(duid[6:]), true
}

// DelegatedPool is where the Responder's prefixes come from.
var DelegatedPool = netip.MustParsePrefix("2001:db8::/32")

// PrefixFor is the /56 the Responder delegates to a client with this
// DUID: for generator client i, the i-th /56 of DelegatedPool (distinct
// for every i below MaxClients); for any other DUID, the /56 its FNV-1a
// hash picks there.
func PrefixFor(duid []byte) netip.Prefix {
	i, ok := clientIndex(duid)
	if !ok || i >= MaxClients {
		h := fnv.New32a()
		h.Write(duid)
		i = h.Sum32() % MaxClients
	}
	a := DelegatedPool.Addr().As16()
	binary.BigEndian.PutUint32(a[4:8], i<<8)
	return netip.PrefixFrom(netip.AddrFrom16(a), 56)
}

// ClientMsg describes a client message to build (AppendClientMsg).
type ClientMsg struct {
	Type     dhcp6.MessageType // Solicit, Request, Renew, Rebind or Release
	XID      [3]byte
	DUID     []byte
	IAID     uint32
	ServerID []byte       // Request, Renew and Release carry it
	Prefix   netip.Prefix // the IA_PD's prefix (a hint in a Solicit); invalid: none
	Elapsed  uint16       // hundredths of a second since the exchange began
}

// AppendClientMsg appends m: header, Client Identifier, Server
// Identifier (when set), Elapsed Time and one IA_PD with T1 = T2 = 0 (the
// client has no preference) holding m.Prefix as an IAPREFIX with zero
// lifetimes (RFC 8415 18.2.1, 18.2.4).
func AppendClientMsg(b []byte, m ClientMsg) []byte {
	b = dhcp6.AppendHeader(b, m.Type, m.XID)
	b = dhcp6.AppendOption(b, dhcp6.OptClientID, m.DUID)
	if len(m.ServerID) > 0 {
		b = dhcp6.AppendOption(b, dhcp6.OptServerID, m.ServerID)
	}
	b = dhcp6.AppendOption(b, optElapsedTime, []byte{byte(m.Elapsed >> 8), byte(m.Elapsed)})
	var pfx []byte
	if m.Prefix.IsValid() {
		var buf [29]byte
		pfx = dhcp6.AppendIAPrefix(buf[:0], dhcp6.IAPrefix{Prefix: m.Prefix})
	}
	return dhcp6.AppendIAPD(b, m.IAID, 0, 0, pfx)
}

// ServerMsg is what the generator reads from an Advertise or a Reply.
type ServerMsg struct {
	Type     dhcp6.MessageType
	XID      [3]byte
	DUID     []byte // Client Identifier; aliases the input
	ServerID []byte // aliases the input
	Status   uint16 // the message's status code (Success when none)
	// IAID, IAStatus and Prefix are the first IA_PD's: its status and
	// its first IAPREFIX with a valid lifetime above zero (invalid when
	// there is none).
	IAID     uint32
	IAStatus uint16
	HasIA    bool
	Prefix   netip.Prefix
	Valid    uint32
}

// Errors of ParseServerMsg.
var (
	ErrNotServerMsg = errors.New("not an advertise or reply")
	ErrNoClientID   = errors.New("no client identifier")
)

// ParseServerMsg parses an Advertise or Reply for the generator. Other
// message types, a missing Client Identifier and malformed options are
// errors.
func ParseServerMsg(b []byte) (ServerMsg, error) {
	m, err := dhcp6.ParseMessage(b)
	if err != nil {
		return ServerMsg{}, fmt.Errorf("parse server message: %w", err)
	}
	if m.Type != dhcp6.MsgAdvertise && m.Type != dhcp6.MsgReply {
		return ServerMsg{}, fmt.Errorf("parse server message: %s: %w", m.Type, ErrNotServerMsg)
	}
	s := ServerMsg{Type: m.Type, XID: m.XID, Status: m.Status()}
	var ok bool
	if s.DUID, ok = m.Options.Get(dhcp6.OptClientID); !ok {
		return ServerMsg{}, fmt.Errorf("parse %s: %w", m.Type, ErrNoClientID)
	}
	s.ServerID, _ = m.Options.Get(dhcp6.OptServerID)
	data, ok := m.Options.Get(dhcp6.OptIAPD)
	if !ok {
		return s, nil
	}
	ia, err := dhcp6.ParseIAPD(data)
	if err != nil {
		return ServerMsg{}, fmt.Errorf("parse %s: %w", m.Type, err)
	}
	s.HasIA, s.IAID, s.IAStatus = true, ia.IAID, ia.Status()
	for po := range ia.Options.Each(dhcp6.OptIAPrefix) {
		p, err := dhcp6.ParseIAPrefix(po)
		if err != nil {
			return ServerMsg{}, fmt.Errorf("parse %s: %w", m.Type, err)
		}
		if p.Valid > 0 && p.Prefix.IsValid() {
			s.Prefix, s.Valid = p.Prefix, p.Valid
			break
		}
	}
	return s, nil
}

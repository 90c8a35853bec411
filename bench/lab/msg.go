package lab

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// A minimal DHCPv6 codec, enough to read dhcpcd's lease file and to let
// lab tests talk to Kea directly. It is not the relay's codec.

// DHCPv6 message types and options used by the lab.
const (
	MsgSolicit      = 1
	MsgAdvertise    = 2
	MsgRequest      = 3
	MsgReply        = 7
	MsgRelease      = 8
	MsgRelayForward = 12
	MsgRelayReply   = 13

	OptClientID    = 1
	OptServerID    = 2
	OptElapsedTime = 8
	OptRelayMsg    = 9
	OptStatusCode  = 13
	OptRapidCommit = 14
	OptInterfaceID = 18
	OptIAPD        = 25
	OptIAPrefix    = 26
)

// Option is one DHCPv6 option.
type Option struct {
	Code uint16
	Data []byte
}

// Message is a DHCPv6 client/server message or a relay message.
type Message struct {
	Type uint8
	// Client/server messages.
	XID uint32
	// Relay messages.
	HopCount    uint8
	LinkAddr    netip.Addr
	PeerAddr    netip.Addr
	Options     []Option
	IsRelayKind bool
}

func parseOptions(b []byte) ([]Option, error) {
	var opts []Option
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("truncated option header")
		}
		code := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+n {
			return nil, errors.New("truncated option")
		}
		opts = append(opts, Option{Code: code, Data: b[4 : 4+n]})
		b = b[4+n:]
	}
	return opts, nil
}

// ParseMessage decodes one DHCPv6 message.
func ParseMessage(b []byte) (*Message, error) {
	if len(b) < 4 {
		return nil, errors.New("short DHCPv6 message")
	}
	m := &Message{Type: b[0]}
	var rest []byte
	if m.Type == MsgRelayForward || m.Type == MsgRelayReply {
		if len(b) < 34 {
			return nil, errors.New("short relay message")
		}
		m.IsRelayKind = true
		m.HopCount = b[1]
		m.LinkAddr = netip.AddrFrom16([16]byte(b[2:18]))
		m.PeerAddr = netip.AddrFrom16([16]byte(b[18:34]))
		rest = b[34:]
	} else {
		m.XID = uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		rest = b[4:]
	}
	var err error
	m.Options, err = parseOptions(rest)
	return m, err
}

// Marshal encodes the message.
func (m *Message) Marshal() []byte {
	var b []byte
	if m.Type == MsgRelayForward || m.Type == MsgRelayReply {
		b = append(b, m.Type, m.HopCount)
		la, pa := m.LinkAddr.As16(), m.PeerAddr.As16()
		if !m.LinkAddr.IsValid() {
			la = [16]byte{}
		}
		b = append(b, la[:]...)
		b = append(b, pa[:]...)
	} else {
		b = append(b, m.Type, byte(m.XID>>16), byte(m.XID>>8), byte(m.XID))
	}
	for _, o := range m.Options {
		b = binary.BigEndian.AppendUint16(b, o.Code)
		b = binary.BigEndian.AppendUint16(b, uint16(len(o.Data)))
		b = append(b, o.Data...)
	}
	return b
}

// Option returns the data of the first option with code, or nil.
func (m *Message) Option(code uint16) []byte {
	for _, o := range m.Options {
		if o.Code == code {
			if o.Data == nil {
				return []byte{}
			}
			return o.Data
		}
	}
	return nil
}

// Inner returns the message carried in a relay message's Relay Message
// option.
func (m *Message) Inner() (*Message, error) {
	d := m.Option(OptRelayMsg)
	if d == nil {
		return nil, errors.New("no relay-message option")
	}
	return ParseMessage(d)
}

// Delegations lists the IAPREFIX options of every IA_PD in the message.
func (m *Message) Delegations() []Delegation {
	var ds []Delegation
	for _, o := range m.Options {
		if o.Code != OptIAPD || len(o.Data) < 12 {
			continue
		}
		iaid := binary.BigEndian.Uint32(o.Data)
		sub, err := parseOptions(o.Data[12:])
		if err != nil {
			continue
		}
		for _, s := range sub {
			if s.Code != OptIAPrefix || len(s.Data) < 25 {
				continue
			}
			pfx := netip.PrefixFrom(netip.AddrFrom16([16]byte(s.Data[9:25])), int(s.Data[8]))
			ds = append(ds, Delegation{
				IAID:      iaid,
				Prefix:    pfx,
				Preferred: binary.BigEndian.Uint32(s.Data[0:]),
				Valid:     binary.BigEndian.Uint32(s.Data[4:]),
			})
		}
	}
	return ds
}

// StatusCodes returns the status codes found at the top level and inside
// each IA_PD (code 0 is Success, 6 NoPrefixAvail).
func (m *Message) StatusCodes() []uint16 {
	var codes []uint16
	for _, o := range m.Options {
		switch o.Code {
		case OptStatusCode:
			if len(o.Data) >= 2 {
				codes = append(codes, binary.BigEndian.Uint16(o.Data))
			}
		case OptIAPD:
			if len(o.Data) < 12 {
				continue
			}
			sub, _ := parseOptions(o.Data[12:])
			for _, s := range sub {
				if s.Code == OptStatusCode && len(s.Data) >= 2 {
					codes = append(codes, binary.BigEndian.Uint16(s.Data))
				}
			}
		}
	}
	return codes
}

// IAPDOption builds an empty IA_PD option (T1 = T2 = 0).
func IAPDOption(iaid uint32) Option {
	d := make([]byte, 12)
	binary.BigEndian.PutUint32(d, iaid)
	return Option{Code: OptIAPD, Data: d}
}

package dhcp6

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Errors returned by the parsers. Callers count them as drop reasons.
var (
	ErrShort          = errors.New("dhcpv6 message too short")
	ErrBadOption      = errors.New("dhcpv6 option runs past the end of the message")
	ErrNotRelay       = errors.New("not a relay message")
	ErrNoRelayMessage = errors.New("relay message has no relay-message option")
)

const (
	// HeaderLen is the client/server message header: type and transaction id.
	HeaderLen = 4
	// RelayHeaderLen is type, hop-count, link-address and peer-address.
	RelayHeaderLen = 34
	optHeaderLen   = 4
)

// Options is the raw, validated options area of a message.
type Options []byte

// ValidateOptions checks that b is a well-formed sequence of options
// (each header complete, each length within b).
func ValidateOptions(b []byte) error {
	for len(b) > 0 {
		if len(b) < optHeaderLen {
			return ErrBadOption
		}
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if len(b) < optHeaderLen+n {
			return ErrBadOption
		}
		b = b[optHeaderLen+n:]
	}
	return nil
}

// Next splits the first option off o. It reports ok=false at the end; o
// must have been validated (a truncated tail also ends the walk).
func (o Options) Next() (code uint16, data []byte, rest Options, ok bool) {
	if len(o) < optHeaderLen {
		return 0, nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(o[2:4]))
	if len(o) < optHeaderLen+n {
		return 0, nil, nil, false
	}
	return binary.BigEndian.Uint16(o[0:2]), o[optHeaderLen : optHeaderLen+n], o[optHeaderLen+n:], true
}

// Get returns the data of the first option with the given code.
func (o Options) Get(code uint16) ([]byte, bool) {
	for {
		c, data, rest, ok := o.Next()
		if !ok {
			return nil, false
		}
		if c == code {
			return data, true
		}
		o = rest
	}
}

// Message is a client/server message: everything except Relay-Forward and
// Relay-Reply. Options aliases the input.
type Message struct {
	Type    MessageType
	XID     [3]byte
	Options Options
}

// ParseMessage parses a client/server message header and validates its
// options. It refuses relay messages.
func ParseMessage(b []byte) (Message, error) {
	if len(b) < HeaderLen {
		return Message{}, ErrShort
	}
	t := MessageType(b[0])
	if t == MsgRelayForw || t == MsgRelayRepl {
		return Message{}, fmt.Errorf("parse %s as client message: %w", t, ErrNotRelay)
	}
	if err := ValidateOptions(b[HeaderLen:]); err != nil {
		return Message{}, fmt.Errorf("parse %s: %w", t, err)
	}
	return Message{Type: t, XID: [3]byte{b[1], b[2], b[3]}, Options: Options(b[HeaderLen:])}, nil
}

// Relay is a Relay-Forward or Relay-Reply message. Options and Inner alias
// the input.
type Relay struct {
	Type     MessageType
	HopCount uint8
	LinkAddr netip.Addr
	PeerAddr netip.Addr
	Options  Options
	// Inner is the relay-message option's data: the relayed message's bytes.
	Inner []byte
}

// ParseRelay parses a Relay-Forward or Relay-Reply and its relay-message
// option, which it requires.
func ParseRelay(b []byte) (Relay, error) {
	if len(b) < 1 {
		return Relay{}, ErrShort
	}
	t := MessageType(b[0])
	if t != MsgRelayForw && t != MsgRelayRepl {
		return Relay{}, fmt.Errorf("parse %s: %w", t, ErrNotRelay)
	}
	if len(b) < RelayHeaderLen {
		return Relay{}, fmt.Errorf("parse %s: %w", t, ErrShort)
	}
	opts := Options(b[RelayHeaderLen:])
	if err := ValidateOptions(opts); err != nil {
		return Relay{}, fmt.Errorf("parse %s: %w", t, err)
	}
	inner, ok := opts.Get(OptRelayMsg)
	if !ok {
		return Relay{}, fmt.Errorf("parse %s: %w", t, ErrNoRelayMessage)
	}
	return Relay{
		Type:     t,
		HopCount: b[1],
		LinkAddr: netip.AddrFrom16([16]byte(b[2:18])),
		PeerAddr: netip.AddrFrom16([16]byte(b[18:34])),
		Options:  opts,
		Inner:    inner,
	}, nil
}

// InterfaceID returns the Interface-ID option's data, if present.
func (r *Relay) InterfaceID() ([]byte, bool) { return r.Options.Get(OptInterfaceID) }

// AppendOption appends one option (code, length, data) to dst.
func AppendOption(dst []byte, code uint16, data []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(data)))
	return append(dst, data...)
}

// AppendRelayHeader appends the 34-byte header of a relay message.
// Addresses that are not IPv6 (the zero Addr) are written as ::.
func AppendRelayHeader(dst []byte, t MessageType, hops uint8, link, peer netip.Addr) []byte {
	dst = append(dst, byte(t), hops)
	dst = appendAddr(dst, link)
	return appendAddr(dst, peer)
}

func appendAddr(dst []byte, a netip.Addr) []byte {
	if !a.Is6() {
		return append(dst, make([]byte, 16)...)
	}
	b := a.As16()
	return append(dst, b[:]...)
}

// AppendClientLinkLayer appends an OPTION_CLIENT_LINKLAYER_ADDR (RFC 6939)
// for an Ethernet address.
func AppendClientLinkLayer(dst []byte, mac [6]byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptClientLinkLayer)
	dst = binary.BigEndian.AppendUint16(dst, 8)
	dst = binary.BigEndian.AppendUint16(dst, HardwareTypeEthernet)
	return append(dst, mac[:]...)
}

// StatusCode decodes an OPTION_STATUS_CODE's data: the code and message.
func StatusCode(data []byte) (code uint16, msg string, err error) {
	if len(data) < 2 {
		return 0, "", fmt.Errorf("status code option: %w", ErrShort)
	}
	return binary.BigEndian.Uint16(data), string(data[2:]), nil
}

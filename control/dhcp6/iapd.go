package dhcp6

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// IAPD is a decoded OPTION_IA_PD (RFC 8415 section 21.21).
type IAPD struct {
	IAID    uint32
	T1, T2  uint32
	Options Options // IAPREFIX, status code, ...
}

// ParseIAPD decodes an IA_PD option's data.
func ParseIAPD(data []byte) (IAPD, error) {
	if len(data) < 12 {
		return IAPD{}, fmt.Errorf("ia_pd: %w", ErrShort)
	}
	opts := Options(data[12:])
	if err := ValidateOptions(opts); err != nil {
		return IAPD{}, fmt.Errorf("ia_pd: %w", err)
	}
	return IAPD{
		IAID:    binary.BigEndian.Uint32(data[0:4]),
		T1:      binary.BigEndian.Uint32(data[4:8]),
		T2:      binary.BigEndian.Uint32(data[8:12]),
		Options: opts,
	}, nil
}

// Status returns the IA's status code, Success when it has none.
func (ia *IAPD) Status() uint16 { return optionsStatus(ia.Options) }

// IAPrefix is a decoded OPTION_IAPREFIX (RFC 8415 section 21.22).
type IAPrefix struct {
	Preferred uint32 // seconds; 0xffffffff is infinity
	Valid     uint32
	Prefix    netip.Prefix // masked
	Options   Options
}

// ParseIAPrefix decodes an IAPREFIX option's data. A prefix length over
// 128 is an error.
func ParseIAPrefix(data []byte) (IAPrefix, error) {
	if len(data) < 25 {
		return IAPrefix{}, fmt.Errorf("iaprefix: %w", ErrShort)
	}
	bits := int(data[8])
	if bits > 128 {
		return IAPrefix{}, fmt.Errorf("iaprefix: prefix length %d", bits)
	}
	opts := Options(data[25:])
	if err := ValidateOptions(opts); err != nil {
		return IAPrefix{}, fmt.Errorf("iaprefix: %w", err)
	}
	p := netip.PrefixFrom(netip.AddrFrom16([16]byte(data[9:25])), bits).Masked()
	return IAPrefix{
		Preferred: binary.BigEndian.Uint32(data[0:4]),
		Valid:     binary.BigEndian.Uint32(data[4:8]),
		Prefix:    p,
		Options:   opts,
	}, nil
}

// Status returns the status code option in o, its message, and whether
// there is one: Success when there is none, UnspecFail when it is
// malformed (a failure is the safe reading).
func (o Options) Status() (code uint16, msg string, present bool) {
	data, ok := o.Get(OptStatusCode)
	if !ok {
		return StatusSuccess, "", false
	}
	code, msg, err := StatusCode(data)
	if err != nil {
		return StatusUnspecFail, "malformed status code option", true
	}
	return code, msg, true
}

// optionsStatus returns the status code in opts (see Options.Status).
func optionsStatus(opts Options) uint16 {
	code, _, _ := opts.Status()
	return code
}

// Status returns the message's top-level status code (Success when absent).
func (m *Message) Status() uint16 { return optionsStatus(m.Options) }

// Innermost follows relay-message options down from a relay message to the
// client or server message inside it. It returns b itself when b is not a
// relay message, and the number of relay levels it crossed.
func Innermost(b []byte) (msg []byte, depth int, err error) {
	for len(b) > 0 && (MessageType(b[0]) == MsgRelayForw || MessageType(b[0]) == MsgRelayRepl) {
		if depth > HopCountLimit {
			return nil, depth, fmt.Errorf("relay nesting deeper than %d", HopCountLimit)
		}
		r, err := ParseRelay(b)
		if err != nil {
			return nil, depth, err
		}
		b = r.Inner
		depth++
	}
	return b, depth, nil
}

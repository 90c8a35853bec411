package dhcp6

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrRelayDepth is returned for relay data nested deeper than HopCountLimit.
var ErrRelayDepth = errors.New("relay message nested too deep")

// RelayLayer is one Relay-Forward header and its options, as an
// OPTION_LQ_RELAY_DATA carries the relay data a server kept for a client
// (RFC 5007 section 4.1.2.4). Options aliases the input.
type RelayLayer struct {
	HopCount uint8
	LinkAddr netip.Addr
	PeerAddr netip.Addr
	Options  Options
}

// InterfaceID returns the layer's Interface-ID option data, if present.
func (l *RelayLayer) InterfaceID() ([]byte, bool) { return l.Options.Get(OptInterfaceID) }

// RelayID returns the layer's Relay-ID option data (a DUID), if present.
func (l *RelayLayer) RelayID() ([]byte, bool) { return l.Options.Get(OptRelayID) }

// ClientLinkLayer returns the Ethernet address of the layer's
// OPTION_CLIENT_LINKLAYER_ADDR (RFC 6939), if it has one of hardware type
// Ethernet and 6 bytes.
func (l *RelayLayer) ClientLinkLayer() (mac [6]byte, ok bool) {
	d, ok := l.Options.Get(OptClientLinkLayer)
	if !ok || len(d) != 8 || d[0] != 0 || uint16(d[1]) != HardwareTypeEthernet {
		return mac, false
	}
	return [6]byte(d[2:8]), true
}

// ParseRelayLayers decodes the relay message of an OPTION_LQ_RELAY_DATA
// into its Relay-Forward layers, outermost (the relay nearest the server)
// first, appending them to dst. RFC 5007 has the server leave out the
// client's own message, so the innermost layer usually has no
// OPTION_RELAY_MSG; a server that keeps it (with the client message, or
// a further Relay-Forward) is read too. Nesting is bounded by
// HopCountLimit.
func ParseRelayLayers(b []byte, dst []RelayLayer) ([]RelayLayer, error) {
	for depth := 0; ; depth++ {
		if depth > HopCountLimit {
			return dst, fmt.Errorf("lq relay data: %w", ErrRelayDepth)
		}
		if len(b) < 1 {
			return dst, fmt.Errorf("lq relay data: %w", ErrShort)
		}
		if t := MessageType(b[0]); t != MsgRelayForw {
			return dst, fmt.Errorf("lq relay data: %s, not relay-forward: %w", t, ErrNotRelay)
		}
		if len(b) < RelayHeaderLen {
			return dst, fmt.Errorf("lq relay data: %w", ErrShort)
		}
		opts := Options(b[RelayHeaderLen:])
		if err := ValidateOptions(opts); err != nil {
			return dst, fmt.Errorf("lq relay data: %w", err)
		}
		dst = append(dst, RelayLayer{
			HopCount: b[1],
			LinkAddr: netip.AddrFrom16([16]byte(b[2:18])),
			PeerAddr: netip.AddrFrom16([16]byte(b[18:34])),
			Options:  opts,
		})
		inner, ok := opts.Get(OptRelayMsg)
		if !ok || len(inner) == 0 || MessageType(inner[0]) != MsgRelayForw {
			return dst, nil // the client's message, or none: the innermost layer
		}
		b = inner
	}
}

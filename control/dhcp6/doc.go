// Package dhcp6 is pdrelay's DHCPv6 wire layer: message and option code
// points, a zero-copy option walker, and the Relay-Forward / Relay-Reply
// framing of RFC 8415 section 9.
//
// The relay never re-encodes a message it relays (RFC 8987 G-1): it wraps
// and unwraps the original bytes with this package, so a message whose
// type or options it does not know passes byte for byte. Typed decoding of
// the messages it snoops (IA_PD, IAPREFIX, status codes) is done with
// github.com/insomniacslk/dhcp/dhcpv6 by the callers.
//
// All functions are pure and safe for concurrent use. Parsed values alias
// the input slice; copy what must outlive it.
package dhcp6

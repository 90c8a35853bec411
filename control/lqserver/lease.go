package lqserver

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Lease types as Kea names them.
const (
	TypePD = "IA_PD"
	TypeNA = "IA_NA"
)

// Lease is one IPv6 lease as Kea's lease_cmds report it, reduced to what
// a leasequery answer or a release needs.
type Lease struct {
	Type      string       // "IA_PD", "IA_NA" or "IA_TA"
	Prefix    netip.Prefix // ip-address/prefix-len; /128 for addresses
	DUID      []byte
	IAID      uint32
	SubnetID  uint32
	CLTT      int64 // client last transmission time, unix seconds
	Valid     uint32
	Preferred uint32
	State     int // 0 default, 1 declined, 2 expired-reclaimed
	// Relays is the relay data Kea stored with store-extended-info, in
	// Kea's order: the outermost relay (the one the server heard from)
	// first, the relay closest to the client last.
	Relays []Relay
}

// Relay is one relay level Kea stored: the Relay-Forward's header and its
// options other than the relay-message (Interface-ID, Relay-ID,
// Remote-ID, client link-layer address...).
type Relay struct {
	Hop     uint8
	Link    netip.Addr
	Peer    netip.Addr
	Options dhcp6.Options
}

// Inner returns the relay closest to the client, nil when there is none.
func (l *Lease) Inner() *Relay {
	if len(l.Relays) == 0 {
		return nil
	}
	return &l.Relays[len(l.Relays)-1]
}

// Link returns the link the client is on as the relays saw it: the
// link-address of the relay closest to the client that set one (a
// lightweight relay leaves it ::). The zero Addr when there is none.
func (l *Lease) Link() netip.Addr {
	for i := len(l.Relays) - 1; i >= 0; i-- {
		if a := l.Relays[i].Link; a.IsValid() && !a.IsUnspecified() {
			return a
		}
	}
	return netip.Addr{}
}

// RelayOption reports whether any relay level stored option code with
// exactly the given data.
func (l *Lease) RelayOption(code uint16, data []byte) bool {
	for i := range l.Relays {
		for d := range l.Relays[i].Options.Each(code) {
			if bytes.Equal(d, data) {
				return true
			}
		}
	}
	return false
}

// Errors decoding Kea's answers.
var (
	ErrLeaseJSON = errors.New("kea lease not understood")
)

// keaLease is a lease as Kea's JSON carries it; fields lqserver does not
// use (hostname, fqdn-*, hw-address) are not decoded.
type keaLease struct {
	CLTT        int64           `json:"cltt"`
	DUID        string          `json:"duid"`
	IAID        uint32          `json:"iaid"`
	IPAddress   string          `json:"ip-address"`
	Preferred   uint32          `json:"preferred-lft"`
	PrefixLen   int             `json:"prefix-len"`
	State       int             `json:"state"`
	SubnetID    uint32          `json:"subnet-id"`
	Type        string          `json:"type"`
	UserContext *keaUserContext `json:"user-context"`
	Valid       uint32          `json:"valid-lft"`
}

// keaUserContext is the part of a lease's user-context Kea writes with
// store-extended-info. Kea 2.2 writes "relays"; later versions write
// "relay-info" with the same entries.
type keaUserContext struct {
	ISC *struct {
		Relays    []keaRelay `json:"relays"`
		RelayInfo []keaRelay `json:"relay-info"`
	} `json:"ISC"`
}

type keaRelay struct {
	Hop     int    `json:"hop"`
	Link    string `json:"link"`
	Peer    string `json:"peer"`
	Options string `json:"options"`
}

// DecodeLease decodes one lease object of Kea's lease_cmds answers.
func DecodeLease(b []byte) (Lease, error) {
	var kl keaLease
	if err := json.Unmarshal(b, &kl); err != nil {
		return Lease{}, fmt.Errorf("%w: %v", ErrLeaseJSON, err)
	}
	return kl.lease()
}

func (kl *keaLease) lease() (Lease, error) {
	addr, err := netip.ParseAddr(kl.IPAddress)
	if err != nil || !addr.Is6() || addr.Zone() != "" {
		return Lease{}, fmt.Errorf("%w: ip-address %q", ErrLeaseJSON, kl.IPAddress)
	}
	bits := 128
	if kl.Type == TypePD {
		if kl.PrefixLen < 1 || kl.PrefixLen > 128 {
			return Lease{}, fmt.Errorf("%w: %s prefix-len %d", ErrLeaseJSON, kl.IPAddress, kl.PrefixLen)
		}
		bits = kl.PrefixLen
	}
	duid, err := ParseHex(kl.DUID)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: %s duid: %v", ErrLeaseJSON, kl.IPAddress, err)
	}
	l := Lease{
		Type: kl.Type, Prefix: netip.PrefixFrom(addr, bits).Masked(), DUID: duid,
		IAID: kl.IAID, SubnetID: kl.SubnetID, CLTT: kl.CLTT,
		Valid: kl.Valid, Preferred: kl.Preferred, State: kl.State,
	}
	if uc := kl.UserContext; uc != nil && uc.ISC != nil {
		relays := uc.ISC.Relays
		if relays == nil {
			relays = uc.ISC.RelayInfo
		}
		l.Relays, err = decodeRelays(relays)
		if err != nil {
			return Lease{}, fmt.Errorf("%w: %s user-context: %v", ErrLeaseJSON, kl.IPAddress, err)
		}
	}
	return l, nil
}

// maxRelays bounds the relay levels taken from Kea (RFC 8415's
// HOP_COUNT_LIMIT plus one).
const maxRelays = dhcp6.HopCountLimit + 1

func decodeRelays(kr []keaRelay) ([]Relay, error) {
	if len(kr) == 0 {
		return nil, nil
	}
	if len(kr) > maxRelays {
		return nil, fmt.Errorf("%d relay levels", len(kr))
	}
	out := make([]Relay, len(kr))
	for i, r := range kr {
		if r.Hop < 0 || r.Hop > 255 {
			return nil, fmt.Errorf("relay %d: hop %d", i, r.Hop)
		}
		link, err := parseAddr6(r.Link)
		if err != nil {
			return nil, fmt.Errorf("relay %d: link: %v", i, err)
		}
		peer, err := parseAddr6(r.Peer)
		if err != nil {
			return nil, fmt.Errorf("relay %d: peer: %v", i, err)
		}
		opts, err := ParseHex(r.Options)
		if err != nil {
			return nil, fmt.Errorf("relay %d: options: %v", i, err)
		}
		if err := dhcp6.ValidateOptions(opts); err != nil {
			return nil, fmt.Errorf("relay %d: options: %v", i, err)
		}
		out[i] = Relay{Hop: uint8(r.Hop), Link: link, Peer: peer, Options: opts}
	}
	return out, nil
}

// parseAddr6 parses an IPv6 address; the empty string is ::.
func parseAddr6(s string) (netip.Addr, error) {
	if s == "" {
		return netip.IPv6Unspecified(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if !a.Is6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv6 address", s)
	}
	return a, nil
}

// ParseHex parses hex bytes as Kea and operators write them: "00:01:0a",
// "00010A", "0x00010a" (Kea's stored relay options). The empty string is
// no bytes.
func ParseHex(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	if strings.IndexByte(s, ':') >= 0 {
		s = strings.ReplaceAll(s, ":", "")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("hex %q: %w", truncate(s, 40), err)
	}
	return b, nil
}

// colonHex formats b as Kea prints DUIDs: "00:01:0a".
func colonHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, len(b)*3)
	for i, c := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

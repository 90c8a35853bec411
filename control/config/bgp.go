package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BGP defaults.
const (
	DefaultBGPPort        = 179
	DefaultBGPRestartTime = 120 * time.Second
	// MaxBGPRestartTime is the largest restart time the graceful restart
	// capability carries (12 bits of seconds).
	MaxBGPRestartTime = 4095 * time.Second
	// MaxBGPPassword is the longest TCP MD5 key Linux takes
	// (TCP_MD5SIG_MAXKEYLEN).
	MaxBGPPassword = 80
)

// BGP configures the advertisement of delegated prefixes (RFC 8987 R-4).
type BGP struct {
	ASN      uint32
	RouterID netip.Addr // IPv4
	// Neighbors are the peers; at least one, no two at one address.
	Neighbors []BGPNeighbor
	// NextHop is the next hop of every announcement; the zero Addr when
	// not configured: the uplink's global address, found at start.
	NextHop netip.Addr
	// Communities (RFC 1997) go on every announcement, as ASN<<16|value.
	Communities []uint32
	// Aggregates are announced always; masked IPv6 prefixes.
	Aggregates []netip.Prefix
	// RestartTime is the graceful restart time advertised (RFC 4724): how
	// long the peers keep the routes across a pdrelay restart.
	RestartTime time.Duration
	// ListenPort is where sessions are accepted; 0 means not at all
	// (every neighbour is then connected to).
	ListenPort int
}

// BGPNeighbor is one BGP peer.
type BGPNeighbor struct {
	Address  netip.Addr // IPv6 or IPv4, no zone
	ASN      uint32
	Passive  bool   // wait for the peer to connect
	Password string // TCP MD5 key; empty for none
	Port     int    // the peer's TCP port
}

type rawBGP struct {
	ASN         *int64           `yaml:"asn"`
	RouterID    string           `yaml:"router_id"`
	Neighbors   []rawBGPNeighbor `yaml:"neighbors"`
	NextHop     string           `yaml:"next_hop"`
	Communities []string         `yaml:"communities"`
	Aggregates  []string         `yaml:"aggregates"`
	RestartTime string           `yaml:"graceful_restart_time"`
	ListenPort  *int             `yaml:"listen_port"`
}

type rawBGPNeighbor struct {
	Address  string `yaml:"address"`
	ASN      *int64 `yaml:"asn"`
	Passive  bool   `yaml:"passive"`
	Password string `yaml:"password"`
	Port     *int   `yaml:"port"`
}

// validate checks the bgp section; nil (no bgp key) means no BGP.
func (r *rawBGP) validate(errs *errList) *BGP {
	if r == nil {
		return nil
	}
	b := &BGP{RestartTime: DefaultBGPRestartTime, ListenPort: DefaultBGPPort}
	b.ASN = asn("bgp.asn", r.ASN, errs)
	switch a, err := netip.ParseAddr(r.RouterID); {
	case r.RouterID == "":
		errs.add("bgp.router_id", "required: an IPv4 address that identifies pdrelay's BGP speaker (RFC 6286)")
	case err != nil || !a.Is4():
		errs.add("bgp.router_id", "%q is not an IPv4 address (a BGP identifier is one, even on an IPv6 network)", r.RouterID)
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		errs.add("bgp.router_id", "%q cannot identify a BGP speaker", r.RouterID)
	default:
		b.RouterID = a
	}
	if r.ListenPort != nil {
		if p := *r.ListenPort; p < 0 || p > 65535 {
			errs.add("bgp.listen_port", "%d is not a TCP port (0 to listen on none, 1..65535)", p)
		} else {
			b.ListenPort = p
		}
	}
	if len(r.Neighbors) == 0 {
		errs.add("bgp.neighbors", "at least one neighbor is required")
	}
	seen := map[netip.Addr]int{}
	for i, rn := range r.Neighbors {
		key := fmt.Sprintf("bgp.neighbors[%d]", i)
		n := BGPNeighbor{Passive: rn.Passive, Password: rn.Password, Port: DefaultBGPPort}
		n.ASN = asn(key+".asn", rn.ASN, errs)
		a, err := netip.ParseAddr(rn.Address)
		switch {
		case rn.Address == "":
			errs.add(key+".address", "required")
		case err != nil:
			errs.add(key+".address", "%q is not an IPv6 or IPv4 address", rn.Address)
		case a.Zone() != "" || a.IsLinkLocalUnicast():
			errs.add(key+".address", "%q is link-local; peer with a global (or ULA) address", rn.Address)
		case a.IsUnspecified() || a.IsMulticast():
			errs.add(key+".address", "%q is not a unicast address", rn.Address)
		default:
			n.Address = a.Unmap()
			if j, dup := seen[n.Address]; dup {
				errs.add(key+".address", "%q is also bgp.neighbors[%d]", rn.Address, j)
			}
			seen[n.Address] = i
		}
		if len(rn.Password) > MaxBGPPassword {
			errs.add(key+".password", "%d bytes; a TCP MD5 key is at most %d", len(rn.Password), MaxBGPPassword)
		}
		if rn.Port != nil {
			if p := *rn.Port; p < 1 || p > 65535 {
				errs.add(key+".port", "%d is not a TCP port (1..65535)", p)
			} else {
				n.Port = p
			}
		}
		if n.Passive && b.ListenPort == 0 {
			errs.add(key+".passive", "true, but bgp.listen_port is 0: nothing would accept the peer's connection")
		}
		b.Neighbors = append(b.Neighbors, n)
	}
	if r.NextHop != "" {
		a, err := netip.ParseAddr(r.NextHop)
		switch {
		case err != nil || !a.Is6() || a.Is4In6():
			errs.add("bgp.next_hop", "%q is not an IPv6 address", r.NextHop)
		case a.Zone() != "" || !a.IsGlobalUnicast() || a.IsLinkLocalUnicast():
			errs.add("bgp.next_hop", "%q is not a global unicast address: the peers must reach it", r.NextHop)
		default:
			b.NextHop = a
		}
	}
	seenC := map[uint32]int{}
	for i, s := range r.Communities {
		key := fmt.Sprintf("bgp.communities[%d]", i)
		c, err := ParseCommunity(s)
		if err != nil {
			errs.add(key, "%q %v", s, err)
			continue
		}
		if j, dup := seenC[c]; dup {
			errs.add(key, "%q is also bgp.communities[%d]", s, j)
			continue
		}
		seenC[c] = i
		b.Communities = append(b.Communities, c)
	}
	b.Aggregates = prefixList("bgp.aggregates", r.Aggregates, errs, func(k, s string, p netip.Prefix) bool {
		if p.Bits() == 0 {
			errs.add(k, "%q would announce a default route", s)
			return false
		}
		return true
	})
	if r.RestartTime != "" {
		d := duration("bgp.graceful_restart_time", r.RestartTime, DefaultBGPRestartTime, errs)
		switch {
		case d%time.Second != 0 || d < time.Second:
			errs.add("bgp.graceful_restart_time", "%s is not a whole number of seconds (1s..%s)", d, MaxBGPRestartTime)
		case d > MaxBGPRestartTime:
			errs.add("bgp.graceful_restart_time", "%s is above %s, the most the capability carries", d, MaxBGPRestartTime)
		default:
			b.RestartTime = d
		}
	}
	return b
}

// asn checks an AS number: 1..4294967294, not AS_TRANS (23456, RFC
// 6793) nor 65535 (RFC 7300).
func asn(key string, v *int64, errs *errList) uint32 {
	if v == nil {
		errs.add(key, "required")
		return 0
	}
	switch n := *v; {
	case n < 1 || n > 4294967294:
		errs.add(key, "%d is not an AS number (1..4294967294)", n)
	case n == 23456 || n == 65535:
		errs.add(key, "%d is reserved (RFC 6793, RFC 7300)", n)
	default:
		return uint32(n)
	}
	return 0
}

// ParseCommunity parses a standard community (RFC 1997) written "a:b",
// each part 0..65535, into a<<16|b.
func ParseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("is not a community (write ASN:VALUE, for example 65001:100)")
	}
	a, err1 := strconv.ParseUint(hi, 10, 16)
	b, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("is not a community: both parts are numbers 0..65535")
	}
	return uint32(a)<<16 | uint32(b), nil
}

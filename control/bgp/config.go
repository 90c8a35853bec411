package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Defaults of the Speaker's config.
const (
	// DefaultRestartTime is the graceful restart time the Speaker
	// advertises: how long a peer keeps the routes after the session
	// drops without a NOTIFICATION (RFC 4724 suggests at most the hold
	// time; a restart of pdrelay takes seconds).
	DefaultRestartTime = 120 * time.Second
	// MaxRestartTime is the largest restart time the capability carries
	// (12 bits of seconds).
	MaxRestartTime = 4095 * time.Second
	// DefaultPort is BGP's TCP port.
	DefaultPort = 179
)

// Config is what the Speaker announces and to whom. Its slices are not
// changed by the Speaker; the caller must not change them either once
// handed over.
type Config struct {
	ASN      uint32
	RouterID netip.Addr // IPv4, the BGP identifier
	// Neighbors are the peers; no two have the same Address.
	Neighbors []Neighbor
	// NextHop is the next hop of every announcement: an IPv6 address the
	// peers reach pdrelay at (usually its uplink's global address).
	NextHop netip.Addr
	// Communities (RFC 1997, ASN in the high 16 bits) go on every
	// announcement.
	Communities []uint32
	// Aggregates are announced always, whatever the bindings.
	Aggregates []netip.Prefix
	// RestartTime is the graceful restart time advertised; 0 means
	// DefaultRestartTime.
	RestartTime time.Duration
	// ListenPort is the TCP port the Speaker accepts sessions on: 0
	// means DefaultPort, -1 not to listen (every neighbour is then
	// connected to, none may be passive).
	ListenPort int
}

// Neighbor is one BGP peer.
type Neighbor struct {
	Address netip.Addr // IPv6 or IPv4, no zone
	ASN     uint32
	// Passive waits for the peer to connect.
	Passive bool
	// Password turns on TCP MD5 signatures (RFC 2385) with this key.
	Password string
	// Port is the peer's TCP port; 0 means DefaultPort.
	Port uint16
}

func (c *Config) restartSeconds() uint32 {
	if c.RestartTime <= 0 {
		return uint32(DefaultRestartTime / time.Second)
	}
	return uint32(c.RestartTime / time.Second)
}

func (c *Config) listenPort() int32 {
	switch {
	case c.ListenPort == 0:
		return DefaultPort
	case c.ListenPort < 0:
		return -1
	}
	return int32(c.ListenPort)
}

// Validate checks what the Speaker needs to run; the config package
// reports the operator's mistakes by key, this only guards the API.
func (c *Config) Validate() error {
	var errs []error
	if c.ASN == 0 {
		errs = append(errs, errors.New("asn 0"))
	}
	if !c.RouterID.Is4() {
		errs = append(errs, fmt.Errorf("router id %s is not IPv4", c.RouterID))
	}
	if !c.NextHop.Is6() || c.NextHop.Is4In6() || c.NextHop.Zone() != "" {
		errs = append(errs, fmt.Errorf("next hop %s is not an IPv6 address without zone", c.NextHop))
	}
	if c.RestartTime > MaxRestartTime {
		errs = append(errs, fmt.Errorf("restart time %s is above %s", c.RestartTime, MaxRestartTime))
	}
	seen := map[netip.Addr]bool{}
	for _, n := range c.Neighbors {
		switch {
		case !n.Address.IsValid() || n.Address.Zone() != "":
			errs = append(errs, fmt.Errorf("neighbor address %s", n.Address))
		case seen[n.Address]:
			errs = append(errs, fmt.Errorf("neighbor %s given twice", n.Address))
		case n.ASN == 0:
			errs = append(errs, fmt.Errorf("neighbor %s: asn 0", n.Address))
		case n.Passive && c.ListenPort < 0:
			errs = append(errs, fmt.Errorf("neighbor %s is passive but the speaker does not listen", n.Address))
		}
		seen[n.Address] = true
	}
	for _, p := range c.Aggregates {
		if !p.Addr().Is6() || p.Addr().Is4In6() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("aggregate %s is not a masked IPv6 prefix", p))
		}
	}
	return errors.Join(errs...)
}

// sameGlobal reports whether a and b need no restart of the BGP server.
func sameGlobal(a, b *Config) bool {
	return a.ASN == b.ASN && a.RouterID == b.RouterID && a.listenPort() == b.listenPort()
}

// sameAttrs reports whether a and b announce with the same attributes.
func sameAttrs(a, b *Config) bool {
	return a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities)
}

// sameSession reports whether the session to n can stay when the config
// changes from a to b with n2 as the neighbour's new settings.
func sameSession(a, b *Config, n, n2 Neighbor) bool {
	return n == n2 && a.restartSeconds() == b.restartSeconds()
}

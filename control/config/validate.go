package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// The raw types mirror the YAML; pointers tell a key left out (default)
// from one given as 0.
type rawConfig struct {
	StateDir       string        `yaml:"state_dir"`
	APISocket      string        `yaml:"api_socket"`
	MetricsListen  string        `yaml:"metrics_listen"`
	RelayID        string        `yaml:"relay_id"`
	Servers        []string      `yaml:"servers"`
	ServerPort     *int          `yaml:"server_port"`
	TrustedServers []string      `yaml:"trusted_servers"`
	DelegatedLen   string        `yaml:"delegated_lengths"`
	DelegatedPools []string      `yaml:"delegated_pools"`
	Uplink         rawUplink     `yaml:"uplink"`
	Downlinks      []rawDownlink `yaml:"downlinks"`
	Dataplane      rawDataplane  `yaml:"dataplane"`
	Kernel         rawKernel     `yaml:"kernel"`
	Leasequery     rawLeasequery `yaml:"leasequery"`
	Release        rawRelease    `yaml:"release"`
	LogLevel       string        `yaml:"log_level"`
	BGP            *rawBGP       `yaml:"bgp"`
}

type rawUplink struct {
	Interface string `yaml:"interface"`
	Gateway   string `yaml:"gateway"`
	NoRoute   string `yaml:"no_route"`
}

type rawDownlink struct {
	Interface           string            `yaml:"interface"`
	LinkAddress         string            `yaml:"link_address"`
	InterfaceID         *string           `yaml:"interface_id"`
	LinkType            string            `yaml:"link_type"`
	MaxDelegations      *int              `yaml:"max_delegations"`
	MaxPerClient        *int              `yaml:"max_per_client"`
	UniqueClient        bool              `yaml:"unique_client"`
	LoopPolicy          string            `yaml:"loop_policy"`
	LoopICMP            bool              `yaml:"loop_icmp"`
	TrustReleaseRequest bool              `yaml:"trust_release_request"`
	TrustRelayForward   bool              `yaml:"trust_relay_forward"`
	MaxClientRate       *int              `yaml:"max_client_rate"`
	MaxClientBurst      *int              `yaml:"max_client_burst"`
	DelegatedPools      []string          `yaml:"delegated_pools"`
	AllowedSources      []string          `yaml:"allowed_sources"`
	LoopOverrides       []rawLoopOverride `yaml:"loop_overrides"`
}

// rawLoopOverride takes pointers so that a key given empty (client: "")
// counts as given, and is refused as a bad value.
type rawLoopOverride struct {
	Client *string `yaml:"client"`
	Prefix *string `yaml:"prefix"`
	Policy string  `yaml:"policy"`
}

type rawDataplane struct {
	Mode      string `yaml:"mode"`
	Queues    *int   `yaml:"queues"`
	FrameSize *int   `yaml:"frame_size"`
	ICMPRate  *int   `yaml:"icmp_rate"`
}

type rawLeasequery struct {
	Servers     []string `yaml:"servers"`
	Port        *int     `yaml:"port"`
	Query       string   `yaml:"query"`
	PerLink     bool     `yaml:"per_link"`
	RemoteID    string   `yaml:"remote_id"`
	OnStart     *bool    `yaml:"on_start"`
	ConnTimeout string   `yaml:"conn_timeout"`
	DataTimeout string   `yaml:"data_timeout"`
	MaxRetry    string   `yaml:"max_retry"`
}

type rawRelease struct {
	Mode         string             `yaml:"mode"`
	Server       string             `yaml:"server"`
	Timeout      string             `yaml:"timeout"`
	MaxRC        *int               `yaml:"max_rc"`
	Triggers     rawReleaseTriggers `yaml:"triggers"`
	MessageTypes rawReleaseTypes    `yaml:"message_types"`
}

type rawReleaseTriggers struct {
	Operator          *bool  `yaml:"operator"`
	ClientReplaced    *bool  `yaml:"client_replaced"`
	ClientMoved       *bool  `yaml:"client_moved"`
	ClientUnavailable string `yaml:"client_unavailable"`
}

type rawReleaseTypes struct {
	Request *int `yaml:"request"`
	Reply   *int `yaml:"reply"`
}

// maxSocketPath is the longest path a unix socket address holds
// (sun_path is 108 bytes with the terminating NUL).
const maxSocketPath = 107

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warn": slog.LevelWarn, "error": slog.LevelError,
}

func (r *rawConfig) validate() (*Config, error) {
	var errs errList
	c := &Config{MetricsListen: r.MetricsListen}

	if r.StateDir == "" {
		errs.add("state_dir", "required")
	} else {
		c.StateDir = filepath.Clean(r.StateDir)
	}
	switch {
	case r.APISocket != "":
		c.APISocket = filepath.Clean(r.APISocket)
		if len(c.APISocket) > maxSocketPath {
			errs.add("api_socket", "%q is longer than a unix socket path may be (%d bytes)", r.APISocket, maxSocketPath)
		}
	default:
		c.APISocket = DefaultAPISocket
	}
	if r.MetricsListen != "" {
		checkHostPort("metrics_listen", r.MetricsListen, &errs)
	}
	if r.RelayID != "" {
		id, err := ParseDUID(r.RelayID)
		if err != nil {
			errs.add("relay_id", "%q is not a DUID in hex: %v", r.RelayID, err)
		}
		c.RelayID = id
	}

	c.Uplink = r.Uplink.validate(&errs)

	if len(r.Servers) == 0 {
		errs.add("servers", "at least one server address is required")
	}
	seenServer := make(map[netip.Addr]int)
	for i, s := range r.Servers {
		key := fmt.Sprintf("servers[%d]", i)
		a, ok := parseAddr(key, s, &errs)
		if !ok {
			continue
		}
		if a, ok = serverAddr(key, s, a, c.Uplink.Interface, &errs); !ok {
			continue
		}
		if j, dup := seenServer[a]; dup {
			errs.add(key, "%q is also servers[%d]", s, j)
			continue
		}
		seenServer[a] = i
		c.Servers = append(c.Servers, a)
	}
	c.TrustedServers = prefixList("trusted_servers", r.TrustedServers, &errs, func(key, s string, p netip.Prefix) bool {
		switch {
		case p.Bits() == 0:
			errs.add(key, "%q would trust every address; name the servers' prefixes", s)
		case p.Addr().IsMulticast():
			errs.add(key, "%q is multicast; a Relay-Reply comes from a unicast address", s)
		default:
			return true
		}
		return false
	})
	for i, a := range c.Servers {
		if a.IsMulticast() && len(c.TrustedServers) == 0 && len(r.TrustedServers) == 0 {
			errs.add(fmt.Sprintf("servers[%d]", i),
				"%q is a multicast group, and trusted_servers is not set: the servers answer from their own "+
					"addresses, so list their prefixes in trusted_servers (a Relay-Reply from anywhere else is dropped)", a.WithZone(""))
		}
	}
	c.DelegatedLengths = DefaultDelegatedLengths
	if r.DelegatedLen != "" {
		if lr, err := parseLengthRange(r.DelegatedLen); err != nil {
			errs.add("delegated_lengths", "%q %v", r.DelegatedLen, err)
		} else {
			c.DelegatedLengths = lr
		}
	}
	c.DelegatedPools = pools("delegated_pools", r.DelegatedPools, c.DelegatedLengths, &errs)
	c.ServerPort = DefaultServerPort
	if r.ServerPort != nil {
		if p := *r.ServerPort; p < 1 || p > 65535 {
			errs.add("server_port", "%d is not a UDP port (1..65535)", p)
		} else {
			c.ServerPort = uint16(p)
		}
	}

	c.Downlinks = validateDownlinks(r.Downlinks, c.Uplink.Interface, c.DelegatedLengths, &errs)

	c.Dataplane.Mode = DefaultDataplaneMode
	if m := DataplaneMode(r.Dataplane.Mode); m != "" {
		switch m {
		case DataplaneKernel, DataplaneXDP, DataplaneXDPGeneric, DataplaneOff:
			c.Dataplane.Mode = m
		default:
			errs.add("dataplane.mode", "%q is not one of kernel, xdp, xdp-generic, off", r.Dataplane.Mode)
		}
	}
	c.Dataplane.Queues = DefaultQueues
	if q := r.Dataplane.Queues; q != nil {
		if *q < 1 || *q > MaxQueues {
			errs.add("dataplane.queues", "%d is not a number of queues (1..%d)", *q, MaxQueues)
		} else {
			c.Dataplane.Queues = *q
		}
	}
	c.Dataplane.FrameSize = DefaultFrameSize
	if f := r.Dataplane.FrameSize; f != nil {
		if *f != 2048 && *f != 4096 {
			errs.add("dataplane.frame_size", "%d is not one of 2048, 4096", *f)
		} else {
			c.Dataplane.FrameSize = *f
		}
	}
	c.Dataplane.ICMPRate = DefaultICMPRate
	if n := r.Dataplane.ICMPRate; n != nil {
		if *n < 0 || *n > MaxICMPRate {
			errs.add("dataplane.icmp_rate", "%d is not a rate of 0..%d per second (0 sends none)", *n, MaxICMPRate)
		} else {
			c.Dataplane.ICMPRate = *n
		}
	}

	c.Kernel = r.Kernel.validate(&errs)
	c.Leasequery = r.Leasequery.validate(c, &errs)
	c.Release = r.Release.validate(c, &errs)
	c.BGP = r.BGP.validate(&errs)

	c.LogLevel = DefaultLogLevel
	if r.LogLevel != "" {
		l, ok := logLevels[r.LogLevel]
		if !ok {
			errs.add("log_level", "%q is not one of debug, info, warn, error", r.LogLevel)
		}
		c.LogLevel = l
	}

	if err := errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

func (u *rawUplink) validate(errs *errList) Uplink {
	out := Uplink{Interface: u.Interface, NoRoute: DefaultNoRoute}
	checkIfName("uplink.interface", u.Interface, errs)
	switch nr := NoRoutePolicy(u.NoRoute); nr {
	case "":
	case NoRoutePass, NoRouteDrop:
		out.NoRoute = nr
	default:
		errs.add("uplink.no_route", "%q is not one of pass, drop", u.NoRoute)
	}
	if u.Gateway == "" {
		return out
	}
	a, ok := parseAddr("uplink.gateway", u.Gateway, errs)
	if !ok {
		return out
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		errs.add("uplink.gateway", "%q is not a unicast address", u.Gateway)
		return out
	}
	if z := a.Zone(); z != "" {
		if !a.IsLinkLocalUnicast() {
			errs.add("uplink.gateway", "%q has a zone but is not link-local", u.Gateway)
			return out
		}
		if z != u.Interface {
			errs.add("uplink.gateway", "%q: the zone is not the uplink interface %q", u.Gateway, u.Interface)
			return out
		}
	}
	if a.IsLinkLocalUnicast() {
		a = a.WithZone(u.Interface)
	}
	out.Gateway = a
	return out
}

// serverAddr checks a server address and gives a link-local one the uplink
// as zone when it has none.
func serverAddr(key, s string, a netip.Addr, uplink string, errs *errList) (netip.Addr, bool) {
	linkLocal := a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()
	switch {
	case a.IsUnspecified():
		errs.add(key, "%q is not a server address", s)
		return a, false
	case a.IsInterfaceLocalMulticast():
		errs.add(key, "%q is an interface-local multicast group, which no server can be in", s)
		return a, false
	case a.Zone() != "" && !linkLocal:
		errs.add(key, "%q has a zone but is not link-local", s)
		return a, false
	case a.Zone() == "" && linkLocal:
		a = a.WithZone(uplink)
	}
	return a, true
}

func validateDownlinks(raws []rawDownlink, uplink string, lengths LengthRange, errs *errList) []Downlink {
	if len(raws) == 0 {
		errs.add("downlinks", "at least one downlink is required")
		return nil
	}
	out := make([]Downlink, 0, len(raws))
	byName := make(map[string]int)
	byID := make(map[string]int)
	byLink := make(map[netip.Addr]int)
	for i, r := range raws {
		key := func(k string) string { return fmt.Sprintf("downlinks[%d].%s", i, k) }
		d := Downlink{
			Interface:           r.Interface,
			InterfaceID:         r.Interface,
			LinkType:            DefaultLinkType,
			MaxDelegations:      DefaultMaxDelegations,
			MaxPerClient:        DefaultMaxPerClient,
			UniqueClient:        r.UniqueClient,
			LoopPolicy:          DefaultLoopPolicy,
			LoopICMP:            r.LoopICMP,
			TrustReleaseRequest: r.TrustReleaseRequest,
			TrustRelayForward:   r.TrustRelayForward,
		}
		if checkIfName(key("interface"), r.Interface, errs) {
			if j, dup := byName[r.Interface]; dup {
				errs.add(key("interface"), "%q is also downlinks[%d].interface", r.Interface, j)
			} else {
				byName[r.Interface] = i
			}
			if r.Interface == uplink {
				errs.add(key("interface"), "%q is the uplink interface", r.Interface)
			}
		}
		if r.LinkAddress != "" {
			if a, ok := parseAddr(key("link_address"), r.LinkAddress, errs); ok {
				if !a.IsGlobalUnicast() || a.Zone() != "" {
					errs.add(key("link_address"), "%q is not a global unicast address", r.LinkAddress)
				} else if j, dup := byLink[a]; dup {
					errs.add(key("link_address"), "%q is also downlinks[%d].link_address", r.LinkAddress, j)
				} else {
					byLink[a] = i
					d.LinkAddress = a
				}
			}
		}
		idNote := " (the default: the interface name)"
		if r.InterfaceID != nil {
			d.InterfaceID, idNote = *r.InterfaceID, ""
			switch {
			case d.InterfaceID == "":
				errs.add(key("interface_id"), "must not be empty; leave the key out to use the interface name")
			case len(d.InterfaceID) > 255:
				errs.add(key("interface_id"), "%q is longer than 255 bytes", d.InterfaceID)
			}
		}
		if d.InterfaceID != "" {
			if j, dup := byID[d.InterfaceID]; dup {
				errs.add(key("interface_id"), "%q%s is also the interface_id of downlinks[%d]", d.InterfaceID, idNote, j)
			} else {
				byID[d.InterfaceID] = i
			}
		}
		switch lt := LinkType(r.LinkType); lt {
		case "":
		case PointToPoint, MultiAccess:
			d.LinkType = lt
		default:
			errs.add(key("link_type"), "%q is not one of point-to-point, multi-access", r.LinkType)
		}
		d.MaxDelegations = limit(key("max_delegations"), r.MaxDelegations, DefaultMaxDelegations, errs)
		d.MaxPerClient = limit(key("max_per_client"), r.MaxPerClient, DefaultMaxPerClient, errs)
		switch lp := LoopPolicy(r.LoopPolicy); lp {
		case "":
		case LoopDrop, LoopForward:
			d.LoopPolicy = lp
		default:
			errs.add(key("loop_policy"), "%q is not one of drop, forward", r.LoopPolicy)
		}
		d.AllowedSources = prefixList(key("allowed_sources"), r.AllowedSources, errs, nil)
		d.DelegatedPools = pools(key("delegated_pools"), r.DelegatedPools, lengths, errs)
		d.MaxClientRate = DefaultMaxClientRate
		if v := r.MaxClientRate; v != nil {
			if *v < 0 || *v > MaxClientRate {
				errs.add(key("max_client_rate"), "%d is not a rate of 0..%d messages a second (0: no limit)", *v, MaxClientRate)
			} else {
				d.MaxClientRate = *v
			}
		}
		d.MaxClientBurst = 2 * d.MaxClientRate
		if v := r.MaxClientBurst; v != nil {
			if *v < 1 || *v > MaxClientRate {
				errs.add(key("max_client_burst"), "%d is not a burst of 1..%d messages", *v, MaxClientRate)
			} else {
				d.MaxClientBurst = *v
			}
		}
		d.LoopOverrides = loopOverrides(key("loop_overrides"), r.LoopOverrides, errs)
		out = append(out, d)
	}
	return out
}

// loopOverrides validates the loop_overrides of one downlink, at key.
func loopOverrides(key string, raws []rawLoopOverride, errs *errList) []LoopOverride {
	var out []LoopOverride
	byClient := make(map[string]int)
	byPrefix := make(map[netip.Prefix]int)
	for i, r := range raws {
		ok := true
		ik := fmt.Sprintf("%s[%d]", key, i)
		k := func(name string) string { return ik + "." + name }
		var o LoopOverride
		switch {
		case (r.Client == nil) == (r.Prefix == nil):
			errs.add(ik, "needs exactly one of client, prefix")
			ok = false
		case r.Client != nil:
			id, err := ParseDUID(*r.Client)
			if err != nil {
				errs.add(k("client"), "%q is not a DUID in hex: %v", *r.Client, err)
				ok = false
				break
			}
			if j, dup := byClient[string(id)]; dup {
				errs.add(k("client"), "%q is also loop_overrides[%d].client", *r.Client, j)
				ok = false
				break
			}
			byClient[string(id)] = i
			o.Client = id
		default:
			s := *r.Prefix
			p, err := netip.ParsePrefix(s)
			switch {
			case err != nil || !p.Addr().Is6() || p.Addr().Is4In6():
				errs.add(k("prefix"), "%q is not an IPv6 prefix", s)
				ok = false
			case p != p.Masked():
				errs.add(k("prefix"), "%q has bits set past the prefix length; did you mean %s?", s, p.Masked())
				ok = false
			default:
				if j, dup := byPrefix[p]; dup {
					errs.add(k("prefix"), "%q is also loop_overrides[%d].prefix", s, j)
					ok = false
					break
				}
				byPrefix[p] = i
				o.Prefix = p
			}
		}
		switch lp := LoopPolicy(r.Policy); lp {
		case "":
			errs.add(k("policy"), "required: drop or forward")
			ok = false
		case LoopDrop, LoopForward:
			o.Policy = lp
		default:
			errs.add(k("policy"), "%q is not one of drop, forward", r.Policy)
			ok = false
		}
		if ok {
			out = append(out, o)
		}
	}
	return out
}

// prefixList parses a list of IPv6 prefixes at key, refusing bits set past
// the length and repeats; check, when given, refuses more (it adds its own
// error and returns false).
func prefixList(key string, raws []string, errs *errList, check func(key, s string, p netip.Prefix) bool) []netip.Prefix {
	var out []netip.Prefix
	seen := make(map[netip.Prefix]int)
	for k, s := range raws {
		ik := fmt.Sprintf("%s[%d]", key, k)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil || !p.Addr().Is6() || p.Addr().Is4In6():
			errs.add(ik, "%q is not an IPv6 prefix", s)
		case p != p.Masked():
			errs.add(ik, "%q has bits set past the prefix length; did you mean %s?", s, p.Masked())
		default:
			if j, dup := seen[p]; dup {
				errs.add(ik, "%q is also %s[%d]", s, key, j)
				continue
			}
			seen[p] = k
			if check == nil || check(ik, s, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// pools parses delegated_pools at key: unicast prefixes no longer than
// the longest delegated length (a longer pool could hold no delegation).
func pools(key string, raws []string, lengths LengthRange, errs *errList) []netip.Prefix {
	return prefixList(key, raws, errs, func(k, s string, p netip.Prefix) bool {
		if r := binding.ReservedOverlap(p); r.IsValid() {
			errs.add(k, "%q overlaps %s, which is never delegated", s, r)
			return false
		}
		if p.Bits() > lengths.Max {
			errs.add(k, "%q is longer than the longest delegated length (delegated_lengths %s)", s, lengths)
			return false
		}
		return true
	})
}

// parseLengthRange parses "N" or "MIN-MAX", prefix lengths 1..128.
func parseLengthRange(s string) (LengthRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	switch {
	case err1 != nil || err2 != nil:
		return LengthRange{}, errors.New("is not a prefix length or a range of them (for example 48-64)")
	case a < 1 || b > 128:
		return LengthRange{}, errors.New("is outside 1..128")
	case a > b:
		return LengthRange{}, errors.New("runs backwards; write MIN-MAX")
	}
	return LengthRange{Min: a, Max: b}, nil
}

func limit(key string, v *int, def int, errs *errList) int {
	if v == nil {
		return def
	}
	if *v < 0 {
		errs.add(key, "%d is negative; use 0 for unlimited", *v)
		return def
	}
	return *v
}

func releaseType(key string, v *int, def dhcp6.MessageType, errs *errList) dhcp6.MessageType {
	if v == nil {
		return def
	}
	switch t := *v; {
	case t < 1 || t > 255:
		errs.add(key, "%d is not a message type (1..255)", t)
	case t <= LastAssignedMessageType:
		errs.add(key, "%d is assigned by IANA (%s); choose an unassigned type, %d..255",
			t, dhcp6.MessageType(t), LastAssignedMessageType+1)
	default:
		return dhcp6.MessageType(t)
	}
	return 0
}

// checkIfName reports whether name is a valid Linux interface name.
func checkIfName(key, name string, errs *errList) bool {
	switch {
	case name == "":
		errs.add(key, "required")
	case len(name) > 15:
		errs.add(key, "%q is longer than 15 characters, the limit of an interface name", name)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r\v\f"):
		errs.add(key, "%q is not a valid interface name", name)
	default:
		return true
	}
	return false
}

// parseAddr parses an IPv6 address, refusing IPv4 in either form.
func parseAddr(key, s string, errs *errList) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() {
		errs.add(key, "%q is not an IPv6 address", s)
		return netip.Addr{}, false
	}
	return a, true
}

func checkHostPort(key, s string, errs *errList) {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		errs.add(key, "%q is not host:port", s)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		errs.add(key, "%q: %q is not a TCP port (1..65535)", s, port)
	}
}

// DUID sizes: a 2-byte type and up to 128 bytes of identifier (RFC 8415
// section 11.1).
const (
	MinDUIDLen = 2
	MaxDUIDLen = 130
)

// ParseDUID parses a DUID written in hex, either plain ("000100015f...")
// or with colons between bytes ("00:01:00:01:5f:..."), as relay_id and the
// operator commands take it.
func ParseDUID(s string) ([]byte, error) {
	var b []byte
	if strings.Contains(s, ":") {
		for part := range strings.SplitSeq(s, ":") {
			if len(part) != 2 {
				return nil, errors.New("with colons, each byte must be two hex digits")
			}
			x, err := hex.DecodeString(part)
			if err != nil {
				return nil, fmt.Errorf("%q is not a hex byte", part)
			}
			b = append(b, x[0])
		}
	} else {
		var err error
		if b, err = hex.DecodeString(s); err != nil {
			if errors.Is(err, hex.ErrLength) {
				return nil, errors.New("odd number of hex digits")
			}
			return nil, errors.New("not hex digits")
		}
	}
	if len(b) < MinDUIDLen || len(b) > MaxDUIDLen {
		return nil, fmt.Errorf("%d bytes; a DUID is %d to %d", len(b), MinDUIDLen, MaxDUIDLen)
	}
	return b, nil
}

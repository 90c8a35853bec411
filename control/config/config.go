package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"

	"gopkg.in/yaml.v3"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Defaults of keys left out.
const (
	DefaultAPISocket      = "/run/pdrelay/pdrelay.sock" // where `pdrelay bindings` looks by default
	DefaultServerPort     = 547
	DefaultMaxPerClient   = 8 // RFC 8987 G-7
	DefaultLinkType       = PointToPoint
	DefaultLoopPolicy     = LoopDrop
	DefaultDataplaneMode  = DataplaneKernel
	DefaultNoRoute        = NoRoutePass
	DefaultQueues         = 1    // AF_XDP queues per port
	DefaultFrameSize      = 2048 // UMEM frame bytes
	DefaultICMPRate       = 100  // ICMPv6 errors per second per port
	DefaultLogLevel       = slog.LevelInfo
	DefaultReleaseRequest = dhcp6.MessageType(250) // experimental, unassigned
	DefaultReleaseReply   = dhcp6.MessageType(251) // experimental, unassigned
	// DefaultMaxClientRate and DefaultMaxClientBurst bound the client
	// messages one downlink relays: 100 a second on average, 200 back to
	// back. A subscriber's router sends 2-4 messages an exchange and
	// retransmits what is lost; a port of a few hundred clients that all
	// restart at once is served within seconds.
	DefaultMaxClientRate  = 100
	DefaultMaxClientBurst = 200
)

// DefaultDelegatedLengths is the range of prefix lengths a server may
// delegate unless delegated_lengths says otherwise: /32 (a large
// customer) to /64 (one subnet).
var DefaultDelegatedLengths = LengthRange{Min: 32, Max: 64}

// DefaultMaxDelegations bounds the prefixes one port may hold (RFC 8987
// G-6). It is high enough not to bite a real access port, even a
// multi-access one, and low enough that one port cannot exhaust the relay
// (RFC 8987 section 6). 0 in the config means unlimited.
const DefaultMaxDelegations = 4096

// Upper bounds of dataplane keys: far above any real setting, low enough
// that a typo cannot make the relay try to allocate the machine away.
const (
	MaxQueues     = 1024
	MaxICMPRate   = 1_000_000
	MaxClientRate = 1_000_000
)

// LastAssignedMessageType is the highest DHCPv6 message type IANA has
// assigned (37, RFC 9686); the RELEASE-REQUEST types must lie above it.
const LastAssignedMessageType = 37

// Config is a validated configuration with every default applied.
type Config struct {
	StateDir      string
	APISocket     string // never empty
	MetricsListen string // host:port; empty: no metrics listener
	// RelayID is the relay's DUID; nil when the config leaves it to the
	// caller to generate and persist one.
	RelayID []byte
	// Servers are where Relay-Forwards go. Link-local ones carry a zone:
	// the one configured, or the uplink interface.
	Servers    []netip.Addr
	ServerPort uint16
	// TrustedServers are prefixes whose addresses may send Relay-Replies
	// besides the unicast Servers (trusted_servers); required when a
	// server is a multicast group.
	TrustedServers []netip.Prefix
	// DelegatedLengths are the prefix lengths a delegation may have.
	DelegatedLengths LengthRange
	// DelegatedPools, when not empty, are where every delegated prefix
	// must lie, on downlinks without pools of their own.
	DelegatedPools []netip.Prefix
	Uplink         Uplink
	Downlinks      []Downlink
	Dataplane      Dataplane
	Kernel         Kernel // dataplane.mode kernel (kernel.go)
	Leasequery     Leasequery
	Release        Release
	LogLevel       slog.Level
	// BGP announces the delegated prefixes (RFC 8987 R-4); nil without
	// the bgp key.
	BGP *BGP
}

// Uplink is the port towards the servers and the operator network.
type Uplink struct {
	Interface string
	// Gateway is the next hop for traffic leaving by the uplink; the zero
	// Addr when not configured. A link-local gateway carries the uplink's
	// interface as zone.
	Gateway netip.Addr
	// NoRoute says what becomes of traffic arriving on the uplink for an
	// address no delegated route covers.
	NoRoute NoRoutePolicy
}

// Downlink is a port towards subscribers.
type Downlink struct {
	Interface string
	// LinkAddress is the Relay-Forward link-address; the zero Addr when not
	// configured (the relay then sends ::).
	LinkAddress netip.Addr
	// InterfaceID is the Interface-ID option data; the interface name
	// unless configured.
	InterfaceID         string
	LinkType            LinkType
	MaxDelegations      int // 0 = unlimited
	MaxPerClient        int // 0 = unlimited
	UniqueClient        bool
	LoopPolicy          LoopPolicy
	LoopICMP            bool
	TrustReleaseRequest bool
	// TrustRelayForward relays Relay-Forward messages arriving on the
	// port (an LDRA, RFC 6221, or a relay below); without it they are
	// dropped, so a subscriber cannot forge relay options.
	TrustRelayForward bool
	// MaxClientRate and MaxClientBurst limit the client messages the port
	// relays: MaxClientRate a second on average, MaxClientBurst back to
	// back. MaxClientRate 0 means no limit.
	MaxClientRate  int
	MaxClientBurst int
	// DelegatedPools, when not empty, replace the global DelegatedPools
	// for this port.
	DelegatedPools []netip.Prefix
	// AllowedSources are source prefixes accepted from the port besides
	// its delegated prefixes; masked, IPv6.
	AllowedSources []netip.Prefix
	// LoopOverrides replace LoopPolicy for some clients or destinations
	// (RFC 8987 R-5); LoopPolicyFor applies them. No two name the same
	// client, nor the same prefix.
	LoopOverrides []LoopOverride
}

// LoopOverride is a loop policy for one client or one destination prefix
// on a downlink. Exactly one of Client and Prefix is set.
type LoopOverride struct {
	Client []byte       // a client DUID; nil for a prefix override
	Prefix netip.Prefix // masked, IPv6; the zero Prefix for a client override
	Policy LoopPolicy
}

// LengthRange is an inclusive range of prefix lengths.
type LengthRange struct{ Min, Max int }

// Contains reports whether bits lies in the range.
func (r LengthRange) Contains(bits int) bool { return bits >= r.Min && bits <= r.Max }

func (r LengthRange) String() string {
	if r.Min == r.Max {
		return fmt.Sprint(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Pools returns the pools delegations on downlink d must lie in: its own,
// else the global ones; nil means anywhere.
func (c *Config) Pools(d *Downlink) []netip.Prefix {
	if len(d.DelegatedPools) > 0 {
		return d.DelegatedPools
	}
	return c.DelegatedPools
}

// Limits returns the port's binding limits.
func (d Downlink) Limits() binding.PortLimits {
	return binding.PortLimits{
		MaxPerClient:   d.MaxPerClient,
		MaxDelegations: d.MaxDelegations,
		UniqueClient:   d.UniqueClient,
	}
}

// PortLimits returns each downlink's limits by interface name, as
// binding.NewTable takes them.
func (c *Config) PortLimits() map[string]binding.PortLimits {
	m := make(map[string]binding.PortLimits, len(c.Downlinks))
	for _, d := range c.Downlinks {
		m[d.Interface] = d.Limits()
	}
	return m
}

// Dataplane configures the AF_XDP forwarding plane.
type Dataplane struct {
	Mode      DataplaneMode
	Queues    int // AF_XDP queues (and sockets) per port, 1..MaxQueues
	FrameSize int // UMEM frame size in bytes: 2048 or 4096
	// ICMPRate bounds the ICMPv6 errors the dataplane sends per second
	// per port; 0 sends none.
	ICMPRate int
}

// ReleaseTypes holds the message types of the relay-initiated-release
// draft, which has no IANA numbers: the defaults are experimental.
type ReleaseTypes struct {
	Request dhcp6.MessageType
	Reply   dhcp6.MessageType
}

// LinkType is a downlink's kind of link.
type LinkType string

// Link types.
const (
	PointToPoint LinkType = "point-to-point"
	MultiAccess  LinkType = "multi-access"
)

// LoopPolicy says what the dataplane does with a packet that would leave
// by the port it came in on.
type LoopPolicy string

// Loop policies.
const (
	LoopDrop    LoopPolicy = "drop"
	LoopForward LoopPolicy = "forward"
)

// NoRoutePolicy says what the dataplane does with a packet from the uplink
// whose destination no delegated route covers.
type NoRoutePolicy string

// No-route policies.
const (
	NoRoutePass NoRoutePolicy = "pass" // hand it to the kernel's stack
	NoRouteDrop NoRoutePolicy = "drop" // drop and count it
)

// DataplaneMode selects how the forwarding plane attaches.
type DataplaneMode string

// Dataplane modes.
const (
	DataplaneKernel     DataplaneMode = "kernel"      // the kernel forwards; pdrelay writes its routes
	DataplaneXDP        DataplaneMode = "xdp"         // native (driver) XDP
	DataplaneXDPGeneric DataplaneMode = "xdp-generic" // generic (skb) XDP
	DataplaneOff        DataplaneMode = "off"         // no forwarding plane
)

// Error is one problem in a config, named by its key path such as
// "downlinks[1].link_type".
type Error struct {
	Key string
	Msg string // what is wrong, quoting the bad value
}

func (e *Error) Error() string {
	if e.Key == "" {
		return "config: " + e.Msg
	}
	return "config: " + e.Key + ": " + e.Msg
}

type errList []error

func (l *errList) add(key, format string, args ...any) {
	*l = append(*l, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// maxErrors is how many problems one error reports.
const maxErrors = 50

func (l errList) err() error {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return l[0]
	}
	if len(l) > maxErrors {
		more := len(l) - maxErrors
		l = append(l[:maxErrors:maxErrors], &Error{Msg: fmt.Sprintf("and %d more problems", more)})
	}
	return errors.Join(l...)
}

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data)
}

// Parse parses and validates a YAML config.
func Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// An empty file: every required key is missing.
	case err != nil:
		return nil, fmt.Errorf("config: %w", err)
	default:
		var more yaml.Node
		switch err := dec.Decode(&more); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return nil, fmt.Errorf("config: %w", err)
		default:
			return nil, &Error{Msg: fmt.Sprintf("more than one YAML document (line %d)", more.Line)}
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		var errs errList
		checkShape(root, reflect.TypeFor[rawConfig](), "", &errs)
		if err := errs.err(); err != nil {
			return nil, err
		}
	}
	// The shape is known good; decode it, with yaml.v3's own refusal of
	// unknown keys as a second guard.
	var raw rawConfig
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %w", err)
	}
	return raw.validate()
}

package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/pdrelay/pdrelay/fib"
)

// PortConfig is one forwarding port as the dataplane sees it.
type PortConfig struct {
	ID     fib.PortID
	Uplink bool // the operator-facing port: no source filter, no loop policy
	// MAC is the port's own link-layer address: the source MAC of every
	// frame sent out of it.
	MAC [6]byte
	// LinkLocal is the port's link-local address: the source of the ICMPv6
	// errors sent on it unless ICMPSource is set.
	LinkLocal netip.Addr
	// ICMPSource, if valid, is the source of the ICMPv6 errors sent on the
	// port instead of LinkLocal. Set it to a global address of the relay
	// when clients route a LAN behind them: the looping packet then comes
	// from a host behind the client, and the client (a router) must not
	// forward a packet with a link-local source to it (RFC 4291 2.5.6).
	ICMPSource netip.Addr
	// MultiAccess is link_type multi-access (else point-to-point); it
	// changes what is a loop (RFC 8987 R-5).
	MultiAccess bool
	// Loop is the port's loop policy (loop_policy): LoopDrop or
	// LoopForward; LoopDefault means LoopDrop.
	Loop fib.LoopPolicy
	// LoopICMP answers looping packets that are dropped with an ICMPv6
	// Destination Unreachable, code 6 (reject route to destination), rate
	// limited (loop_icmp).
	LoopICMP bool
	// NoRoutePass: on an uplink, a destination that no delegated prefix
	// holds goes to the kernel (true) or is dropped (false).
	NoRoutePass bool
	// CompleteChecksums: a frame from this port that is forwarded gets a
	// partial UDP or TCP checksum completed (see csum.go), counted as
	// ChecksumCompleted on this port. Set it on ports whose driver can
	// hand over partial checksums (veth, tun and other virtual devices);
	// frames to the kernel, drops and ICMPv6 errors are never touched.
	CompleteChecksums bool
}

// LoopOverride sets the loop policy for looping packets whose destination
// lies in Prefix (RFC 8987 R-5, per destination). The longest matching
// override wins over the per-client policy (fib.Route.Loop) and the port's.
type LoopOverride struct {
	Prefix netip.Prefix
	Policy fib.LoopPolicy // LoopDrop or LoopForward
}

// Config is what New needs.
type Config struct {
	Ports         []PortConfig
	LoopOverrides []LoopOverride
	// ICMPRate and ICMPBurst set each port's token bucket for ICMPv6
	// errors (RFC 4443 2.4(f)): ICMPRate per second on average, at most
	// ICMPBurst back to back. Zero means the default, 100 per second with a
	// burst of 10.
	ICMPRate, ICMPBurst int
}

// Defaults of Config.
const (
	DefaultICMPRate  = 100
	DefaultICMPBurst = 10
)

// ErrConfig is wrapped by every error New returns.
var ErrConfig = errors.New("invalid dataplane config")

// port is a configured port as the packet path uses it.
type port struct {
	id          fib.PortID
	uplink      bool
	multiAccess bool
	loopICMP    bool
	noRoutePass bool
	csum        bool
	loop        fib.LoopPolicy // LoopDrop or LoopForward
	mac         [6]byte
	icmpSrc     [16]byte
	lim         limiter
}

// shared is what all Forwarders cloned from one New share: the
// configuration (immutable), the published counters and the ICMP rate
// limiters (atomic).
type shared struct {
	idx       []uint16 // port ID → index in ports + 1; 0: not configured
	ports     []port
	overrides overrides
	totals    []sharedCounts // by port index; the last is NoPort
}

// New checks cfg and returns a Forwarder for one worker goroutine; Clone
// gives more. It refuses duplicate or reserved port IDs, unknown loop
// policies, LoopICMP without a usable IPv6 source address, bad override
// prefixes and negative rates.
func New(cfg Config) (*Forwarder, error) {
	if len(cfg.Ports) == 0 {
		return nil, fmt.Errorf("%w: no ports", ErrConfig)
	}
	rate, burst := cfg.ICMPRate, cfg.ICMPBurst
	if rate < 0 || burst < 0 {
		return nil, fmt.Errorf("%w: icmp rate %d burst %d: must not be negative", ErrConfig, rate, burst)
	}
	if rate == 0 {
		rate = DefaultICMPRate
	}
	if burst == 0 {
		burst = DefaultICMPBurst
	}
	s := &shared{ports: make([]port, len(cfg.Ports))}
	maxID := 0
	for _, pc := range cfg.Ports {
		maxID = max(maxID, int(pc.ID))
	}
	s.idx = make([]uint16, maxID+1)
	for i, pc := range cfg.Ports {
		if pc.ID == NoPort {
			return nil, fmt.Errorf("%w: port id %d is reserved", ErrConfig, pc.ID)
		}
		if s.idx[pc.ID] != 0 {
			return nil, fmt.Errorf("%w: port %d configured twice", ErrConfig, pc.ID)
		}
		s.idx[pc.ID] = uint16(i + 1)
		p := &s.ports[i]
		p.id, p.uplink, p.multiAccess = pc.ID, pc.Uplink, pc.MultiAccess
		p.loopICMP, p.noRoutePass, p.mac = pc.LoopICMP, pc.NoRoutePass, pc.MAC
		p.csum = pc.CompleteChecksums
		switch pc.Loop {
		case fib.LoopDefault, fib.LoopDrop:
			p.loop = fib.LoopDrop
		case fib.LoopForward:
			p.loop = fib.LoopForward
		default:
			return nil, fmt.Errorf("%w: port %d: loop policy %v", ErrConfig, pc.ID, pc.Loop)
		}
		src := pc.ICMPSource
		if !src.IsValid() {
			src = pc.LinkLocal
		}
		if pc.LoopICMP {
			if !src.Is6() || src.Is4In6() || src.IsMulticast() || src.IsUnspecified() {
				return nil, fmt.Errorf("%w: port %d: loop_icmp needs an IPv6 unicast source address (link-local or icmp source), have %v", ErrConfig, pc.ID, src)
			}
			p.icmpSrc = src.As16()
		}
		p.lim.init(rate, burst)
	}
	seen := make(map[netip.Prefix]bool, len(cfg.LoopOverrides))
	os := make([]LoopOverride, 0, len(cfg.LoopOverrides))
	for _, o := range cfg.LoopOverrides {
		pfx := o.Prefix
		if !pfx.IsValid() || !pfx.Addr().Is6() || pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
			return nil, fmt.Errorf("%w: loop override prefix %v: not an IPv6 prefix", ErrConfig, pfx)
		}
		if o.Policy != fib.LoopDrop && o.Policy != fib.LoopForward {
			return nil, fmt.Errorf("%w: loop override %v: policy %v (want drop or forward)", ErrConfig, pfx, o.Policy)
		}
		pfx = pfx.Masked()
		if seen[pfx] {
			return nil, fmt.Errorf("%w: loop override %v given twice", ErrConfig, pfx)
		}
		seen[pfx] = true
		os = append(os, LoopOverride{pfx, o.Policy})
	}
	s.overrides = newOverrides(os)
	s.totals = make([]sharedCounts, len(s.ports)+1)
	return s.worker(), nil
}

// worker returns a new Forwarder on s.
func (s *shared) worker() *Forwarder {
	return &Forwarder{sh: s, counts: make([]counts, len(s.ports)+1)}
}

// Clone returns a Forwarder for another worker goroutine. It shares f's
// configuration, counter totals and ICMP rate limiters, and keeps its own
// unflushed counts. Clone may be called from any goroutine.
func (f *Forwarder) Clone() *Forwarder { return f.sh.worker() }

// index returns the index of a configured port.
func (s *shared) index(id fib.PortID) (int, bool) {
	if int(id) < len(s.idx) {
		if i := s.idx[id]; i != 0 {
			return int(i) - 1, true
		}
	}
	return 0, false
}

// slot returns the counter slot of a port: its index, or the NoPort slot.
func (s *shared) slot(id fib.PortID) int {
	if i, ok := s.index(id); ok {
		return i
	}
	return len(s.ports)
}

package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Port is a downlink port as the relay sees it.
type Port struct {
	Name        string
	Index       int        // interface index
	LinkAddr    netip.Addr // link-address for Relay-Forward; :: when unknown
	InterfaceID []byte     // Interface-ID option data; defaults to Name
	// TrustReleaseRequest lets RELEASE-REQUEST messages from this port
	// through; by default they are dropped and counted.
	TrustReleaseRequest bool
	// TrustRelayForward relays Relay-Forwards arriving on this port (an
	// LDRA, RFC 6221, or a relay below). By default they are dropped and
	// counted: a subscriber could otherwise write the Interface-ID,
	// Remote-ID or link-layer address the server trusts.
	TrustRelayForward bool
	// Addrs are the relay's addresses on the port: a client message must
	// be sent to ff02::1:2 or to one of them.
	Addrs []netip.Addr
}

// Config is the engine's configuration.
type Config struct {
	Ports []Port
	// Servers are where Relay-Forwards go; the unicast ones are trusted
	// to send Relay-Replies.
	Servers []netip.Addr
	// TrustedServers are prefixes whose addresses are trusted to send
	// Relay-Replies besides the unicast Servers.
	TrustedServers []netip.Prefix
	// AddrSource, when set, reads a port's addresses again (by interface
	// name) when a client message comes to a unicast address not in
	// Port.Addrs, at most once a second per port, so that an address added
	// since is accepted.
	AddrSource func(port string) []netip.Addr
	// RelayID is the relay's DUID, sent as OPTION_RELAY_ID (53).
	RelayID []byte
	// ReleaseRequestType is the experimental message type of the
	// relay-initiated-release draft's RELEASE-REQUEST.
	ReleaseRequestType dhcp6.MessageType
	// PendingTTL bounds how long a request waits for its Reply (default
	// 60 s); PendingMax and PendingBytes bound how many wait and the
	// memory they hold (defaults: the larger of 65536 and 64 per port,
	// and 512 bytes per entry), each port getting an equal share.
	PendingTTL   time.Duration
	PendingMax   int
	PendingBytes int
}

// Engine is the relay logic. It is owned by one goroutine.
type Engine struct {
	ports    []Port
	byIfID   map[string]int
	byLink   map[netip.Addr]int
	byName   map[string]int
	servers  map[netip.Addr]bool // the unicast ones
	trusted  []netip.Prefix
	addrs    []map[netip.Addr]bool // by port: the relay's own addresses
	addrRead []time.Time           // by port: when AddrSource last ran
	addrSrc  func(string) []netip.Addr
	relayID  []byte
	rrType   dhcp6.MessageType
	pending  pendingTable
	pendCfg  pendingConfig
	origin   originTable // messages the relay originated (originate.go)
	buf      []byte
	// serverIDs interns the servers' DUIDs: a handful of servers
	// delegate every binding, which then need not each hold a copy.
	serverIDs map[string]string
	Counters  Counters
}

// maxServerIDs bounds serverIDs. Only trusted servers' Replies are
// snooped, so it is not an attacker's to fill; past it, DUIDs are copied.
const maxServerIDs = 64

// serverID returns b as a string, interned.
func (e *Engine) serverID(b []byte) string {
	if s, ok := e.serverIDs[string(b)]; ok {
		return s
	}
	s := string(b)
	if e.serverIDs == nil {
		e.serverIDs = make(map[string]string)
	}
	if len(e.serverIDs) < maxServerIDs {
		e.serverIDs[s] = s
	}
	return s
}

// ClientPacket is a DHCPv6 message received on a downlink.
type ClientPacket struct {
	Port    int // index into Config.Ports
	SrcMAC  [6]byte
	Src     netip.Addr
	Dst     netip.Addr // ff02::1:2 or one of the port's addresses
	Payload []byte
}

// ServerPacket is a UDP payload received from the servers' side.
type ServerPacket struct {
	Src netip.Addr
	// Uplink says it arrived on the uplink interface: a Relay-Reply from
	// anywhere else is not the server's.
	Uplink  bool
	Payload []byte
}

// ToClient is a message to send on a downlink.
type ToClient struct {
	Port    int
	Dst     netip.Addr
	DstPort uint16
	Payload []byte // aliases the Relay-Reply it came in
	// Originated says the message is the server's Reply to a message the
	// relay originated (Originate): it goes back to the originator and
	// must not be sent to the client.
	Originated bool
}

// ErrDropped wraps every drop; errors.As gives the DropError.
var ErrDropped = errors.New("dropped")

// DropError says why a message was not relayed.
type DropError struct {
	Reason Drop
	Err    error
}

func (e *DropError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("dropped (%s): %v", e.Reason, e.Err)
	}
	return "dropped (" + e.Reason.String() + ")"
}

func (e *DropError) Unwrap() []error { return []error{ErrDropped, e.Err} }

// NewEngine validates cfg and returns an engine.
func NewEngine(cfg Config) (*Engine, error) {
	e, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	e.Counters.setPorts(portNames(e.ports))
	e.pending.init(cfg.PendingMax, cfg.PendingBytes, len(e.ports), cfg.PendingTTL)
	return e, nil
}

// compile validates cfg and returns an engine holding what it configures
// (ports and their indexes, servers, trust), with no state: NewEngine
// starts one from it, Reconfigure moves a running one's state into it.
// It reads nothing but cfg, so any goroutine may call it.
func compile(cfg Config) (*Engine, error) {
	e := &Engine{
		byIfID:  make(map[string]int),
		byLink:  make(map[netip.Addr]int),
		byName:  make(map[string]int),
		servers: make(map[netip.Addr]bool),
		trusted: cfg.TrustedServers,
		addrSrc: cfg.AddrSource,
		relayID: cfg.RelayID,
		rrType:  cfg.ReleaseRequestType,
		buf:     make([]byte, 0, 2048),
		pendCfg: pendingConfig{max: cfg.PendingMax, bytes: cfg.PendingBytes, ttl: cfg.PendingTTL},
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("relay: no servers")
	}
	multicast := false
	for _, s := range cfg.Servers {
		if s.IsMulticast() {
			// A group sends nothing: its members answer from their own
			// addresses, which TrustedServers must cover.
			multicast = true
			continue
		}
		e.servers[s.WithZone("")] = true
	}
	if multicast && len(e.trusted) == 0 {
		return nil, errors.New("relay: a multicast server group needs trusted server prefixes")
	}
	for i, p := range cfg.Ports {
		if len(p.InterfaceID) == 0 {
			p.InterfaceID = []byte(p.Name)
		}
		if !p.LinkAddr.IsValid() {
			p.LinkAddr = netip.IPv6Unspecified()
		}
		if _, dup := e.byName[p.Name]; dup {
			return nil, fmt.Errorf("relay: port %s configured twice", p.Name)
		}
		if _, dup := e.byIfID[string(p.InterfaceID)]; dup {
			return nil, fmt.Errorf("relay: interface-id %q used by two ports", p.InterfaceID)
		}
		e.byIfID[string(p.InterfaceID)] = i
		e.byName[p.Name] = i
		if !p.LinkAddr.IsUnspecified() {
			if j, dup := e.byLink[p.LinkAddr]; dup {
				return nil, fmt.Errorf("relay: link-address %s used by ports %s and %s", p.LinkAddr, cfg.Ports[j].Name, p.Name)
			}
			e.byLink[p.LinkAddr] = i
		}
		e.ports = append(e.ports, p)
		e.addrs = append(e.addrs, addrSet(p.Addrs))
	}
	e.addrRead = make([]time.Time, len(e.ports))
	return e, nil
}

func portNames(ps []Port) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return names
}

func addrSet(as []netip.Addr) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(as))
	for _, a := range as {
		m[a.WithZone("")] = true
	}
	return m
}

// SetAddrs replaces the relay's addresses on port i (see Port.Addrs).
func (e *Engine) SetAddrs(i int, as []netip.Addr) {
	if i >= 0 && i < len(e.ports) {
		e.addrs[i] = addrSet(as)
	}
}

// toRelay reports whether a client message sent to dst on port i is for
// the relay: to All_DHCP_Relay_Agents_and_Servers, or to one of the
// relay's addresses on the port (read again, at most once a second, when
// dst is not among them).
func (e *Engine) toRelay(now time.Time, i int, dst netip.Addr) bool {
	dst = dst.WithZone("")
	if dst == dhcp6.AllRelayAgentsAndServers {
		return true
	}
	if !dst.IsValid() || dst.IsMulticast() || dst.IsUnspecified() {
		return false
	}
	if e.addrs[i][dst] {
		return true
	}
	if e.addrSrc == nil || now.Sub(e.addrRead[i]) < time.Second {
		return false
	}
	e.addrRead[i] = now
	e.addrs[i] = addrSet(e.addrSrc(e.ports[i].Name))
	return e.addrs[i][dst]
}

// trustedServer reports whether a Relay-Reply from src may speak for the
// server: a unicast servers entry, or an address in TrustedServers.
func (e *Engine) trustedServer(src netip.Addr) bool {
	src = src.WithZone("")
	if e.servers[src] {
		return true
	}
	for _, p := range e.trusted {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (e *Engine) countPending() {
	e.Counters.pending.Store(int64(e.pending.len()))
	e.Counters.pendingBytes.Store(int64(e.pending.bytes()))
}

// PendingLen returns how many requests await their Reply, and the bytes
// they hold.
func (e *Engine) PendingLen() (n, bytes int) { return e.pending.len(), e.pending.bytes() }

// Ports returns the configured ports.
func (e *Engine) Ports() []Port { return e.ports }

func (e *Engine) drop(r Drop, err error) error {
	e.Counters.Drop(r)
	return &DropError{Reason: r, Err: err}
}

// dropPort is drop for a client message on port i.
func (e *Engine) dropPort(i int, r Drop, err error) error {
	e.Counters.DropPort(i, r)
	return &DropError{Reason: r, Err: err}
}

// HandleClient turns a message from a downlink into a Relay-Forward for the
// servers. The returned bytes live in the engine's buffer until the next
// call. upd holds what a Release relayed now removes (G-9).
func (e *Engine) HandleClient(now time.Time, pkt ClientPacket) (relayForw []byte, upd binding.Update, err error) {
	if pkt.Port < 0 || pkt.Port >= len(e.ports) {
		return nil, upd, e.drop(DropUnknownPort, nil)
	}
	i := pkt.Port
	p := &e.ports[i]
	if !e.toRelay(now, i, pkt.Dst) {
		return nil, upd, e.dropPort(i, DropBadDestination, nil)
	}
	if len(pkt.Payload) < dhcp6.HeaderLen {
		return nil, upd, e.dropPort(i, DropMalformed, dhcp6.ErrShort)
	}
	t := dhcp6.MessageType(pkt.Payload[0])
	var hops uint8
	link := p.LinkAddr
	fromRelay := false
	switch {
	case t == dhcp6.MsgRelayRepl:
		return nil, upd, e.dropPort(i, DropRelayReplyFromClient, nil)
	case t == dhcp6.MsgRelayForw:
		if !p.TrustRelayForward {
			return nil, upd, e.dropPort(i, DropRelayForwardUntrusted, nil)
		}
		r, err := dhcp6.ParseRelay(pkt.Payload)
		if err != nil {
			return nil, upd, e.dropPort(i, DropMalformed, err)
		}
		if r.HopCount >= dhcp6.HopCountLimit {
			return nil, upd, e.dropPort(i, DropHopLimit, nil)
		}
		// A RELEASE-REQUEST wrapped by a "relay" below is still one from
		// this port: without the check a client could smuggle one past it.
		if e.rrType != 0 && !p.TrustReleaseRequest {
			if in, _, err := dhcp6.Innermost(r.Inner); err == nil && len(in) > 0 && dhcp6.MessageType(in[0]) == e.rrType {
				return nil, upd, e.dropPort(i, DropReleaseRequestUntrusted, nil)
			}
		}
		hops = r.HopCount + 1
		// RFC 8415 19.1.2: a message from another relay gets link-address
		// 0; the Interface-ID identifies the port.
		link = netip.IPv6Unspecified()
		fromRelay = true
	case e.rrType != 0 && t == e.rrType && !p.TrustReleaseRequest:
		return nil, upd, e.dropPort(i, DropReleaseRequestUntrusted, nil)
	}
	e.Counters.msg(Up, t)
	e.record(now, pkt, &upd)

	var mac *[6]byte
	if !fromRelay {
		mac = &pkt.SrcMAC
	}
	e.buf = e.wrap(e.buf[:0], hops, link, pkt.Src, p.InterfaceID, mac, pkt.Payload)
	return e.buf, upd, nil
}

// wrap appends a Relay-Forward of payload: the header, Interface-ID,
// Relay-ID (when the relay has one), the client link-layer address (when
// mac is not nil) and the relay message. HandleClient and Originate both
// wrap with it, so a message the relay originates is relayed exactly as
// the client's own.
func (e *Engine) wrap(b []byte, hops uint8, link, peer netip.Addr, ifid []byte, mac *[6]byte, payload []byte) []byte {
	b = dhcp6.AppendRelayHeader(b, dhcp6.MsgRelayForw, hops, link, peer)
	b = dhcp6.AppendOption(b, dhcp6.OptInterfaceID, ifid)
	if len(e.relayID) > 0 {
		b = dhcp6.AppendOption(b, dhcp6.OptRelayID, e.relayID)
	}
	if mac != nil {
		b = dhcp6.AppendClientLinkLayer(b, *mac)
	}
	return dhcp6.AppendOption(b, dhcp6.OptRelayMsg, payload)
}

// record notes the request so its Reply can be matched, and removes the
// IA_PDs of a Release as it is relayed. Problems here never stop the
// message: it is relayed whatever the snooper makes of it.
func (e *Engine) record(now time.Time, pkt ClientPacket, upd *binding.Update) {
	inner, _, err := dhcp6.Innermost(pkt.Payload)
	if err != nil {
		e.Counters.snooped(SnoopUnparsable)
		return
	}
	m, err := dhcp6.ParseMessage(inner)
	if err != nil {
		e.Counters.snooped(SnoopUnparsable)
		return
	}
	duid, ok := m.Options.Get(dhcp6.OptClientID)
	if !ok {
		return // Information-Request may carry no client id; nothing to bind
	}
	if len(duid) > maxDUIDLen {
		e.Counters.snooped(SnoopUnparsable)
		return // not a DUID (RFC 8415 11.1); the message is relayed all the same
	}
	id := string(duid) // the pending key's, and a Release's removals'
	port := e.ports[pkt.Port].Name
	req := pending{port: pkt.Port, mac: pkt.SrcMAC, peer: pkt.Src, typ: m.Type}
	if m.Type == dhcp6.MsgRelease || m.Type == dhcp6.MsgDecline {
		reason := binding.ReasonReleased
		if m.Type == dhcp6.MsgDecline {
			reason = binding.ReasonDeclined
		}
		for o := m.Options; ; {
			code, data, rest, ok := o.Next()
			if !ok {
				break
			}
			o = rest
			if code != dhcp6.OptIAPD || len(data) < 4 {
				continue
			}
			iaid := binary.BigEndian.Uint32(data)
			req.iaids = append(req.iaids, iaid)
			if m.Type == dhcp6.MsgRelease {
				upd.RemoveIAs = append(upd.RemoveIAs, binding.RemoveIA{
					Port: port, DUID: id, IAID: iaid, Reason: reason,
				})
			}
		}
	}
	if n := e.pending.put(now, pendingKey{port: pkt.Port, xid: m.XID, duid: id}, req); n > 0 {
		e.Counters.snoop[SnoopPendingEvicted].Add(uint64(n))
	}
	e.countPending()
}

// HandleServer turns a Relay-Reply from a server into the message for the
// client side, and returns what its Reply teaches about bindings.
func (e *Engine) HandleServer(now time.Time, pkt ServerPacket) (out ToClient, upd binding.Update, err error) {
	if !pkt.Uplink || !e.trustedServer(pkt.Src) {
		return out, upd, e.drop(DropUntrustedServer, nil)
	}
	if len(pkt.Payload) == 0 || dhcp6.MessageType(pkt.Payload[0]) != dhcp6.MsgRelayRepl {
		return out, upd, e.drop(DropNotRelayReply, nil)
	}
	r, err := dhcp6.ParseRelay(pkt.Payload)
	if err != nil {
		return out, upd, e.drop(DropMalformed, err)
	}
	port := -1
	if ifid, ok := r.InterfaceID(); ok {
		if i, ok := e.byIfID[string(ifid)]; ok {
			port = i
		}
	}
	if port < 0 && !r.LinkAddr.IsUnspecified() {
		if i, ok := e.byLink[r.LinkAddr]; ok {
			port = i
		}
	}
	if port < 0 {
		return out, upd, e.drop(DropUnknownPort, nil)
	}
	if len(r.Inner) == 0 {
		return out, upd, e.drop(DropMalformed, dhcp6.ErrShort)
	}
	out = ToClient{Port: port, Dst: r.PeerAddr, DstPort: dhcp6.ClientPort, Payload: r.Inner}
	t := dhcp6.MessageType(r.Inner[0])
	if t == dhcp6.MsgRelayRepl {
		out.DstPort = dhcp6.ServerPort // for the relay below
	}
	e.Counters.msg(Down, t)
	if e.originated(now, port, r.Inner) {
		out.Originated = true // the originator decides what it means
		return out, upd, nil
	}
	e.snoop(now, port, r.PeerAddr, r.Inner, &upd)
	return out, upd, nil
}

// snoop learns from a Reply (RFC 8987 4.1, G-2, G-3, G-8, G-9): whatever
// request it answers, each IAPREFIX with a valid lifetime creates or
// updates a binding, a zero valid lifetime or an IA_PD with NoBinding
// removes, and the Reply to a Release or Decline removes the IA_PDs the
// request named.
func (e *Engine) snoop(now time.Time, port int, peer netip.Addr, msg []byte, upd *binding.Update) {
	inner, _, err := dhcp6.Innermost(msg)
	if err != nil || len(inner) == 0 {
		e.Counters.snooped(SnoopUnparsable)
		return
	}
	if dhcp6.MessageType(inner[0]) != dhcp6.MsgReply {
		return
	}
	m, err := dhcp6.ParseMessage(inner)
	if err != nil {
		e.Counters.snooped(SnoopUnparsable)
		return
	}
	duidBytes, ok := m.Options.Get(dhcp6.OptClientID)
	if !ok {
		return
	}
	duid := string(duidBytes) // one copy, for the pending key and every binding's
	portName := e.ports[port].Name
	// The port is the one the server's Relay-Reply names (our own
	// Interface-ID echoed), where the message is delivered; a request
	// from the same DUID on another port is another client (G-4).
	req, matched := e.pending.take(now, pendingKey{port: port, xid: m.XID, duid: duid})
	e.countPending()
	if !matched {
		e.Counters.snooped(SnoopUnmatched)
	}
	if matched && (req.typ == dhcp6.MsgRelease || req.typ == dhcp6.MsgDecline) {
		reason := binding.ReasonReleased
		if req.typ == dhcp6.MsgDecline {
			reason = binding.ReasonDeclined
		}
		for _, iaid := range req.iaids {
			upd.RemoveIAs = append(upd.RemoveIAs, binding.RemoveIA{
				Port: portName, DUID: duid, IAID: iaid, Reason: reason,
			})
		}
		return
	}
	if m.Status() != dhcp6.StatusSuccess {
		return // a failed exchange installs nothing
	}
	sid, _ := m.Options.Get(dhcp6.OptServerID)
	serverID := e.serverID(sid)
	for o := m.Options; ; {
		code, data, rest, ok := o.Next()
		if !ok {
			break
		}
		o = rest
		if code != dhcp6.OptIAPD {
			continue
		}
		ia, err := dhcp6.ParseIAPD(data)
		if err != nil {
			e.Counters.snooped(SnoopUnparsable)
			continue
		}
		if ia.Status() == dhcp6.StatusNoBinding {
			upd.RemoveIAs = append(upd.RemoveIAs, binding.RemoveIA{
				Port: portName, DUID: duid, IAID: ia.IAID, Reason: binding.ReasonNoBinding,
			})
			continue
		}
		for po := ia.Options; ; {
			code, data, rest, ok := po.Next()
			if !ok {
				break
			}
			po = rest
			if code != dhcp6.OptIAPrefix {
				continue
			}
			p, err := dhcp6.ParseIAPrefix(data)
			if err != nil || !p.Prefix.IsValid() {
				e.Counters.snooped(SnoopUnparsable)
				continue
			}
			key := binding.Key{Port: portName, DUID: duid, IAID: ia.IAID, Prefix: p.Prefix}
			if p.Valid == 0 {
				upd.Remove = append(upd.Remove, binding.RemoveKey{Key: key, Reason: binding.ReasonZeroValid})
				continue
			}
			l := binding.Learned{
				Key:        key,
				NextHop:    peer,
				Preferred:  seconds(p.Preferred),
				Valid:      seconds(p.Valid),
				ServerDUID: serverID,
			}
			if matched {
				l.MAC, l.MACKnown = req.mac, true
			}
			upd.Learn = append(upd.Learn, l)
		}
	}
}

func seconds(s uint32) time.Duration { return time.Duration(s) * time.Second }

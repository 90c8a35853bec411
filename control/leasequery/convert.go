package leasequery

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Reasons a client data option yields no binding, the values of the
// discarded counter's reason label. A binding the table refuses (policy,
// limits) is counted by the binding manager instead.
const (
	DropMalformed = "malformed"   // OPTION_CLIENT_DATA or what it holds does not parse
	DropNoClient  = "no-client"   // no OPTION_CLIENTID
	DropNoPort    = "no-port"     // no Interface-ID or link-address of one of the relay's downlinks
	DropNoNextHop = "no-next-hop" // no usable peer-address
	DropExpired   = "expired"     // the lifetime ran out CLT_TIME ago
	DropNoData    = "no-data"     // a LEASEQUERY-DATA without OPTION_CLIENT_DATA
)

// DropReasons lists every drop reason, for metrics.
var DropReasons = []string{DropMalformed, DropNoClient, DropNoPort, DropNoNextHop, DropExpired, DropNoData}

// DropError says why client data yields no binding; Reason is one of the
// Drop constants.
type DropError struct {
	Reason string
	Err    error
}

func (e *DropError) Error() string {
	if e.Err == nil {
		return "client data dropped: " + e.Reason
	}
	return "client data dropped: " + e.Reason + ": " + e.Err.Error()
}

func (e *DropError) Unwrap() error { return e.Err }

// Port is a downlink as the relay's Relay-Forwards name it.
type Port struct {
	Name        string
	InterfaceID []byte     // the Interface-ID option data the relay sends
	LinkAddr    netip.Addr // the link-address the relay sends; zero when ::
}

// Converter turns OPTION_CLIENT_DATA into bindings. It is read-only once
// built and safe for concurrent use.
type Converter struct {
	Ports []Port
	// RelayID is the relay's own DUID: of the layers of a relay message,
	// the one carrying it is the relay's own.
	RelayID []byte
}

// Candidate is a binding a server returned, ready for binding.Table.Learn.
// IAIDKnown is false when the server sent the prefix bare (RFC 5007
// form): the IAID is then 0 unless the table holds the prefix for the
// same port and client, whose IAID it keeps.
type Candidate struct {
	binding.Learned
	IAIDKnown bool
}

// Convert decodes one OPTION_CLIENT_DATA's data and appends a Candidate
// for each prefix that is still valid. serverID is the Server-ID of the
// query's reply; q the query it answers. Prefixes whose lifetime ran out
// CLT_TIME ago are skipped and counted in expired. An error (always a
// *DropError) means the whole client data yields nothing.
func (c *Converter) Convert(data []byte, serverID string, q *Query, dst []Candidate) (_ []Candidate, expired int, err error) {
	cd, err := dhcp6.ParseClientData(data)
	if err != nil {
		return dst, 0, &DropError{DropMalformed, err}
	}
	if len(cd.ClientID) == 0 {
		return dst, 0, &DropError{Reason: DropNoClient}
	}
	port, hop, mac, macOK, err := c.place(cd.RelayData, q)
	if err != nil {
		return dst, 0, err
	}
	base := binding.Learned{
		Key:        binding.Key{Port: port, DUID: string(cd.ClientID)},
		NextHop:    hop,
		MAC:        mac,
		MACKnown:   macOK,
		ServerDUID: serverID,
		Source:     binding.SourceLeasequery,
	}
	add := func(p dhcp6.IAPrefix, iaid uint32, known bool) {
		pref, valid, ok := lifetimes(p, cd.CLTTime)
		if !ok {
			expired++
			return
		}
		l := base
		l.Prefix, l.IAID, l.Preferred, l.Valid = p.Prefix, iaid, pref, valid
		dst = append(dst, Candidate{Learned: l, IAIDKnown: known})
	}
	for _, p := range cd.Prefixes {
		add(p, 0, false)
	}
	for _, ia := range cd.IAPDs {
		if ia.Status() != dhcp6.StatusSuccess {
			continue
		}
		for d := range ia.Options.Each(dhcp6.OptIAPrefix) {
			p, err := dhcp6.ParseIAPrefix(d)
			if err != nil {
				return dst, expired, &DropError{DropMalformed, fmt.Errorf("ia_pd %d: %w", ia.IAID, err)}
			}
			add(p, ia.IAID, true)
		}
	}
	return dst, expired, nil
}

// lifetimes returns the prefix's lifetimes as they are now, CLT_TIME
// seconds after the server last heard from the client; ok is false when
// the valid lifetime has run out. The infinity value stays infinite.
func lifetimes(p dhcp6.IAPrefix, clt uint32) (pref, valid time.Duration, ok bool) {
	left := func(v uint32) uint32 {
		switch {
		case v == 0xffffffff:
			return v
		case v <= clt:
			return 0
		}
		return v - clt
	}
	v, pr := left(p.Valid), min(left(p.Preferred), left(p.Valid)) // a preferred past the valid is the valid
	if v == 0 {
		return 0, 0, false
	}
	return time.Duration(pr) * time.Second, time.Duration(v) * time.Second, true
}

// place finds the binding's port, next hop and MAC from the relay data:
// of the relay message's layers, the one carrying the relay's own
// Relay-ID (else the outermost) names the port by its Interface-ID or its
// link-address, and carries the client's link-layer address (option 79)
// when the relay added it.
//
// The next hop is that layer's peer-address, the client's address as the
// relay saw it, and else the option's own peer-address: RFC 5007 has the
// latter be the address the server received the relayed message from,
// which for the relay nearest the client is the client's address only
// when the server rebuilt the relay data as pdrelay's lqserver does.
func (c *Converter) place(rd *dhcp6.LQRelayData, q *Query) (port string, hop netip.Addr, mac [6]byte, macOK bool, err error) {
	var layers []dhcp6.RelayLayer
	if rd != nil && len(rd.Relay) > 0 {
		var arr [4]dhcp6.RelayLayer
		layers, err = dhcp6.ParseRelayLayers(rd.Relay, arr[:0])
		if err != nil {
			return "", hop, mac, false, &DropError{DropMalformed, err}
		}
	}
	var own *dhcp6.RelayLayer
	for i := range layers {
		if id, ok := layers[i].RelayID(); ok && len(c.RelayID) > 0 && bytes.Equal(id, c.RelayID) {
			own = &layers[i]
			break
		}
	}
	if own == nil && len(layers) > 0 {
		own = &layers[0]
	}
	if own != nil {
		port = c.portOf(own)
		if p := own.PeerAddr; usable(p) {
			hop = p
		}
		mac, macOK = own.ClientLinkLayer()
	}
	if port == "" {
		port = q.Port
	}
	if port == "" {
		return "", hop, mac, false, &DropError{Reason: DropNoPort}
	}
	if !hop.IsValid() && rd != nil && usable(rd.Peer) {
		hop = rd.Peer
	}
	if !hop.IsValid() {
		return "", hop, mac, false, &DropError{Reason: DropNoNextHop}
	}
	return port, hop, mac, macOK, nil
}

// usable reports whether a is an address a route can point at.
func usable(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback()
}

// portOf returns the downlink the layer names: by Interface-ID first,
// then by link-address; "" when none.
func (c *Converter) portOf(l *dhcp6.RelayLayer) string {
	if id, ok := l.InterfaceID(); ok {
		for i := range c.Ports {
			if len(c.Ports[i].InterfaceID) > 0 && bytes.Equal(c.Ports[i].InterfaceID, id) {
				return c.Ports[i].Name
			}
		}
	}
	if l.LinkAddr.IsValid() && !l.LinkAddr.IsUnspecified() {
		for i := range c.Ports {
			if c.Ports[i].LinkAddr == l.LinkAddr {
				return c.Ports[i].Name
			}
		}
	}
	return ""
}

// dropReason returns the reason of a Convert error.
func dropReason(err error) string {
	var de *DropError
	if errors.As(err, &de) {
		return de.Reason
	}
	return DropMalformed
}

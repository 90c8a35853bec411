package leasequery

import (
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Query is one Bulk Leasequery the requestor sends (RFC 5460 section
// 5.3): its type, link-address and query options, and what it covers in
// the relay's table.
type Query struct {
	Type uint8      // dhcp6.QueryByRelayID, QueryByLinkAddress or QueryByRemoteID
	Link netip.Addr // the query's link-address; :: for "every link"
	// Options are the query-options: an OPTION_RELAY_ID or an
	// OPTION_REMOTE_ID, as a well-formed options area.
	Options []byte
	// Port is the downlink a link-address query is about: bindings the
	// answer returns without a relay message that names their port are
	// placed there, and a complete answer's stale bindings are looked
	// for only there. "" for a query about every port.
	Port string
}

// RelayIDQuery asks for every binding made through the relay with DUID
// relayID (QUERY_BY_RELAY_ID, link-address ::).
func RelayIDQuery(relayID []byte) Query {
	return Query{Type: dhcp6.QueryByRelayID, Link: netip.IPv6Unspecified(),
		Options: dhcp6.AppendOption(nil, dhcp6.OptRelayID, relayID)}
}

// OnLink narrows q (a relay-id or remote-id query) to the link of link,
// which is the downlink port: the server returns only the bindings on
// that link (RFC 5460 sections 5.3.1, 5.3.3), and a complete answer's
// stale bindings are looked for only on the port.
func (q Query) OnLink(port string, link netip.Addr) Query {
	q.Link, q.Port = link, port
	return q
}

// LinkAddressQuery asks for the bindings on the link of link, which is
// the downlink port (QUERY_BY_LINK_ADDRESS).
func LinkAddressQuery(port string, link netip.Addr) Query {
	return Query{Type: dhcp6.QueryByLinkAddress, Link: link, Port: port}
}

// RemoteIDQuery asks for the bindings made under the Remote-ID remoteID
// (enterprise number and id; QUERY_BY_REMOTE_ID, link-address ::).
func RemoteIDQuery(remoteID []byte) Query {
	return Query{Type: dhcp6.QueryByRemoteID, Link: netip.IPv6Unspecified(),
		Options: dhcp6.AppendOption(nil, dhcp6.OptRemoteID, remoteID)}
}

// String names the query for logs and reports.
func (q Query) String() string {
	switch q.Type {
	case dhcp6.QueryByRelayID:
		if q.Port != "" {
			return fmt.Sprintf("relay-id on %s (%s)", q.Link, q.Port)
		}
		return "relay-id"
	case dhcp6.QueryByLinkAddress:
		return fmt.Sprintf("link-address %s (%s)", q.Link, q.Port)
	case dhcp6.QueryByRemoteID:
		if d, ok := dhcp6.Options(q.Options).Get(dhcp6.OptRemoteID); ok {
			if q.Port != "" {
				return fmt.Sprintf("remote-id %s on %s (%s)", hex.EncodeToString(d), q.Link, q.Port)
			}
			return "remote-id " + hex.EncodeToString(d)
		}
		return "remote-id"
	}
	return fmt.Sprintf("query-type-%d", q.Type)
}

// removesStale reports whether a complete answer to q removes the
// bindings it did not return. A remote-id query does not: the relay does
// not record the Remote-ID a binding was made under, so it cannot tell
// which of its bindings the answer covers, and removing every binding of
// the server that the answer left out would remove the other Remote-IDs'
// bindings.
func (q Query) removesStale() bool { return q.Type != dhcp6.QueryByRemoteID }

// AppendLeasequery appends a LEASEQUERY message (RFC 5007 section 4.1.1):
// the header with xid, an OPTION_CLIENTID with the requestor's DUID, and
// the OPTION_LQ_QUERY.
func AppendLeasequery(dst []byte, xid [3]byte, clientID []byte, q Query) []byte {
	dst = dhcp6.AppendHeader(dst, dhcp6.MsgLeasequery, xid)
	dst = dhcp6.AppendOption(dst, dhcp6.OptClientID, clientID)
	return dhcp6.AppendLQQuery(dst, q.Type, q.Link, q.Options)
}

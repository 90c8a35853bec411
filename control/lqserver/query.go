package lqserver

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// query is a validated LEASEQUERY.
type query struct {
	xid      [3]byte
	typ      uint8
	link     netip.Addr // :: asks for every link
	clientID []byte     // the requestor's Client-ID, echoed; nil if none
	key      []byte     // Relay-ID, Remote-ID or Client-ID the query names
	addr     netip.Addr // QUERY_BY_ADDRESS
}

// QueryTypeName names a query type for logs.
func QueryTypeName(t uint8) string {
	switch t {
	case dhcp6.QueryByAddress:
		return "by-address"
	case dhcp6.QueryByClientID:
		return "by-clientid"
	case dhcp6.QueryByRelayID:
		return "by-relay-id"
	case dhcp6.QueryByLinkAddress:
		return "by-link-address"
	case dhcp6.QueryByRemoteID:
		return "by-remote-id"
	}
	return "type-" + strconv.Itoa(int(t))
}

// parseQuery validates a LEASEQUERY's options (RFC 5007 section 4.1.2.1,
// RFC 5460 section 5.3). A query lqserver refuses gives a status other
// than Success and its text; q.xid and q.clientID are set even then, so
// that the refusal can be answered.
func parseQuery(m *dhcp6.Message, allowed func(uint8) bool) (q query, status uint16, text string) {
	q.xid = m.XID
	if cid, ok := m.Options.Get(dhcp6.OptClientID); ok {
		q.clientID = cid
	}
	data, ok := m.Options.Get(dhcp6.OptLQQuery)
	if !ok {
		return q, dhcp6.StatusMalformedQuery, "no OPTION_LQ_QUERY"
	}
	lq, err := dhcp6.ParseLQQuery(data)
	if err != nil {
		return q, dhcp6.StatusMalformedQuery, err.Error()
	}
	q.typ, q.link = lq.Type, lq.Link
	switch lq.Type {
	case dhcp6.QueryByAddress, dhcp6.QueryByClientID, dhcp6.QueryByRelayID,
		dhcp6.QueryByLinkAddress, dhcp6.QueryByRemoteID:
	default:
		return q, dhcp6.StatusUnknownQueryType, "query type " + strconv.Itoa(int(lq.Type)) + " unknown"
	}
	if allowed != nil && !allowed(lq.Type) {
		return q, dhcp6.StatusNotAllowed, "query " + QueryTypeName(lq.Type) + " not allowed here"
	}
	if q.link.IsLinkLocalUnicast() || q.link.IsMulticast() {
		return q, dhcp6.StatusMalformedQuery, "link-address " + q.link.String() + " names no link"
	}
	opt := func(code uint16) []byte {
		d, _ := lq.Options.Get(code)
		return d
	}
	switch lq.Type {
	case dhcp6.QueryByRelayID:
		q.key = opt(dhcp6.OptRelayID)
		if len(q.key) == 0 || len(q.key) > 130 {
			return q, dhcp6.StatusMalformedQuery, "QUERY_BY_RELAY_ID without a Relay-ID"
		}
	case dhcp6.QueryByRemoteID:
		q.key = opt(dhcp6.OptRemoteID)
		if len(q.key) < 5 {
			return q, dhcp6.StatusMalformedQuery, "QUERY_BY_REMOTE_ID without a Remote-ID"
		}
	case dhcp6.QueryByClientID:
		q.key = opt(dhcp6.OptClientID)
		if len(q.key) == 0 || len(q.key) > 130 {
			return q, dhcp6.StatusMalformedQuery, "QUERY_BY_CLIENTID without a Client-ID in the query options"
		}
	case dhcp6.QueryByAddress:
		ia := opt(dhcp6.OptIAAddr)
		if len(ia) < 24 {
			return q, dhcp6.StatusMalformedQuery, "QUERY_BY_ADDRESS without an IAADDR"
		}
		q.addr = netip.AddrFrom16([16]byte(ia[:16]))
	case dhcp6.QueryByLinkAddress:
		if q.link.IsUnspecified() {
			return q, dhcp6.StatusMalformedQuery, "QUERY_BY_LINK_ADDRESS with link-address ::"
		}
	}
	return q, dhcp6.StatusSuccess, ""
}

// scoped reports whether the query names a link.
func (q *query) scoped() bool { return !q.link.IsUnspecified() }

// matcher decides which leases answer a query. It is used by one query's
// goroutine only.
type matcher struct {
	q       *query
	now     int64
	subnets []uint32 // Kea's subnets on q.link (scoped queries)
	// linkSeen records that some live lease's relay link-address is
	// q.link: the link exists even when no Kea subnet contains it.
	linkSeen bool
}

const infinite = 0xffffffff

func (m *matcher) match(l *Lease) bool {
	if l.Type != TypePD || l.State != 0 {
		return false
	}
	if l.Valid != infinite && l.CLTT+int64(l.Valid) <= m.now {
		return false // expired, not yet reclaimed
	}
	if m.q.scoped() {
		on := l.Link() == m.q.link
		if on {
			m.linkSeen = true
		}
		for _, id := range m.subnets {
			if id == l.SubnetID {
				on = true
				break
			}
		}
		if !on {
			return false
		}
	}
	switch m.q.typ {
	case dhcp6.QueryByRelayID:
		return l.RelayOption(dhcp6.OptRelayID, m.q.key)
	case dhcp6.QueryByRemoteID:
		return l.RelayOption(dhcp6.OptRemoteID, m.q.key)
	case dhcp6.QueryByClientID:
		return bytes.Equal(l.DUID, m.q.key)
	case dhcp6.QueryByAddress:
		return l.Prefix.Contains(m.q.addr)
	case dhcp6.QueryByLinkAddress:
		return true
	}
	return false
}

// notConfigured reports, after the walk, whether a scoped query named a
// link Kea does not know (RFC 5460 section 7.2: NotConfigured).
func (m *matcher) notConfigured() bool {
	return m.q.scoped() && len(m.subnets) == 0 && !m.linkSeen
}

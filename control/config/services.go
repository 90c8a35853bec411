package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Bulk Leasequery defaults (RFC 5460 section 5.6).
const (
	DefaultLeasequeryPort = 547
	DefaultLQConnTimeout  = 30 * time.Second // BULK_LQ_CONN_TIMEOUT
	DefaultLQDataTimeout  = 30 * time.Second // BULK_LQ_DATA_TIMEOUT
	DefaultLQMaxRetry     = 60 * time.Second // BULK_LQ_MAX_RETRY
)

// Relay-initiated release defaults (RFC 8415 REL_TIMEOUT, REL_MAX_RC).
const (
	DefaultReleaseTimeout = time.Second
	DefaultReleaseMaxRC   = 4
)

// LeasequeryQuery is the Bulk Leasequery query the relay recovers with.
type LeasequeryQuery string

// Leasequery queries.
const (
	QueryRelayID     LeasequeryQuery = "relay-id"     // QUERY_BY_RELAY_ID with relay_id
	QueryLinkAddress LeasequeryQuery = "link-address" // QUERY_BY_LINK_ADDRESS per downlink
	QueryRemoteID    LeasequeryQuery = "remote-id"    // QUERY_BY_REMOTE_ID with remote_id
)

// Leasequery configures the Bulk Leasequery requestor (RFC 5460).
type Leasequery struct {
	// Servers are queried in parallel; empty means no recovery.
	Servers []netip.AddrPort
	Query   LeasequeryQuery
	// PerLink sends a relay-id or remote-id query once per downlink, with
	// the downlink's link_address, instead of once with link-address ::.
	PerLink bool
	// RemoteID is the Remote-ID option data (enterprise number and id)
	// for QueryRemoteID.
	RemoteID []byte
	// OnStart queries at every start (default true when Servers is set);
	// `pdrelay recover` queries at any time.
	OnStart                  bool
	ConnTimeout, DataTimeout time.Duration
	MaxRetry                 time.Duration // backoff cap
}

// ReleaseMode says how the relay releases a binding at the server.
type ReleaseMode string

// Release modes.
const (
	ReleaseOff     ReleaseMode = "off"             // clear locally only
	ReleaseRequest ReleaseMode = "release-request" // RELEASE-REQUEST (draft-gandhewar)
	ReleaseClient  ReleaseMode = "client-release"  // a Release on the client's behalf, relayed
)

// Release configures relay-initiated release.
type Release struct {
	Mode ReleaseMode
	// Server is where RELEASE-REQUESTs go (mode release-request): the
	// release.server key, else the first unicast server on port 547.
	Server netip.AddrPort
	// Timeout and MaxRC are the retransmission's IRT and MRC.
	Timeout  time.Duration
	MaxRC    int
	Triggers ReleaseTriggers
	Types    ReleaseTypes
}

// ReleaseTriggers say which events release a binding at the server.
type ReleaseTriggers struct {
	Operator       bool // pdrelay clear --release
	ClientReplaced bool // another DUID binds on a point-to-point port
	ClientMoved    bool // the DUID binds on another port (unique_client)
	// ClientUnavailable releases a client whose next hop has not answered
	// neighbour discovery for this long; 0 is off (the default, as the
	// draft's section 1.3 advises).
	ClientUnavailable time.Duration
}

func (r *rawLeasequery) validate(c *Config, errs *errList) Leasequery {
	lq := Leasequery{
		Query: QueryRelayID, ConnTimeout: DefaultLQConnTimeout,
		DataTimeout: DefaultLQDataTimeout, MaxRetry: DefaultLQMaxRetry,
	}
	port := uint16(DefaultLeasequeryPort)
	if r.Port != nil {
		if p := *r.Port; p < 1 || p > 65535 {
			errs.add("leasequery.port", "%d is not a TCP port (1..65535)", p)
		} else {
			port = uint16(p)
		}
	}
	seen := map[netip.AddrPort]int{}
	for i, s := range r.Servers {
		key := fmt.Sprintf("leasequery.servers[%d]", i)
		ap, ok := hostPort(key, s, port, c.Uplink.Interface, errs)
		if !ok {
			continue
		}
		if a := ap.Addr(); a.IsMulticast() || a.IsUnspecified() || (a.Zone() != "" && !a.IsLinkLocalUnicast()) {
			errs.add(key, "%q is not a unicast server address (Bulk Leasequery runs over TCP)", s)
			continue
		}
		if j, dup := seen[ap]; dup {
			errs.add(key, "%q is also leasequery.servers[%d]", s, j)
			continue
		}
		seen[ap] = i
		lq.Servers = append(lq.Servers, ap)
	}
	switch q := LeasequeryQuery(r.Query); q {
	case "":
	case QueryRelayID, QueryLinkAddress, QueryRemoteID:
		lq.Query = q
	default:
		errs.add("leasequery.query", "%q is not one of relay-id, link-address, remote-id", r.Query)
	}
	if r.RemoteID != "" {
		id, err := ParseDUID(r.RemoteID) // the same hex forms
		switch {
		case err != nil:
			errs.add("leasequery.remote_id", "%q is not hex: %v", r.RemoteID, err)
		case len(id) < 5:
			errs.add("leasequery.remote_id", "%q is too short: a Remote-ID is a 4-byte enterprise number and at least one byte of id", r.RemoteID)
		default:
			lq.RemoteID = id
		}
	}
	if lq.Query == QueryRemoteID && len(lq.RemoteID) == 0 && r.RemoteID == "" {
		errs.add("leasequery.remote_id", "required with query remote-id")
	}
	lq.PerLink = r.PerLink
	if (lq.Query == QueryLinkAddress || lq.PerLink) && len(lq.Servers) > 0 {
		for i, d := range c.Downlinks {
			if !d.LinkAddress.IsValid() {
				errs.add(fmt.Sprintf("downlinks[%d].link_address", i),
					"required with leasequery.query link-address or per_link: it is the link the server is asked about")
			}
		}
	}
	lq.OnStart = len(lq.Servers) > 0
	if r.OnStart != nil {
		lq.OnStart = *r.OnStart && len(lq.Servers) > 0
	}
	lq.ConnTimeout = duration("leasequery.conn_timeout", r.ConnTimeout, lq.ConnTimeout, errs)
	lq.DataTimeout = duration("leasequery.data_timeout", r.DataTimeout, lq.DataTimeout, errs)
	lq.MaxRetry = duration("leasequery.max_retry", r.MaxRetry, lq.MaxRetry, errs)
	return lq
}

func (r *rawRelease) validate(c *Config, errs *errList) Release {
	rel := Release{
		Mode: ReleaseOff, Timeout: DefaultReleaseTimeout, MaxRC: DefaultReleaseMaxRC,
		Triggers: ReleaseTriggers{Operator: true, ClientReplaced: true, ClientMoved: true},
	}
	switch m := ReleaseMode(r.Mode); m {
	case "":
	case ReleaseOff, ReleaseRequest, ReleaseClient:
		rel.Mode = m
	default:
		errs.add("release.mode", "%q is not one of off, release-request, client-release", r.Mode)
	}
	if r.Server != "" {
		if ap, ok := hostPort("release.server", r.Server, DefaultServerPort, c.Uplink.Interface, errs); ok {
			if a := ap.Addr(); a.IsMulticast() || a.IsUnspecified() {
				errs.add("release.server", "%q is not a unicast address", r.Server)
			} else {
				rel.Server = ap
			}
		}
	} else {
		for _, s := range c.Servers {
			if !s.IsMulticast() {
				rel.Server = netip.AddrPortFrom(s, DefaultServerPort)
				break
			}
		}
		if rel.Mode == ReleaseRequest && !rel.Server.IsValid() && len(c.Servers) > 0 {
			errs.add("release.server", "required with mode release-request when no server is unicast")
		}
	}
	rel.Timeout = duration("release.timeout", r.Timeout, rel.Timeout, errs)
	if r.MaxRC != nil {
		if n := *r.MaxRC; n < 1 || n > 100 {
			errs.add("release.max_rc", "%d is not a number of transmissions (1..100)", n)
		} else {
			rel.MaxRC = n
		}
	}
	t := &r.Triggers
	for _, b := range []struct {
		v   *bool
		dst *bool
	}{{t.Operator, &rel.Triggers.Operator}, {t.ClientReplaced, &rel.Triggers.ClientReplaced}, {t.ClientMoved, &rel.Triggers.ClientMoved}} {
		if b.v != nil {
			*b.dst = *b.v
		}
	}
	if v := t.ClientUnavailable; v != "" && v != "off" {
		rel.Triggers.ClientUnavailable = duration("release.triggers.client_unavailable", v, 0, errs)
	}
	rel.Types.Request = releaseType("release.message_types.request", r.MessageTypes.Request, DefaultReleaseRequest, errs)
	rel.Types.Reply = releaseType("release.message_types.reply", r.MessageTypes.Reply, DefaultReleaseReply, errs)
	if rt := rel.Types; rt.Request != 0 && rt.Request == rt.Reply {
		errs.add("release.message_types.reply", "%d is also the request type; the two must differ", rt.Reply)
	}
	return rel
}

// hostPort parses "addr" or "[addr]:port"; a bare address gets port def,
// and a link-local one without a zone the uplink's as zone.
func hostPort(key, s string, def uint16, uplink string, errs *errList) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		a, ok := parseAddr(key, s, errs)
		if !ok {
			return netip.AddrPort{}, false
		}
		ap = netip.AddrPortFrom(a, def)
	case !ap.Addr().Is6() || ap.Addr().Is4In6():
		errs.add(key, "%q is not an IPv6 address", s)
		return ap, false
	case ap.Port() == 0:
		errs.add(key, "%q: port 0", s)
		return ap, false
	}
	if a := ap.Addr(); a.IsLinkLocalUnicast() && a.Zone() == "" {
		ap = netip.AddrPortFrom(a.WithZone(uplink), ap.Port())
	}
	return ap, true
}

// duration parses a Go duration ("30s", "2m") of at least a millisecond
// and at most a day; empty gives def.
func duration(key, s string, def time.Duration, errs *errList) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if n, aerr := strconv.Atoi(s); aerr == nil {
			errs.add(key, "%q has no unit; write %ds for seconds", s, n)
		} else {
			errs.add(key, "%q is not a duration such as 30s or 2m", s)
		}
		return def
	}
	if d < time.Millisecond || d > 24*time.Hour {
		errs.add(key, "%s is not between 1ms and 24h", d)
		return def
	}
	return d
}

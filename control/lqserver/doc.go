// Package lqserver is `pdrelay lqserver`: the server side of Bulk
// Leasequery (RFC 5460) and of relay-initiated release
// (draft-gandhewar-dhc-v6-relay-initiated-release-01) for a Kea DHCPv6
// server, which answers neither itself. It reads and deletes Kea's
// leases through Kea's control socket (the lease_cmds hook); Kea must run
// with "store-extended-info": true for the relay data that
// QUERY_BY_RELAY_ID, QUERY_BY_REMOTE_ID and OPTION_LQ_RELAY_DATA need.
//
// # Kea
//
// Kea walks its leases with lease6-get-page (Kea.PageSize each, 1000 by
// default), so no answer holds all leases: a query streams one page into
// TCP frames while the next is fetched, and the requestor's reading paces
// the walk. A page is decoded by a scanner of its own (keapage.go) when
// it has the plain shape Kea writes, by encoding/json otherwise, with the
// same result either way. Only IA_PD leases in state 0 (default) that have not expired
// answer a query. Kea 2.2 keeps each lease's relay data in its
// user-context, {"ISC": {"relays": [{"hop", "link", "peer", "options"}]}}
// (later versions: "relay-info"), outermost relay first; "options" is the
// hex of the Relay-Forward's options other than the relay-message
// (Interface-ID, Relay-ID, Remote-ID, client link-layer address).
//
// Kea's server DUID (ServerID): --server-id, else the "server-id" map of
// config-get when it fixes the whole DUID, else the DUID Kea persisted in
// <data-directory>/kea-dhcp6-serverid. Kea with "persist": false and no
// fixed identifier has a DUID nobody can read: the operator must pass it.
// RELEASE-REQUEST handling refuses to start without it; Bulk Leasequery
// then sends a generated DUID-UUID as Server-ID, with a warning, since a
// relay that keeps it could not release those bindings at Kea.
//
// # Bulk Leasequery (RFC 5460 section 7)
//
// TCP, messages framed by a 16-bit length. Connections from outside
// Options.Allow and beyond Options.MaxConns are closed at once. Each
// read or write must complete within Options.DataTimeout; a connection
// with no query running that sends nothing for that long is closed.
// A connection runs up to Options.MaxQueries queries at once, each in its
// own goroutine; their answers interleave at message boundaries, and no
// further query is read while all slots are busy.
//
// Query types: QUERY_BY_RELAY_ID (a lease matches when any stored relay
// level carried that Relay-ID), QUERY_BY_LINK_ADDRESS, QUERY_BY_REMOTE_ID
// (stored option 37, enterprise number included), and RFC 5007's
// QUERY_BY_ADDRESS (the delegated prefix containing the address) and
// QUERY_BY_CLIENTID. A query's link-address other than :: limits it to
// leases on that link: the relay link-address Kea stored (of the relay
// closest to the client) equals it, or the lease's subnet is one of Kea's
// subnets on that link (config-get: a subnet containing the address or
// listing it in relay ip-addresses, all subnets of a shared network).
// When neither matches anything the REPLY says NotConfigured. Others:
// UnknownQueryType, MalformedQuery (a missing or wrong query option),
// NotAllowed (Options.QueryTypes), QueryTerminated (Kea fails, or
// shutdown). Messages other than LEASEQUERY are discarded and counted; a
// transaction id reused while its query runs stops the connection.
//
// The answer: a LEASEQUERY-REPLY with Server-ID and the query's Client-ID
// and the first client's OPTION_CLIENT_DATA, a LEASEQUERY-DATA per
// further client, then LEASEQUERY-DONE; a REPLY alone when nothing
// matches. Consecutive leases (in Kea's address order) of one client
// with the same CLT time and relay data share one OPTION_CLIENT_DATA (up
// to 64 prefixes); a client can appear in several. An error after the
// REPLY (Kea's socket fails) ends the query with a DONE carrying
// QueryTerminated and the reason; the connection then takes no more
// queries and closes when its other queries are done. On shutdown every
// running query ends so (or with a REPLY carrying QueryTerminated if it
// had sent nothing) and connections close within two seconds.
//
// OPTION_LQ_RELAY_DATA is rebuilt from what Kea stored: its peer-address
// is the peer-address of the relay closest to the client (RFC 5007 asks
// for the address of the relay the server heard from, which Kea does not
// keep; pdrelay, the requestor, reads the client's next hop there), and
// its Relay-Forward is the stored relay levels nested in OPTION_RELAY_MSG
// options, each with its hop-count, link-address, peer-address and
// stored options. The innermost level carries no OPTION_RELAY_MSG: Kea
// keeps no client message, and RFC 5007 leaves it out anyway. The wire
// format of every message is in encode.go.
//
// # RELEASE-REQUEST (draft section 4.3)
//
// UDP. A request must carry a Relay-ID, at least one Client Data, a
// Client-ID in each, and a Server-ID equal to Kea's; otherwise, or from a
// relay outside ReleaseOptions.Allow, it is discarded, counted by reason
// and logged (once a second per reason at most). Each IAPREFIX named
// (directly in the Client Data or inside an IA_PD) is released when Kea
// holds that prefix for that client DUID (lease6-get, then lease6-del);
// an IA_PD without IAPREFIX releases the client's prefixes of that IAID,
// a Client Data without any IA all of the client's prefixes
// (lease6-get-by-duid). IA_NA and IAADDR are not handled. The
// RELEASE-REQUEST-REPLY has the request's transaction id, a Status Code
// Success, the Server-ID, the Interface-ID if the request had one, and a
// Client Data (Client-ID, then a status per failed IAPREFIX, inside the
// IAPREFIX and, if it came in one, its IA_PD; or a client-level NoBinding)
// for every client with a failure. A prefix Kea does not hold, for
// instance on retransmission, is NoBinding, which the relay counts as
// released. Requests are handled one at a time.
//
// # Concurrency
//
// Server, ReleaseServer and Kea are safe for concurrent use. Serve runs
// until its context ends; Stats may be read at any time.
package lqserver

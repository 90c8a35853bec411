// Package api is pdrelay's operator interface (RFC 8987 O-1, O-2): an HTTP
// API on a unix socket, its client, and the `pdrelay bindings` and
// `pdrelay clear` commands built on them.
//
// The socket is created with mode 0600 (see Listen): only its owner may
// list or clear bindings. The Server, the Client and the commands are safe
// for concurrent use; set the Server's fields before Serve.
//
// # GET /v1/bindings
//
// Answers 200 with a JSON array (never null) of bindings sorted by port and
// prefix:
//
//	[
//	  {
//	    "interface": "eth1",                       downlink port
//	    "client_duid": "000300010200005e0001",     lower-case hex
//	    "iaid": 1,
//	    "prefix": "2001:db8:1::/56",
//	    "next_hop": "fe80::1",                     the client's address, no zone
//	    "next_hop_mac": "02:00:00:00:00:01",
//	    "preferred_lifetime": 1234,                seconds remaining
//	    "valid_lifetime": 3600,                    seconds remaining
//	    "server_duid": "0001000128b0...",          lower-case hex; "" if unknown
//	    "expires": "2026-01-02T15:04:05.123Z"      RFC 3339, UTC
//	  }
//	]
//
// The lifetimes are whole seconds counted at the time of the request from
// the binding's absolute ends: 0 once past, 4294967295 (Infinite) for an
// infinite lifetime, whose "expires" is then 9999-01-01T00:00:00Z.
//
// # POST /v1/clear
//
// Takes a JSON object selecting bindings by exactly one of "prefix",
// "client" (alone or with "interface"), "interface", or "all": true, and
// optionally "release": true:
//
//	{"prefix": "2001:db8:1::/56"}
//	{"client": "00:03:00:01:02:00:5e:00:00:01", "interface": "eth1", "release": true}
//	{"all": true}
//
// It answers 200 with the bindings it removed, in the shape above:
//
//	{"cleared": [ ... ], "count": 1}
//
// With "release", the matching bindings are first released at the server
// (RELEASE-REQUEST) and cleared only when that succeeds, so a failed
// release can be retried.
//
// # POST /v1/recover
//
// Runs a Bulk Leasequery recovery now (`pdrelay recover`): the body
// {"server": "2001:db8::547"} names one server of leasequery.servers, an
// empty body or {} every server. It answers 200, once the recovery has
// ended, with a leasequery.Report: per server its result (complete,
// partial, failed), attempts, server DUID, and the prefixes received,
// added, updated, refused, expired, discarded and the bindings removed,
// with the same per query. 409 while another recovery runs; 400 for a
// server not configured; 501 without leasequery.servers. The recovery
// stops when the request does.
//
// # GET /v1/leasequery
//
// Answers 200 with each server's last recovery (leasequery.ServerStatus;
// an empty array without leasequery.servers); `pdrelay stats` prints it.
//
// # GET /v1/bgp
//
// Answers 200 with the BGP speaker's status (RFC 8987 R-4; BGPStatusJSON),
// which `pdrelay bgp` prints: the ASN, router ID and next hop, how many
// prefixes are announced, and per neighbour the session's state, since
// when, prefixes sent and received, UPDATEs, flaps, whether the peer does
// graceful restart, and why the session last went down. Without the bgp
// key it answers {"enabled": false, "prefixes": 0, "delegated": 0,
// "sessions": []}.
//
// Every other answer carries {"error": "message"}: 400 for a request that
// selects nothing, combines selectors it may not, or names a bad prefix,
// DUID or interface; 501 when "release" is asked but the relay has no
// Releaser (nothing is cleared); 502 when the release failed (nothing is
// cleared); 503 when the binding table is not running.
package api

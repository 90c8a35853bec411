// Package leasequery is pdrelay's Bulk Leasequery requestor (RFC 5460,
// draft-ietf-dhc-dhcpv6-bulk-leasequery sections 6.1-6.6): it recovers
// the relay's bindings from the servers that hold the truth, at start and
// when the operator runs `pdrelay recover`.
//
// # What it sends and expects
//
// For each server in leasequery.servers it opens a TCP connection
// (BULK_LQ_CONN_TIMEOUT) and sends every query at once, each a LEASEQUERY
// preceded by its 16-bit length, with distinct random transaction ids:
//
//	LEASEQUERY (14), xid
//	  OPTION_CLIENTID (1): the relay's DUID
//	  OPTION_LQ_QUERY (44): query-type, link-address, query-options
//	    QUERY_BY_RELAY_ID (3), ::, OPTION_RELAY_ID (53) with the relay's DUID
//	    QUERY_BY_LINK_ADDRESS (4), a downlink's link_address, no options
//	    QUERY_BY_REMOTE_ID (5), ::, OPTION_REMOTE_ID (37) with remote_id
//
// The replies to the queries may interleave. Each query gets a
// LEASEQUERY-REPLY (15) with an OPTION_SERVERID and either an error
// status (the query ends), no OPTION_CLIENT_DATA (an empty, complete
// answer), or the first client's OPTION_CLIENT_DATA; then
// LEASEQUERY-DATA (17) messages with one client's data each, then a
// LEASEQUERY-DONE (16), whose status, if any, says the answer is not
// complete. A DATA without client data is discarded and counted. A DATA
// or DONE before the REPLY, a message for a transaction id with no
// outstanding query, or a malformed message closes the connection.
// Every read and write has BULK_LQ_DATA_TIMEOUT.
//
// Each OPTION_CLIENT_DATA becomes bindings: the client's DUID
// (OPTION_CLIENTID); each OPTION_IAPREFIX, bare (RFC 5007) or inside an
// OPTION_IA_PD (whose IAID it then takes), with both lifetimes reduced by
// OPTION_CLT_TIME and skipped once the valid lifetime has run out; from
// the OPTION_LQ_RELAY_DATA's relay message (Relay-Forward layers, with or
// without the client's message), the layer carrying the relay's Relay-ID
// (else the outermost) gives the port (its Interface-ID, else its
// link-address, matched against the downlinks; else the port of a
// link-address query), the next hop (its peer-address, else the option's
// peer-address) and the MAC (its option 79, else left to neighbour
// discovery). The Server-ID of the query's REPLY is the bindings' server.
// A bare prefix keeps the IAID of the binding the table has for it (same
// port and client), else IAID 0, which the client's next Reply corrects.
//
// # Merging
//
// Bindings go to binding.Table.Learn in batches through the Manager as
// they arrive, so the FIB is programmed while the stream runs and the
// relay goes on relaying: the same validation and limits as a snooped
// Reply; a refusal goes to Manager.Refused (counted, logged). The
// server's word wins: a returned binding is updated, a prefix returned
// for another client moves. After a complete answer (a DONE without
// error status, or an empty REPLY), the bindings in the query's scope
// that nothing confirmed since the connection began are removed with
// reason "not-at-server": the scope is the bindings whose server DUID is
// the server's Server-ID, on every port for a relay-id query and on the
// query's port for a link-address query. A remote-id query removes
// nothing: the relay does not record the Remote-ID a binding was made
// under. A query that fails or ends early removes nothing.
//
// # Retries
//
// A connection that fails (connect, timeout, closed before every query
// ended, protocol error) and a query ended by a status worth asking again
// (see retryable) are retried on a new connection after an exponential
// backoff with jitter, capped at BULK_LQ_MAX_RETRY, up to Attempts
// connections per server. Only the queries not yet ended are sent again.
// Every error status is logged with its name and counted.
//
// # Concurrency
//
// A Requestor is safe for concurrent use. Recover runs one recovery at a
// time (a second gets ErrBusy), querying the servers in parallel, one
// goroutine and connection each. Stream and Converter hold no I/O and
// take their input as values; a Stream is not safe for concurrent use, a
// Converter is. Memory is bounded by the 64 KiB frame, the batch size and
// the binding manager's queue, which the reader waits on.
package leasequery

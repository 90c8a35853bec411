// Package config reads the YAML configuration of `pdrelay run -c FILE`.
//
// Parse and Load return a fully validated *Config with every default
// applied, or an error naming each bad key by its path and value, for
// example
//
//	config: downlinks[1].link_type: "p2p" is not one of point-to-point, multi-access
//
// Unknown keys are refused, so a misspelt key is an error at start rather
// than a setting silently ignored. Each problem is an *Error; when there
// are several, the returned error joins them (errors.As finds the first).
//
// The keys, with their defaults (testdata/reference.yaml shows them all):
//
//	state_dir        required; the directory of the binding store and the
//	                 generated relay DUID
//	api_socket       the operator socket; default /run/pdrelay/pdrelay.sock (the CLI's default too)
//	metrics_listen   host:port for GET /metrics; empty: no metrics listener
//	relay_id         the relay's DUID in hex, colons allowed, 2..130 bytes;
//	                 empty: a DUID-LL of the uplink's MAC (the same again
//	                 after state_dir is lost), persisted
//	servers          at least one IPv6 address, unicast or multicast (such as
//	                 ff05::1:3). A link-local address (fe80::/10 or ff02::/16)
//	                 without a zone is given the uplink's interface as zone.
//	                 A multicast entry needs trusted_servers.
//	server_port      default 547
//	trusted_servers  IPv6 prefixes: a Relay-Reply from an address inside one
//	                 is trusted besides the unicast servers; default none
//	delegated_lengths the prefix lengths a delegation may have, "MIN-MAX" or
//	                 one length; default 32-64, up to 128
//	delegated_pools  optional IPv6 prefixes every delegated prefix must lie
//	                 in (a downlink's own delegated_pools replace them)
//	uplink           interface (required), gateway (optional IPv6 address),
//	                 no_route: pass (default) or drop, for traffic arriving on
//	                 the uplink for an address no delegated prefix covers; pass
//	                 hands it to the kernel, drop drops and counts it
//	downlinks        at least one; each:
//	  interface              required, unique, a Linux interface name
//	  link_address           optional global IPv6 address, sent as the
//	                         Relay-Forward link-address; default ::
//	  interface_id           Interface-ID option data; default the interface
//	                         name; unique across downlinks
//	  link_type              point-to-point (default) or multi-access
//	  max_delegations        prefixes on the port (RFC 8987 G-6); default
//	                         4096 (DefaultMaxDelegations); 0 means unlimited
//	  max_per_client         prefixes per client DUID on the port (G-5, G-7);
//	                         default 8; 0 means unlimited
//	  unique_client          default false: a DUID may hold bindings on several
//	                         ports (G-4); true refuses a DUID bound on another
//	  loop_policy            drop (default) or forward
//	  loop_overrides         loop policies per client or per destination (RFC
//	                         8987 R-5); default none. Each entry has exactly one
//	                         of client (a client DUID in hex, as relay_id) and
//	                         prefix (a masked IPv6 prefix), and policy (drop or
//	                         forward, required). No client and no prefix twice
//	                         on a port. The forwarding plane applies them per
//	                         looping packet: the longest prefix override
//	                         holding its destination, else the client's
//	                         override, else loop_policy
//	  loop_icmp              default false
//	  trust_release_request  default false: RELEASE-REQUESTs arriving on the
//	                         port are dropped
//	  trust_relay_forward    default false: Relay-Forwards arriving on the port
//	                         are dropped; true for an LDRA or a relay below
//	  max_client_rate        client messages relayed a second, 0..1000000;
//	                         default 100; 0 means no limit
//	  max_client_burst       client messages relayed back to back, 1..1000000;
//	                         default twice max_client_rate; also how many may
//	                         wait for the relay (32..4096; 1024 with no rate)
//	  delegated_pools        this port's pools, replacing the global ones
//	  allowed_sources        extra IPv6 source prefixes accepted from the port
//	                         besides its delegated prefixes; default none
//	dataplane        mode: kernel (the default), xdp, xdp-generic or off
//	                 (control plane only, pdrelay routes nothing). kernel:
//	                 the kernel forwards, pdrelay writes a route per
//	                 delegated prefix (protocol 157) and its nftables guard
//	                 queues: AF_XDP queues (sockets) per port, 1..1024; default 1
//	                 frame_size: UMEM frame bytes, 2048 (default) or 4096
//	                 icmp_rate: ICMPv6 errors sent per second per port,
//	                 0..1000000; default 100; 0 sends none
//	kernel           the routes of dataplane.mode kernel:
//	  table          routing table: main (the default, 254) or a number,
//	                 1..4294967295, not 253 (default) or 255 (local)
//	  flush_on_stop  default false: the routes stay when pdrelay stops, so
//	                 the kernel forwards across a restart; true removes them
//	leasequery       Bulk Leasequery (RFC 5460) requestor:
//	  servers        unicast addresses, "addr" or "[addr]:port"; none: off
//	  port           port of servers given without one; default 547
//	  query          relay-id (default; QUERY_BY_RELAY_ID with the relay's
//	                 DUID, link-address ::), link-address (QUERY_BY_LINK_ADDRESS
//	                 for each downlink's link_address, which is then
//	                 required) or remote-id (QUERY_BY_REMOTE_ID)
//	  per_link       default false; true sends a relay-id or remote-id query
//	                 per downlink with its link_address (then required)
//	                 instead of one with link-address ::
//	  remote_id      Remote-ID option data in hex (enterprise number first),
//	                 required with query remote-id
//	  on_start       default true: query at every start
//	  conn_timeout, data_timeout, max_retry
//	                 durations; defaults 30s, 30s, 60s (BULK_LQ_CONN_TIMEOUT,
//	                 BULK_LQ_DATA_TIMEOUT, BULK_LQ_MAX_RETRY)
//	release          relay-initiated release at the server:
//	  mode           off (default), release-request or client-release
//	  server         where RELEASE-REQUESTs go; default the first unicast
//	                 server on port 547
//	  timeout, max_rc  retransmission: first wait (default 1s) and
//	                 transmissions in all (default 4)
//	  triggers       operator, client_replaced, client_moved (booleans,
//	                 default true) and client_unavailable (off, the default,
//	                 or a duration)
//	  message_types  request (default 250) and reply (default 251):
//	                 EXPERIMENTAL values from the unassigned range, because the
//	                 relay-initiated-release draft has no IANA numbers; each
//	                 1..255, distinct, and not an assigned type (1..37). The
//	                 old top-level key release_request is refused with a
//	                 pointer here.
//	log_level        debug, info (default), warn or error
//	bgp              announce the delegated prefixes over BGP (RFC 8987 R-4);
//	                 no key: no BGP
//	  asn            pdrelay's AS number, 1..4294967294 (not 23456 or 65535)
//	  router_id      IPv4 BGP identifier
//	  neighbors      at least one: address (IPv6 or IPv4, not link-local),
//	                 asn, passive (default false), password (TCP MD5, at
//	                 most 80 bytes; default none), port (default 179); no
//	                 address twice
//	  next_hop       global IPv6 address of every announcement; default the
//	                 uplink's global address at start
//	  communities    "ASN:VALUE" each 0..65535, added to every announcement
//	  aggregates     masked IPv6 prefixes announced always
//	  graceful_restart_time
//	                 how long the peers keep the routes across a restart,
//	                 whole seconds 1s..4095s; default 120s
//	  listen_port    TCP port sessions are accepted on; default 179; 0
//	                 accepts none (no neighbour may then be passive)
//
// Diff compares the running config with a new one for a reload (SIGHUP,
// pdrelay reload): it returns what changed that a running relay applies
// in place (Changes), or an error naming each key only a restart applies
// (*RestartError, ErrNeedsRestart): state_dir, api_socket,
// metrics_listen, relay_id, the uplink, the dataplane keys, and in the xdp
// modes a downlink added or removed or a port's forwarding keys.
//
// A Config is a plain value: safe for concurrent reads, not for writes.
package config

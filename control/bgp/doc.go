// Package bgp announces the delegated prefixes to the operator's routers
// over BGP (RFC 8987 R-4), with GoBGP (github.com/osrg/gobgp/v4) as a
// library inside pdrelay.
//
// A Speaker announces, in IPv6 unicast, every prefix whose binding is
// valid, plus the configured aggregates, all with one next hop (pdrelay's
// uplink address by default) and the configured communities. It learns the
// bindings as a binding.Sink and from the restored bindings handed to it
// before Run. It accepts whatever its neighbours send and uses none of it:
// pdrelay originates routes, it does not route by BGP.
//
// # Restarts (RFC 4724)
//
// A pdrelay restart must not withdraw the routes at the peers (S-1 as the
// upstream network sees it). Every session advertises the Graceful
// Restart capability, with the configured restart time, and the RFC 8538
// N-bit.
//
// A clean stop (Run's context ends) closes each graceful-restart
// session's TCP connection without a NOTIFICATION. A peer in helper mode
// (FRR's default) keeps the routes, marked stale, for the restart time,
// exactly as after a crash of pdrelay. A NOTIFICATION Cease would keep
// them only where both sides negotiated the N-bit (FRR 8.4 does; a peer
// without RFC 8538 flushes them), so the Speaker never sends one to stop.
// A peer without graceful restart gets a Cease and withdraws the routes.
//
// At the next start the Speaker sets the Restart State and the Forwarding
// State bits in its OPENs. Without the F bit FRR clears the stale routes
// the moment the session is up and installs them again when the UPDATEs
// come: its kernel route is deleted and re-added, a flap. With it FRR
// keeps them; the Speaker waits for the peers' End-of-RIB (at most
// two seconds), sends its whole table, then its own End-of-RIB, and the
// peer drops the stale routes not announced again (bindings that ended
// while pdrelay was down). cmd/pdrelay's bgp_e2e_test.go checks all of
// this against FRR; the package's tests check it against GoBGP.
//
// # Concurrency
//
// Sink is called on the binding manager's goroutine and never blocks it:
// it records each change in a pending set (the last word on a prefix wins)
// under a mutex held only to write or swap that set, and wakes the
// Speaker's own goroutine (Run), which applies the set to GoBGP. A change
// thus reaches the peers within milliseconds of the binding change; a burst
// of changes is coalesced into one apply. Restore must be called before
// Run. Reconfigure, Status and the Prometheus collector (Describe,
// Collect) are safe for concurrent use with each other and with Run;
// Reconfigure waits for Run to apply the new config.
package bgp

// Package release is pdrelay's relay-initiated release: it asks the
// server to release a client's bindings on the client's behalf, and
// clears locally what the server released.
//
// # Modes (release.mode)
//
// release-request (draft-gandhewar-dhc-v6-relay-initiated-release-01,
// sections 4.1.1 and 4.4): one RELEASE-REQUEST per server DUID and port,
// holding the Server-ID stored with the bindings, the relay's Relay-ID,
// the port's Interface-ID, and one OPTION_CLIENT_DATA per client with its
// Client ID and one OPTION_IAPREFIX (lifetimes 0) per prefix released. A
// message is kept within DefaultMaxMessage bytes (split otherwise). It
// goes over UDP from its own socket, bound to the uplink and connected to
// release.server. A RELEASE-REQUEST-REPLY of another type, with an unknown
// transaction id or without a top-level status is discarded and counted.
// A top-level status other than Success is every binding's; otherwise the
// most specific status the reply holds for a binding (IAPREFIX, IA_PD,
// Client Data) is its; a binding not named is released (the server names
// only failures).
//
// client-release (what Juniper and Nokia edges do, and what Kea
// understands): one Release (RFC 8415 section 18.2.7) per port, client
// and server DUID, with the client's DUID, the stored Server-ID and an
// IA_PD with the IAPREFIXes (lifetimes 0) per IAID, handed to the relay
// (relay.Conn.Originate), which wraps it exactly as the client's own and
// hands back the server's Reply instead of delivering it. A binding gets
// its IAPREFIX's, else its IA_PD's, else the Reply's top-level status,
// else Success.
//
// In both modes the message is retransmitted as RFC 8415 section 15 says
// with IRT release.timeout, MRC release.max_rc, MRT 0 and MRD 0, keeping
// its transaction id. A binding answered Success or NoBinding is released
// and cleared (removal reason relay-released); any other answer, or none,
// keeps it until it expires, and the Result says why. In mode off nothing
// is sent: Release returns ErrModeOff.
//
// # Triggers (release.triggers)
//
// operator: Releaser.Release, for `pdrelay clear --release`. The others
// are Triggers, fed by the binding manager: client_replaced (a new DUID's
// first binding on a point-to-point port releases the other DUIDs'
// bindings there), client_moved (unique_client refusing a client's Reply
// on a new port releases its bindings on the old ports, so its next
// exchange succeeds) and client_unavailable (a next hop whose neighbour
// entry has failed and that has not been confirmed for the configured
// time; off by default, per the draft's section 1.3). Each trigger logs
// one line, and pdrelay_release_total{trigger,result} counts every
// binding it released or kept.
//
// # Concurrency
//
// A Releaser is safe for concurrent use; Release and ReleaseFor block for
// at most the retransmission schedule (15 s with the defaults), whatever
// their context says, so a release the server may have done is seen
// through; Close ends them. Its socket's reader and each exchange run on
// goroutines of their own, at most Config.MaxParallel exchanges at once.
// HandleReply runs on the relay engine's goroutine and never blocks.
//
// Triggers.Sink, Refused and Seed run on the binding manager's goroutine
// and never block: they queue jobs (a bounded queue; a full one drops the
// job, counted), and Run's workers find the bindings through the manager
// and release them off its goroutine, so neither the table nor the relay
// waits for a server. A binding is released by one job at a time, and one
// whose release failed is left alone by the triggers for a cooldown. The
// unavailability watch keeps its own state under a lock, fed by Sink and
// read by its rounds; one round reads the neighbour table once and asks
// for at most 256 confirmations.
package release

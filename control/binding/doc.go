// Package binding holds pdrelay's table of delegated prefixes.
//
// A binding is learned from a server's Reply relayed to a client (RFC 8987
// section 4.1) and keyed by (downlink port, client DUID, IAID, prefix). The
// Table is a plain single-threaded structure with an injected clock so that
// every rule (limits, lifetimes, expiry, removal reasons) is testable by
// value. The Manager owns a Table on one goroutine: everything else talks
// to it through methods that send it events, so the order of events is the
// order of truth and no lock is needed. Each batch of changes is handed to
// the Manager's sinks (the FIB builder and the persistent store) at once.
//
// A config reload changes the table's rules in place, through the
// Manager (Do or Post): SetPolicy and SetLimits. Neither removes a
// binding: a new policy or a lowered limit applies to what is learned
// from then on, and the bindings already installed stay until they are
// released, expire or are cleared (SetLimits reports those over the new
// limits). A downlink removed from the config keeps its bindings the same
// way.
package binding

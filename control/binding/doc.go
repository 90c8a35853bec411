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
package binding

// Package store keeps pdrelay's bindings on disk so that they survive a
// restart (RFC 8987 S-1, invariant 7 in ARCHITECTURE.md), together with the relay's
// own DUID (the Relay-ID, generated once by the caller and persisted).
//
// The store is one bbolt file in the relay's state_dir. Each binding is
// one record: a deterministic key built from binding.Key (port, client
// DUID, IAID, prefix) and a compact versioned value (see codec.go).
// Lifetimes are stored as absolute times to the nanosecond, so after a
// restart the remaining lifetimes follow from the clock and Load returns
// bindings that expired while the relay was down for the caller to drop.
//
// # Write-behind and durability
//
// Put and Delete never touch the disk: they encode the record and queue it
// in memory, where a later write to the same key replaces an earlier one.
// A background goroutine commits the queue every Options.FlushInterval
// (200 ms by default) as bbolt transactions of at most Options.MaxBatch
// writes (sorted by key), fsynced before they count as committed. Flush
// commits at once and Close flushes before it closes.
//
// The contract: a crash (SIGKILL, power loss with honest disks) loses at
// most the writes queued since the last completed commit, about one
// FlushInterval plus the commit's own duration, and never corrupts the
// file: bbolt transactions are atomic (copy-on-write pages, then one meta
// page switch). A backlog larger than MaxBatch is committed as several
// transactions, so a crash in the middle of one may keep part of it; every
// record is then either its old or its new version, never a mixture. A
// failed commit (disk full, I/O error) is counted in Stats, logged once,
// and its writes stay queued for the next flush unless newer ones for the
// same keys replace them.
//
// # Damaged files
//
// Open renames a file it cannot use to "<path>.corrupt-<unix time>", logs
// why at error level and starts empty; the bindings are then relearned
// from the servers (Bulk Leasequery) and the clients. A record that does
// not decode is skipped and counted by Load instead. Another process
// holding the file's lock makes Open fail with ErrLocked after
// Options.LockTimeout, leaving the file alone.
//
// # Concurrency
//
// A Store's methods are safe for concurrent use. Put and Delete take a
// mutex that guards only the in-memory queue, so they never wait for a
// commit in progress. Commits are serialised and reach the file in the
// order their writes were queued.
package store

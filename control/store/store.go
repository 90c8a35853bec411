package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/pdrelay/pdrelay/control/binding"
)

// Defaults for Options.
const (
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultMaxBatch      = 100_000
	DefaultLockTimeout   = time.Second
)

// Buckets and meta keys. The schema version covers the bucket layout and
// the key encoding; each value carries its own version octet.
var (
	bucketMeta     = []byte("meta")
	bucketBindings = []byte("bindings")
	keySchema      = []byte("schema")
	keyRelayID     = []byte("relay-id")
)

const schemaVersion = 1

// maxRelayID is the longest DUID RFC 8415 section 11.1 allows: a 2-octet
// type and at most 128 octets.
const maxRelayID = 130

// Errors.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store closed")
	// ErrLocked is returned by Open when another process holds the store
	// file's lock for longer than Options.LockTimeout.
	ErrLocked = errors.New("store file locked by another process")
	// ErrNoRelayID is returned by RelayID when none has been stored.
	ErrNoRelayID = errors.New("no relay-id stored")
	// ErrCorrupt is wrapped by errors that come from a damaged store file.
	ErrCorrupt = errors.New("store file corrupt")
)

// Options tunes a Store. The zero value means the defaults.
type Options struct {
	// FlushInterval is how often queued writes are committed; it bounds
	// what a crash can lose. Default 200 ms.
	FlushInterval time.Duration
	// MaxBatch is the most writes committed in one transaction; a larger
	// backlog is committed as several transactions, one after the other.
	// Default 100,000.
	MaxBatch int
	// LockTimeout is how long Open waits for the file lock another process
	// holds before it fails with ErrLocked. Default 1 s.
	LockTimeout time.Duration
	// SkipVerify skips the scan of every record Open does to find a
	// damaged file before it is used.
	SkipVerify bool
}

func (o Options) withDefaults() Options {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	return o
}

// Stats are the store's counters, for metrics.
type Stats struct {
	// Commits counts transactions committed by the write-behind path.
	Commits uint64
	// WritesCommitted counts puts and deletes committed (after
	// coalescing: a key written many times between commits counts once).
	WritesCommitted uint64
	// Coalesced counts writes replaced by a later write to the same key
	// before they were committed.
	Coalesced uint64
	// CommitErrors counts transactions that failed; their writes are
	// queued again and retried at the next flush.
	CommitErrors uint64
	// LastCommitDuration is how long the last transaction took.
	LastCommitDuration time.Duration
	// Pending is the number of writes queued or being committed.
	Pending int
}

// Store is the persistent binding store. Its methods are safe for
// concurrent use.
type Store struct {
	path string
	log  *slog.Logger
	opts Options
	db   *bolt.DB

	mu      sync.Mutex
	pending map[string][]byte // encoded key -> encoded value; nil value: delete
	// spare is the map of the last commit, emptied: the next commit's
	// pending, so that a busy relay does not grow a map every flush.
	spare  map[string][]byte
	closed bool
	// inflight counts the writes taken from pending by the commit in
	// progress and not yet committed; it changes under mu except when a
	// transaction succeeds.
	inflight atomic.Int64

	// commitMu serialises commits so that batches reach the file in the
	// order they were taken from pending.
	commitMu sync.Mutex
	dbClosed atomic.Bool // set under commitMu
	writes   []write     // commit's, under commitMu

	stop      chan struct{}
	loopDone  chan struct{}
	closeOnce sync.Once
	closeErr  error

	commits      atomic.Uint64
	written      atomic.Uint64
	coalesced    atomic.Uint64
	commitErrors atomic.Uint64
	lastCommit   atomic.Int64
	failing      atomic.Bool // a commit failed and none has succeeded since
}

// Open opens the store at path with the default Options; see
// OpenWithOptions.
func Open(path string, logger *slog.Logger) (*Store, error) {
	return OpenWithOptions(path, logger, Options{})
}

// Put queues b to be written. It never waits for the disk: the write is
// committed by the background flush within Options.FlushInterval (or by
// Flush or Close). A later Put or Delete of the same key before that
// replaces it. The error is ErrInvalidBinding for a binding the store
// cannot encode, or ErrClosed.
func (s *Store) Put(b binding.Binding) error {
	key, val, err := encodeRecord(&b)
	if err != nil {
		return err
	}
	return s.queue(string(key), val)
}

// Delete queues the removal of the binding with key k; see Put.
func (s *Store) Delete(k binding.Key) error {
	key, err := encodeKey(k)
	if err != nil {
		return err
	}
	return s.queue(string(key), nil)
}

func (s *Store) queue(key string, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.pending[key]; ok {
		s.coalesced.Add(1)
	}
	s.pending[key] = val
	return nil
}

// Flush commits every write queued before it was called, and returns when
// they are on disk.
func (s *Store) Flush() error {
	return s.commit()
}

// Close stops the background flush, commits what is queued and closes the
// file. Calls after the first return the first one's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		<-s.loopDone
		err := s.commit()
		s.commitMu.Lock()
		s.dbClosed.Store(true)
		if cerr := s.db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store %s: %w", s.path, cerr)
		}
		s.commitMu.Unlock()
		s.closeErr = err
	})
	return s.closeErr
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	pending := len(s.pending) + int(s.inflight.Load())
	s.mu.Unlock()
	return Stats{
		Commits:            s.commits.Load(),
		WritesCommitted:    s.written.Load(),
		Coalesced:          s.coalesced.Load(),
		CommitErrors:       s.commitErrors.Load(),
		LastCommitDuration: time.Duration(s.lastCommit.Load()),
		Pending:            pending,
	}
}

// Path returns the store file's path.
func (s *Store) Path() string { return s.path }

// loop is the write-behind goroutine.
func (s *Store) loop() {
	defer close(s.loopDone)
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			err := s.commit()
			switch {
			case err != nil && !s.failing.Swap(true):
				s.log.Error("binding store commit failed; writes kept in memory and retried",
					"path", s.path, "err", err)
			case err == nil && s.failing.Load() && s.failing.Swap(false):
				s.log.Info("binding store commits succeed again", "path", s.path)
			}
		}
	}
}

// commit writes the queued batch, sorted by key, in transactions of at
// most MaxBatch writes. If a transaction fails, its writes and the ones
// after it go back to the queue unless a newer write to the same key has
// arrived meanwhile.
func (s *Store) commit() error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.dbClosed.Load() {
		return ErrClosed
	}
	s.mu.Lock()
	batch := s.pending
	if len(batch) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.pending = s.spare
	if s.pending == nil {
		s.pending = make(map[string][]byte)
	}
	s.spare = nil
	s.inflight.Store(int64(len(batch)))
	s.mu.Unlock()

	writes := s.writes[:0]
	for k, v := range batch {
		writes = append(writes, write{k, v})
	}
	// The map goes back as the next one's spare, and the slice stays,
	// unless a restore made them large.
	defer func() {
		clear(writes)
		if cap(writes) <= maxSpare {
			s.writes = writes[:0]
		}
		if len(batch) <= maxSpare {
			clear(batch)
			s.mu.Lock()
			s.spare = batch
			s.mu.Unlock()
		}
	}()
	slices.SortFunc(writes, func(a, b write) int { return strings.Compare(a.key, b.key) })

	for start := 0; start < len(writes); start += s.opts.MaxBatch {
		chunk := writes[start:min(start+s.opts.MaxBatch, len(writes))]
		t0 := time.Now()
		// A damaged page bbolt trips over is an error here, not a
		// crash of the relay; Open deals with the file at the next start.
		err := guardFaults(nil, func() error {
			return s.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketBindings)
				if b == nil {
					return fmt.Errorf("%w: bucket %q missing", ErrCorrupt, bucketBindings)
				}
				b.FillPercent = fillPercent
				for _, w := range chunk {
					var err error
					if w.val == nil {
						err = b.Delete([]byte(w.key))
					} else {
						err = b.Put([]byte(w.key), w.val)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
		})
		s.lastCommit.Store(int64(time.Since(t0)))
		if err != nil {
			s.commitErrors.Add(1)
			s.requeue(writes[start:])
			return fmt.Errorf("commit %d writes to store %s: %w", len(chunk), s.path, err)
		}
		s.commits.Add(1)
		s.written.Add(uint64(len(chunk)))
		s.inflight.Add(-int64(len(chunk)))
	}
	return nil
}

// fillPercent is how full bbolt packs the pages it splits, instead of its
// default half: the writes of a commit arrive sorted, and bindings are
// seldom removed in bulk. For a million bindings it makes the file 140 MB
// instead of 250 MB and the reload about a third cheaper.
const fillPercent = 0.9

// maxSpare bounds the writes a Store keeps room for between commits.
const maxSpare = 1 << 16

// write is one queued Put (val set) or Delete (val nil).
type write struct {
	key string
	val []byte
}

func (s *Store) requeue(writes []write) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight.Store(0)
	for _, w := range writes {
		if _, newer := s.pending[w.key]; !newer {
			s.pending[w.key] = w.val
		}
	}
}

// RelayID returns the relay's DUID as stored by SetRelayID, or
// ErrNoRelayID.
func (s *Store) RelayID() ([]byte, error) {
	var id []byte
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRelayID); v != nil {
			id = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read relay-id from store %s: %w", s.path, err)
	}
	if id == nil {
		return nil, ErrNoRelayID
	}
	return id, nil
}

// SetRelayID stores the relay's DUID (1 to 130 octets). Unlike Put it
// writes at once and returns when the DUID is on disk.
func (s *Store) SetRelayID(id []byte) error {
	if len(id) == 0 || len(id) > maxRelayID {
		return fmt.Errorf("set relay-id: DUID is %d octets, want 1 to %d", len(id), maxRelayID)
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.dbClosed.Load() {
		return ErrClosed
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyRelayID, bytes.Clone(id))
	})
	if err != nil {
		return fmt.Errorf("write relay-id to store %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read transaction, unless the store is closed. It does
// not wait for a commit in progress.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	if s.dbClosed.Load() {
		return ErrClosed
	}
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Len returns the number of stored binding records (committed ones), so a
// caller can size its tables before Load.
func (s *Store) Len() (int, error) {
	var n int
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketBindings).Stats().KeyN
		return nil
	})
	return n, err
}

// Load calls fn for every stored binding, in key order, after committing
// what is queued. Expired bindings are returned too: their lifetimes are
// absolute times, and the caller drops those that ended while the relay
// was down. A record that does not decode (damaged, or written by a newer
// version) is skipped, left in place and counted in skipped. Load stops at
// the first error fn returns and returns it. Load is meant for start-up;
// fn must not call the Store's other methods except Put and Delete.
func (s *Store) Load(fn func(binding.Binding) error) (skipped int, err error) {
	if err := s.Flush(); err != nil {
		return 0, err
	}
	var (
		n        int
		firstBad error
		inFn     bool
	)
	err = guardFaults(&inFn, func() error {
		return s.view(func(tx *bolt.Tx) error {
			in := make(interner)
			c := tx.Bucket(bucketBindings).Cursor()
			var b binding.Binding
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var derr error
				if v == nil {
					derr = decodeErr("nested bucket %x", k)
				} else {
					derr = decodeInto(&b, k, v, in)
				}
				if derr != nil {
					skipped++
					if firstBad == nil {
						firstBad = fmt.Errorf("record %x: %w", k, derr)
					}
					continue
				}
				n++
				inFn = true
				if err := fn(b); err != nil {
					return err
				}
				inFn = false
			}
			return nil
		})
	})
	if skipped > 0 {
		s.log.Warn("binding store: skipped undecodable records",
			"path", s.path, "skipped", skipped, "loaded", n, "first_err", firstBad)
	}
	if err != nil {
		return skipped, fmt.Errorf("load bindings from store %s: %w", s.path, err)
	}
	return skipped, nil
}

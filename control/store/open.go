package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// OpenWithOptions opens the store at path, creating the file (and its
// directory) if needed, and starts the background flush.
//
// A file that is unreadable is renamed to "<path>.corrupt-<unix time>",
// logged at error level with the cause, and replaced by an empty store.
// Unreadable means: not a bbolt file or both meta pages damaged (bad
// magic, version or checksum), shorter than its meta page says (truncated),
// a bbolt fault or panic while opening it or while walking every record
// (unless Options.SkipVerify), or a bucket layout this version does not
// know (missing meta bucket, other schema version). A single record that
// does not decode is not: Load skips and counts it.
//
// Failures that say nothing about the file are returned and leave it in
// place: another process holding the lock (ErrLocked, after
// Options.LockTimeout), permissions, a directory at path, I/O errors.
func OpenWithOptions(path string, logger *slog.Logger, opts Options) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	t0 := time.Now()
	db, records, err := openDB(path, opts)
	var corrupt *corruptError
	if errors.As(err, &corrupt) {
		aside, merr := moveAside(path)
		if merr != nil {
			return nil, fmt.Errorf("open store %s: %w; moving it aside failed: %v", path, err, merr)
		}
		logger.Error("binding store unreadable: moved aside, starting with an empty store",
			"path", path, "moved_to", aside, "cause", corrupt.err)
		db, records, err = openDB(path, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		path:     path,
		log:      logger,
		opts:     opts,
		db:       db,
		pending:  make(map[string][]byte),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	attrs := []any{"path", path, "took", time.Since(t0).Round(time.Millisecond)}
	if !opts.SkipVerify {
		attrs = append(attrs, "records", records)
	}
	logger.Info("binding store opened", attrs...)
	go s.loop()
	return s, nil
}

// corruptError marks an error that means the file is unreadable.
type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }
func (e *corruptError) Unwrap() error { return e.err }

func corruptf(format string, args ...any) error {
	return &corruptError{fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))}
}

// openDB opens and checks the bbolt file. It returns a *corruptError when
// the file is unreadable, and the number of binding records when it
// verified them.
func openDB(path string, opts Options) (db *bolt.DB, records int, err error) {
	if err := checkFile(path); err != nil {
		return nil, 0, err
	}
	err = guardFaults(nil, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:      opts.LockTimeout,
			FreelistType: bolt.FreelistMapType,
		})
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, berrors.ErrTimeout):
		return nil, 0, fmt.Errorf("%w (waited %s)", ErrLocked, opts.LockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrChecksum), errors.Is(err, errFault):
		// A fault leaves bbolt's descriptor and mapping behind: the
		// price of not crashing, paid once.
		return nil, 0, &corruptError{err}
	default:
		return nil, 0, err
	}
	if err := initSchema(db); err != nil {
		_ = db.Close()
		if errors.Is(err, ErrCorrupt) {
			return nil, 0, &corruptError{err}
		}
		return nil, 0, err
	}
	if !opts.SkipVerify {
		err := guardFaults(nil, func() error {
			return db.View(func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketBindings).Cursor()
				for k, _ := c.First(); k != nil; k, _ = c.Next() {
					records++
				}
				return nil
			})
		})
		if err != nil {
			_ = db.Close()
			return nil, 0, &corruptError{fmt.Errorf("verify records: %w", err)}
		}
	}
	return db, records, nil
}

// initSchema creates the buckets of a new file and checks those of an
// existing one.
func initSchema(db *bolt.DB) error {
	return guardFaults(nil, func() error {
		return db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil {
				empty := true
				_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
				if !empty {
					return corruptf("bucket %q missing", bucketMeta)
				}
				var err error
				if meta, err = tx.CreateBucket(bucketMeta); err != nil {
					return err
				}
				if err := meta.Put(keySchema, []byte{schemaVersion}); err != nil {
					return err
				}
			}
			if v := meta.Get(keySchema); len(v) != 1 || v[0] != schemaVersion {
				return corruptf("schema version %x, want %d", v, schemaVersion)
			}
			_, err := tx.CreateBucketIfNotExists(bucketBindings)
			if errors.Is(err, berrors.ErrIncompatibleValue) {
				return corruptf("%q is not a bucket", bucketBindings)
			}
			return err
		})
	})
}

var errFault = errors.New("fault reading store file")

// guardFaults runs fn with memory faults turned into panics (the file is
// mapped into memory: reading past the end of a truncated file raises
// SIGBUS) and turns a panic in fn, such as one bbolt raises on a damaged
// page, into an error wrapping errFault. A panic while *inFn is true is
// the caller's own and is passed on.
func guardFaults(inFn *bool, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if inFn != nil && *inFn {
				panic(r)
			}
			err = fmt.Errorf("%w: %w: %v", ErrCorrupt, errFault, r)
		}
	}()
	return fn()
}

// moveAside renames path to path.corrupt-<unix time>, with a counter if
// that name is taken.
func moveAside(path string) (string, error) {
	base := path + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	dst := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(path, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// bbolt's file format (version 2): every page starts with a 16-octet
// header; pages 0 and 1 hold a meta record in native byte order:
//
//	0  magic u32   4 version u32   8 page size u32   12 flags u32
//	16 root bucket: root pgid u64, sequence u64
//	32 freelist pgid u64   40 high-water pgid u64   48 txid u64
//	56 checksum u64 (FNV-64a of octets 0..55)
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeader     = 16
	boltMetaLen        = 64
	boltNoFreelist     = ^uint64(0)
	boltMinPageSize    = 1024
	boltMaxPageProbe   = 14 // bbolt probes page sizes up to 1024<<14
	boltMetaChecksumAt = 56
)

type boltMeta struct {
	pageSize uint64
	root     uint64
	freelist uint64
	hwm      uint64
	txid     uint64
	err      error
}

func parseMeta(p []byte) boltMeta {
	if len(p) < boltPageHeader+boltMetaLen {
		return boltMeta{err: errors.New("short meta page")}
	}
	m := p[boltPageHeader : boltPageHeader+boltMetaLen]
	ne := binary.NativeEndian
	bm := boltMeta{
		pageSize: uint64(ne.Uint32(m[8:])),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		hwm:      ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}
	h := fnv.New64a()
	h.Write(m[:boltMetaChecksumAt])
	switch {
	case ne.Uint32(m[0:]) != boltMagic:
		bm.err = errors.New("bad magic (not a bbolt file)")
	case ne.Uint32(m[4:]) != boltVersion:
		bm.err = fmt.Errorf("bbolt format version %d", ne.Uint32(m[4:]))
	case ne.Uint64(m[boltMetaChecksumAt:]) != h.Sum64():
		bm.err = errors.New("meta checksum mismatch")
	}
	return bm
}

// checkFile looks at the meta pages of the file at path the way bbolt will
// and returns a *corruptError if bbolt would refuse the file or, worse,
// read past its end (a truncated file). A missing or empty file is fine:
// bbolt initialises it.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	read := func(off int64) []byte {
		buf := make([]byte, boltPageHeader+boltMetaLen)
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil
		}
		return buf[:n]
	}
	m0 := parseMeta(read(0))
	pageSize := m0.pageSize
	if m0.err != nil {
		// Find the second meta page as bbolt does, by trying page sizes.
		pageSize = uint64(os.Getpagesize())
		for i := 0; i <= boltMaxPageProbe; i++ {
			pos := int64(boltMinPageSize) << i
			if pos >= size {
				break
			}
			if m := parseMeta(read(pos)); m.err == nil && m.pageSize == uint64(pos) {
				pageSize = uint64(pos)
				break
			}
		}
	}
	if pageSize < boltMinPageSize || pageSize > boltMinPageSize<<boltMaxPageProbe {
		return corruptf("page size %d", pageSize)
	}
	m1 := parseMeta(read(int64(pageSize)))
	if m0.err != nil && m1.err != nil {
		return corruptf("both meta pages invalid: %v; %v", m0.err, m1.err)
	}
	// bbolt uses the meta page with the higher transaction id if it is
	// valid, else the other one.
	m := m0
	if m1.txid > m0.txid && m1.err == nil || m0.err != nil {
		m = m1
	}
	switch {
	case m.pageSize != pageSize:
		return corruptf("meta page size %d, file page size %d", m.pageSize, pageSize)
	case m.hwm < 4 || m.hwm > uint64(size)/pageSize:
		return corruptf("file is %d octets, its meta page says %d pages of %d (truncated?)",
			size, m.hwm, pageSize)
	case m.root < 2 || m.root >= m.hwm:
		return corruptf("root page %d outside 2..%d", m.root, m.hwm-1)
	case m.freelist != boltNoFreelist && (m.freelist < 2 || m.freelist >= m.hwm):
		return corruptf("freelist page %d outside 2..%d", m.freelist, m.hwm-1)
	}
	return nil
}

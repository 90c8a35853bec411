package nftguard

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// DefaultTable is the name of the guard's table (family ip6).
const DefaultTable = "pdrelay"

// DefaultBatch is the most element changes one netlink transaction
// carries. A Flush or a fill step holds the Guard's lock for one
// transaction, so this bounds how long a binding change can wait behind
// the fill (about 4 us an element: some 30 ms).
const DefaultBatch = 8192

// ErrUnsupported is returned by New on systems without nf_tables.
var ErrUnsupported = errors.New("nftguard: nf_tables needs Linux")

// Config describes the guard.
type Config struct {
	// Table is the name of the ip6 table the guard owns; empty means
	// DefaultTable. A table of that name is replaced at New.
	Table string
	// Ports are the downlinks whose forwarded traffic is checked.
	Ports []Port
	// NetNS is an open file descriptor of the network namespace to work
	// in; 0 means the caller's.
	NetNS int
	// Batch is the most element changes per netlink transaction; 0 means
	// DefaultBatch.
	Batch int
	// Check is how often Run checks that the table is still whole (an
	// operator's `nft flush ruleset` deletes it); 0 means DefaultCheck,
	// negative never.
	Check time.Duration
	// Log receives the guard's events (fill, rebuild, failures); nil
	// discards them.
	Log *slog.Logger
}

// DefaultCheck is how often Run checks the table by default.
const DefaultCheck = 5 * time.Second

// Port is one downlink.
type Port struct {
	// Name is the interface name (at most 15 bytes).
	Name string
	// AllowedSources are always allowed on the port (the port's
	// configured allowed_sources), besides the prefixes given by Add.
	AllowedSources []netip.Prefix
}

// key is one allowed source prefix on one port: the masked address, the
// port's index and the prefix length.
type key struct {
	addr [16]byte
	port uint16
	bits uint8
}

// setKey names one of a port's sets: the prefixes of one length.
type setKey struct {
	port uint16
	bits uint8
}

// entry is the state of one key: how many holders want it (negative only
// while a restore is being counted in, see Restore) and whether the
// kernel's set holds it.
type entry struct {
	refs int32
	in   bool
}

// tx is one netlink transaction: an optional (re)install of the table's
// skeleton, the sets (each with its rule) to create, and element changes.
// Within a tx every key appears at most once.
type tx struct {
	names   []string // every port's name, in index order
	install bool     // delete any table of the name and create the skeleton
	newSets []setKey // sets to create, with their source rule
	elems   map[setKey]*setOps
	n       int // element changes
}

// setOps are the element changes of one set.
type setOps struct {
	add, del [][16]byte
}

func (t *tx) change(sk setKey, addr [16]byte, add bool) {
	if t.elems == nil {
		t.elems = map[setKey]*setOps{}
	}
	o := t.elems[sk]
	if o == nil {
		o = &setOps{}
		t.elems[sk] = o
	}
	if add {
		o.add = append(o.add, addr)
	} else {
		o.del = append(o.del, addr)
	}
	t.n++
}

// setKeys returns the keys of t's element changes, sorted, so that a tx
// is written in the same order every time.
func (t *tx) setKeys() []setKey {
	return slices.SortedFunc(maps.Keys(t.elems), func(a, b setKey) int {
		if a.port != b.port {
			return int(a.port) - int(b.port)
		}
		return int(a.bits) - int(b.bits)
	})
}

func (t *tx) empty() bool { return !t.install && len(t.newSets) == 0 && t.n == 0 }

// kernel is what the Guard needs from nf_tables; nlKernel is the real
// one, tests use a model.
type kernel interface {
	// apply commits t as one transaction: all of it or nothing.
	apply(t *tx) error
	// remove deletes the table; an absent table is not an error.
	remove() error
	// counters returns the packets each port's drop counter has counted,
	// by port name.
	counters() (map[string]uint64, error)
	// rules returns the number of rules in each of chains, and whether
	// the table exists at all.
	rules(chains []string) (map[string]int, bool, error)
	// close lets go of the kernel (the table stays).
	close()
}

// Guard keeps the kernel's guard table equal to its desired state: the
// allowed sources of every port. See the package documentation.
type Guard struct {
	k     kernel
	log   *slog.Logger
	names []string          // port index -> interface name
	index map[string]uint16 // interface name -> port index
	batch int
	every time.Duration // Config.Check

	mu      sync.Mutex
	refs    map[key]entry
	live    []key // keys Add and Delete changed since the last Flush
	bulk    []key // keys to write after an install (rebuild)
	restore []key // restored sources not yet counted in
	sets    map[setKey]bool
	neg     int  // entries with refs < 0
	filling bool // Restore was called and its keys are not all counted in
	broken  bool // a transaction failed: the table must be rebuilt
	check   bool // time to check that the table is whole
	closed  bool
	// fillStart and rebuildStart time the fill and the last rebuild for
	// their log lines; zero when none runs.
	fillStart, rebuildStart time.Time
	fillN                   int
	retry                   time.Duration // wait before the next reinstall attempt
	wake                    chan struct{}
}

// New installs the guard's table in the kernel, replacing any table of
// the same name (one a crashed relay left), with every port's chain and
// its allowed_sources: from then on forwarded traffic from a downlink is
// dropped unless its source is allowed. It fails with the kernel's cause
// (no nf_tables, no CAP_NET_ADMIN).
func New(cfg Config) (*Guard, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	g, err := newGuard(cfg)
	if err != nil {
		return nil, err
	}
	k, err := openKernel(cfg.Table, cfg.NetNS)
	if err != nil {
		return nil, err
	}
	g.k = k
	if err := g.install(); err != nil {
		k.close()
		return nil, err
	}
	return g, nil
}

// newGuard checks cfg and builds a Guard without a kernel.
func newGuard(cfg Config) (*Guard, error) {
	if len(cfg.Table) > 200 {
		return nil, fmt.Errorf("nftguard: table name %q: want 1 to 200 bytes", cfg.Table)
	}
	g := &Guard{
		log:   cfg.Log,
		index: map[string]uint16{},
		batch: cfg.Batch,
		every: cfg.Check,
		refs:  map[key]entry{},
		sets:  map[setKey]bool{},
		wake:  make(chan struct{}, 1),
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.batch <= 0 {
		g.batch = DefaultBatch
	}
	if g.every == 0 {
		g.every = DefaultCheck
	}
	if len(cfg.Ports) > 1<<16-1 {
		return nil, fmt.Errorf("nftguard: %d ports: at most 65535", len(cfg.Ports))
	}
	for _, p := range cfg.Ports {
		if p.Name == "" || len(p.Name) > 15 || slices.Contains([]byte(p.Name), 0) {
			return nil, fmt.Errorf("nftguard: port %q: an interface name has 1 to 15 bytes", p.Name)
		}
		if _, dup := g.index[p.Name]; dup {
			return nil, fmt.Errorf("nftguard: port %q given twice", p.Name)
		}
		g.index[p.Name] = uint16(len(g.names))
		g.names = append(g.names, p.Name)
	}
	for _, p := range cfg.Ports {
		for _, s := range p.AllowedSources {
			if !g.Add(p.Name, s) {
				return nil, fmt.Errorf("nftguard: port %s: allowed source %v is not an IPv6 prefix", p.Name, s)
			}
		}
	}
	return g, nil
}

// install creates the table, replacing any of its name, and writes the
// sources known at New: the allowed_sources.
func (g *Guard) install() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.reinstallLocked(); err != nil {
		return err
	}
	for len(g.bulk) > 0 {
		if err := g.applyLocked(g.takeBulk()); err != nil {
			return err
		}
	}
	return nil
}

// keyOf returns the key of p on port, or false for an unknown port or a
// prefix that is not IPv6.
func (g *Guard) keyOf(port string, p netip.Prefix) (key, bool) {
	i, ok := g.index[port]
	if !ok || !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
		return key{}, false
	}
	p = p.Masked()
	return key{addr: p.Addr().As16(), port: i, bits: uint8(p.Bits())}, true
}

// Add allows sources in p on port on behalf of one holder (a binding, or
// the port's configuration). Each Add needs its own Delete. The kernel
// sees it at the next Flush. Add reports false, and does nothing, for a
// port the guard does not know or a prefix that is not IPv6.
func (g *Guard) Add(port string, p netip.Prefix) bool {
	k, ok := g.keyOf(port, p)
	if !ok {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.count(k, +1)
	g.live = append(g.live, k)
	return true
}

// Delete drops one holder of p on port. The prefix stays allowed while
// another holds it. The kernel sees it at the next Flush. Delete reports
// false, and does nothing, if nothing held p there (or, while a restore
// is counted in, for an unknown port or a prefix that is not IPv6).
func (g *Guard) Delete(port string, p netip.Prefix) bool {
	k, ok := g.keyOf(port, p)
	if !ok {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.filling && g.refs[k].refs <= 0 {
		return false
	}
	g.count(k, -1)
	g.live = append(g.live, k)
	return true
}

// count adds d to k's holders.
func (g *Guard) count(k key, d int32) {
	e := g.refs[k]
	was := e.refs
	e.refs += d
	switch {
	case was >= 0 && e.refs < 0:
		g.neg++
	case was < 0 && e.refs >= 0:
		g.neg--
	}
	if e.refs == 0 && !e.in {
		delete(g.refs, k)
		return
	}
	g.refs[k] = e
}

// Flush writes the changes made by Add and Delete since the last Flush
// to the kernel, in one transaction (several past Config.Batch changes).
// If one fails, the guard logs it and rebuilds the table from its desired
// state in Run, and Flush returns the error.
func (g *Guard) Flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.live = g.live[:0]
		return nil
	}
	if g.broken {
		g.live = g.live[:0] // the rebuild writes everything
		return nil
	}
	for len(g.live) > 0 {
		n := min(len(g.live), g.batch)
		err := g.applyLocked(g.live[:n])
		if err != nil {
			g.live = g.live[:0]
			return err
		}
		g.live = g.live[n:]
	}
	g.live = nil
	return nil
}

// applyLocked writes the keys' current state to the kernel in one
// transaction, creating the sets of new prefix lengths in it. The state
// is recorded as written before the kernel answers; if it refuses, the
// Guard is marked broken and Run rebuilds the table.
func (g *Guard) applyLocked(keys []key) error {
	t := tx{names: g.names}
	g.plan(keys, &t)
	if t.empty() {
		return nil
	}
	if err := g.k.apply(&t); err != nil {
		g.fail(fmt.Errorf("nftguard: write %d source changes: %w", t.n, err))
		return err
	}
	return nil
}

// plan adds to t what the kernel needs for keys to match their state.
func (g *Guard) plan(keys []key, t *tx) {
	for _, k := range keys {
		e, ok := g.refs[k]
		if !ok {
			continue // back to nothing, and not in the kernel
		}
		want := e.refs > 0
		if want == e.in {
			continue
		}
		sk := setKey{k.port, k.bits}
		if want && !g.sets[sk] {
			g.sets[sk] = true
			t.newSets = append(t.newSets, sk)
		}
		t.change(sk, k.addr, want)
		e.in = want
		if e.refs == 0 && !e.in {
			delete(g.refs, k)
		} else {
			g.refs[k] = e
		}
	}
}

// fail records a failed transaction: the kernel's table no longer matches
// what the Guard believes, so Run rebuilds it.
func (g *Guard) fail(err error) {
	g.log.Error("kernel guard out of sync: rebuilding its table", "err", err)
	if !g.broken {
		g.broken = true
		g.retry = 0
	}
	g.signal()
}

func (g *Guard) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// reinstallLocked replaces the table with an empty skeleton (every
// downlink's traffic dropped) and queues every wanted key for Run to
// write again.
func (g *Guard) reinstallLocked() error {
	t := tx{install: true, names: g.names}
	if err := g.k.apply(&t); err != nil {
		return fmt.Errorf("nftguard: install table: %w", err)
	}
	clear(g.sets)
	g.bulk = g.bulk[:0]
	for k, e := range g.refs {
		if e.refs == 0 {
			delete(g.refs, k) // only in the old table
			continue
		}
		if e.in {
			e.in = false
			g.refs[k] = e
		}
		if e.refs > 0 {
			g.bulk = append(g.bulk, k)
		}
	}
	g.broken = false
	return nil
}

// takeBulk returns the next batch of bulk keys.
func (g *Guard) takeBulk() []key {
	n := min(len(g.bulk), g.batch)
	b := g.bulk[:n]
	g.bulk = g.bulk[n:]
	if len(g.bulk) == 0 {
		g.bulk = nil
	}
	return b
}

// BeginRestore tells the Guard that Restore will follow: until its
// sources are counted in, a Delete may come before the source it deletes
// (the binding ended while the fill had not reached it). Call it before
// the binding sink passes on its first change.
func (g *Guard) BeginRestore() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.filling = true
	g.fillStart = time.Now()
}

// Restore hands the Guard the sources of the bindings restored at start,
// port by prefix; Run writes them to the kernel beside the running relay
// (about 3 us each). The binding changes passed on by Add and Delete from
// BeginRestore on count on top of these, in any order with the fill.
// Entries of unknown ports are skipped. Without BeginRestore, Restore
// begins the restore itself.
func (g *Guard) Restore(sources iter.Seq2[string, netip.Prefix]) {
	var ks []key
	for port, p := range sources {
		if k, ok := g.keyOf(port, p); ok {
			ks = append(ks, k)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(ks) > len(g.refs) {
		// Room for all of them at once: growing a map one key at a time
		// to 1M rehashes it some twenty times.
		m := make(map[key]entry, len(g.refs)+len(ks))
		maps.Copy(m, g.refs)
		g.refs = m
	}
	g.restore = append(g.restore, ks...)
	if !g.filling {
		g.filling = true
		g.fillStart = time.Now()
	}
	if len(g.restore) == 0 {
		g.endFill()
		return
	}
	g.signal()
}

// Run does the Guard's background work until ctx ends: it writes the
// restored sources (Restore), rebuilds the table after a failed
// transaction, and checks every Config.Check that the table is whole,
// reinstalling it if not. It returns nil when ctx ends.
func (g *Guard) Run(ctx context.Context) error {
	g.log.Info("kernel guard running")
	defer g.log.Info("kernel guard stopped")
	var tick <-chan time.Time
	if g.every > 0 {
		t := time.NewTicker(g.every)
		defer t.Stop()
		tick = t.C
	}
	for {
		wait, err := g.step()
		if err != nil {
			g.log.Error("kernel guard: reinstall failed; retrying", "in", wait, "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if wait == 0 && g.busy() {
			continue
		}
		var retry <-chan time.Time
		if wait > 0 {
			retry = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-g.wake:
		case <-retry:
		case <-tick:
			g.mu.Lock()
			g.check = true
			g.mu.Unlock()
		}
	}
}

// busy reports whether Run has work queued.
func (g *Guard) busy() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.closed && (g.broken || g.check || len(g.restore) > 0 || len(g.bulk) > 0)
}

// step does one unit of background work under the lock: a reinstall, or
// one batch of the fill or of a rebuild. It returns how long to wait
// before retrying a failed reinstall (0: no wait), with its error.
func (g *Guard) step() (time.Duration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, nil
	}
	if g.check && !g.broken {
		g.check = false
		g.verifyLocked()
	}
	switch {
	case g.broken:
		if err := g.reinstallLocked(); err != nil {
			g.retry = min(max(2*g.retry, 100*time.Millisecond), 30*time.Second)
			return g.retry, err
		}
		g.retry = 0
		g.rebuildStart = time.Now()
		g.log.Info("kernel guard table reinstalled: downlink traffic through the kernel is dropped until its sources are written",
			"sources", len(g.bulk))
		g.rebuilt()
	case len(g.restore) > 0:
		n := min(len(g.restore), g.batch)
		chunk := g.restore[:n]
		for _, k := range chunk {
			g.count(k, +1)
		}
		g.restore = g.restore[n:]
		g.fillN += n
		_ = g.applyLocked(chunk) // a failure is logged and rebuilds
		if len(g.restore) == 0 {
			g.restore = nil
			g.endFill()
		}
	case len(g.bulk) > 0:
		_ = g.applyLocked(g.takeBulk())
		g.rebuilt()
	}
	return 0, nil
}

// rebuilt logs the end of a rebuild once its sources are all written.
func (g *Guard) rebuilt() {
	if len(g.bulk) == 0 && !g.broken && !g.rebuildStart.IsZero() {
		g.log.Info("kernel guard table rebuilt", "took", time.Since(g.rebuildStart).Round(time.Millisecond))
		g.rebuildStart = time.Time{}
	}
}

// verifyLocked checks that the table and its rules are as the Guard
// wrote them, and marks it broken if not: someone deleted the table
// (`nft flush ruleset`) or flushed or deleted rules. Elements changed by
// hand are not seen.
func (g *Guard) verifyLocked() {
	chains := make([]string, 0, len(g.names)+1)
	want := make(map[string]int, len(g.names)+1)
	chains = append(chains, baseChain)
	want[baseChain] = 1 // the dispatch
	for _, p := range g.names {
		chains = append(chains, portChain(p))
		want[portChain(p)] = 1 // the counted drop
	}
	for sk := range g.sets {
		want[portChain(g.names[sk.port])]++
	}
	got, exists, err := g.k.rules(chains)
	switch {
	case err != nil:
		g.log.Warn("kernel guard: cannot check its table", "err", err)
		return
	case !exists:
		g.log.Warn("kernel guard table deleted from outside: reinstalling it")
		g.broken = true
		return
	}
	for _, ch := range chains {
		if got[ch] != want[ch] {
			g.log.Warn("kernel guard table changed from outside: reinstalling it", "chain", ch, "rules", got[ch], "want", want[ch])
			g.broken = true
			return
		}
	}
}

// endFill ends a restore: every restored source is counted in, so a
// negative count is a Delete no Add matched, which is logged and
// dropped.
func (g *Guard) endFill() {
	g.filling = false
	g.log.Info("kernel guard filled", "sources", g.fillN, "took", time.Since(g.fillStart).Round(time.Millisecond))
	if g.neg == 0 {
		return
	}
	g.log.Error("kernel guard: deletes without an add during the fill", "count", g.neg)
	for k, e := range g.refs {
		if e.refs < 0 {
			e.refs = 0
			g.refs[k] = e
			if !e.in {
				delete(g.refs, k)
			}
		}
	}
	g.neg = 0
}

// Filled reports whether the restored sources are all written (true if
// Restore was never called) and no rebuild is under way.
func (g *Guard) Filled() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.filling && !g.broken && len(g.bulk) == 0
}

// Len returns the number of (port, prefix) entries the Guard wants in the
// kernel.
func (g *Guard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, e := range g.refs {
		if e.refs > 0 {
			n++
		}
	}
	return n
}

// Drops returns the packets each port's rule has dropped, by interface
// name, read from the kernel's counters.
func (g *Guard) Drops() (map[string]uint64, error) {
	c, err := g.k.counters()
	if err != nil {
		return nil, fmt.Errorf("nftguard: read drop counters: %w", err)
	}
	out := make(map[string]uint64, len(g.names))
	for _, name := range g.names {
		out[name] = c[name]
	}
	return out, nil
}

// Close deletes the table: forwarded traffic from the downlinks is then
// no longer checked. Later calls do nothing.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if err := g.k.remove(); err != nil {
		return fmt.Errorf("nftguard: remove table: %w", err)
	}
	return nil
}

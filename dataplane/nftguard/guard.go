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

	"github.com/pdrelay/pdrelay/fib"
)

// DefaultTable is the name of the guard's table (family ip6).
const DefaultTable = "pdrelay"

// DefaultBatch is the most element changes one netlink transaction
// carries. A Flush or a fill step holds the Guard's lock for one
// transaction, so this bounds how long a binding change can wait behind
// the fill (about 4 us an element: some 30 ms).
const DefaultBatch = 8192

// DefaultICMPBurst is the ICMPv6 errors a port may send back to back
// (kernel mode, loop_icmp), as the xdp modes' token bucket.
const DefaultICMPBurst = 10

// ErrUnsupported is returned by New on systems without nf_tables.
var ErrUnsupported = errors.New("nftguard: nf_tables needs Linux")

// errTableChanged is a strict rewrite's error when the table or one of
// its element sets is gone.
var errTableChanged = errors.New("table or element set gone")

// Config describes the guard.
type Config struct {
	// Table is the name of the ip6 table the guard owns; empty means
	// DefaultTable. In the xdp modes a table of that name is replaced at
	// New; in kernel mode it is adopted (see the package documentation).
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

	// Kernel selects kernel mode (dataplane.mode: kernel): the kernel
	// forwards all traffic and the table is the router's whole
	// anti-spoofing and loop prevention. It adds the loop rules, the
	// destinations (Delegate) and the counters of Counters, and New
	// adopts a table of the name instead of replacing it.
	Kernel bool
	// Keep leaves the table in the kernel at Close (kernel mode without
	// kernel.flush_on_stop), so that traffic keeps flowing, checked,
	// while the relay restarts.
	Keep bool
	// Uplink, in kernel mode, is the uplink's interface name: packets
	// forwarded out of it are counted as forwarded too. Empty: only the
	// downlinks' are.
	Uplink string
	// ICMPRate is how many ICMPv6 errors for looping packets each port
	// with LoopICMP may send a second (dataplane.icmp_rate); 0 sends
	// none. ICMPBurst is how many back to back; 0 means
	// DefaultICMPBurst.
	ICMPRate, ICMPBurst int
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

	// The rest is kernel mode's loop prevention (RFC 8987 R-5).

	// MultiAccess marks a port on which clients share a segment
	// (link_type: multi-access): a packet back out of it is a loop only
	// when it comes from the client the destination is delegated to.
	MultiAccess bool
	// Loop is the port's loop_policy: fib.LoopDrop (also for
	// fib.LoopDefault) or fib.LoopForward.
	Loop fib.LoopPolicy
	// LoopICMP answers a dropped loop with an ICMPv6 Destination
	// Unreachable, code 6 (reject route), within Config.ICMPRate.
	LoopICMP bool
	// LoopOverrides are the port's per-destination loop policies
	// (loop_overrides prefix entries): the longest one holding the
	// destination wins over the client's policy and the port's.
	LoopOverrides []LoopOverride
}

// LoopOverride is the loop policy for destinations in Prefix.
type LoopOverride struct {
	Prefix netip.Prefix
	Policy fib.LoopPolicy // fib.LoopDrop or fib.LoopForward
}

// key is one element of the desired state on one port: the masked
// address, the port's index, the prefix length, and whether it is a
// destination (kernel mode) or an allowed source.
type key struct {
	addr [16]byte
	port uint16
	bits uint8
	dst  bool
}

// setKey names one of a port's element sets: the elements of one kind
// and prefix length, and for destinations of one loop code.
type setKey struct {
	port uint16
	bits uint8
	kind uint8
	code uint8 // 0 for sources
}

// entry is the state of one source key: how many holders want it
// (negative only while a restore is being counted in, see Restore) and
// whether the kernel's set holds it.
type entry struct {
	refs int32
	in   bool
}

// tx is one netlink transaction: an optional (re)write of the table's
// skeleton, the element sets to create, and element changes. Within a
// tx every element appears at most once in each set's adds and once in
// its deletes (deletes are written first).
type tx struct {
	// layout is the skeleton to write with install or rewrite, and the
	// ports and sets every tx describes its changes in.
	layout *layout
	// install deletes any table of the name and writes the layout's
	// skeleton (with no elements) in its place.
	install bool
	// rewrite writes the layout's skeleton over the existing table in
	// place: its element sets in layout.sets keep their elements;
	// everything else the layout does not have is deleted. With strict
	// the table and every set of the layout must exist (errTableChanged),
	// as the Guard's state of their elements assumes; without, missing
	// ones are created empty.
	rewrite bool
	strict  bool
	// ensure gives these ports of an adopted table a chain that drops
	// everything, unless the table has one (kernel mode, at New).
	ensure []portLayout
	// newSets are sets to create; each gets its rule unless norule (a
	// generation being written beside the live one) or the skeleton is
	// written in the same tx.
	newSets []setKey
	norule  bool
	elems   map[setKey]*setOps
	n       int // element changes
}

// elem is one set element: the masked prefix, and in multi-access
// destination sets the client's MAC.
type elem struct {
	addr [16]byte
	mac  [6]byte
}

// setOps are the element changes of one set.
type setOps struct {
	add, del []elem
}

func (t *tx) change(sk setKey, e elem, add bool) {
	if t.elems == nil {
		t.elems = map[setKey]*setOps{}
	}
	o := t.elems[sk]
	if o == nil {
		o = &setOps{}
		t.elems[sk] = o
	}
	if add {
		o.add = append(o.add, e)
	} else {
		o.del = append(o.del, e)
	}
	t.n++
}

// setKeys returns the keys of t's element changes, sorted, so that a tx
// is written in the same order every time.
func (t *tx) setKeys() []setKey {
	s := slices.Collect(maps.Keys(t.elems))
	sortSets(s)
	return s
}

func (t *tx) empty() bool {
	return !t.install && !t.rewrite && len(t.ensure) == 0 && len(t.newSets) == 0 && t.n == 0
}

// probe is what kernel.probe finds of an existing table.
type probe struct {
	exists bool // the table exists
	// usable: it has the base chain and the ports map, so that it can
	// be adopted.
	usable bool
	chains map[string]bool
	maxGen uint32 // the highest set generation in it
}

// kernel is what the Guard needs from nf_tables; nlKernel is the real
// one, tests use a model.
type kernel interface {
	// apply commits t as one transaction: all of it or nothing.
	apply(t *tx) error
	// remove deletes the table; an absent table is not an error.
	remove() error
	// counters returns the packets counted by each named counter of the
	// table.
	counters() (map[string]uint64, error)
	// check compares the table's chains with l: whether the table exists,
	// and what differs ("" if nothing).
	check(l *layout) (exists bool, diff string, err error)
	// probe looks at an existing table before it is adopted.
	probe() (probe, error)
	// close lets go of the kernel (the table stays).
	close()
}

// portState is a port as the Guard keeps it; a removed port keeps its
// index with an empty name, so that keys need no renumbering.
type portState struct {
	Port
	overrides []LoopOverride // checked, masked, longest first
}

// Guard keeps the kernel's guard table equal to its desired state: the
// allowed sources of every port and, in kernel mode, the delegated
// prefixes. See the package documentation.
type Guard struct {
	k          kernel
	log        *slog.Logger
	kernelMode bool
	keep       bool
	table      string
	batch      int
	every      time.Duration // Config.Check

	mu                  sync.Mutex
	ports               []portState       // port index -> port; removed: Name ""
	index               map[string]uint16 // interface name -> port index
	uplink              string
	icmpRate, icmpBurst int
	refs                map[key]entry
	dsts                map[key]dstEntry
	live                []key // keys changed since the last Flush
	bulk                []key // keys to write after an install or a new generation
	restore             []key // restored sources not yet counted in
	restoreD            []restoredDst
	sets                map[setKey]bool
	// gen is the generation of kernel mode's element sets; building
	// says a new one is being written beside the live one, whose rules
	// stay in force until the switch.
	gen      uint32
	building bool
	neg      int  // entries with refs < 0
	filling  bool // Restore was called and its keys are not all counted in
	broken   bool // a transaction failed: the table must be rebuilt
	check    bool // time to check that the table is whole
	damaged  bool // the check found the rules changed from outside
	closed   bool
	// fillStart and rebuildStart time the fill and the last rebuild for
	// their log lines; zero when none runs.
	fillStart, rebuildStart time.Time
	fillN                   int
	retry                   time.Duration // wait before the next reinstall attempt
	wake                    chan struct{}
}

// New installs the guard's table in the kernel and returns the Guard. It
// fails with the kernel's cause (no nf_tables, no CAP_NET_ADMIN).
//
// In the xdp modes it replaces any table of the name (one a crashed relay
// left) with every port's chain and its allowed_sources: from then on
// forwarded traffic from a downlink is dropped unless its source is
// allowed.
//
// In kernel mode a table of the name that a relay left (a restart) is
// adopted: it stays in force, unchanged, while the Guard writes a new
// generation of sets beside it from the restored state (Restore or
// RestoreDelegations, which must follow), and the switch to the new
// generation is one transaction; a port the old table does not know gets
// a chain that drops all its forwarded traffic at once. Without such a
// table New installs a fresh one, as in the xdp modes.
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
		log:        cfg.Log,
		kernelMode: cfg.Kernel,
		keep:       cfg.Keep,
		table:      cfg.Table,
		index:      map[string]uint16{},
		batch:      cfg.Batch,
		every:      cfg.Check,
		refs:       map[key]entry{},
		dsts:       map[key]dstEntry{},
		sets:       map[setKey]bool{},
		wake:       make(chan struct{}, 1),
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
	if cfg.Kernel {
		g.gen = 1
	}
	ports, err := checkPorts(cfg)
	if err != nil {
		return nil, err
	}
	g.setGlobals(cfg)
	for _, p := range ports {
		g.index[p.Name] = uint16(len(g.ports))
		g.ports = append(g.ports, p)
	}
	for _, p := range ports {
		for _, s := range p.AllowedSources {
			g.Add(p.Name, s)
		}
	}
	return g, nil
}

// setGlobals takes cfg's settings that are not per port.
func (g *Guard) setGlobals(cfg Config) {
	g.uplink = cfg.Uplink
	g.icmpRate, g.icmpBurst = cfg.ICMPRate, cfg.ICMPBurst
	if g.icmpBurst <= 0 {
		g.icmpBurst = DefaultICMPBurst
	}
}

// checkPorts checks cfg's ports and settings and returns the ports with
// their overrides sorted.
func checkPorts(cfg Config) ([]portState, error) {
	if len(cfg.Ports) > 1<<16-1 {
		return nil, fmt.Errorf("nftguard: %d ports: at most 65535", len(cfg.Ports))
	}
	if cfg.ICMPRate < 0 || cfg.ICMPBurst < 0 {
		return nil, fmt.Errorf("nftguard: icmp rate %d burst %d: must not be negative", cfg.ICMPRate, cfg.ICMPBurst)
	}
	if cfg.Uplink != "" && !ifname(cfg.Uplink) {
		return nil, fmt.Errorf("nftguard: uplink %q: an interface name has 1 to 15 bytes", cfg.Uplink)
	}
	seen := map[string]bool{}
	var out []portState
	for _, p := range cfg.Ports {
		if !ifname(p.Name) {
			return nil, fmt.Errorf("nftguard: port %q: an interface name has 1 to 15 bytes", p.Name)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("nftguard: port %q given twice", p.Name)
		}
		seen[p.Name] = true
		for _, s := range p.AllowedSources {
			if !ipv6Prefix(s) {
				return nil, fmt.Errorf("nftguard: port %s: allowed source %v is not an IPv6 prefix", p.Name, s)
			}
		}
		if p.Loop > fib.LoopForward {
			return nil, fmt.Errorf("nftguard: port %s: loop policy %v", p.Name, p.Loop)
		}
		ps := portState{Port: p}
		ps.AllowedSources = slices.Clone(p.AllowedSources)
		dup := map[netip.Prefix]bool{}
		for _, o := range p.LoopOverrides {
			if !ipv6Prefix(o.Prefix) || (o.Policy != fib.LoopDrop && o.Policy != fib.LoopForward) {
				return nil, fmt.Errorf("nftguard: port %s: loop override %v %v: want an IPv6 prefix and drop or forward", p.Name, o.Prefix, o.Policy)
			}
			o.Prefix = o.Prefix.Masked()
			if dup[o.Prefix] {
				return nil, fmt.Errorf("nftguard: port %s: loop override %v given twice", p.Name, o.Prefix)
			}
			dup[o.Prefix] = true
			ps.overrides = append(ps.overrides, o)
		}
		slices.SortStableFunc(ps.overrides, func(a, b LoopOverride) int { return b.Prefix.Bits() - a.Prefix.Bits() })
		out = append(out, ps)
	}
	return out, nil
}

func ifname(s string) bool {
	return s != "" && len(s) <= 15 && !slices.Contains([]byte(s), 0)
}

func ipv6Prefix(p netip.Prefix) bool {
	return p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6()
}

// install writes the table at New: in kernel mode it adopts a usable
// table of the name; otherwise it replaces any of the name and writes
// the sources known at New, the allowed_sources.
func (g *Guard) install() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.kernelMode {
		pr, err := g.k.probe()
		if err != nil {
			return fmt.Errorf("nftguard: look at table %s: %w", g.table, err)
		}
		if pr.usable {
			return g.adoptLocked(pr)
		}
	}
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

// adoptLocked keeps an existing table in force and starts writing a new
// generation of sets beside it; Run switches to it once the restore
// handed over before Run starts (BeginRestore, RestoreDelegations) is
// written. Ports the table has no chain for get one that drops
// everything, so that none is unguarded.
func (g *Guard) adoptLocked(pr probe) error {
	t := tx{layout: g.layoutLocked()}
	t.ensure = g.missingPorts(pr, t.layout)
	if !t.empty() {
		if err := g.k.apply(&t); err != nil {
			return fmt.Errorf("nftguard: adopt table %s: %w", g.table, err)
		}
	}
	g.beginBuildLocked(pr.maxGen)
	g.rebuildStart = time.Now()
	g.log.Info("kernel guard adopted the table a relay left; writing the restored state beside it",
		"table", "ip6 "+g.table, "new_ports", len(t.ensure))
	return nil
}

// beginBuildLocked starts a new generation of kernel mode's sets, above
// maxGen and the current one: the desired state is written into it
// beside the live sets and rules, which stay in force until switchLocked.
func (g *Guard) beginBuildLocked(maxGen uint32) {
	g.gen = max(g.gen, maxGen) + 1
	g.building = true
	g.forgetKernelLocked()
	g.broken = false
}

// forgetKernelLocked records that the kernel holds none of the desired
// state (a fresh table, or a new generation of sets) and queues all of it
// in bulk.
func (g *Guard) forgetKernelLocked() {
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
	for k, e := range g.dsts {
		e.kin = false
		if !e.want && !e.touched {
			delete(g.dsts, k)
			continue
		}
		g.dsts[k] = e
		if e.want {
			g.bulk = append(g.bulk, k)
		}
	}
}

// switchLocked makes the new generation live: one transaction rewrites
// the skeleton in place with rules for the new sets and deletes every
// other set (the old generation, with any element no binding backs).
func (g *Guard) switchLocked() {
	t := tx{layout: g.layoutLocked(), rewrite: true, strict: true}
	if err := g.k.apply(&t); err != nil {
		g.fail(fmt.Errorf("nftguard: switch to set generation %d: %w", g.gen, err))
		return
	}
	g.building = false
	took := time.Since(g.rebuildStart)
	if g.rebuildStart.IsZero() {
		took = time.Since(g.fillStart)
	}
	g.rebuildStart = time.Time{}
	g.log.Info("kernel guard switched to its new sets", "generation", g.gen, "took", took.Round(time.Millisecond))
}

// layoutLocked describes the table for the current ports and sets.
func (g *Guard) layoutLocked() *layout {
	l := &layout{kernel: g.kernelMode, icmpRate: g.icmpRate, icmpBurst: g.icmpBurst}
	if g.kernelMode {
		l.gen = g.gen
		l.uplink = g.uplink
	}
	for i, p := range g.ports {
		if p.Name == "" {
			continue
		}
		loop := fib.LoopDrop
		if p.Loop == fib.LoopForward {
			loop = fib.LoopForward
		}
		l.ports = append(l.ports, portLayout{index: uint16(i), name: p.Name, multi: p.MultiAccess, loop: loop, icmp: p.LoopICMP, overrides: p.overrides})
	}
	l.sets = slices.Collect(maps.Keys(g.sets))
	sortSets(l.sets)
	return l
}

// keyOf returns the source key of p on port, or false for an unknown
// port or a prefix that is not IPv6.
func (g *Guard) keyOf(port string, p netip.Prefix) (key, bool) {
	i, ok := g.index[port]
	if !ok || !ipv6Prefix(p) {
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
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.keyOf(port, p)
	if !ok {
		return false
	}
	g.count(k, +1)
	g.live = append(g.live, k)
	return true
}

// Delete drops one holder of p on port. The prefix stays allowed while
// another holds it. The kernel sees it at the next Flush. Delete reports
// false, and does nothing, if nothing held p there (or, while a restore
// is counted in, for an unknown port or a prefix that is not IPv6).
func (g *Guard) Delete(port string, p netip.Prefix) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.keyOf(port, p)
	if !ok {
		return false
	}
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

// Flush writes the changes made by Add, Delete, Delegate and Undelegate
// since the last Flush to the kernel, in one transaction (several past
// Config.Batch changes). If one fails, the guard logs it and rebuilds the
// table from its desired state in Run, and Flush returns the error.
func (g *Guard) Flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.broken {
		g.live = g.live[:0] // the rebuild writes everything
		return nil
	}
	live := g.live
	// The slice is kept for the next Flush, unless a restore made it
	// large.
	if cap(live) > 4*g.batch {
		g.live = nil
	} else {
		g.live = live[:0]
	}
	for len(live) > 0 {
		n := min(len(live), g.batch)
		if err := g.applyLocked(live[:n]); err != nil {
			return err
		}
		live = live[n:]
	}
	return nil
}

// applyLocked writes the keys' current state to the kernel in one
// transaction, creating the sets of new prefix lengths in it. The state
// is recorded as written before the kernel answers; if it refuses, the
// Guard is marked broken and Run rebuilds the table.
func (g *Guard) applyLocked(keys []key) error {
	t := tx{layout: g.layoutLocked(), norule: g.building}
	g.plan(keys, &t)
	if t.empty() {
		return nil
	}
	if len(t.newSets) > 0 {
		t.layout = g.layoutLocked() // with the new sets
	}
	if err := g.k.apply(&t); err != nil {
		g.fail(fmt.Errorf("nftguard: write %d element changes: %w", t.n, err))
		return err
	}
	return nil
}

// plan adds to t what the kernel needs for keys to match their state.
func (g *Guard) plan(keys []key, t *tx) {
	for _, k := range keys {
		if int(k.port) >= len(g.ports) || g.ports[k.port].Name == "" {
			continue // a port removed since
		}
		if k.dst {
			g.planDst(k, t)
			continue
		}
		e, ok := g.refs[k]
		if !ok {
			continue // back to nothing, and not in the kernel
		}
		want := e.refs > 0
		if want == e.in {
			continue
		}
		sk := setKey{port: k.port, bits: k.bits, kind: kindSrc}
		if want {
			g.needSet(sk, t)
		}
		t.change(sk, elem{addr: k.addr}, want)
		e.in = want
		if e.refs == 0 && !e.in {
			delete(g.refs, k)
		} else {
			g.refs[k] = e
		}
	}
}

// needSet creates sk in t unless it exists.
func (g *Guard) needSet(sk setKey, t *tx) {
	if !g.sets[sk] {
		g.sets[sk] = true
		t.newSets = append(t.newSets, sk)
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
	clear(g.sets)
	t := tx{install: true, layout: g.layoutLocked()}
	if err := g.k.apply(&t); err != nil {
		return fmt.Errorf("nftguard: install table: %w", err)
	}
	g.building = false
	g.forgetKernelLocked()
	g.broken = false
	return nil
}

// repairLocked rebuilds the table after a failed transaction or a change
// from outside. The xdp modes reinstall it (dropping downlink traffic
// through the kernel until the sources are written again). Kernel mode
// keeps an existing table in force: if its rules were changed from
// outside it rewrites them at once, in place, and then it writes a new
// generation of sets beside the live one, switching when it is whole (a
// failed transaction may have left any element out of step). Only a
// table that is gone is installed afresh.
func (g *Guard) repairLocked() error {
	if g.kernelMode {
		pr, err := g.k.probe()
		if err != nil {
			return fmt.Errorf("nftguard: look at table %s: %w", g.table, err)
		}
		if pr.usable {
			t := tx{layout: g.layoutLocked()}
			if g.damaged && !g.building {
				t.rewrite = true // the live sets with their rules
			} else {
				t.ensure = g.missingPorts(pr, t.layout)
			}
			if !t.empty() {
				if err := g.k.apply(&t); err != nil {
					return fmt.Errorf("nftguard: rewrite table: %w", err)
				}
			}
			g.damaged = false
			g.beginBuildLocked(pr.maxGen)
			g.log.Info("kernel guard writing a new generation of its sets; the old one stays in force until then",
				"generation", g.gen, "elements", len(g.bulk))
			return nil
		}
	}
	if err := g.reinstallLocked(); err != nil {
		return err
	}
	g.damaged = false
	g.log.Info("kernel guard table reinstalled: downlink traffic through the kernel is dropped until its sources are written",
		"sources", len(g.bulk))
	return nil
}

// missingPorts returns the ports of l that have no chain in the probed
// table.
func (g *Guard) missingPorts(pr probe, l *layout) []portLayout {
	var out []portLayout
	for _, p := range l.ports {
		if !pr.chains[portChain(p.name)] {
			out = append(out, p)
		}
	}
	return out
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
	if g.fillStart.IsZero() {
		g.fillStart = time.Now()
	}
}

// Restore hands the Guard the sources of the bindings restored at start,
// port by prefix; Run writes them to the kernel beside the running relay
// (about 3 us each). The binding changes passed on by Add and Delete from
// BeginRestore on count on top of these, in any order with the fill.
// Entries of unknown ports are skipped. Without BeginRestore, Restore
// begins the restore itself. Kernel mode uses RestoreDelegations.
// sources is read under the Guard's lock: it must not call the Guard.
func (g *Guard) Restore(sources iter.Seq2[string, netip.Prefix]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ks []key
	for port, p := range sources {
		if k, ok := g.keyOf(port, p); ok {
			ks = append(ks, k)
		}
	}
	g.restoreLocked(ks, nil)
}

// restoreLocked queues restored sources and destinations for the fill.
func (g *Guard) restoreLocked(ks []key, ds []restoredDst) {
	if len(ks) > len(g.refs) {
		// Room for all of them at once: growing a map one key at a time
		// to 1M rehashes it some twenty times.
		m := make(map[key]entry, len(g.refs)+len(ks))
		maps.Copy(m, g.refs)
		g.refs = m
	}
	if len(ds) > len(g.dsts) {
		m := make(map[key]dstEntry, len(g.dsts)+len(ds))
		maps.Copy(m, g.dsts)
		g.dsts = m
	}
	g.restore = append(g.restore, ks...)
	g.restoreD = append(g.restoreD, ds...)
	if !g.filling {
		g.filling = true
		g.fillStart = time.Now()
	}
	if len(g.restore) == 0 && len(g.restoreD) == 0 {
		g.endFill()
		return
	}
	g.signal()
}

// Run does the Guard's background work until ctx ends: it writes the
// restored state (Restore, RestoreDelegations), switches kernel mode's
// new generation of sets in, rebuilds the table after a failed
// transaction, and checks every Config.Check that the table is whole,
// rebuilding it if not. It returns nil when ctx ends.
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
	return !g.closed && (g.broken || g.check || len(g.restore) > 0 || len(g.restoreD) > 0 || len(g.bulk) > 0 || g.switchDue())
}

// switchDue reports whether the new generation is whole and may go live.
func (g *Guard) switchDue() bool {
	return g.building && !g.filling && !g.broken && len(g.bulk) == 0
}

// step does one unit of background work under the lock: a reinstall, one
// batch of the fill or of a rebuild, or a switch. It returns how long to
// wait before retrying a failed reinstall (0: no wait), with its error.
func (g *Guard) step() (time.Duration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, nil
	}
	if g.check && !g.broken {
		g.check = false
		if !g.building {
			g.verifyLocked()
		}
	}
	switch {
	case g.broken:
		if err := g.repairLocked(); err != nil {
			g.retry = min(max(2*g.retry, 100*time.Millisecond), 30*time.Second)
			return g.retry, err
		}
		g.retry = 0
		g.rebuildStart = time.Now()
		g.rebuilt()
	case len(g.restore) > 0 || len(g.restoreD) > 0:
		g.fillStepLocked()
	case len(g.bulk) > 0:
		_ = g.applyLocked(g.takeBulk())
		g.rebuilt()
	case g.switchDue():
		g.switchLocked()
	}
	return 0, nil
}

// fillStepLocked counts in and writes one batch of the restored state.
func (g *Guard) fillStepLocked() {
	var chunk []key
	if len(g.restore) > 0 {
		n := min(len(g.restore), g.batch)
		chunk = g.restore[:n]
		g.restore = g.restore[n:]
		for _, k := range chunk {
			if g.ports[k.port].Name != "" {
				g.count(k, +1)
			}
		}
		g.fillN += n
	} else {
		n := min(len(g.restoreD), g.batch)
		chunk = make([]key, 0, n)
		for _, d := range g.restoreD[:n] {
			if g.ports[d.k.port].Name != "" && g.restoreDst(d) {
				chunk = append(chunk, d.k)
			}
		}
		g.restoreD = g.restoreD[n:]
	}
	_ = g.applyLocked(chunk) // a failure is logged and rebuilds
	if len(g.restore) == 0 && len(g.restoreD) == 0 {
		g.restore, g.restoreD = nil, nil
		g.endFill()
	}
}

// rebuilt logs the end of a rebuild once its sources are all written.
func (g *Guard) rebuilt() {
	if len(g.bulk) == 0 && !g.broken && !g.building && !g.rebuildStart.IsZero() {
		g.log.Info("kernel guard table rebuilt", "took", time.Since(g.rebuildStart).Round(time.Millisecond))
		g.rebuildStart = time.Time{}
	}
}

// verifyLocked checks that the table and its rules are as the Guard
// wrote them, and marks it broken if not: someone deleted the table
// (`nft flush ruleset`) or flushed or deleted rules. Elements changed by
// hand are not seen.
func (g *Guard) verifyLocked() {
	exists, diff, err := g.k.check(g.layoutLocked())
	switch {
	case err != nil:
		g.log.Warn("kernel guard: cannot check its table", "err", err)
	case !exists:
		g.log.Warn("kernel guard table deleted from outside: reinstalling it")
		g.broken = true
	case diff != "":
		g.log.Warn("kernel guard table changed from outside: rebuilding it", "diff", diff)
		g.broken = true
		g.damaged = true
	}
}

// endFill ends a restore: every restored source is counted in, so a
// negative count is a Delete no Add matched, which is logged and
// dropped; destinations changed during the fill are ordinary again.
func (g *Guard) endFill() {
	g.filling = false
	g.log.Info("kernel guard filled", "sources", g.fillN, "took", time.Since(g.fillStart).Round(time.Millisecond))
	g.fillStart = time.Time{}
	for k, e := range g.dsts {
		if e.touched {
			e.touched = false
			if !e.want && !e.kin {
				delete(g.dsts, k)
			} else {
				g.dsts[k] = e
			}
		}
	}
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

// Filled reports whether the restored state is all written (true if
// Restore was never called) and no rebuild is under way: in kernel mode,
// also that the new generation of sets is live.
func (g *Guard) Filled() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.filling && !g.broken && len(g.bulk) == 0 && !g.building
}

// Len returns the number of (port, prefix) sources the Guard wants in the
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

// Drops returns the packets each port's rule has dropped as spoofed, by
// interface name, read from the kernel's counters.
func (g *Guard) Drops() (map[string]uint64, error) {
	c, err := g.k.counters()
	if err != nil {
		return nil, fmt.Errorf("nftguard: read drop counters: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]uint64, len(g.ports))
	for _, p := range g.ports {
		if p.Name != "" {
			out[p.Name] = c[counterName(p.Name)]
		}
	}
	return out, nil
}

// Close deletes the table, unless Config.Keep: forwarded traffic from the
// downlinks is then no longer checked. With Keep the table stays as it
// is, still checking, for the next relay to adopt. Later calls do
// nothing.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if g.keep {
		g.k.close()
		g.log.Info("kernel guard table kept", "table", "ip6 "+g.table)
		return nil
	}
	if err := g.k.remove(); err != nil {
		return fmt.Errorf("nftguard: remove table: %w", err)
	}
	return nil
}

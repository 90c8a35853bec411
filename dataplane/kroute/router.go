package kroute

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Protocol is the routing protocol number (rtm_protocol, RTPROT_*) of
// pdrelay's routes and the neighbour protocol (NDA_PROTOCOL) of its
// neighbour entries: `ip -6 route show proto 157`. See the package
// documentation for why 157.
const Protocol = 157

// MainTable is the kernel's main routing table (RT_TABLE_MAIN), the
// default of Config.Table.
const MainTable = 254

// Metric is the priority (RTA_PRIORITY) of every route pdrelay writes:
// the kernel's default for IPv6 routes, so that `ip route replace` by an
// operator and pdrelay's own replace address the same route.
const Metric = 1024

// DefaultBatch is the most route and neighbour changes one Flush or one
// step of Run writes while holding the Router's lock (some 20-40 ms at
// the measured rates), which bounds how long a binding change waits
// behind a reconcile.
const DefaultBatch = 2048

// DefaultCheck is how often Run compares the kernel's routes with the
// desired ones by default.
const DefaultCheck = 30 * time.Second

// checkShare bounds the periodic checks to 1/checkShare of the time: the
// next one comes at least checkShare times the last one's duration
// after it. A check reads every route back (0.3-0.5 s at 100k, seconds
// at 1M on a busy machine), and at Config.Check alone it took half a
// core at 1M routes; the kernel's events repair a route deleted from
// outside at once whatever the interval.
const checkShare = 20

// A periodic check waits for a quiet moment: no route written for
// checkQuiet, for at most checkMaxDefer periods. The kernel's IPv6 route
// dump starts its walk again from the root whenever the table changes
// between two reads, skipping what it already sent, so a dump taken
// while routes are being written costs about the square of the table:
// 300k routes read back in 0.45 s quiet and in 11-17 s while 100k more
// went in, and at 1M bindings being learned the checks took a quarter of
// pdrelay's CPU. A check an event asks for (a downlink flapped, events
// lost) does not wait.
var (
	checkQuiet    = time.Second
	checkMaxDefer = 10
)

// ErrUnsupported is returned by New on systems without rtnetlink.
var ErrUnsupported = errors.New("kroute: kernel routes need Linux")

// Config describes a Router.
type Config struct {
	// Table is the routing table the routes go into; 0 means MainTable.
	Table uint32
	// Ports are the downlinks routes may leave by, by interface name.
	Ports []string
	// NetNS is an open file descriptor of the network namespace to work
	// in; 0 means the caller's.
	NetNS int
	// Batch is the most changes written under the lock at once; 0 means
	// DefaultBatch.
	Batch int
	// Check is how often Run reads the kernel's routes back and repairs
	// them (a route deleted by hand, a downlink that came back); 0 means
	// DefaultCheck, negative never. A downlink's state changes also
	// start a check at once.
	Check time.Duration
	// FlushOnStop makes Close remove every route and neighbour entry of
	// Protocol (in Table) instead of leaving them to forward across a
	// restart.
	FlushOnStop bool
	// Log receives the Router's events; nil discards them.
	Log *slog.Logger
}

// Route is the route of one delegated prefix: exactly the prefix,
// via the client's address on its downlink.
type Route struct {
	Prefix netip.Prefix // masked by Add
	Port   string       // the downlink, one of Config.Ports
	// NextHop is the client's address, usually link-local (no zone); a
	// route without one waits until an Update brings it.
	NextHop netip.Addr
	// MAC is the client's link-layer address; zero when not known (then
	// the kernel resolves the next hop itself on the first packet).
	MAC [6]byte
}

// opKind is what one kernel operation does.
type opKind uint8

const (
	opRoute   opKind = iota + 1 // create or replace the route of prefix
	opUnroute                   // delete pdrelay's route of prefix
	opNeigh                     // create or replace the neighbour entry of addr
	opUnneigh                   // delete the neighbour entry of addr
)

func (k opKind) String() string {
	return [...]string{"", "route replace", "route delete", "neighbour replace", "neighbour delete"}[k]
}

// op is one kernel operation and, after kernel.write, its result.
type op struct {
	kind   opKind
	prefix netip.Prefix // route ops
	addr   netip.Addr   // route ops: the next hop; neighbour ops: the neighbour
	index  int32        // interface index
	mac    [6]byte      // opNeigh
	table  uint32       // route ops
	metric uint32       // opUnroute: the route's metric; 0 for any
	port   uint16       // the Router's port index, for the result
	err    error
}

// kernelRoute is a route of Protocol in the Router's table, as a dump
// shows it.
type kernelRoute struct {
	prefix netip.Prefix
	index  int32
	via    netip.Addr
	metric uint32
	// odd marks a route that pdrelay would not have written as it is:
	// several next hops, no gateway, another type. It is replaced (or
	// deleted if unwanted).
	odd bool
}

// kernelNeigh is an IPv6 neighbour entry as a dump shows it.
type kernelNeigh struct {
	index int32
	addr  netip.Addr
	mac   [6]byte
	ours  bool // NDA_PROTOCOL is Protocol
}

// link is an interface's state: index 0 when it does not exist.
type link struct {
	index   int32
	up      bool // IFF_UP
	carrier bool // IFF_LOWER_UP
}

// events are what the kernel reported since they were last taken.
type events struct {
	// links: some interface changed (Run checks the downlinks).
	links bool
	// flapped are the interfaces seen down, without carrier or deleted.
	// The kernel flushes such an interface's neighbour entries, and its
	// routes when it was down, even if it is back by the time the
	// Router looks.
	flapped map[string]bool
	// gone are prefixes whose route of Protocol in the table was
	// deleted, by the Router or from outside.
	gone []netip.Prefix
	// lost: events were lost; take every interface as flapped and read
	// the routes back.
	lost bool
}

// errUnknown is an op's result when the kernel's answer was lost (the
// socket failed mid-batch): whether it was applied is not known.
var errUnknown = errors.New("kroute: the kernel's answer was lost")

// kernel is what the Router needs from rtnetlink; nlKernel is the real
// one, tests use a model.
type kernel interface {
	// write applies ops in order, setting each op's err. It returns an
	// error when the fate of some ops is not known.
	write(ops []op) error
	// routes lists the routes of Protocol in table; about is how many
	// there may be, to size the list.
	routes(table uint32, about int) ([]kernelRoute, error)
	// neighs lists the IPv6 neighbour entries.
	neighs() ([]kernelNeigh, error)
	// links looks up the named interfaces.
	links(names []string) ([]link, error)
	// watch reports kernel events on the channel (coalesced) until done
	// closes; nil if it cannot. events returns, and forgets, them.
	watch(done <-chan struct{}) <-chan struct{}
	events() events
	close()
}

// entry is the state of one prefix: what is wanted, and what the kernel
// holds as far as the Router knows.
type entry struct {
	port   uint16
	seen   uint32 // the last check whose dump showed the route
	via    netip.Addr
	wanted bool
	// known: in, inIndex and inVia are the kernel's state (written or
	// read back); restored entries and lost answers are unknown.
	known   bool
	in      bool
	inIndex int32
	inVia   netip.Addr
	wrote   uint64 // Router.seq of the last write of this prefix
	mark    uint64 // plan that last looked at it
}

// nkey is a next hop on a port.
type nkey struct {
	port uint16
	addr netip.Addr
}

// nent is the state of one neighbour entry: the wanted routes through
// the next hop, its MAC, and what the kernel holds.
type nent struct {
	refs    int32
	mac     [6]byte
	in      bool
	inMAC   [6]byte
	inIndex int32
	wrote   uint64
	mark    uint64
}

// unsure marks the kernel's entry as unknown: held as there with an
// unknown MAC, it is written again while wanted and deleted (an absent
// entry's delete is harmless) once not.
func (n *nent) unsure() { n.in, n.inMAC = true, [6]byte{} }

// portState is a downlink's interface as last seen.
type portState struct {
	index   int32 // 0: absent
	up      bool  // IFF_UP: routes can be written
	carrier bool  // up and IFF_LOWER_UP: neighbour entries can be written
	// downLogged avoids logging the same down port at every batch.
	downLogged bool
	// flapped: it went down or lost carrier since the last look, so the
	// kernel may have dropped its routes and neighbour entries.
	flapped bool
}

// Router keeps the kernel's routes of delegated prefixes, and the
// neighbour entries of their next hops, equal to its desired state. See
// the package documentation.
type Router struct {
	k           kernel
	log         *slog.Logger
	table       uint32
	names       []string
	index       map[string]uint16
	batch       int
	every       time.Duration
	flushOnStop bool
	lastCheck   atomic.Int64 // how long the last check took, in ns
	lastWrite   atomic.Int64 // when routes were last written, in Unix ns

	mu     sync.Mutex
	routes map[netip.Prefix]*entry
	neighs map[nkey]*nent
	ports  []portState
	byIdx  map[int32]uint16 // interface index -> port
	live   []netip.Prefix   // prefixes Add, Update and Delete changed since the last Flush
	liveN  []nkey
	bulk   []netip.Prefix // prefixes Run writes: a reconcile, a port back up, retries
	bulkN  []nkey
	extra  []op           // deletes of routes of Protocol at another metric than Metric
	retryR []netip.Prefix // failed, written again after a pause
	retryN []nkey
	seq    uint64 // kernel writes so far
	plan   uint64
	checks uint32 // checks so far (entry.seen)
	// scratch holds planLocked's ops: neighbour entries, routes,
	// deletes of entries, and the three in order.
	scratch [4][]op
	// check asks Run to read the kernel back; full also reads the
	// neighbour entries (the reconcile at start).
	check, full bool
	reconciled  bool // the first check is done and its writes too
	recStart    time.Time
	retryWait   time.Duration
	retryAt     time.Time
	closed      bool
	wake        chan struct{}
	total       Counts // since New, for Stats
}

// Counts are the Router's kernel writes.
type Counts struct {
	RoutesWritten, RoutesRemoved int
	NeighsWritten, NeighsRemoved int
	Failed                       int
}

// New opens the kernel side and looks up the downlinks. It writes
// nothing: routes are written by Flush and by Run, which reconciles the
// kernel with the state given by Restore first. It fails with the
// kernel's cause (no rtnetlink, a bad namespace).
func New(cfg Config) (*Router, error) {
	r, err := newRouter(cfg)
	if err != nil {
		return nil, err
	}
	k, err := openKernel(cfg.NetNS, r.table)
	if err != nil {
		return nil, err
	}
	r.k = k
	r.lookupLinks()
	return r, nil
}

// newRouter checks cfg and builds a Router without a kernel.
func newRouter(cfg Config) (*Router, error) {
	r := &Router{
		log:         cfg.Log,
		table:       cfg.Table,
		index:       map[string]uint16{},
		batch:       cfg.Batch,
		every:       cfg.Check,
		flushOnStop: cfg.FlushOnStop,
		routes:      map[netip.Prefix]*entry{},
		neighs:      map[nkey]*nent{},
		byIdx:       map[int32]uint16{},
		check:       true,
		full:        true,
		wake:        make(chan struct{}, 1),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.table == 0 {
		r.table = MainTable
	}
	if r.batch <= 0 {
		r.batch = DefaultBatch
	}
	if r.every == 0 {
		r.every = DefaultCheck
	}
	// 253 and 255 are the kernel's default and local tables, no place
	// for delegated routes.
	if r.table == 253 || r.table == 255 {
		return nil, fmt.Errorf("kroute: table %d is the kernel's %s table", r.table, map[uint32]string{253: "default", 255: "local"}[r.table])
	}
	for _, p := range cfg.Ports {
		if _, dup := r.index[p]; dup {
			return nil, fmt.Errorf("kroute: port %q given twice", p)
		}
		if err := r.addPortLocked(p); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// addPortLocked makes port known, unless it is.
func (r *Router) addPortLocked(p string) error {
	if _, ok := r.index[p]; ok {
		return nil
	}
	if p == "" || len(p) > 15 || slices.Contains([]byte(p), 0) {
		return fmt.Errorf("kroute: port %q: an interface name has 1 to 15 bytes", p)
	}
	if len(r.names) >= 1<<16-1 {
		return fmt.Errorf("kroute: port %q: at most 65535 ports", p)
	}
	r.index[p] = uint16(len(r.names))
	// A new slice: checkKernel reads the old one outside mu.
	r.names = append(slices.Clip(r.names), p)
	r.ports = append(r.ports, portState{})
	return nil
}

// AddPorts makes downlinks known to a running Router (a reload that adds
// them), and looks their interfaces up. Names it knows are skipped; a
// port is never forgotten, so the routes of a downlink that left the
// config stay until their bindings go.
func (r *Router) AddPorts(names ...string) error {
	r.mu.Lock()
	for _, p := range names {
		if err := r.addPortLocked(p); err != nil {
			r.mu.Unlock()
			return err
		}
	}
	r.mu.Unlock()
	if r.k != nil {
		r.lookupLinks()
	}
	return nil
}

// lookupLinks reads the ports' interfaces; a failure leaves them absent
// until the first check.
func (r *Router) lookupLinks() {
	r.mu.Lock()
	names := r.names
	r.mu.Unlock()
	ls, err := r.k.links(names)
	if err != nil {
		r.log.Warn("kernel routes: cannot look up the downlinks", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setLinksLocked(ls)
}

// checkRoute (mu held) normalizes rt and returns its port, or false for an unknown port
// or a prefix that is not IPv6.
func (r *Router) checkRoute(rt *Route) (uint16, bool) {
	i, ok := r.index[rt.Port]
	p := rt.Prefix
	if !ok || !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
		return 0, false
	}
	rt.Prefix = p.Masked()
	if a := rt.NextHop; a.IsValid() && (!a.Is6() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast()) {
		rt.NextHop = netip.Addr{}
	}
	rt.NextHop = rt.NextHop.WithZone("")
	return i, true
}

// Add makes rt the wanted route of rt.Prefix, in place of any other; the
// kernel sees it at the next Flush. It reports false, and does nothing,
// for a port the Router does not know or a prefix that is not IPv6.
func (r *Router) Add(rt Route) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	port, ok := r.checkRoute(&rt)
	if !ok {
		return false
	}
	r.setLocked(rt, port)
	r.live = append(r.live, rt.Prefix)
	return true
}

// Update changes the wanted route of rt.Prefix: its next hop, MAC or
// port. It is Add by another name (a route not wanted yet is added), for
// a binding sink that passes Updated changes on.
func (r *Router) Update(rt Route) bool { return r.Add(rt) }

// Delete drops the wanted route of p if it leaves by port; the kernel
// sees it at the next Flush. It reports false, and does nothing, if no
// route of p by port is wanted (another binding's route of the prefix,
// by another port, stays).
func (r *Router) Delete(p netip.Prefix, port string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index[port]
	if !ok || !p.IsValid() {
		return false
	}
	p = p.Masked()
	e := r.routes[p]
	if e == nil || !e.wanted || e.port != i {
		return false
	}
	r.unrefLocked(e)
	e.wanted = false
	r.live = append(r.live, p)
	return true
}

// setLocked makes rt the wanted route of its prefix. The new next hop's
// entry is held before the old one's is let go, so that a route that
// keeps its next hop never drops its entry's MAC.
func (r *Router) setLocked(rt Route, port uint16) {
	e := r.routes[rt.Prefix]
	if e == nil {
		e = &entry{}
		r.routes[rt.Prefix] = e
	}
	old := *e
	e.wanted, e.port, e.via = true, port, rt.NextHop
	if e.via.IsValid() {
		k := nkey{port, e.via}
		n := r.neighs[k]
		if n == nil {
			n = &nent{}
			r.neighs[k] = n
		}
		n.refs++
		if rt.MAC != ([6]byte{}) {
			n.mac = rt.MAC
		}
		r.liveN = append(r.liveN, k)
	}
	if old.wanted {
		r.unrefLocked(&old)
	}
}

// unrefLocked drops e's hold on its next hop's neighbour entry; the
// last one gone, its MAC is forgotten.
func (r *Router) unrefLocked(e *entry) {
	if !e.via.IsValid() {
		return
	}
	k := nkey{e.port, e.via}
	if n := r.neighs[k]; n != nil {
		if n.refs--; n.refs <= 0 {
			n.mac = [6]byte{}
		}
		r.liveN = append(r.liveN, k)
	}
}

// Restore hands the Router the routes of the bindings restored at start,
// before any Add: they become wanted at once, and Run's first step
// reconciles the kernel with them (routes of Protocol that no binding
// backs go; missing or different ones are written; the others are left
// as they are, so traffic keeps flowing). Routes of unknown ports are
// skipped. It returns the number taken.
func (r *Router) Restore(routes iter.Seq[Route]) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for rt := range routes {
		port, ok := r.checkRoute(&rt)
		if !ok {
			continue
		}
		r.setLocked(rt, port)
		n++
	}
	r.liveN = r.liveN[:0] // the reconcile looks at every neighbour
	r.check, r.full = true, true
	r.signal()
	return n
}

// Flush writes the changes made by Add, Update and Delete since the last
// Flush to the kernel: each route and neighbour entry once, at most
// Config.Batch per lock. A change the kernel refuses is logged and tried
// again by Run; one through a downlink that is down or absent waits for
// it to come back. Flush returns the first refusal.
func (r *Router) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.live, r.liveN = r.live[:0], r.liveN[:0]
		return nil
	}
	ops := r.planLocked(r.live, r.liveN)
	r.live, r.liveN = r.live[:0], r.liveN[:0]
	var first error
	for len(ops) > 0 {
		n := min(len(ops), r.batch)
		if err := r.applyLocked(ops[:n]); err != nil && first == nil {
			first = err
		}
		ops = ops[n:]
	}
	return first
}

// routable returns the interface index a wanted route leaves by, or 0
// if it cannot be written now (no next hop, its port down or absent).
func (r *Router) routable(e *entry) int32 {
	if !e.wanted || !e.via.IsValid() {
		return 0
	}
	ps := &r.ports[e.port]
	if ps.index == 0 || !ps.up {
		return 0
	}
	return ps.index
}

// maxScratch bounds the ops a Router keeps for its next plan.
const maxScratch = 4 * DefaultBatch

// planLocked returns the kernel operations that bring the given prefixes
// and next hops to their wanted state, in the order they must be
// written: neighbour entries first (a new route's first packet finds its
// next hop's MAC), then routes, then the neighbour entries no route
// needs any more. Each prefix and next hop gives at most one op. The
// ops live in the Router's scratch until the next plan: the caller
// applies them under the same lock.
func (r *Router) planLocked(prefixes []netip.Prefix, hops []nkey) []op {
	r.plan++
	for i := range r.scratch {
		if cap(r.scratch[i]) > maxScratch {
			r.scratch[i] = nil // a restore's plan: not kept
		}
	}
	neigh, route, unneigh := r.scratch[0][:0], r.scratch[1][:0], r.scratch[2][:0]
	for _, p := range prefixes {
		e := r.routes[p]
		if e == nil || e.mark == r.plan {
			continue
		}
		e.mark = r.plan
		if o, ok := r.routeOp(p, e); ok {
			route = append(route, o)
		} else if !e.wanted && e.known && !e.in {
			delete(r.routes, p)
		}
	}
	for _, k := range hops {
		n := r.neighs[k]
		if n == nil || n.mark == r.plan {
			continue
		}
		n.mark = r.plan
		if o, ok := r.neighOp(k, n); ok {
			if o.kind == opNeigh {
				neigh = append(neigh, o)
			} else {
				unneigh = append(unneigh, o)
			}
		} else if n.refs <= 0 && !n.in {
			delete(r.neighs, k)
		}
	}
	ops := append(append(append(r.scratch[3][:0], neigh...), route...), unneigh...)
	r.scratch = [4][]op{neigh, route, unneigh, ops}
	return ops
}

// routeOp returns the operation that brings p's route to its wanted
// state, if one is needed.
func (r *Router) routeOp(p netip.Prefix, e *entry) (op, bool) {
	idx := r.routable(e)
	switch {
	case idx != 0 && (!e.known || !e.in || e.inIndex != idx || e.inVia != e.via):
		return op{kind: opRoute, prefix: p, addr: e.via, index: idx, table: r.table, port: e.port}, true
	case idx == 0 && (!e.known || e.in):
		// Not wanted, or wanted but not writable now (its port went
		// down, or it moved to one that is): a route the old way would
		// send its traffic to the wrong place.
		return op{kind: opUnroute, prefix: p, table: r.table, port: e.port}, true
	}
	return op{}, false
}

// neighOp returns the operation that brings k's neighbour entry to its
// wanted state, if one is needed. An entry is wanted while a route
// through the next hop is and its MAC is known; it waits while its port
// is down (the kernel flushes a down port's entries).
func (r *Router) neighOp(k nkey, n *nent) (op, bool) {
	ps := &r.ports[k.port]
	switch {
	case n.refs > 0 && n.mac != ([6]byte{}) && ps.index != 0 && ps.carrier && (!n.in || n.inMAC != n.mac || n.inIndex != ps.index):
		return op{kind: opNeigh, addr: k.addr, index: ps.index, mac: n.mac, port: k.port}, true
	case (n.refs <= 0 || n.mac == [6]byte{}) && n.in:
		// No route through it, or its MAC forgotten (the last route went
		// and another came without a MAC in the same batch): pdrelay
		// does not vouch for the entry's MAC any more.
		return op{kind: opUnneigh, addr: k.addr, index: n.inIndex, port: k.port}, true
	}
	return op{}, false
}

// applyLocked writes ops and records their results.
func (r *Router) applyLocked(ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	r.seq++
	r.lastWrite.Store(time.Now().UnixNano())
	if err := r.k.write(ops); err != nil {
		r.log.Error("kernel routes: netlink failed mid-batch; rereading the kernel", "ops", len(ops), "err", err)
		for i := range ops {
			if ops[i].err == nil {
				ops[i].err = errUnknown
			}
		}
		r.check = true
		r.signal()
	}
	var first error
	failed := 0
	for i := range ops {
		if err := r.resultLocked(&ops[i]); err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed == 0 {
		r.retryWait = 0
	} else {
		r.total.Failed += failed
		r.log.Error("kernel routes: changes refused; retrying", "refused", failed, "of", len(ops), "first", first)
		r.scheduleRetryLocked()
	}
	return first
}

// resultLocked records one op's outcome and returns the error worth
// reporting (nil for success, for a change that is already so, and for
// one that waits for its downlink).
func (r *Router) resultLocked(o *op) error {
	switch o.kind {
	case opRoute, opUnroute:
		e := r.routes[o.prefix]
		if e == nil {
			return nil
		}
		e.wrote = r.seq
		err := o.err
		if o.kind == opUnroute && errors.Is(err, syscall.ESRCH) {
			err = nil // already gone
		}
		switch {
		case err == nil && o.kind == opRoute:
			e.known, e.in, e.inIndex, e.inVia = true, true, o.index, o.addr
			r.total.RoutesWritten++
		case err == nil:
			e.known, e.in = true, false
			r.total.RoutesRemoved++
			if !e.wanted {
				delete(r.routes, o.prefix)
			}
		case linkGone(err):
			r.portDownLocked(o.port, err)
			// A failed replace leaves the old route: delete it (Run).
			r.bulk = append(r.bulk, o.prefix)
		case errors.Is(err, errUnknown):
			e.known = false
			r.retryR = append(r.retryR, o.prefix)
			return err
		default:
			r.retryR = append(r.retryR, o.prefix)
			return fmt.Errorf("%v %v: %w", o.kind, o.prefix, err)
		}
	case opNeigh, opUnneigh:
		k := nkey{o.port, o.addr}
		n := r.neighs[k]
		if n == nil {
			return nil
		}
		n.wrote = r.seq
		err := o.err
		if o.kind == opUnneigh && errors.Is(err, syscall.ENOENT) {
			err = nil
		}
		switch {
		case err == nil && o.kind == opNeigh:
			n.in, n.inMAC, n.inIndex = true, o.mac, o.index
			r.total.NeighsWritten++
		case err == nil:
			n.in = false
			r.total.NeighsRemoved++
			if n.refs <= 0 {
				delete(r.neighs, k)
			}
		case linkGone(err):
			r.portDownLocked(o.port, err)
		default:
			if errors.Is(err, errUnknown) {
				n.unsure() // maybe written, maybe not
				n.inIndex = o.index
			}
			r.retryN = append(r.retryN, k)
			return fmt.Errorf("%v %v on %s: %w", o.kind, o.addr, r.names[o.port], err)
		}
	}
	return nil
}

// linkGone reports whether err says the interface is down or absent:
// the change waits for the port to come back rather than being retried.
func linkGone(err error) bool {
	return errors.Is(err, syscall.ENETDOWN) || errors.Is(err, syscall.ENODEV)
}

// portDownLocked marks a port down after the kernel refused a change
// through it; Run's next check sees when it is back.
func (r *Router) portDownLocked(port uint16, err error) {
	ps := &r.ports[port]
	ps.up, ps.carrier = false, false
	if errors.Is(err, syscall.ENODEV) {
		ps.index = 0
	}
	if !ps.downLogged {
		ps.downLogged = true
		r.log.Warn("kernel routes: downlink down or absent; its routes wait for it", "interface", r.names[port], "err", err)
	}
}

// setLinksLocked records the ports' interfaces. A port that comes up
// gets its waiting routes written (a check, which reads the routes back
// right after, finds which the kernel dropped). A port whose carrier is
// back, or that is a new interface of its name, or that flapped
// meanwhile, gets every neighbour entry through it written again: the
// kernel flushes them when a link goes down or loses carrier. Entries
// wait for the carrier (the kernel would flush them again when it comes
// back down), routes only for the port to be up: the kernel keeps the
// routes of a port without carrier.
func (r *Router) setLinksLocked(ls []link) {
	for i, l := range ls {
		if i >= len(r.ports) {
			break
		}
		ps := &r.ports[i]
		old := *ps
		if old.index != 0 && r.byIdx[old.index] == uint16(i) {
			delete(r.byIdx, old.index)
		}
		ps.index, ps.up = l.index, l.up && l.index != 0
		ps.carrier = ps.up && l.carrier
		if ps.index != 0 {
			r.byIdx[ps.index] = uint16(i)
		}
		back := ps.up && (!old.up || old.index != ps.index)
		neighBack := ps.carrier && (!old.carrier || old.index != ps.index || old.flapped)
		ps.flapped = false
		switch {
		case back && ps.downLogged:
			ps.downLogged = false
			r.log.Info("kernel routes: downlink back; writing its routes", "interface", r.names[i])
		case !ps.up && !ps.downLogged:
			ps.downLogged = true
			r.log.Warn("kernel routes: downlink down or absent; its routes wait for it", "interface", r.names[i])
		}
		if back || ps.up != old.up {
			for p, e := range r.routes {
				if e.port == uint16(i) && (e.wanted || e.in) {
					r.bulk = append(r.bulk, p)
				}
			}
		}
		if neighBack {
			for k, n := range r.neighs {
				if k.port == uint16(i) {
					n.unsure()
					r.bulkN = append(r.bulkN, k)
				}
			}
		}
	}
}

func (r *Router) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// scheduleRetryLocked sets when Run writes the failed changes again:
// after 100 ms, doubling to 30 s while they keep failing.
func (r *Router) scheduleRetryLocked() {
	r.retryWait = min(max(2*r.retryWait, 100*time.Millisecond), 30*time.Second)
	r.retryAt = time.Now().Add(r.retryWait)
	r.signal()
}

// Run does the Router's background work until ctx ends: it reconciles
// the kernel with the restored routes, writes again what was refused
// (after a pause) and what waits for a downlink that came back, and
// every Config.Check reads the kernel's routes back and repairs them. It
// returns nil when ctx ends.
func (r *Router) Run(ctx context.Context) error {
	r.log.Info("kernel routes running", "table", r.table, "protocol", Protocol)
	defer r.log.Info("kernel routes stopped")
	var tick <-chan time.Time
	var timer *time.Timer
	if r.every > 0 {
		timer = time.NewTimer(r.every)
		defer timer.Stop()
		tick = timer.C
	}
	done := make(chan struct{})
	defer close(done)
	events := r.k.watch(done)
	var deferredSince time.Time // a periodic check waiting for a quiet moment
	for {
		busy, err := r.step()
		if err != nil {
			r.log.Warn("kernel routes: cannot read the kernel's routes back; retrying", "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if busy {
			continue
		}
		var retry, recheck <-chan time.Time
		r.mu.Lock()
		if len(r.retryR)+len(r.retryN) > 0 {
			retry = time.After(max(time.Until(r.retryAt), 0))
		}
		r.mu.Unlock()
		if err != nil {
			recheck = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-recheck:
			r.requestCheck()
		case <-retry:
			r.mu.Lock()
			r.bulk = append(r.bulk, r.retryR...)
			r.bulkN = append(r.bulkN, r.retryN...)
			r.retryR, r.retryN = nil, nil
			r.mu.Unlock()
		case <-tick:
			if wait := r.checkWait(time.Now(), deferredSince); wait > 0 {
				if deferredSince.IsZero() {
					deferredSince = time.Now()
				}
				timer.Reset(wait)
				continue
			}
			deferredSince = time.Time{}
			r.requestCheck()
			timer.Reset(nextCheck(r.every, time.Duration(r.lastCheck.Load())))
		case <-events:
			r.takeEvents()
		}
	}
}

// takeEvents applies the kernel's events: a downlink that flapped is
// written again at the next check, which any interface change asks
// for; a route of Protocol deleted from outside is written again at
// once (a route the Router deleted itself is no longer held as in).
func (r *Router) takeEvents() {
	ev := r.k.events()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, name := range r.names {
		if ev.lost || ev.flapped[name] {
			r.ports[i].flapped = true
		}
	}
	if ev.links || ev.lost {
		r.check = true
	}
	for _, p := range ev.gone {
		e := r.routes[p]
		if e == nil || !e.known || !e.in {
			continue
		}
		r.goneLocked(e)
		e.known = false
		r.bulk = append(r.bulk, p)
	}
	if ev.links || ev.lost || len(ev.gone) > 0 {
		r.signal()
	}
}

// goneLocked notes that e's route is gone from outside. Whatever removed
// it (the port taken down and up again, an operator's flush) likely took
// the next hop's entry too: it is written again.
func (r *Router) goneLocked(e *entry) {
	if !e.via.IsValid() {
		return
	}
	k := nkey{e.port, e.via}
	if n := r.neighs[k]; n != nil {
		n.unsure()
		r.bulkN = append(r.bulkN, k)
	}
}

// checkChunk is how many routes a check compares between letting
// Flush in; checkYielded, for tests, runs while it does.
var (
	checkChunk   = 4096
	checkYielded func()
)

// checkWait is how much longer a periodic check due at now waits for a
// quiet moment (checkQuiet without a route written), having waited since
// deferredSince (zero: not yet): 0 to check now.
func (r *Router) checkWait(now, deferredSince time.Time) time.Duration {
	if !deferredSince.IsZero() && now.Sub(deferredSince) >= time.Duration(checkMaxDefer)*r.every {
		return 0
	}
	quietAt := time.Unix(0, r.lastWrite.Load()).Add(checkQuiet)
	return max(quietAt.Sub(now), 0)
}

// nextCheck is the time to the next periodic check: every, or longer
// when the last check took more than 1/checkShare of that.
func nextCheck(every, last time.Duration) time.Duration {
	return max(every, checkShare*last)
}

// requestCheck asks Run to read the kernel back.
func (r *Router) requestCheck() {
	r.mu.Lock()
	r.check = true
	r.mu.Unlock()
	r.signal()
}

// step does one unit of Run's work: a check, or one batch of writes. It
// reports whether more work is queued.
func (r *Router) step() (bool, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false, nil
	}
	if r.check {
		full := r.full
		r.check = false
		r.mu.Unlock()
		start := time.Now()
		if err := r.checkKernel(full); err != nil {
			return false, err // Run asks again after a pause
		}
		r.lastCheck.Store(int64(time.Since(start)))
		return true, nil
	}
	defer r.mu.Unlock()
	if len(r.extra) > 0 {
		extra := r.extra
		r.extra = nil
		r.seq++
		if err := r.k.write(extra); err != nil {
			r.check = true
		}
		for _, o := range extra {
			if o.err == nil {
				r.total.RoutesRemoved++
			} else if !errors.Is(o.err, syscall.ESRCH) {
				r.log.Warn("kernel routes: cannot delete a route of pdrelay's protocol at another metric", "prefix", o.prefix, "metric", o.metric, "err", o.err)
			}
		}
		return true, nil
	}
	if len(r.bulk)+len(r.bulkN) > 0 {
		nr := min(len(r.bulk), r.batch)
		nn := min(len(r.bulkN), r.batch-nr)
		ops := r.planLocked(r.bulk[:nr], r.bulkN[:nn])
		r.bulk, r.bulkN = r.bulk[nr:], r.bulkN[nn:]
		_ = r.applyLocked(ops) // failures are logged and retried
	}
	if len(r.bulk)+len(r.bulkN) > 0 {
		return true, nil
	}
	r.bulk, r.bulkN = nil, nil
	if !r.reconciled && !r.check && !r.full {
		r.reconciled = true
		r.log.Info("kernel routes reconciled", "routes", r.lenLocked(), "written", r.total.RoutesWritten,
			"removed", r.total.RoutesRemoved, "neighbours_written", r.total.NeighsWritten,
			"neighbours_removed", r.total.NeighsRemoved, "waiting", r.waitingLocked(),
			"took", time.Since(r.recStart).Round(time.Millisecond))
	}
	return false, nil
}

// checkKernel reads the downlinks and the kernel's routes of Protocol
// (and with full, its neighbour entries) and queues what differs from
// the wanted state. The reads run without the lock, beside Flush: a
// prefix written meanwhile (wrote after the read began) keeps the state
// its write left.
func (r *Router) checkKernel(full bool) error {
	r.mu.Lock()
	seq0 := r.seq
	if full && r.recStart.IsZero() {
		r.recStart = time.Now()
	}
	names := r.names // AddPorts appends under mu
	about := len(r.routes) + len(r.routes)/8
	r.mu.Unlock()
	r.takeEvents()
	ls, err := r.k.links(names)
	if err != nil {
		return fmt.Errorf("look up downlinks: %w", err)
	}
	krs, err := r.k.routes(r.table, about)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var kns []kernelNeigh
	if full {
		if kns, err = r.k.neighs(); err != nil {
			return fmt.Errorf("list neighbours: %w", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setLinksLocked(ls)
	// An entry the dump showed gets this check's number: a map of the
	// prefixes seen allocated 100 MB, and took a third of a second, at
	// 1M routes.
	r.checks++
	gen := r.checks
	r.extra = r.extra[:0]
	// The comparison lets Flush in every checkChunk routes: at 300k
	// routes it held the lock for tens of milliseconds, and the binding
	// changes queued behind it showed as a cluster of late routes at
	// every check. What Flush writes meanwhile is newer than the read
	// (wrote > seq0), so the rest of the comparison leaves it alone.
	n := 0
	yield := func() {
		if n++; n%checkChunk == 0 {
			r.mu.Unlock()
			if checkYielded != nil {
				checkYielded()
			}
			runtime.Gosched()
			r.mu.Lock()
		}
	}
	for _, kr := range krs {
		yield()
		if kr.metric != Metric {
			// Not one pdrelay wrote (its replace would not reach it):
			// deleted by its own metric.
			r.extra = append(r.extra, op{kind: opUnroute, prefix: kr.prefix, table: r.table, metric: kr.metric})
			continue
		}
		e := r.routes[kr.prefix]
		if e == nil {
			// Ours, and no binding backs it: a tombstone deletes it.
			e = &entry{}
			r.routes[kr.prefix] = e
		}
		e.seen = gen
		if e.wrote > seq0 {
			continue
		}
		e.known, e.in, e.inIndex, e.inVia = true, true, kr.index, kr.via
		if kr.odd {
			e.inIndex = -1 // differs from anything pdrelay writes
		}
	}
	for p, e := range r.routes {
		// A Flush while the lock is let go (yield) may add or delete
		// entries: the range then may or may not see an added one (it is
		// newer than the read, and skipped if seen), and never a deleted
		// one.
		yield()
		if e.wrote > seq0 {
			continue
		}
		if e.seen != gen {
			if e.known && e.in {
				r.goneLocked(e)
			}
			e.known, e.in = true, false
		}
		if _, ok := r.routeOp(p, e); ok || !e.wanted {
			r.bulk = append(r.bulk, p)
		}
	}
	if full {
		r.neighsFromKernelLocked(kns, seq0)
		r.full = false
	}
	return nil
}

// neighsFromKernelLocked takes the kernel's neighbour entries at the
// reconcile: an entry of Protocol that no route needs goes; an entry the
// kernel holds for a wanted next hop stands, whoever made it and with
// whatever MAC (the kernel follows a client's MAC; the binding's may be
// older); wanted ones it lacks are written.
func (r *Router) neighsFromKernelLocked(kns []kernelNeigh, seq0 uint64) {
	seen := make(map[nkey]bool, len(kns))
	for _, kn := range kns {
		port, ok := r.byIdx[kn.index]
		if !ok {
			continue // not a downlink: not pdrelay's business
		}
		k := nkey{port, kn.addr}
		seen[k] = true
		n := r.neighs[k]
		if n != nil && n.wrote > seq0 {
			continue
		}
		switch {
		case n != nil && n.refs > 0 && n.mac != [6]byte{}:
			n.in, n.inIndex = true, kn.index
			n.inMAC = n.mac // the kernel's entry stands
		case n != nil && n.refs > 0:
			// pdrelay knows no MAC for it: the entry is the kernel's
			// (or a previous run's, now the kernel's to keep or drop).
			n.in = false
		case kn.ours:
			if n == nil {
				n = &nent{}
				r.neighs[k] = n
			}
			n.in, n.inIndex, n.inMAC = true, kn.index, kn.mac
			r.bulkN = append(r.bulkN, k)
		}
	}
	for k, n := range r.neighs {
		if seen[k] || n.wrote > seq0 {
			continue
		}
		n.in = false
		r.bulkN = append(r.bulkN, k)
	}
}

// lenLocked counts the wanted routes.
func (r *Router) lenLocked() int {
	n := 0
	for _, e := range r.routes {
		if e.wanted {
			n++
		}
	}
	return n
}

// waitingLocked counts the wanted routes the kernel does not hold.
func (r *Router) waitingLocked() int {
	n := 0
	for _, e := range r.routes {
		if e.wanted && !(e.known && e.in) {
			n++
		}
	}
	return n
}

// Len returns the number of wanted routes.
func (r *Router) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lenLocked()
}

// Waiting returns the number of wanted routes the kernel does not hold:
// no next hop yet, their downlink down or absent, or not yet written.
func (r *Router) Waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waitingLocked()
}

// Reconciled reports whether Run's reconcile at start is done: the
// kernel held the restored routes, or they were written, or they wait
// for their downlink.
func (r *Router) Reconciled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reconciled
}

// Stats returns the Router's kernel writes since New.
func (r *Router) Stats() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Close lets go of the kernel. The routes and neighbour entries stay
// (traffic keeps flowing while pdrelay restarts, RFC 8987 S-1), unless
// Config.FlushOnStop, which removes every route of Protocol in the
// table and every neighbour entry of Protocol, whether the Router wrote
// them or a previous run did. Later calls do nothing.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	defer r.k.close()
	if !r.flushOnStop {
		return nil
	}
	return r.flushAllLocked()
}

// flushAllLocked removes every route and neighbour entry of Protocol.
func (r *Router) flushAllLocked() error {
	krs, err := r.k.routes(r.table, len(r.routes))
	if err != nil {
		return fmt.Errorf("kroute: flush: list routes: %w", err)
	}
	kns, err := r.k.neighs()
	if err != nil {
		return fmt.Errorf("kroute: flush: list neighbours: %w", err)
	}
	var ops []op
	for _, kr := range krs {
		ops = append(ops, op{kind: opUnroute, prefix: kr.prefix, table: r.table, metric: kr.metric})
	}
	for _, kn := range kns {
		if kn.ours {
			ops = append(ops, op{kind: opUnneigh, addr: kn.addr, index: kn.index})
		}
	}
	var errs []error
	for len(ops) > 0 {
		n := min(len(ops), r.batch)
		if err := r.k.write(ops[:n]); err != nil {
			errs = append(errs, err)
		}
		for _, o := range ops[:n] {
			if o.err != nil && !errors.Is(o.err, syscall.ESRCH) && !errors.Is(o.err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("%v %v%v: %w", o.kind, o.prefix, o.addr, o.err))
			}
		}
		ops = ops[n:]
	}
	r.log.Info("kernel routes flushed", "routes", len(krs))
	if len(errs) > 0 {
		return fmt.Errorf("kroute: flush: %d failures, first: %w", len(errs), errs[0])
	}
	return nil
}

package neigh

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
)

// ResolverOptions tune a Resolver. The zero value is what the relay uses.
type ResolverOptions struct {
	// NetNS is the network namespace of the ports; 0 or -1 (netns.None())
	// means the caller's. The Resolver neither closes nor keeps it after
	// Run returns.
	NetNS netns.NsHandle
	// Grace is how long a next hop whose entry is missing is given to
	// appear by itself before the first resolution request: the relay's
	// Reply to the client makes the kernel resolve it anyway. Default
	// DefaultResolveGrace.
	Grace time.Duration
	// Retry is the interval between resolution requests for one next hop,
	// doubling with each unanswered one up to MaxRetry; it is also how
	// long a request counts as in flight. Defaults DefaultResolveRetry,
	// DefaultResolveMaxRetry.
	Retry, MaxRetry time.Duration
	// Poll is how often the kernel's table is read again for every next
	// hop being resolved, in case a notification was lost; default
	// DefaultPoll.
	Poll time.Duration
	// WarnAfter is how long a next hop may stay unresolved before one
	// warning is logged for it; default DefaultResolveWarnAfter.
	WarnAfter time.Duration
	// MaxTracked bounds the next hops being resolved at once: Resolve
	// refuses (and counts) more. Default DefaultResolveMaxTracked.
	MaxTracked int
	// MaxInFlight bounds the resolution requests in flight at once (sent
	// in the last Retry, or whose entry the kernel is still resolving);
	// more wait for the next round. Default DefaultResolveMaxInFlight.
	MaxInFlight int

	// discardOnly makes tests use the fallback resolution trigger.
	discardOnly bool
}

// Defaults of ResolverOptions.
const (
	DefaultResolveGrace       = 500 * time.Millisecond
	DefaultResolveRetry       = time.Second
	DefaultResolveMaxRetry    = 30 * time.Second
	DefaultResolveWarnAfter   = time.Minute
	DefaultResolveMaxTracked  = 16384
	DefaultResolveMaxInFlight = 64
)

// minRound is the least time between two rounds of table reads and
// requests, so a stream of Resolve calls costs one read per minRound.
const minRound = 50 * time.Millisecond

func (o ResolverOptions) withDefaults() ResolverOptions {
	if o.Grace <= 0 {
		o.Grace = DefaultResolveGrace
	}
	if o.Retry <= 0 {
		o.Retry = DefaultResolveRetry
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = DefaultResolveMaxRetry
	}
	o.MaxRetry = max(o.MaxRetry, o.Retry)
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.WarnAfter <= 0 {
		o.WarnAfter = DefaultResolveWarnAfter
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = DefaultResolveMaxTracked
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultResolveMaxInFlight
	}
	if o.NetNS == 0 {
		o.NetNS = netns.None()
	}
	return o
}

// ResolverStats are a Resolver's gauges and counters.
type ResolverStats struct {
	Tracked  int    // next hops being resolved now
	InFlight int    // of which with a request in flight
	Resolved uint64 // next hops reported
	Requests uint64 // resolution requests sent to the kernel
	Failed   uint64 // requests the kernel refused
	Dropped  uint64 // Resolve calls refused: MaxTracked next hops already tracked
}

// Found is called by a Resolver when the kernel holds a usable entry for
// a next hop it was asked to resolve.
type Found func(ifname string, addr netip.Addr, mac [6]byte)

// Resolver resolves the link-layer addresses of next hops on the relay's
// ports through the kernel's neighbour table: see the package doc.
type Resolver struct {
	opt   ResolverOptions
	log   *slog.Logger
	found Found
	wake  chan struct{} // a new next hop to look at; capacity 1
	ran   atomic.Bool

	mu      sync.Mutex
	targets map[hop]*target
	full    bool // the last Resolve refused: log again only after room
	stats   ResolverStats
}

// hop is a next hop on a port: the port's name and the address without
// zone.
type hop struct {
	ifname string
	addr   netip.Addr
}

// target is a next hop being resolved. The Resolver's mutex guards it.
type target struct {
	hop
	added    time.Time
	next     time.Time // when a round should look at it again; zero: at once
	inflight time.Time // a request of ours is in flight until then; zero: none
	last     time.Time // when the last request was sent
	tries    int       // requests sent (or looks for a missing port)
	waiting  time.Time // when a request became due that waits for a slot
	warned   bool
}

// since is when t became due: its place in the queue for request slots.
func (t *target) since() time.Time {
	if !t.waiting.IsZero() {
		return t.waiting
	}
	return t.next
}

// NewResolver returns a Resolver that calls found for each next hop it
// resolves. log may be nil. It does nothing until Run.
func NewResolver(opt ResolverOptions, log *slog.Logger, found Found) *Resolver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if found == nil {
		found = func(string, netip.Addr, [6]byte) {}
	}
	return &Resolver{
		opt:     opt.withDefaults(),
		log:     log,
		found:   found,
		wake:    make(chan struct{}, 1),
		targets: make(map[hop]*target),
	}
}

// Resolve asks for the link-layer address of addr on the port ifname
// (addr's zone is ignored). It never blocks: it records the request and
// returns. Asking again for a next hop being resolved does nothing. When
// MaxTracked next hops are already being resolved the request is
// refused and counted (Stats.Dropped). Only IPv6 unicast addresses are
// taken.
func (r *Resolver) Resolve(ifname string, addr netip.Addr) {
	addr = addr.WithZone("")
	if ifname == "" || !addr.Is6() || addr.Is4In6() || addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback() {
		return
	}
	h := hop{ifname, addr}
	r.mu.Lock()
	if _, ok := r.targets[h]; ok {
		r.mu.Unlock()
		return
	}
	if len(r.targets) >= r.opt.MaxTracked {
		r.stats.Dropped++
		logIt := !r.full
		r.full = true
		r.mu.Unlock()
		if logIt {
			r.log.Warn("next hop resolver full: further next hops are not resolved until some are",
				"max_tracked", r.opt.MaxTracked, "interface", ifname, "next_hop", addr)
		}
		return
	}
	r.full = false
	r.targets[h] = &target{hop: h, added: time.Now()}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Forget stops resolving addr on ifname, if it is being resolved.
func (r *Resolver) Forget(ifname string, addr netip.Addr) {
	h := hop{ifname, addr.WithZone("")}
	r.mu.Lock()
	delete(r.targets, h)
	r.mu.Unlock()
}

// Stats returns the Resolver's gauges and counters.
func (r *Resolver) Stats() ResolverStats {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Tracked = len(r.targets)
	for _, t := range r.targets {
		if t.inflight.After(now) {
			s.InFlight++
		}
	}
	return s
}

// entryClass is what the kernel's table says about a next hop.
type entryClass uint8

const (
	// entryMissing: no entry, or one NONE or FAILED: the kernel must be
	// asked.
	entryMissing entryClass = iota
	// entryResolving: INCOMPLETE: the kernel is sending solicitations.
	entryResolving
	// entryUsable: a link-layer address the kernel would send to.
	entryUsable
	// entryNoLink: the port does not exist (now).
	entryNoLink
)

// report is a next hop resolved, for Found.
type report struct {
	hop
	mac [6]byte
}

// roundPlan is what one round decided, for the I/O outside the lock.
type roundPlan struct {
	reports  []report
	requests []*target // to ask the kernel about; tries already counted
	warn     []warning
}

type warning struct {
	hop
	waited time.Duration
	tries  int
	link   bool // the port exists
}

// due returns the targets a round at now should look at: those never
// looked at, those whose time has come, or all of them when all is set;
// the longest due first.
// The caller holds r.mu.
func (r *Resolver) due(now time.Time, all bool) []*target {
	var out []*target
	for _, t := range r.targets {
		if all || !t.next.After(now) {
			out = append(out, t)
		}
	}
	// The longest waiting first: request slots go to them.
	slices.SortFunc(out, func(a, b *target) int {
		if c := a.since().Compare(b.since()); c != 0 {
			return c
		}
		return a.added.Compare(b.added)
	})
	return out
}

// plan decides, for each of ts still tracked, from what look says of its
// entry: report it (and stop tracking it), leave the kernel at it, or
// send a request, as the backoff and the in-flight bound allow. The
// caller holds r.mu.
func (r *Resolver) plan(now time.Time, ts []*target, look func(hop) (entryClass, [6]byte)) roundPlan {
	var p roundPlan
	inflight := 0
	for _, t := range r.targets {
		if t.inflight.After(now) {
			inflight++
		}
	}
	for _, t := range ts {
		if r.targets[t.hop] != t {
			continue // forgotten (and maybe asked for again) meanwhile
		}
		class, mac := look(t.hop)
		switch class {
		case entryUsable:
			delete(r.targets, t.hop)
			if t.inflight.After(now) {
				inflight--
			}
			p.reports = append(p.reports, report{t.hop, mac})
			r.stats.Resolved++
			continue
		case entryResolving:
			// Whoever started it, the kernel is at it: look again in a
			// Retry; a request of ours stays in flight meanwhile.
			if !t.inflight.IsZero() {
				if !t.inflight.After(now) {
					inflight++ // lapsed just before this look: count it again
				}
				t.inflight = now.Add(r.inflightFor())
			}
			t.next = now.Add(r.opt.Retry)
		case entryNoLink:
			t.tries++ // look again as if asked, backing off
			t.last = now
			t.next = now.Add(backoff(r.opt.Retry, r.opt.MaxRetry, t.tries))
		case entryMissing:
			if !t.inflight.IsZero() {
				// Our request has ended (a request leaves an INCOMPLETE
				// entry until the kernel gives up): its slot is free.
				if t.inflight.After(now) {
					inflight--
				}
				t.inflight = time.Time{}
			}
			ready := t.added.Add(r.opt.Grace)
			if t.tries > 0 {
				ready = t.last.Add(backoff(r.opt.Retry, r.opt.MaxRetry, t.tries))
			}
			switch {
			case now.Before(ready):
				t.next = ready
			case inflight >= r.opt.MaxInFlight:
				// Wait for a slot (the earliest frees within a Retry),
				// keeping its place in the queue.
				if t.waiting.IsZero() {
					t.waiting = ready
				}
				t.next = now.Add(r.opt.Retry / 4)
			default:
				t.waiting = time.Time{}
				t.tries++
				t.last = now
				t.inflight = now.Add(r.inflightFor())
				t.next = now.Add(backoff(r.opt.Retry, r.opt.MaxRetry, t.tries))
				inflight++
				p.requests = append(p.requests, t)
			}
		}
		if !t.warned && now.Sub(t.added) >= r.opt.WarnAfter {
			t.warned = true
			p.warn = append(p.warn, warning{t.hop, now.Sub(t.added), t.tries, class != entryNoLink})
		}
	}
	return p
}

// inflightFor is how long a request counts as in flight without news:
// a round looks at it again after a Retry, and the margin keeps its slot
// taken until then.
func (r *Resolver) inflightFor() time.Duration { return r.opt.Retry + r.opt.Retry/2 }

// notified handles a notification that the entry of h is now of class
// (with mac): a usable one is reported at once, a failed one frees its
// request's slot. It returns the report to make, if any. The caller
// holds r.mu.
func (r *Resolver) notified(now time.Time, h hop, class entryClass, mac [6]byte) (report, bool) {
	t, ok := r.targets[h]
	if !ok {
		return report{}, false
	}
	switch class {
	case entryUsable:
		delete(r.targets, h)
		r.stats.Resolved++
		return report{h, mac}, true
	case entryMissing:
		t.inflight = time.Time{} // the kernel gave up: the slot is free
	}
	return report{}, false
}

// nextRound returns when the next round should run: the earliest time a
// target is due, or the poll, but never sooner than minRound after now.
// The caller holds r.mu.
func (r *Resolver) nextRound(now, lastPoll time.Time) time.Time {
	next := lastPoll.Add(r.opt.Poll)
	for _, t := range r.targets {
		if t.next.Before(next) {
			next = t.next
		}
	}
	return later(next, now.Add(minRound))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// backoff is the interval after the tries-th unanswered request: first,
// doubling with each, up to most.
func backoff(first, most time.Duration, tries int) time.Duration {
	d := first
	for i := 1; i < tries && d < most; i++ {
		d *= 2
	}
	return min(d, most)
}

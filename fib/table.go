package fib

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
)

// FIB is the readers' handle on the current Snapshot. The zero FIB holds no
// snapshot, which Load reports as nil: drop everything.
type FIB struct {
	cur atomic.Pointer[Snapshot]
}

// Load returns the latest published snapshot, or nil if none has been
// published. It never blocks; a dataplane worker calls it once per batch
// of packets and uses the one snapshot for the whole batch.
func (f *FIB) Load() *Snapshot {
	if f == nil {
		return nil
	}
	return f.cur.Load()
}

// Table is the writer side: it accumulates route and source-filter changes
// and publishes them as a new Snapshot.
//
// A Table is not safe for concurrent use: exactly one goroutine (the owner
// of the binding table) may call its methods. Readers use Load, or the FIB
// returned by Table.FIB, from any goroutine.
type Table struct {
	fib    FIB
	gen    uint64 // generation being built; published snapshots are older
	routes *lpmWriter[*routeEnt]
	src    *lpmWriter[*srcEnt]
	conf   map[PortID][]netip.Prefix // configured allowed sources by port
	def    *Route
}

// NewTable returns an empty table. Nothing is published until the first
// call to Publish.
func NewTable() *Table {
	return &Table{
		gen:    1,
		routes: newLPMWriter[*routeEnt](rand.Uint64(), rand.Uint64()|1),
		src:    newLPMWriter[*srcEnt](rand.Uint64(), rand.Uint64()|1),
		conf:   make(map[PortID][]netip.Prefix),
	}
}

// FIB returns the handle readers load snapshots from.
func (t *Table) FIB() *FIB { return &t.fib }

// Load returns the latest published snapshot, like t.FIB().Load(). It is
// safe to call from any goroutine.
func (t *Table) Load() *Snapshot { return t.fib.Load() }

// Publish makes all changes so far visible to readers as one new Snapshot,
// which it returns. Its cost grows with the changes since the last Publish,
// not with the size of the table, so the control plane should batch.
func (t *Table) Publish() *Snapshot { return t.publish(true) }

// PublishDeferred is Publish, except that it leaves making new dense
// blocks to the next Publish. Making them after a bulk load (a restore)
// walks the whole table; with PublishDeferred the tables serve at once,
// and one Publish later they are faster.
func (t *Table) PublishDeferred() *Snapshot { return t.publish(false) }

func (t *Table) publish(dense bool) *Snapshot {
	s := &Snapshot{
		routes: t.routes.freeze(t.gen, dense),
		src:    t.src.freeze(t.gen, dense),
		def:    t.def,
		gen:    t.gen,
	}
	t.fib.cur.Store(s)
	t.gen++ // everything reachable from s is now read-only
	return s
}

// AddRoute adds the route for r.Prefix, or replaces the route for that
// prefix if there is one (whatever its port). The prefix is stored masked.
// It fails for a prefix that is not IPv6 or a route with bad fields.
func (t *Table) AddRoute(r Route) error {
	r, err := checkRoute(r)
	if err != nil {
		return fmt.Errorf("add route: %w", err)
	}
	t.routes.put(r.Prefix, 0, &routeEnt{key: keyOf(r.Prefix, 0), Route: r}, t.gen)
	return nil
}

// DeleteRoute removes the route for exactly prefix p (masked) and reports
// whether there was one.
func (t *Table) DeleteRoute(p netip.Prefix) bool {
	p, err := checkPrefix(p)
	if err != nil {
		return false
	}
	return t.routes.del(p, 0, t.gen) != nil
}

// DeleteRouteIf removes the route for exactly prefix p if it points out of
// port, and reports whether it did. When a prefix has moved to another port
// (a client moved, or a server delegated it twice) the end of the old
// binding then leaves the newer binding's route in place.
func (t *Table) DeleteRouteIf(p netip.Prefix, port PortID) bool {
	r, ok := t.Route(p)
	if !ok || r.Port != port {
		return false
	}
	return t.DeleteRoute(p)
}

// Route returns the pending (possibly unpublished) route for exactly p.
func (t *Table) Route(p netip.Prefix) (Route, bool) {
	p, err := checkPrefix(p)
	if err != nil {
		return Route{}, false
	}
	e := t.routes.get(p, 0)
	if e == nil {
		return Route{}, false
	}
	return e.Route, true
}

// Len returns the number of pending routes.
func (t *Table) Len() int { return t.routes.cur.n }

// AddSource allows sources in p on port on behalf of one binding. Entries
// are counted per (port, prefix): each AddSource needs its own DeleteSource,
// and the same prefix allowed on two ports is two independent entries.
func (t *Table) AddSource(port PortID, p netip.Prefix) error {
	p, err := checkPrefix(p)
	if err != nil {
		return fmt.Errorf("add source on port %d: %w", port, err)
	}
	v := t.srcRefs(port, p)
	if v&srcRefMask == srcRefMask {
		return fmt.Errorf("add source %v on port %d: reference count overflow", p, port)
	}
	t.setSrc(port, p, v+1)
	return nil
}

// DeleteSource drops one reference taken by AddSource on (port, p) and
// reports whether there was one. The prefix stays allowed while other
// references or the port's configuration still allow it.
func (t *Table) DeleteSource(port PortID, p netip.Prefix) bool {
	p, err := checkPrefix(p)
	if err != nil {
		return false
	}
	v := t.srcRefs(port, p)
	if v&srcRefMask == 0 {
		return false
	}
	t.setSrc(port, p, v-1)
	return true
}

// srcRefs returns the references held on a source entry.
func (t *Table) srcRefs(port PortID, p netip.Prefix) uint32 {
	if e := t.src.get(p, uint16(port)); e != nil {
		return e.refs
	}
	return 0
}

// setSrc stores a source entry's references, deleting the entry at zero.
// Entries are immutable once stored, so a new count is a new entry.
func (t *Table) setSrc(port PortID, p netip.Prefix, refs uint32) {
	if refs == 0 {
		t.src.del(p, uint16(port), t.gen)
	} else {
		t.src.put(p, uint16(port), &srcEnt{keyOf(p, uint16(port)), refs}, t.gen)
	}
}

// SetAllowedSources replaces the prefixes the configuration always allows
// as sources on port (for example the link's own prefix), independent of
// bindings. An empty list removes them. Either all prefixes are valid and
// the set is replaced, or nothing changes.
func (t *Table) SetAllowedSources(port PortID, prefixes []netip.Prefix) error {
	next := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		m, err := checkPrefix(p)
		if err != nil {
			return fmt.Errorf("set allowed sources on port %d: %w", port, err)
		}
		next = append(next, m)
	}
	slices.SortFunc(next, netip.Prefix.Compare)
	next = slices.Compact(next)
	prev := t.conf[port]
	for _, p := range prev {
		if _, found := slices.BinarySearchFunc(next, p, netip.Prefix.Compare); !found {
			t.setSrc(port, p, t.srcRefs(port, p)&^srcConf)
		}
	}
	for _, p := range next {
		if _, found := slices.BinarySearchFunc(prev, p, netip.Prefix.Compare); !found {
			t.setSrc(port, p, t.srcRefs(port, p)|srcConf)
		}
	}
	if len(next) == 0 {
		delete(t.conf, port)
	} else {
		t.conf[port] = next
	}
	return nil
}

// SetDefault sets the uplink default route (the gateway's address, MAC and
// port), or clears it when r is nil. r.Prefix is ignored and set to ::/0.
func (t *Table) SetDefault(r *Route) error {
	if r == nil {
		t.def = nil
		return nil
	}
	c := *r
	c.Prefix = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	c, err := checkRoute(c)
	if err != nil {
		return fmt.Errorf("set default route: %w", err)
	}
	t.def = &c
	return nil
}

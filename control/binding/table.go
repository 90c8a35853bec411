package binding

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/gaissmai/bart"
)

// Errors returned by Learn when a limit stops a binding from being
// installed. The DHCPv6 messages still pass; only the route is refused.
var (
	ErrClientLimit    = errors.New("max_per_client reached")
	ErrPortLimit      = errors.New("max_delegations reached on port")
	ErrDuplicateDUID  = errors.New("client DUID already bound on another port (unique_client)")
	ErrInvalidBinding = errors.New("invalid binding")
)

// Removal reasons, used in logs, metrics and Change.Reason.
const (
	ReasonReleased   = "released"   // client Release relayed (G-9)
	ReasonDeclined   = "declined"   // client Decline answered
	ReasonZeroValid  = "zero-valid" // IAPREFIX with valid lifetime 0
	ReasonNoBinding  = "no-binding" // IA_PD with status NoBinding
	ReasonExpired    = "expired"    // valid lifetime elapsed
	ReasonSuperseded = "superseded" // the prefix was delegated to another key
	ReasonOperator   = "operator"   // pdrelay clear
	ReasonRestoreOld = "expired-restore"
)

// Op is the kind of a Change.
type Op uint8

// Change operations.
const (
	Added Op = iota + 1
	Updated
	Removed
)

func (o Op) String() string {
	switch o {
	case Added:
		return "added"
	case Updated:
		return "updated"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Change is one binding event, handed to the sinks in order.
type Change struct {
	Op      Op
	Binding Binding
	Reason  string // for Removed
	// RouteChanged is true when the change affects forwarding state (a new
	// or removed prefix, or a new next hop or MAC); a lifetime refresh is
	// not, so the FIB is not republished for renewals.
	RouteChanged bool
	// MovedFrom, on an Added change, is the binding the prefix was taken
	// from: the server delegated the same prefix to another client (a
	// replaced CPE), whose binding is removed as superseded just before.
	MovedFrom *Key
}

// PortLimits are the per-port limits (RFC 8987 G-5, G-6, G-7, G-4).
type PortLimits struct {
	MaxPerClient   int  // prefixes per client DUID on the port; 0 = unlimited
	MaxDelegations int  // prefixes on the port; 0 = unlimited
	UniqueClient   bool // refuse a DUID already bound on another port
}

// Learned is what a Reply says about one delegated prefix.
type Learned struct {
	Key
	NextHop    netip.Addr
	MAC        [6]byte
	MACKnown   bool // false keeps the MAC already bound
	Preferred  time.Duration
	Valid      time.Duration
	ServerDUID string
	Source     Source
}

// portCount is how many bindings a DUID has on one port. A DUID is almost
// always on one port, so a short slice beats a map per DUID.
type portCount struct {
	port string
	n    int
}

type clientKey struct {
	port string
	duid string
}

// Table is the binding table. It is not safe for concurrent use: the
// Manager owns it on one goroutine.
type Table struct {
	byKey    map[Key]*entry
	byPrefix map[netip.Prefix]*entry
	// nest indexes the prefixes by containment, for the check that no
	// client's binding nests in another's. Prefixes of one length cannot
	// nest, so it exists only while more than one length is in use (or a
	// check of a new length needs it); lens counts the prefixes of each
	// length, nlens the lengths in use.
	nest      *bart.Lite
	lens      [129]int32
	nlens     int
	policy    Policy
	perClient map[clientKey][]*entry // a client's bindings on a port
	perPort   map[string]int
	duidPorts map[string][]portCount // duid -> ports it is bound on (unique_client)
	limits    map[string]PortLimits
	deflimits PortLimits
	exp       expiryHeap
	epoch     time.Time // what exp's deadlines count from
	changes   []Change
	bulk      bool // between BeginRestore and EndRestore: exp is unordered
}

type entry struct {
	Binding
	// queued is the deadline of the entry's current item in the expiry
	// heap (its Expires less the table's epoch), or notQueued.
	queued time.Duration
}

// notQueued marks an entry that has left the table: its items in the
// expiry heap are stale.
const notQueued = time.Duration(math.MinInt64)

// NewTable returns an empty table. def applies to ports without their own
// limits.
func NewTable(def PortLimits, perPort map[string]PortLimits) *Table {
	return &Table{
		byKey:     make(map[Key]*entry),
		byPrefix:  make(map[netip.Prefix]*entry),
		perClient: make(map[clientKey][]*entry),
		perPort:   make(map[string]int),
		duidPorts: make(map[string][]portCount),
		limits:    perPort,
		deflimits: def,
		epoch:     time.Now(),
	}
}

func (t *Table) limitsFor(port string) PortLimits {
	if l, ok := t.limits[port]; ok {
		return l
	}
	return t.deflimits
}

// SetPolicy sets what later delegations must satisfy; the bindings
// already installed stay.
func (t *Table) SetPolicy(p Policy) { t.policy = p }

// Check reports whether a binding with key k would be refused by the
// policy or by nesting with another client's binding, without changing
// anything; nil means it would be installed (limits aside).
func (t *Table) Check(k Key) error {
	if !validPrefix(k.Prefix) {
		return &RefusedError{RefuseInvalid, "not an IPv6 prefix"}
	}
	k.Prefix = k.Prefix.Masked()
	if err := t.policy.check(k.Port, k.Prefix); err != nil {
		return err
	}
	return t.checkNested(k)
}

// checkNested refuses a prefix that strictly contains, or lies strictly
// inside, a binding of another client (port and DUID).
func (t *Table) checkNested(k Key) error {
	if t.nest == nil {
		if t.nlens == 0 || t.nlens == 1 && t.lens[k.Prefix.Bits()] > 0 {
			return nil // one length: prefixes are identical or apart
		}
		t.buildNest()
	}
	if !t.nest.OverlapsPrefix(k.Prefix) {
		return nil
	}
	other := func(q netip.Prefix) error {
		e := t.byPrefix[q]
		if q == k.Prefix || e == nil || e.Port == k.Port && e.DUID == k.DUID {
			return nil
		}
		rel := "inside"
		if q.Bits() > k.Prefix.Bits() {
			rel = "containing"
		}
		return &RefusedError{RefuseNested, fmt.Sprintf("%s %s, bound to client %s on %s", rel, q, e.DUIDHex(), e.Port)}
	}
	for q := range t.nest.Supernets(k.Prefix) {
		if err := other(q); err != nil {
			return err
		}
	}
	for q := range t.nest.Subnets(k.Prefix) {
		if err := other(q); err != nil {
			return err
		}
	}
	return nil
}

// buildNest indexes every bound prefix for checkNested.
func (t *Table) buildNest() {
	t.nest = new(bart.Lite)
	for p := range t.byPrefix {
		t.nest.Insert(p)
	}
}

// prefixAdded and prefixGone keep the nesting index and the length
// counts as byPrefix gains or loses a prefix.
func (t *Table) prefixAdded(p netip.Prefix) {
	if t.lens[p.Bits()]++; t.lens[p.Bits()] == 1 {
		t.nlens++
	}
	switch {
	case t.nest != nil:
		t.nest.Insert(p)
	case t.nlens > 1:
		t.buildNest()
	}
}

func (t *Table) prefixGone(p netip.Prefix) {
	if t.lens[p.Bits()]--; t.lens[p.Bits()] == 0 {
		t.nlens--
	}
	if t.nest != nil {
		if t.nlens <= 1 {
			t.nest = nil // one length left: nothing can nest
		} else {
			t.nest.Delete(p)
		}
	}
}

// Len returns the number of bindings.
func (t *Table) Len() int { return len(t.byKey) }

// PortCount returns the number of bindings on port.
func (t *Table) PortCount(port string) int { return t.perPort[port] }

// Get returns the binding with key k.
func (t *Table) Get(k Key) (Binding, bool) {
	e, ok := t.byKey[k]
	if !ok {
		return Binding{}, false
	}
	return e.Binding, true
}

// TakeChanges returns the changes recorded since the last call, nil if
// none (a recycled slice stays for the next changes).
func (t *Table) TakeChanges() []Change {
	if len(t.changes) == 0 {
		return nil
	}
	c := t.changes
	t.changes = nil
	return c
}

// maxRecycledChanges bounds the slice RecycleChanges keeps: a restore's
// or an expiry wave's batch is let go rather than held for good.
const maxRecycledChanges = 4096

// RecycleChanges hands back a batch TakeChanges returned, once nothing
// holds it any more, for the next changes to reuse: a batch a Reply
// makes then allocates nothing.
func (t *Table) RecycleChanges(c []Change) {
	if t.changes != nil || cap(c) > maxRecycledChanges {
		return
	}
	clear(c)
	t.changes = c[:0]
}

// Learn creates or updates the binding l describes, with lifetimes counted
// from now (G-8). A valid lifetime of 0 removes it (the caller should use
// Remove; Learn treats it the same way). Over a limit the binding is not
// installed and the limit's error is returned; a prefix the policy
// refuses (see Policy) gets a *RefusedError.
func (t *Table) Learn(now time.Time, l Learned) (Op, error) {
	if !validPrefix(l.Prefix) {
		return 0, ErrInvalidBinding
	}
	l.Prefix = l.Prefix.Masked()
	l.NextHop = l.NextHop.WithZone("")
	if l.Valid <= 0 {
		t.Remove(l.Key, ReasonZeroValid)
		return Removed, nil
	}
	if l.Preferred > l.Valid {
		l.Preferred = l.Valid
	}
	preferred, expires := lifetimeEnd(now, l.Preferred), lifetimeEnd(now, l.Valid)
	if e, ok := t.byKey[l.Key]; ok {
		if !l.MACKnown {
			l.MAC = e.MAC
		}
		routeChanged := e.NextHop != l.NextHop || e.MAC != l.MAC
		e.NextHop, e.MAC = l.NextHop, l.MAC
		e.Preferred, e.Expires, e.Updated, e.Source = preferred, expires, now, l.Source
		if l.ServerDUID != "" {
			e.ServerDUID = l.ServerDUID
		}
		t.queue(e)
		t.changes = append(t.changes, Change{Op: Updated, Binding: e.Binding, RouteChanged: routeChanged})
		return Updated, nil
	}
	if err := t.Check(l.Key); err != nil {
		return 0, err
	}
	old := t.byPrefix[l.Prefix] // the server re-delegated the prefix to another key
	lim := t.limitsFor(l.Port)
	ck := clientKey{l.Port, l.DUID}
	if lim.UniqueClient {
		for _, pc := range t.duidPorts[l.DUID] {
			if pc.port != l.Port {
				return 0, ErrDuplicateDUID
			}
		}
	}
	freesClient := old != nil && old.Port == l.Port && old.DUID == l.DUID
	freesPort := old != nil && old.Port == l.Port
	if lim.MaxPerClient > 0 && len(t.perClient[ck]) >= lim.MaxPerClient && !freesClient {
		return 0, ErrClientLimit
	}
	if lim.MaxDelegations > 0 && t.perPort[l.Port] >= lim.MaxDelegations && !freesPort {
		return 0, ErrPortLimit
	}
	var from *Key
	if old != nil {
		// The same client under another IAID is not a move: a binding
		// recovered by Bulk Leasequery, which carries no IAID, learns its
		// IAID from the client's next exchange this way.
		if old.Port != l.Port || old.DUID != l.DUID {
			from = &old.Key
		}
		t.remove(old, ReasonSuperseded)
	}
	e := &entry{Binding: Binding{
		Key: l.Key, NextHop: l.NextHop, MAC: l.MAC,
		Preferred: preferred, Expires: expires, ServerDUID: l.ServerDUID, Updated: now, Source: l.Source,
	}}
	t.insert(e)
	t.changes = append(t.changes, Change{Op: Added, Binding: e.Binding, RouteChanged: true, MovedFrom: from})
	return Added, nil
}

// lifetimeEnd converts a lifetime to an absolute time; the infinity value
// 0xffffffff seconds is far enough in the future to never expire.
func lifetimeEnd(now time.Time, d time.Duration) time.Time {
	if d >= Infinity {
		return Forever
	}
	return now.Add(d)
}

// Infinity is the DHCPv6 lifetime 0xffffffff; Forever is its absolute end.
var (
	Infinity = time.Duration(0xffffffff) * time.Second
	Forever  = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

func (t *Table) insert(e *entry) {
	t.byKey[e.Key] = e
	t.byPrefix[e.Prefix] = e
	t.prefixAdded(e.Prefix)
	ck := clientKey{e.Port, e.DUID}
	t.perClient[ck] = append(t.perClient[ck], e)
	t.perPort[e.Port]++
	t.addDUIDPort(e.DUID, e.Port)
	e.queued = notQueued
	t.queue(e)
}

// queue puts e in the expiry heap at its Expires, unless it is there at
// that deadline already. A lifetime that changes leaves the entry's older
// item in the heap, stale: it is skipped when it reaches the top, or
// dropped when stale items outnumber the live ones. So a renewal only
// pushes a deadline, usually the latest, which stays at the bottom, and a
// removal touches the heap not at all: neither reads another entry.
func (t *Table) queue(e *entry) {
	at := max(e.Expires.Sub(t.epoch), notQueued+1) // Sub saturates
	if e.queued == at {
		return
	}
	e.queued = at
	if t.bulk {
		t.exp = append(t.exp, expiryItem{at, e})
		return
	}
	t.exp.push(expiryItem{at, e})
	t.compactExpiry()
}

// compactExpiry drops the stale items once they outnumber the live ones
// (and a floor): each drop is paid for by the pushes or removals that
// made as many stale items, and dead entries are held only that long.
func (t *Table) compactExpiry() {
	if t.bulk || len(t.exp) <= 2*len(t.byKey)+1024 {
		return
	}
	live := t.exp[:0]
	for _, it := range t.exp {
		if it.e.queued == it.at {
			live = append(live, it)
		}
	}
	clear(t.exp[len(live):])
	t.exp = live
	t.exp.init()
}

// expiryTop drops the stale items at the top of the heap and returns the
// live entry there, or nil.
func (t *Table) expiryTop() *entry {
	for len(t.exp) > 0 {
		if it := t.exp[0]; it.e.queued == it.at {
			return it.e
		}
		t.exp.pop()
	}
	return nil
}

// BeginRestore prepares an empty table for n restored bindings: maps are
// sized once, and the expiry heap is ordered once by EndRestore instead of
// on every insert. Between the two only Restore may be called.
func (t *Table) BeginRestore(n int) {
	if len(t.byKey) == 0 && n > 0 {
		t.byKey = make(map[Key]*entry, n)
		t.byPrefix = make(map[netip.Prefix]*entry, n)
		t.perClient = make(map[clientKey][]*entry, n/2)
		t.duidPorts = make(map[string][]portCount, n/2)
		t.exp = make(expiryHeap, 0, n)
	}
	t.bulk = true
}

// EndRestore orders the expiry heap after BeginRestore.
func (t *Table) EndRestore() {
	t.bulk = false
	t.exp.init()
	t.compactExpiry()
}

func (t *Table) remove(e *entry, reason string) {
	delete(t.byKey, e.Key)
	if t.byPrefix[e.Prefix] == e {
		delete(t.byPrefix, e.Prefix)
		t.prefixGone(e.Prefix)
	}
	ck := clientKey{e.Port, e.DUID}
	es := t.perClient[ck]
	if i := slices.Index(es, e); i >= 0 {
		last := len(es) - 1
		es[i], es[last] = es[last], nil
		es = es[:last]
	}
	if len(es) == 0 {
		delete(t.perClient, ck)
	} else {
		t.perClient[ck] = es
	}
	if t.perPort[e.Port]--; t.perPort[e.Port] <= 0 {
		delete(t.perPort, e.Port)
	}
	t.dropDUIDPort(e.DUID, e.Port)
	e.queued = notQueued // its items in the heap are stale now
	t.compactExpiry()
	t.changes = append(t.changes, Change{Op: Removed, Binding: e.Binding, Reason: reason, RouteChanged: true})
}

func (t *Table) addDUIDPort(duid, port string) {
	pcs := t.duidPorts[duid]
	for i := range pcs {
		if pcs[i].port == port {
			pcs[i].n++
			return
		}
	}
	t.duidPorts[duid] = append(pcs, portCount{port, 1})
}

func (t *Table) dropDUIDPort(duid, port string) {
	pcs := t.duidPorts[duid]
	for i := range pcs {
		if pcs[i].port != port {
			continue
		}
		if pcs[i].n--; pcs[i].n > 0 {
			return
		}
		pcs = append(pcs[:i], pcs[i+1:]...)
		if len(pcs) == 0 {
			delete(t.duidPorts, duid)
		} else {
			t.duidPorts[duid] = pcs
		}
		return
	}
}

// Remove removes the binding with key k, if any.
func (t *Table) Remove(k Key, reason string) bool {
	k.Prefix = k.Prefix.Masked()
	e, ok := t.byKey[k]
	if ok {
		t.remove(e, reason)
	}
	return ok
}

// RemoveIA removes every prefix of the IA_PD (port, duid, iaid) and returns
// how many it removed.
func (t *Table) RemoveIA(port, duid string, iaid uint32, reason string) int {
	// The client's own bindings, not a walk of the whole table: a Release
	// must not cost O(table) on the owner goroutine.
	var buf [8]*entry
	victims := buf[:0]
	for _, e := range t.perClient[clientKey{port, duid}] {
		if e.IAID == iaid {
			victims = append(victims, e)
		}
	}
	for _, e := range victims {
		t.remove(e, reason)
	}
	return len(victims)
}

// ClientBindings returns the bindings of client duid on port, or on every
// port when port is "", from the table's indexes (no walk of the table).
func (t *Table) ClientBindings(duid, port string) []Binding {
	var out []Binding
	for _, pc := range t.duidPorts[duid] {
		if port != "" && pc.port != port {
			continue
		}
		for _, e := range t.perClient[clientKey{pc.port, duid}] {
			out = append(out, e.Binding)
		}
	}
	return out
}

// RemoveWhere removes every binding match selects.
func (t *Table) RemoveWhere(match func(*Binding) bool, reason string) int {
	var victims []*entry
	for _, e := range t.byKey {
		if match(&e.Binding) {
			victims = append(victims, e)
		}
	}
	for _, e := range victims {
		t.remove(e, reason)
	}
	return len(victims)
}

// Expire removes every binding whose valid lifetime has elapsed at now
// (never earlier) and returns how many.
func (t *Table) Expire(now time.Time) int {
	n := 0
	for e := t.expiryTop(); e != nil && !e.Valid(now); e = t.expiryTop() {
		t.remove(e, ReasonExpired)
		n++
	}
	return n
}

// NextExpiry returns when the earliest binding expires.
func (t *Table) NextExpiry() (time.Time, bool) {
	e := t.expiryTop()
	if e == nil {
		return time.Time{}, false
	}
	return e.Expires, true
}

// Restore installs a binding read from the store. Expired ones are not
// installed (the caller logs them); limits are not applied, because the
// bindings were accepted under the limits in force when learned, but the
// policy is (a changed config, or a store written by a relay that did not
// check, must not install what a Reply could not). It reports whether the
// binding was installed.
//
// A restored binding is not a change: nothing is recorded for it (at 1M
// bindings the records alone cost seconds), so the caller builds its sinks'
// state from All once the store is read. Bindings a newer record
// supersedes are recorded as removed, for the store to delete.
func (t *Table) Restore(now time.Time, b Binding) bool {
	ref, _ := t.RestoreRef(now, b)
	return ref != nil
}

// RestoreRef is Restore returning the installed binding, or nil, and the
// policy's refusal (a *RefusedError) when that is why it was not. The
// binding it points to does not change until the table is next modified
// by anything other than Restore, so it may be handed to another
// goroutine during a restore.
func (t *Table) RestoreRef(now time.Time, b Binding) (*Binding, error) {
	if !validPrefix(b.Prefix) {
		return nil, &RefusedError{RefuseInvalid, "not an IPv6 prefix"}
	}
	b.Prefix = b.Prefix.Masked()
	if !b.Valid(now) {
		return nil, nil
	}
	if err := t.Check(b.Key); err != nil {
		return nil, err
	}
	if old, ok := t.byKey[b.Key]; ok {
		if !old.Updated.Before(b.Updated) {
			return nil, nil // the newer record wins for the same key too
		}
		t.remove(old, ReasonSuperseded)
	}
	if old, ok := t.byPrefix[b.Prefix]; ok {
		if !old.Updated.Before(b.Updated) {
			return nil, nil
		}
		t.remove(old, ReasonSuperseded)
	}
	e := &entry{Binding: b}
	t.insert(e)
	return &e.Binding, nil
}

// All yields every binding, in no order. The table must not change while
// it runs.
func (t *Table) All() iter.Seq[*Binding] {
	return func(yield func(*Binding) bool) {
		for _, e := range t.byKey {
			if !yield(&e.Binding) {
				return
			}
		}
	}
}

// List returns all bindings sorted by port, prefix.
func (t *Table) List() []Binding {
	out := make([]Binding, 0, len(t.byKey))
	for _, e := range t.byKey {
		out = append(out, e.Binding)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Prefix.Addr().Less(out[j].Prefix.Addr()) ||
			out[i].Prefix.Addr() == out[j].Prefix.Addr() && out[i].Prefix.Bits() < out[j].Prefix.Bits()
	})
	return out
}

// expiryHeap orders the entries by the end of their valid lifetime, as
// it was when each item was pushed (see Table.queue): a binary min-heap
// of values, so that pushing one allocates nothing (container/heap would
// box it).
type expiryHeap []expiryItem

type expiryItem struct {
	at time.Duration // the entry's Expires less the table's epoch
	e  *entry
}

func (h *expiryHeap) push(it expiryItem) {
	*h = append(*h, it)
	h.up(len(*h) - 1)
}

func (h *expiryHeap) pop() {
	s := *h
	last := len(s) - 1
	s[0] = s[last]
	s[last] = expiryItem{}
	*h = s[:last]
	h.down(0)
}

// init orders an unordered heap.
func (h expiryHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (h expiryHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r].at < h[c].at {
			c = r
		}
		if h[i].at <= h[c].at {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

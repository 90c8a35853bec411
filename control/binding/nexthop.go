package binding

import (
	"net/netip"
)

// Neighbor is a next hop on a port and the link-layer address the kernel
// resolved for it (neighbour discovery).
type Neighbor struct {
	Port    string
	NextHop netip.Addr // a zone is ignored
	MAC     [6]byte
	// Clients, when set, limits the update to the bindings of these
	// clients (raw DUIDs) on Port (SetClientMAC): the cost is then theirs,
	// not a walk of the whole table (SetMAC).
	Clients []string
}

// SetMAC fills in the link-layer address of the next hop (port, nextHop):
// every binding on port whose next hop is nextHop and whose MAC differs
// from mac (all zero because its request was never seen, or changed)
// takes mac. Each is recorded as an Updated change with RouteChanged, so
// the FIB routes to the new MAC and the store saves it; nothing else of
// the binding changes (not even Updated: the server confirmed nothing).
// An all-zero mac changes nothing. SetMAC returns how many bindings
// changed.
//
// SetMAC walks the whole table (about 10 ms at 100k bindings, 130 ms at
// 1M: BenchmarkSetMAC); SetMACs does a batch of next hops in one walk,
// and SetClientMAC costs only the bindings of one client (30 ns).
func (t *Table) SetMAC(port string, nextHop netip.Addr, mac [6]byte) int {
	var n [1]int
	t.setMACs([]Neighbor{{Port: port, NextHop: nextHop, MAC: mac}}, n[:])
	return n[0]
}

// SetClientMAC is SetMAC for the bindings of one client (port, duid)
// only. Its cost is that client's number of bindings.
func (t *Table) SetClientMAC(port, duid string, nextHop netip.Addr, mac [6]byte) int {
	if mac == ([6]byte{}) {
		return 0
	}
	nextHop = nextHop.WithZone("")
	n := 0
	for _, e := range t.perClient[clientKey{port, duid}] {
		if e.NextHop == nextHop && e.MAC != mac {
			t.setMAC(e, mac)
			n++
		}
	}
	return n
}

// SetMACs applies each of ns: SetClientMAC for each of its Clients when it
// names any, in order; then SetMAC for the others, all in one walk of the
// table, where of two naming the same next hop the last wins. It returns
// how many bindings each changed, in the order of ns.
func (t *Table) SetMACs(ns []Neighbor) []int {
	counts := make([]int, len(ns))
	t.setMACs(ns, counts)
	return counts
}

func (t *Table) setMAC(e *entry, mac [6]byte) {
	e.MAC = mac
	t.changes = append(t.changes, Change{Op: Updated, Binding: e.Binding, RouteChanged: true})
}

// hopKey is a next hop on a port.
type hopKey struct {
	port string
	addr netip.Addr
}

// setMACsLinear is the number of next hops up to which a walk compares
// each binding with every one of them instead of building a map.
const setMACsLinear = 8

func (t *Table) setMACs(in []Neighbor, counts []int) {
	// Bindings hold next hops without zone; so must what they are
	// compared with (a copy: the caller's slice is not ours to change).
	var walk []Neighbor
	var walkIdx []int // index in "in" of each of walk
	for i, n := range in {
		if n.MAC == ([6]byte{}) {
			continue
		}
		if len(n.Clients) > 0 {
			for _, duid := range n.Clients {
				counts[i] += t.SetClientMAC(n.Port, duid, n.NextHop, n.MAC)
			}
			continue
		}
		n.NextHop = n.NextHop.WithZone("")
		walk = append(walk, n)
		walkIdx = append(walkIdx, i)
	}
	if len(walk) == 0 || len(t.byKey) == 0 {
		return
	}
	var idx map[hopKey]int // next hop -> its last index in walk
	if len(walk) > setMACsLinear {
		idx = make(map[hopKey]int, len(walk))
		for i, n := range walk {
			idx[hopKey{n.Port, n.NextHop}] = i
		}
	}
	find := func(b *Binding) int {
		if idx != nil {
			if i, ok := idx[hopKey{b.Port, b.NextHop}]; ok {
				return i
			}
			return -1
		}
		for i := len(walk) - 1; i >= 0; i-- { // the last one wins
			if walk[i].NextHop == b.NextHop && walk[i].Port == b.Port {
				return i
			}
		}
		return -1
	}
	for _, e := range t.byKey {
		i := find(&e.Binding)
		if i < 0 || e.MAC == walk[i].MAC {
			continue
		}
		t.setMAC(e, walk[i].MAC)
		counts[walkIdx[i]]++
	}
}

// SetMACs fills in resolved next hops (Table.SetMACs) on the owner
// goroutine, without waiting; done, when not nil, is called there with
// how many bindings each changed. The changes reach the sinks like any
// other. ns must not change after the call.
func (m *Manager) SetMACs(ns []Neighbor, done func(ns []Neighbor, counts []int)) {
	m.Post(func(t *Table) {
		counts := t.SetMACs(ns)
		if done != nil {
			done(ns, counts)
		}
	})
}

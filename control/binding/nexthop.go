package binding

import (
	"net/netip"
)

// Neighbor is a next hop on a port, the link-layer address the kernel
// resolved for it (neighbour discovery), and the clients (raw DUIDs)
// whose bindings on the port wait for it.
type Neighbor struct {
	Port    string
	NextHop netip.Addr // a zone is ignored
	MAC     [6]byte
	Clients []string
}

// SetClientMAC fills in the link-layer address of the next hop nextHop
// for the bindings of one client (port, duid): each whose next hop is
// nextHop and whose MAC differs from mac (all zero because its request
// was never seen, or changed) takes mac. Each is recorded as an Updated
// change with RouteChanged, so the FIB routes to the new MAC and the
// store saves it; nothing else of the binding changes (not even Updated:
// the server confirmed nothing). An all-zero mac changes nothing. It
// returns how many bindings changed; its cost is the client's number of
// bindings, not the table's.
func (t *Table) SetClientMAC(port, duid string, nextHop netip.Addr, mac [6]byte) int {
	if mac == ([6]byte{}) {
		return 0
	}
	nextHop = nextHop.WithZone("")
	n := 0
	for _, e := range t.perClient[clientKey{port, duid}] {
		if e.NextHop == nextHop && e.MAC != mac {
			e.MAC = mac
			t.changes = append(t.changes, Change{Op: Updated, Binding: e.Binding, RouteChanged: true})
			n++
		}
	}
	return n
}

// SetMACs applies SetClientMAC for each client of each of ns, in order,
// and returns how many bindings each of ns changed.
func (t *Table) SetMACs(ns []Neighbor) []int {
	counts := make([]int, len(ns))
	for i, n := range ns {
		for _, duid := range n.Clients {
			counts[i] += t.SetClientMAC(n.Port, duid, n.NextHop, n.MAC)
		}
	}
	return counts
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

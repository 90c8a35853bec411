package daemon

import (
	"context"
	"iter"
	"net/netip"
	"sync"

	"github.com/pdrelay/pdrelay/fib"
)

// mirror keeps the uplink XDP program's route map (uplink.no_route: pass)
// following the FIB. Filling the kernel's map costs microseconds per
// prefix, seconds at 1M bindings, so a restart does not wait for it: the
// map first gets ::/0, which makes every destination count as delegated
// (the uplink hands nothing to the kernel but the relay's own and
// link-scope traffic, which the program passes before the map), and fill
// then copies the restored routes in beside the running relay and takes
// ::/0 out. Binding changes during the fill go to the map at once and are
// replayed after it, so that none is undone by a route the fill copied
// from the older snapshot.
type mirror struct {
	set prefixSet

	mu      sync.Mutex
	filling bool
	journal []mirrorOp // changes made while filling
}

type mirrorOp struct {
	p   netip.Prefix
	add bool
}

// everything is the catch-all entry of the map while it fills.
var everything = netip.PrefixFrom(netip.IPv6Unspecified(), 0)

func (m *mirror) Add(p netip.Prefix) error    { return m.apply(mirrorOp{p, true}) }
func (m *mirror) Delete(p netip.Prefix) error { return m.apply(mirrorOp{p, false}) }

func (m *mirror) apply(op mirrorOp) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.filling {
		m.journal = append(m.journal, op)
	}
	return m.do(op)
}

func (m *mirror) do(op mirrorOp) error {
	if op.add {
		return m.set.Add(op.p)
	}
	return m.set.Delete(op.p)
}

// beginFill puts ::/0 into the map, until fill ends.
func (m *mirror) beginFill() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.filling = true
	return m.set.Add(everything)
}

// fill copies routes into the map, replays the changes made meanwhile and
// takes ::/0 out. It returns how many routes it copied; if ctx ends first
// it stops, leaving ::/0 in the map.
func (m *mirror) fill(ctx context.Context, routes iter.Seq[*fib.Route]) (int, error) {
	n, all := 0, false // all: ::/0 itself is routed (a delegation of everything)
	for r := range routes {
		if n%1024 == 0 && ctx.Err() != nil {
			return n, ctx.Err()
		}
		if err := m.set.Add(r.Prefix); err != nil {
			return n, err
		}
		all = all || r.Prefix == everything
		n++
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, op := range m.journal {
		if err := m.do(op); err != nil {
			return n, err
		}
		if op.p == everything {
			all = op.add
		}
	}
	m.journal, m.filling = nil, false
	if all {
		return n, nil
	}
	return n, m.set.Delete(everything)
}

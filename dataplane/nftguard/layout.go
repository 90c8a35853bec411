package nftguard

import (
	"cmp"
	"slices"

	"github.com/pdrelay/pdrelay/fib"
)

// layout is the table's skeleton: its chains, rules, maps and counters,
// everything but the elements of the element sets. The Guard describes
// it; the kernel writes it whole (tx.install, tx.rewrite) and checks it
// (kernel.check). ruleCounts says how many rules each chain holds.
type layout struct {
	kernel bool
	gen    uint32 // generation of the element sets (kernel mode); 0: none
	// uplink is counted as a forwarded packet's output too (kernel
	// mode); empty: only the downlinks are.
	uplink              string
	icmpRate, icmpBurst int
	ports               []portLayout // the configured downlinks, by index
	sets                []setKey     // the element sets, sorted
}

// portLayout is one downlink as the table needs it.
type portLayout struct {
	index uint16
	name  string
	multi bool
	loop  fib.LoopPolicy // LoopDrop or LoopForward
	icmp  bool
	// overrides are the per-destination loop policies, longest first.
	overrides []LoopOverride
}

// Loop codes: the client's own loop policy (see Delegation.Loop), 1 +
// fib.LoopPolicy. A port's destinations of one length are in one set per
// code, whose rule goes to the code's loop chain.
const (
	codeDefault = 1 + uint8(fib.LoopDefault)
	codeDrop    = 1 + uint8(fib.LoopDrop)
	codeForward = 1 + uint8(fib.LoopForward)
)

// loopCode returns the element data for a client's loop policy.
func loopCode(p fib.LoopPolicy) uint8 {
	if p > fib.LoopForward {
		p = fib.LoopDefault
	}
	return 1 + uint8(p)
}

// sortSets orders set keys by port, kind and length.
func sortSets(s []setKey) {
	slices.SortFunc(s, func(a, b setKey) int {
		return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(a.kind, b.kind), cmp.Compare(a.bits, b.bits), cmp.Compare(a.code, b.code))
	})
}

// chains returns the names of the layout's chains, the base chain first.
func (l *layout) chains() []string {
	out := []string{baseChain}
	for _, p := range l.ports {
		out = append(out, portChain(p.name))
		if l.kernel {
			out = append(out, dstChain(p.name), actChain(p.name), fwdChain(p.name),
				loopChain(p.name, codeDefault), loopChain(p.name, codeDrop), loopChain(p.name, codeForward))
		}
	}
	if l.kernel && l.uplink != "" && !l.hasPort(l.uplink) {
		out = append(out, fwdChain(l.uplink))
	}
	return out
}

func (l *layout) hasPort(name string) bool {
	return slices.ContainsFunc(l.ports, func(p portLayout) bool { return p.name == name })
}

// ruleCounts returns how many rules each chain of the layout holds; the
// rules themselves are built by chainRules (rules_linux.go), and a test
// checks that the two agree.
func (l *layout) ruleCounts() map[string]int {
	n := map[string]int{baseChain: 1}
	if l.kernel {
		n[baseChain] = 2 // the dispatch, the forwarded count
	}
	for _, p := range l.ports {
		n[portChain(p.name)] = 1 // the counted drop
		if !l.kernel {
			continue
		}
		n[dstChain(p.name)] = 1 // not going back out: return
		n[fwdChain(p.name)] = 1
		switch {
		case !p.icmp:
			n[actChain(p.name)] = 1 // count, drop
		case l.icmpRate == 0:
			n[actChain(p.name)] = 2 // count; count as rate limited, drop
		default:
			n[actChain(p.name)] = 3 // count; over the rate: drop; reject
		}
		for _, c := range []uint8{codeDefault, codeDrop, codeForward} {
			n[loopChain(p.name, c)] = len(p.overrides) + 1
		}
	}
	if l.kernel && l.uplink != "" && !l.hasPort(l.uplink) {
		n[fwdChain(l.uplink)] = 1
	}
	for _, sk := range l.sets {
		p := l.port(sk.port)
		if p == nil {
			continue
		}
		if sk.kind == kindSrc {
			n[portChain(p.name)]++
		} else {
			n[dstChain(p.name)]++
		}
	}
	return n
}

// port returns the port of index i, or nil.
func (l *layout) port(i uint16) *portLayout {
	for j := range l.ports {
		if l.ports[j].index == i {
			return &l.ports[j]
		}
	}
	return nil
}

// counters returns the names of the layout's named counters.
func (l *layout) counters() []string {
	var out []string
	for _, p := range l.ports {
		out = append(out, counterName(p.name))
		if l.kernel {
			out = append(out, loopCounter(p.name), icmpCounter(p.name), icmpRLCounter(p.name), forwardCounter(p.name))
		}
	}
	if l.kernel && l.uplink != "" && !l.hasPort(l.uplink) {
		out = append(out, forwardCounter(l.uplink))
	}
	return out
}

// maps returns the names of the layout's verdict maps.
func (l *layout) maps() []string {
	if l.kernel {
		return []string{portsMap, outsMap}
	}
	return []string{portsMap}
}

// policy returns what a loop code does on port p, before the
// per-destination overrides: LoopDrop or LoopForward.
func (p *portLayout) policy(code uint8) fib.LoopPolicy {
	switch code {
	case codeDrop:
		return fib.LoopDrop
	case codeForward:
		return fib.LoopForward
	}
	if p.loop == fib.LoopForward {
		return fib.LoopForward
	}
	return fib.LoopDrop
}

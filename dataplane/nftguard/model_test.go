package nftguard

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// modelKernel is nf_tables as the Guard uses it, in memory: a transaction
// applies whole or not at all; creating a set twice, touching a set that
// does not exist and deleting an element that is not there fail, as in
// the kernel (EEXIST, ENOENT); adding an element twice does not (the
// Guard sends NLM_F_CREATE without NLM_F_EXCL), unless it is a map
// element with other data (EBUSY). It keeps its sets by name, so that a
// new generation lives beside the old one, and which sets the rules
// refer to (live); rules counts the rules of each chain.
type modelKernel struct {
	installed bool
	layout    *layout // the skeleton as last written
	sets      map[string]*modelSet
	live      map[string]bool // sets that rules refer to
	rules     map[string]int
	txs       []tx
	// fail, when set, is asked before each transaction and may refuse it.
	fail    func(t *tx) error
	removed bool
	// counts is what counters returns.
	counts map[string]uint64
}

// modelSet is one element set: its port, length, kind and loop code, and
// its elements (the MAC is zero but in multi-access sets).
type modelSet struct {
	port  string
	bits  uint8
	kind  uint8
	code  uint8
	elems map[modelElem]bool
}

type modelElem struct {
	addr [16]byte
	mac  [6]byte
}

var errModel = errors.New("model kernel refused")

func (m *modelKernel) apply(t *tx) error {
	if m.fail != nil {
		if err := m.fail(t); err != nil {
			return err
		}
	}
	l := t.layout
	names := map[uint16]string{}
	for _, p := range l.ports {
		names[p.index] = p.name
	}
	next := map[string]*modelSet{}
	live := map[string]bool{}
	rules := map[string]int{}
	if !t.install {
		if !m.installed && !t.rewrite {
			return fmt.Errorf("no table: %w", errModel)
		}
		for n, s := range m.sets {
			next[n] = &modelSet{s.port, s.bits, s.kind, s.code, maps.Clone(s.elems)}
		}
		maps.Copy(live, m.live)
		maps.Copy(rules, m.rules)
	}
	if t.rewrite && t.strict {
		if !m.installed {
			return fmt.Errorf("no table: %w", errTableChanged)
		}
		for _, sk := range l.sets {
			if n := setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen); next[n] == nil && !slices.Contains(t.newSets, sk) {
				return fmt.Errorf("no set %s: %w", n, errTableChanged)
			}
		}
	}
	if t.install || t.rewrite {
		want := map[string]bool{}
		clear(live)
		for _, sk := range l.sets {
			n := setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen)
			want[n] = true
			live[n] = true
			if next[n] == nil {
				next[n] = &modelSet{names[sk.port], sk.bits, sk.kind, sk.code, map[modelElem]bool{}}
			}
		}
		for n := range next {
			if !want[n] {
				delete(next, n)
			}
		}
		rules = l.ruleCounts()
	}
	for _, p := range t.ensure {
		if rules[portChain(p.name)] == 0 {
			rules[portChain(p.name)] = 1
		}
	}
	for _, sk := range t.newSets {
		n := setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen)
		if t.install || t.rewrite {
			continue
		}
		if next[n] != nil {
			return fmt.Errorf("set %s exists: %w", n, errModel)
		}
		next[n] = &modelSet{names[sk.port], sk.bits, sk.kind, sk.code, map[modelElem]bool{}}
		if !t.norule {
			live[n] = true
			if sk.kind == kindSrc {
				rules[portChain(names[sk.port])]++
			} else {
				rules[dstChain(names[sk.port])]++
			}
		}
	}
	for _, sk := range t.setKeys() {
		o := t.elems[sk]
		n := setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen)
		s := next[n]
		if s == nil {
			return fmt.Errorf("no set %s: %w", n, errModel)
		}
		for _, e := range o.del {
			me := modelElem{addr: e.addr}
			if sk.kind == kindDstMAC {
				me.mac = e.mac
			}
			if _, ok := s.elems[me]; !ok {
				return fmt.Errorf("delete absent %x from %s: %w", e.addr, n, errModel)
			}
			delete(s.elems, me)
		}
		for _, e := range o.add {
			me := modelElem{addr: e.addr}
			if sk.kind == kindDstMAC {
				me.mac = e.mac
			}
			s.elems[me] = true
		}
	}
	m.sets, m.live, m.rules = next, live, rules
	m.installed = true
	if t.install || t.rewrite {
		m.layout = l
	}
	m.txs = append(m.txs, *t)
	return nil
}

func (m *modelKernel) remove() error {
	m.installed, m.sets, m.live, m.rules, m.removed = false, nil, nil, nil, true
	return nil
}

func (m *modelKernel) counters() (map[string]uint64, error) { return m.counts, nil }

func (m *modelKernel) close() {}

func (m *modelKernel) check(l *layout) (bool, string, error) {
	if !m.installed {
		return false, "", nil
	}
	want := l.ruleCounts()
	for _, ch := range l.chains() {
		if m.rules[ch] != want[ch] {
			return true, fmt.Sprintf("chain %s: %d rules, want %d", ch, m.rules[ch], want[ch]), nil
		}
	}
	return true, "", nil
}

func (m *modelKernel) probe() (probe, error) {
	if !m.installed {
		return probe{}, nil
	}
	pr := probe{exists: true, usable: m.rules[baseChain] > 0, chains: map[string]bool{}}
	for ch, n := range m.rules {
		if n > 0 {
			pr.chains[ch] = true
		}
	}
	for n := range m.sets {
		if g, ok := setGen(n); ok {
			pr.maxGen = max(pr.maxGen, g)
		}
	}
	return pr, nil
}

// contents returns the sources in the sets the rules refer to, as
// "port prefix" strings, sorted.
func (m *modelKernel) contents() []string {
	var out []string
	for n, s := range m.sets {
		if !m.live[n] || s.kind != kindSrc {
			continue
		}
		for e := range s.elems {
			out = append(out, fmt.Sprintf("%s %v", s.port, netip.PrefixFrom(netip.AddrFrom16(e.addr), int(s.bits))))
		}
	}
	slices.Sort(out)
	return out
}

// dstContents returns the destinations in the live sets as "port prefix
// code" (point-to-point) or "port prefix code mac" (multi-access)
// strings, sorted.
func (m *modelKernel) dstContents() []string {
	var out []string
	for n, s := range m.sets {
		if !m.live[n] || s.kind == kindSrc {
			continue
		}
		for e := range s.elems {
			x := fmt.Sprintf("%s %v %d", s.port, netip.PrefixFrom(netip.AddrFrom16(e.addr), int(s.bits)), s.code)
			if s.kind == kindDstMAC {
				x += fmt.Sprintf(" %x", e.mac)
			}
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// setNames returns the names of all the model's sets, sorted.
func (m *modelKernel) setNames() string {
	return strings.Join(slices.Sorted(maps.Keys(m.sets)), " ")
}

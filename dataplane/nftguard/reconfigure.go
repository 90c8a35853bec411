package nftguard

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by Reconfigure after Close.
var ErrClosed = errors.New("nftguard: closed")

// Reconfigure applies a new port set and new port settings (a reload):
// ports added, removed, or with other allowed_sources, link type or loop
// settings, and the ICMPv6 rate and uplink. Table, NetNS, Batch, Check,
// Log and Keep stay as New had them; Kernel must not change.
//
// The skeleton is rewritten in place in one transaction, with the
// changes of allowed_sources: the ports that stay are guarded throughout,
// an added port from then on, and a removed port's chain, sets and
// counters go. Its Add and Delegate entries go too (later calls for it
// report false). A port whose link type changes has its delegations
// written again into sets of the other kind by Run: until then its loops
// are not recognised. While kernel mode writes a new generation of sets
// (after New adopted a table, or a repair) that generation starts again
// and the settings take effect at the switch; an added port drops all
// its forwarded traffic until then.
//
// If the kernel refuses the transaction, the Guard rebuilds the table as
// after a failed Flush (with the new settings) and Reconfigure returns
// the error; while such a rebuild is pending, the rebuild writes the new
// settings. A cfg that does not check is refused with nothing changed.
func (g *Guard) Reconfigure(cfg Config) error {
	if cfg.Kernel != g.kernelMode {
		return fmt.Errorf("nftguard: reconfigure: kernel mode cannot change (%v to %v)", g.kernelMode, cfg.Kernel)
	}
	ports, err := checkPorts(cfg)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	next := map[string]bool{}
	for _, p := range ports {
		next[p.Name] = true
	}
	n := len(g.ports)
	for _, p := range ports {
		if _, ok := g.index[p.Name]; !ok {
			n++
		}
	}
	if n > 1<<16-1 {
		return fmt.Errorf("nftguard: reconfigure: %d ports over the guard's life: at most 65535", n)
	}
	removed := 0
	for i, p := range g.ports {
		if p.Name != "" && !next[p.Name] {
			g.retireLocked(uint16(i))
			removed++
		}
	}
	var changed []key
	var added []string
	for _, np := range ports {
		i, ok := g.index[np.Name]
		if !ok {
			i = uint16(len(g.ports))
			g.index[np.Name] = i
			g.ports = append(g.ports, np)
			added = append(added, np.Name)
			for _, s := range np.AllowedSources {
				k, _ := g.keyOf(np.Name, s)
				g.count(k, +1)
				changed = append(changed, k)
			}
			continue
		}
		old := g.ports[i]
		d := map[key]int32{}
		for _, s := range old.AllowedSources {
			k, _ := g.keyOf(np.Name, s)
			d[k]--
		}
		for _, s := range np.AllowedSources {
			k, _ := g.keyOf(np.Name, s)
			d[k]++
		}
		for k, n := range d {
			if n != 0 {
				g.count(k, n)
				changed = append(changed, k)
			}
		}
		if old.MultiAccess != np.MultiAccess {
			g.rekindLocked(i)
		}
		g.ports[i] = np
	}
	g.setGlobals(cfg)
	if g.broken {
		// The repair Run is about to make writes the new layout.
		g.log.Info("kernel guard reconfigured; its table is written with the repair under way", "ports", len(ports))
		g.signal()
		return nil
	}
	t := tx{layout: g.layoutLocked()}
	if g.building {
		// The live rules are the old table's or generation's, and the
		// switch writes the new layout. The generation being written
		// starts again (sets of a removed port or of a port's old link
		// type may be in it), and an added port is closed until the
		// switch.
		pr, err := g.k.probe()
		if err != nil {
			g.fail(fmt.Errorf("nftguard: reconfigure: look at table: %w", err))
			return err
		}
		t.ensure = g.missingPorts(pr, t.layout)
		if len(t.ensure) > 0 {
			if err := g.k.apply(&t); err != nil {
				g.fail(fmt.Errorf("nftguard: reconfigure: %w", err))
				return fmt.Errorf("nftguard: reconfigure: %w", err)
			}
		}
		g.beginBuildLocked(pr.maxGen)
		g.signal()
		g.log.Info("kernel guard reconfigured; its new sets are written again", "ports", len(ports), "added", added, "removed", removed)
		return nil
	}
	t.rewrite, t.strict = true, true
	g.plan(changed, &t)
	t.layout = g.layoutLocked() // with the sets plan created
	if err := g.k.apply(&t); err != nil {
		g.fail(fmt.Errorf("nftguard: reconfigure: %w", err))
		return fmt.Errorf("nftguard: reconfigure: %w", err)
	}
	g.log.Info("kernel guard reconfigured", "ports", len(ports), "added", added, "removed", removed)
	if len(g.bulk) > 0 {
		g.signal()
	}
	return nil
}

// retireLocked removes port i: its index stays taken, with no name, and
// its entries and sets are forgotten (the next skeleton write deletes the
// sets).
func (g *Guard) retireLocked(i uint16) {
	delete(g.index, g.ports[i].Name)
	g.ports[i] = portState{}
	for k, e := range g.refs {
		if k.port == i {
			if e.refs < 0 {
				g.neg--
			}
			delete(g.refs, k)
		}
	}
	for k := range g.dsts {
		if k.port == i {
			delete(g.dsts, k)
		}
	}
	for sk := range g.sets {
		if sk.port == i {
			delete(g.sets, sk)
		}
	}
}

// rekindLocked prepares port i's change of link type: its destination
// sets go (the next skeleton write deletes them) and its delegations are
// queued to be written into sets of the new kind.
func (g *Guard) rekindLocked(i uint16) {
	for sk := range g.sets {
		if sk.port == i && sk.kind != kindSrc {
			delete(g.sets, sk)
		}
	}
	for k, e := range g.dsts {
		if k.port != i {
			continue
		}
		e.kin = false
		g.dsts[k] = e
		if e.want {
			g.bulk = append(g.bulk, k)
		}
	}
}

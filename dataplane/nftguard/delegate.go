package nftguard

import (
	"iter"
	"net/netip"

	"github.com/pdrelay/pdrelay/fib"
)

// Delegation is one delegated prefix as kernel mode's loop prevention
// needs it (RFC 8987 R-5).
type Delegation struct {
	// Port is the downlink the prefix is delegated on, and Prefix the
	// prefix, at its delegated length.
	Port   string
	Prefix netip.Prefix
	// MAC is the client's link-layer address (the route's next hop);
	// all zero while not known. Only multi-access ports use it: there a
	// packet for the prefix is a loop when it comes from this MAC, and
	// until the MAC is known no packet is (the kernel forwards it back
	// to the client, resolving it by neighbour discovery).
	MAC [6]byte
	// Loop is the client's own loop policy (a loop_overrides client
	// entry); fib.LoopDefault defers to the port's.
	Loop fib.LoopPolicy
}

// dstEntry is the state of one destination key: what the Guard was told
// (Delegate) and what the kernel's set holds.
type dstEntry struct {
	mac, kmac   [6]byte // desired; as written
	code, kcode uint8   // loop code, desired; as written
	want        bool    // delegated
	kin         bool    // the kernel holds an element for it
	kmulti      bool    // in a multi-access set (its key holds kmac)
	// touched: changed by Delegate or Undelegate during a restore, which
	// a restored delegation must then not overwrite.
	touched bool
}

// restoredDst is one restored delegation waiting for the fill.
type restoredDst struct {
	k    key
	mac  [6]byte
	code uint8
}

// dstKey returns the destination key of p on port, or false.
func (g *Guard) dstKey(port string, p netip.Prefix) (key, bool) {
	k, ok := g.keyOf(port, p)
	k.dst = true
	return k, ok && g.kernelMode
}

// Delegate records that d.Prefix is delegated on d.Port, to the client
// with d.MAC and d.Loop; it replaces what an earlier Delegate of the same
// port and prefix said (a new MAC, a new policy). It only concerns loops:
// the prefix's sources are allowed by Add. The kernel sees it at the next
// Flush. It reports false, and does nothing, outside kernel mode, for a
// port the guard does not know or a prefix that is not IPv6.
func (g *Guard) Delegate(d Delegation) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.dstKey(d.Port, d.Prefix)
	if !ok {
		return false
	}
	e := g.dsts[k]
	e.want, e.mac, e.code = true, d.MAC, loopCode(d.Loop)
	e.touched = e.touched || g.filling
	g.dsts[k] = e
	g.live = append(g.live, k)
	return true
}

// Undelegate forgets the delegation of p on port. The kernel sees it at
// the next Flush. It reports false if there was none (outside a restore)
// or for the reasons Delegate does.
func (g *Guard) Undelegate(port string, p netip.Prefix) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.dstKey(port, p)
	if !ok {
		return false
	}
	e, had := g.dsts[k]
	if !g.filling && (!had || !e.want) {
		return false
	}
	e.want = false
	e.touched = e.touched || g.filling
	g.dsts[k] = e
	g.live = append(g.live, k)
	return true
}

// RestoreDelegations hands kernel mode's Guard the bindings restored at
// start: each is one holder of its prefix as a source (as Add) and its
// delegation (as Delegate). Run writes them beside the running relay.
// Changes passed on from BeginRestore on win over a restored delegation
// of the same port and prefix, in any order with the fill. Entries of
// unknown ports are skipped. Outside kernel mode it restores the sources
// only, as Restore. ds is read under the Guard's lock: it must not call
// the Guard.
//
// In kernel mode, after New adopted a table, the switch to the new sets
// waits for this restore: call BeginRestore before Run starts, or
// RestoreDelegations (even with nothing) before it; else Run switches as
// soon as the allowed_sources are written, and the restored clients are
// dropped until their bindings are written.
func (g *Guard) RestoreDelegations(ds iter.Seq[Delegation]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ks []key
	var rd []restoredDst
	for d := range ds {
		k, ok := g.keyOf(d.Port, d.Prefix)
		if !ok {
			continue
		}
		ks = append(ks, k)
		if g.kernelMode {
			k.dst = true
			rd = append(rd, restoredDst{k: k, mac: d.MAC, code: loopCode(d.Loop)})
		}
	}
	g.restoreLocked(ks, rd)
}

// restoreDst takes a restored delegation unless a change during the
// restore has the last word; it reports whether it took it.
func (g *Guard) restoreDst(d restoredDst) bool {
	e := g.dsts[d.k]
	if e.touched {
		return false
	}
	e.want, e.mac, e.code = true, d.mac, d.code
	g.dsts[d.k] = e
	return true
}

// planDst adds to t what the kernel needs for destination k to match its
// state: on a point-to-point port an element (prefix) in the set of its
// loop code while delegated; on a multi-access port an element (MAC .
// prefix) while delegated with a known MAC. A change of MAC or code
// deletes the old element and adds the new one in the same transaction.
func (g *Guard) planDst(k key, t *tx) {
	e, ok := g.dsts[k]
	if !ok {
		return
	}
	multi := g.ports[k.port].MultiAccess
	wantElem := e.want && (!multi || e.mac != [6]byte{})
	same := e.kin == wantElem && (!wantElem || e.kmulti == multi && e.kcode == e.code && (!multi || e.kmac == e.mac))
	if !same {
		if e.kin {
			t.change(setKey{port: k.port, bits: k.bits, kind: dstKind(e.kmulti), code: e.kcode}, elem{addr: k.addr, mac: e.kmac}, false)
			e.kin = false
		}
		if wantElem {
			sk := setKey{port: k.port, bits: k.bits, kind: dstKind(multi), code: e.code}
			g.needSet(sk, t)
			t.change(sk, elem{addr: k.addr, mac: e.mac}, true)
			e.kin, e.kmulti, e.kmac, e.kcode = true, multi, e.mac, e.code
		}
	}
	if !e.want && !e.kin && !e.touched {
		delete(g.dsts, k)
		return
	}
	g.dsts[k] = e
}

func dstKind(multi bool) uint8 {
	if multi {
		return kindDstMAC
	}
	return kindDst
}

// Delegations returns the number of delegations the Guard holds.
func (g *Guard) Delegations() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, e := range g.dsts {
		if e.want {
			n++
		}
	}
	return n
}

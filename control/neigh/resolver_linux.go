package neigh

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Run resolves the next hops asked for until ctx ends, and returns
// ctx.Err() then. Found is called from Run's goroutine, one call at a
// time.
//
// Run returns an error, wrapped with what it was doing, only when it
// cannot start: no netlink, no subscription to neighbour notifications,
// or a second call. Later failures are logged once each and retried.
func (r *Resolver) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("neigh: resolver already running")
	}
	h, err := netlink.NewHandleAt(r.opt.NetNS, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("neigh: open netlink: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(requestTimeout); err != nil {
		return fmt.Errorf("neigh: set netlink timeout: %w", err)
	}
	neighs, err := subscribeNeighs(r.opt.NetNS)
	if err != nil {
		return fmt.Errorf("neigh: subscribe to neighbour changes: %w", err)
	}
	rr := &resolverRun{
		Resolver: r,
		h:        h,
		links:    make(map[string]int),
		names:    make(map[int]string),
	}
	defer func() { neighs.stop() }()
	r.log.Debug("next hop resolver started")
	defer r.log.Debug("next hop resolver stopped")

	timer := time.NewTimer(0)
	defer timer.Stop()
	scheduled := time.Now()
	reset := func(at time.Time) {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		scheduled = at
		timer.Reset(max(time.Until(at), 0))
	}
	for {
		var nch <-chan netlink.NeighUpdate
		if neighs != nil {
			nch = neighs.ch
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case u, ok := <-nch:
			if !ok {
				r.log.Warn("neighbour notifications lost; subscribing again", "error", neighs.err())
				neighs.stop()
				neighs = nil
				reset(time.Now()) // the round subscribes and reads the table
				break
			}
			rr.neighUpdate(u)
		case <-r.wake:
			// A new next hop: look at it in the next round, which comes
			// no sooner than minRound after the last.
			if at := later(rr.lastRound.Add(minRound), time.Now()); at.Before(scheduled) {
				reset(at)
			}
		case <-timer.C:
			if neighs == nil {
				if neighs, err = subscribeNeighs(r.opt.NetNS); err != nil {
					rr.errs.fail(r.log, "neighbour resolver", "subscribe to neighbour changes", err)
					neighs = nil
				} else {
					rr.lastPoll = time.Time{} // read every next hop afresh
				}
			}
			next := rr.round(time.Now())
			if retry := time.Now().Add(r.opt.Retry); neighs == nil && retry.Before(next) {
				next = retry
			}
			reset(next)
		}
	}
}

// resolverRun is the state of one Run, owned by its goroutine.
type resolverRun struct {
	*Resolver
	h         *netlink.Handle
	links     map[string]int // port name -> ifindex, as last looked up
	names     map[int]string // the reverse
	lastRound time.Time
	lastPoll  time.Time
	errs      onceLog
}

// neighKey is a neighbour entry's place in the kernel's table.
type neighKey struct {
	ifindex int
	addr    netip.Addr
}

// round reads the kernel's table for the next hops due (all of them every
// Poll), reports those resolved, asks the kernel to resolve the others as
// the backoff and the in-flight bound allow, and returns when the next
// round is due.
func (rr *resolverRun) round(now time.Time) time.Time {
	rr.lastRound = now
	poll := now.Sub(rr.lastPoll) >= rr.opt.Poll
	if poll {
		rr.lastPoll = now
		clear(rr.links) // ports may have been made again, with new indexes
		clear(rr.names)
	}
	rr.mu.Lock()
	due := rr.due(now, poll)
	rr.mu.Unlock()
	if len(due) == 0 {
		return rr.scheduleNext(now, false)
	}

	for _, t := range due {
		if _, ok := rr.links[t.ifname]; ok {
			continue
		}
		idx := 0 // 0: no such port now
		if l, err := rr.h.LinkByName(t.ifname); err == nil {
			idx = l.Attrs().Index
			rr.names[idx] = t.ifname
		}
		rr.links[t.ifname] = idx
	}
	table, err := rr.dump()
	if err != nil {
		rr.errs.fail(rr.log, "neighbour resolver", "list IPv6 neighbours", err)
		return rr.scheduleNext(now, true)
	}
	rr.errs.ok(rr.log, "neighbour resolver")
	look := func(h hop) (entryClass, [6]byte) {
		idx := rr.links[h.ifname]
		if idx == 0 {
			return entryNoLink, [6]byte{}
		}
		n, ok := table[neighKey{idx, h.addr}]
		if !ok {
			return entryMissing, [6]byte{}
		}
		return classify(n)
	}
	rr.mu.Lock()
	p := rr.plan(now, due, look)
	rr.mu.Unlock()

	var sent, failed uint64
	for _, t := range p.requests {
		idx := rr.links[t.ifname]
		if err := trigger(rr.h, rr.opt.NetNS, t.ifname, idx, t.addr, rr.opt.discardOnly); err != nil {
			failed++
			if errors.Is(err, unix.ENODEV) {
				delete(rr.links, t.ifname) // look the port up again
			}
			rr.errs.fail(rr.log, "neighbour resolver", "ask the kernel to resolve a next hop", err)
			continue
		}
		sent++
		rr.log.Debug("asked the kernel to resolve a next hop", "interface", t.ifname, "next_hop", t.addr)
	}
	rr.mu.Lock()
	rr.stats.Requests += sent
	rr.stats.Failed += failed
	rr.mu.Unlock()
	for _, w := range p.warn {
		if !w.link {
			rr.log.Warn("next hop unresolved: no such interface", "interface", w.ifname, "next_hop", w.addr,
				"waited", w.waited.Round(time.Second))
			continue
		}
		rr.log.Warn("next hop unresolved: no neighbour answers; its bindings' traffic is dropped as no_neighbor",
			"interface", w.ifname, "next_hop", w.addr, "waited", w.waited.Round(time.Second), "requests", w.tries)
	}
	for _, rep := range p.reports {
		rr.found(rep.ifname, rep.addr, rep.mac)
	}
	return rr.scheduleNext(now, false)
}

// scheduleNext returns when the next round is due; after a failed read,
// no sooner than a Retry.
func (rr *resolverRun) scheduleNext(now time.Time, failed bool) time.Time {
	rr.mu.Lock()
	next := rr.nextRound(now, rr.lastPoll)
	rr.mu.Unlock()
	if failed {
		next = later(next, now.Add(rr.opt.Retry))
	}
	return next
}

// dump reads the kernel's IPv6 neighbour entries, by place.
func (rr *resolverRun) dump() (map[neighKey]*netlink.Neigh, error) {
	var list []netlink.Neigh
	var err error
	for range 3 {
		if list, err = rr.h.NeighList(0, netlink.FAMILY_V6); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	m := make(map[neighKey]*netlink.Neigh, len(list))
	for i := range list {
		n := &list[i]
		if n.Flags&netlink.NTF_PROXY != 0 {
			continue
		}
		if a, ok := netip.AddrFromSlice(n.IP); ok {
			m[neighKey{n.LinkIndex, a.Unmap()}] = n
		}
	}
	return m, nil
}

// classify says what an entry is worth to the resolver.
func classify(n *netlink.Neigh) (entryClass, [6]byte) {
	var mac [6]byte
	if len(n.HardwareAddr) == 6 {
		mac = [6]byte(n.HardwareAddr)
	}
	switch {
	case n.State&usableStates != 0 && mac != [6]byte{}:
		return entryUsable, mac
	case n.State&netlink.NUD_INCOMPLETE != 0:
		return entryResolving, [6]byte{}
	}
	return entryMissing, [6]byte{}
}

// neighUpdate reports a next hop being resolved whose entry became
// usable, and frees the slot of one whose resolution failed.
func (rr *resolverRun) neighUpdate(u netlink.NeighUpdate) {
	n := &u.Neigh
	if n.Family != netlink.FAMILY_V6 || n.Flags&netlink.NTF_PROXY != 0 {
		return
	}
	ifname, ok := rr.names[n.LinkIndex]
	if !ok {
		return // not a port asked about (yet: a round will read the table)
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return
	}
	class, mac := entryMissing, [6]byte{}
	if u.Type != unix.RTM_DELNEIGH {
		class, mac = classify(n)
	}
	rr.mu.Lock()
	rep, ok := rr.notified(time.Now(), hop{ifname, a.Unmap()}, class, mac)
	rr.mu.Unlock()
	if ok {
		rr.found(rep.ifname, rep.addr, rep.mac)
	}
}

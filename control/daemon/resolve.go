package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/neigh"
)

// hopResolver is what nextHops needs of a *neigh.Resolver.
type hopResolver interface {
	Resolve(ifname string, addr netip.Addr)
	Forget(ifname string, addr netip.Addr)
}

// nextHops fills in the MAC of bindings learned without one: a Reply
// whose request the relay never saw (its pending table was full, or it
// restarted before the client renewed), or a store written before MACs
// were resolved. Such a binding is routed at once with MAC zero (the
// dataplane counts its frames as no_neighbor), its next hop is asked of
// the resolver, and the MAC it finds is set on the bindings waiting for
// it (binding.Table.SetClientMAC), which republishes the route and
// stores the binding.
//
// Sink runs on the binding manager's goroutine and found on the
// resolver's; mu guards the waiting sets between them.
type nextHops struct {
	res hopResolver
	mgr *binding.Manager // set before the resolver runs
	log *slog.Logger

	mu      sync.Mutex
	waiting map[binding.Key]hopKey    // bindings whose MAC is unknown, by their next hop
	clients map[hopKey]map[string]int // next hop -> client DUID -> its bindings waiting
}

// hopKey is a next hop on a port, without zone.
type hopKey struct {
	port string
	addr netip.Addr
}

func (h hopKey) String() string { return h.port + " " + h.addr.String() }

func newNextHops(res hopResolver, log *slog.Logger) *nextHops {
	return &nextHops{
		res:     res,
		log:     log,
		waiting: make(map[binding.Key]hopKey),
		clients: make(map[hopKey]map[string]int),
	}
}

// seed asks for the next hops of restored bindings with MAC zero. It runs
// before the manager, on the goroutine that restored the table.
func (n *nextHops) seed(t *binding.Table) {
	count := 0
	for b := range t.All() {
		if b.MAC == ([6]byte{}) {
			n.want(b)
			count++
		}
	}
	if count > 0 {
		n.log.Info("restored bindings without a next hop MAC: resolving", "bindings", count, "next_hops", n.unresolved())
	}
}

// Sink follows binding changes: one whose MAC is zero waits for its next
// hop, one with a MAC or removed no longer does.
func (n *nextHops) Sink(changes []binding.Change) {
	for i := range changes {
		c := &changes[i]
		if c.Op == binding.Removed || c.Binding.MAC != ([6]byte{}) {
			n.done(c.Binding.Key)
			continue
		}
		n.want(&c.Binding)
	}
}

// want records that b waits for its next hop's MAC and asks the resolver
// for it. Asking again for a next hop already being resolved is cheap;
// it also asks again for one the resolver refused when full.
func (n *nextHops) want(b *binding.Binding) {
	h := hopKey{b.Port, b.NextHop.WithZone("")}
	n.mu.Lock()
	if old, ok := n.waiting[b.Key]; ok && old != h {
		n.dropLocked(b.Key, old) // a new next hop for the binding
	}
	if _, ok := n.waiting[b.Key]; !ok {
		n.waiting[b.Key] = h
		cs := n.clients[h]
		if cs == nil {
			cs = make(map[string]int, 1)
			n.clients[h] = cs
		}
		cs[b.DUID]++
	}
	n.mu.Unlock()
	n.res.Resolve(h.port, h.addr)
}

// done records that the binding k no longer waits.
func (n *nextHops) done(k binding.Key) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h, ok := n.waiting[k]; ok {
		n.dropLocked(k, h)
	}
}

// dropLocked removes k from h's waiters; the last one gone, the resolver
// forgets h. The caller holds mu.
func (n *nextHops) dropLocked(k binding.Key, h hopKey) {
	delete(n.waiting, k)
	cs := n.clients[h]
	if cs[k.DUID]--; cs[k.DUID] <= 0 {
		delete(cs, k.DUID)
	}
	if len(cs) == 0 {
		delete(n.clients, h)
		n.res.Forget(h.port, h.addr)
	}
}

// found takes a next hop the resolver resolved and sets its MAC on the
// bindings waiting for it, on the manager's goroutine. A client that
// starts waiting meanwhile asks the resolver again and gets its own
// answer.
func (n *nextHops) found(ifname string, addr netip.Addr, mac [6]byte) {
	h := hopKey{ifname, addr.WithZone("")}
	n.mu.Lock()
	var duids []string
	for d := range n.clients[h] {
		duids = append(duids, d)
	}
	n.mu.Unlock()
	if len(duids) == 0 {
		n.log.Debug("next hop resolved, no binding waits for it", "port", ifname, "next_hop", h.addr,
			"mac", binding.MACString(mac))
		return
	}
	slices.Sort(duids)
	n.mgr.SetMACs([]binding.Neighbor{{Port: ifname, NextHop: h.addr, MAC: mac, Clients: duids}},
		func(_ []binding.Neighbor, counts []int) {
			n.log.Info("binding next hop resolved", "port", ifname, "next_hop", h.addr,
				"mac", binding.MACString(mac), "bindings", counts[0])
		})
}

// unresolved returns how many next hops bindings wait for.
func (n *nextHops) unresolved() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.clients)
}

// waitingBindings returns how many bindings wait for a next hop's MAC.
func (n *nextHops) waitingBindings() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.waiting)
}

// runResolver runs the resolver until ctx ends. Where there is no
// netlink, bindings without a MAC stay so (their traffic counted as
// no_neighbor) and the relay runs on.
func runResolver(ctx context.Context, res *neigh.Resolver, log *slog.Logger) error {
	err := res.Run(ctx)
	if errors.Is(err, neigh.ErrUnsupported) {
		log.Warn("next hop resolver unavailable: bindings learned without a MAC keep none", "err", err)
		return nil
	}
	return err
}

// startNextHops builds the resolver and its binding sink, and asks for
// the restored bindings' missing MACs. The caller adds Sink to the
// manager's sinks, sets mgr, and runs the returned resolver.
func startNextHops(t *binding.Table, log *slog.Logger) (*nextHops, *neigh.Resolver) {
	var n *nextHops
	res := neigh.NewResolver(neigh.ResolverOptions{}, log, func(ifname string, addr netip.Addr, mac [6]byte) {
		n.found(ifname, addr, mac)
	})
	n = newNextHops(res, log)
	n.seed(t)
	return n, res
}

var (
	descNextHops = prometheus.NewDesc("pdrelay_next_hops_unresolved",
		"Next hops of bindings learned without a MAC (their request unseen), being resolved by neighbour discovery.", nil, nil)
	descNoMAC = prometheus.NewDesc("pdrelay_bindings_unresolved",
		"Bindings whose next hop's MAC is not known yet; the dataplane drops their traffic as no_neighbor.", nil, nil)
	descResolver = prometheus.NewDesc("pdrelay_next_hop_resolver_total",
		"Next hop resolver events: resolved, request (neighbour discovery asked of the kernel), request_failed, dropped (not tracked: too many unresolved).",
		[]string{"event"}, nil)
)

// resolverMetrics exports the resolver's counters and the waiting sets.
type resolverMetrics struct {
	n   *nextHops
	res *neigh.Resolver
}

func (m resolverMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNextHops
	ch <- descNoMAC
	ch <- descResolver
}

func (m resolverMetrics) Collect(ch chan<- prometheus.Metric) {
	s := m.res.Stats()
	ch <- prometheus.MustNewConstMetric(descNextHops, prometheus.GaugeValue, float64(m.n.unresolved()))
	ch <- prometheus.MustNewConstMetric(descNoMAC, prometheus.GaugeValue, float64(m.n.waitingBindings()))
	for _, e := range []struct {
		name string
		v    uint64
	}{{"resolved", s.Resolved}, {"request", s.Requests}, {"request_failed", s.Failed}, {"dropped", s.Dropped}} {
		ch <- prometheus.MustNewConstMetric(descResolver, prometheus.CounterValue, float64(e.v), e.name)
	}
}

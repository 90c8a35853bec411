package neigh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// usableStates are the NUD states in which the kernel holds a link-layer
// address it would send to.
const usableStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// Timeouts and sizes of the netlink sockets.
const (
	requestTimeout = 5 * time.Second
	subscribeBuf   = 1 << 20 // bytes; capped by net.core.rmem_max
	updateQueue    = 64      // notifications buffered between socket and loop
)

// Watch follows the link-layer address of the uplink gateway in the
// kernel's neighbour table until ctx ends, and returns ctx.Err() then.
//
// The gateway is gw when valid (its zone, if any, is ignored: the gateway
// is on ifname), else the next hop of the kernel's IPv6 default route
// through ifname, followed as the route changes. Watch calls update, from
// its own goroutine and one call at a time, only on a change:
// update(g, true) when the gateway's MAC becomes known or changes, or the
// gateway itself changes to one whose MAC is known; update(g, false) when
// the entry of the gateway last reported usable fails or goes away, or
// there is no longer a gateway. With false, g.MAC is zero and g.Addr names
// the gateway being resolved, or the one lost. Before the first call the
// gateway is unknown. update should return quickly.
//
// While the gateway is unresolved, Watch asks the kernel to resolve it
// (neighbour discovery), at first every Options.Retry and backing off to
// Options.Poll; a STALE entry is sent to be confirmed once per Poll, so a
// gateway that died while the forwarding plane bypassed the kernel is
// found out.
//
// Watch returns an error, wrapped with what it was doing, only when it
// cannot start: no netlink, no interface ifname, no subscription. Later
// failures are logged and retried.
func Watch(ctx context.Context, ifname string, gw netip.Addr, log *slog.Logger, update func(Gateway, bool)) error {
	return WatchWithOptions(ctx, ifname, gw, log, update, Options{})
}

// WatchWithOptions is Watch tuned by opt, for example to watch an
// interface in another network namespace.
func WatchWithOptions(ctx context.Context, ifname string, gw netip.Addr, log *slog.Logger, update func(Gateway, bool), opt Options) error {
	opt = opt.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if gw.IsValid() && (!gw.Is6() || gw.Is4In6()) {
		return fmt.Errorf("neigh: gateway %s is not an IPv6 address", gw)
	}
	h, err := netlink.NewHandleAt(opt.NetNS, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("neigh: open netlink: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(requestTimeout); err != nil {
		return fmt.Errorf("neigh: set netlink timeout: %w", err)
	}
	link, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("neigh: find uplink %s: %w", ifname, err)
	}
	w := &watcher{
		h:       h,
		ifname:  ifname,
		conf:    gw.WithZone(""),
		log:     log.With("interface", ifname),
		update:  update,
		opt:     opt,
		ifindex: link.Attrs().Index,

		subscribed: true,
	}
	return w.run(ctx)
}

// watcher is the state of one Watch, owned by its goroutine.
type watcher struct {
	h      *netlink.Handle
	ifname string
	conf   netip.Addr // the configured gateway, without zone; zero: the default route's
	log    *slog.Logger
	update func(Gateway, bool)
	opt    Options

	ifindex int        // 0 while the uplink is missing
	gw      netip.Addr // the current gateway, without zone; zero when unknown
	state   int        // NUD state of its entry; NUD_NONE for no entry
	mac     [6]byte

	sent   Gateway // the last update given
	sentOK bool

	lastRefresh time.Time
	lastTrigger time.Time
	tries       int // resolution requests since the gateway was last usable

	subscribed bool    // every subscription wanted is up
	errs       onceLog // the last failure logged, to log each once
}

func (w *watcher) run(ctx context.Context) error {
	neighs, err := w.subscribeNeighs()
	if err != nil {
		return fmt.Errorf("neigh: subscribe to neighbour changes: %w", err)
	}
	defer func() { neighs.stop() }()
	var routes *subscription[netlink.RouteUpdate]
	if !w.conf.IsValid() {
		if routes, err = w.subscribeRoutes(); err != nil {
			return fmt.Errorf("neigh: subscribe to route changes: %w", err)
		}
		defer func() { routes.stop() }()
	}

	w.refresh(false)
	timer := time.NewTimer(w.wait())
	defer timer.Stop()
	for {
		var nch <-chan netlink.NeighUpdate
		if neighs != nil {
			nch = neighs.ch
		}
		var rch <-chan netlink.RouteUpdate
		if routes != nil {
			rch = routes.ch
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case u, ok := <-nch:
			if !ok {
				w.log.Warn("neighbour notifications lost; subscribing again", "error", neighs.err())
				neighs.stop()
				neighs = nil
				break
			}
			w.neighUpdate(u)
		case u, ok := <-rch:
			if !ok {
				w.log.Warn("route notifications lost; subscribing again", "error", routes.err())
				routes.stop()
				routes = nil
				break
			}
			if isDefaultRoute(u.Route) {
				w.refresh(false)
			}
		case <-timer.C:
			if neighs == nil {
				if neighs, err = w.subscribeNeighs(); err != nil {
					w.fail("subscribe to neighbour changes", err)
				} else {
					w.lastRefresh = time.Time{} // read the table afresh below
				}
			}
			if routes == nil && !w.conf.IsValid() {
				if routes, err = w.subscribeRoutes(); err != nil {
					w.fail("subscribe to route changes", err)
				}
			}
			w.refresh(time.Since(w.lastRefresh) >= w.opt.Poll)
		}
		// Lost subscriptions are retried, and meanwhile the tables read,
		// every Retry.
		w.subscribed = neighs != nil && (routes != nil || w.conf.IsValid())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(w.wait())
	}
}

func (w *watcher) subscribeNeighs() (*subscription[netlink.NeighUpdate], error) {
	return subscribeNeighs(w.opt.NetNS)
}

// subscribeNeighs subscribes to the neighbour notifications of namespace
// ns.
func subscribeNeighs(ns netns.NsHandle) (*subscription[netlink.NeighUpdate], error) {
	return subscribe(func(ch chan netlink.NeighUpdate, done chan struct{}, cb func(error)) error {
		return netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
			Namespace:         &ns,
			ErrorCallback:     cb,
			ReceiveBufferSize: subscribeBuf,
		})
	})
}

func (w *watcher) subscribeRoutes() (*subscription[netlink.RouteUpdate], error) {
	return subscribe(func(ch chan netlink.RouteUpdate, done chan struct{}, cb func(error)) error {
		ns := w.opt.NetNS
		return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			Namespace:         &ns,
			ErrorCallback:     cb,
			ReceiveBufferSize: subscribeBuf,
		})
	})
}

// subscription is one netlink subscription: its channel, which the
// library closes when the socket fails, and what stops it.
type subscription[T any] struct {
	ch      chan T
	done    chan struct{}
	lastErr chan error // the socket's last error, best effort
}

// subscribe starts a subscription by calling start with its channel, its
// done channel and an error callback.
func subscribe[T any](start func(chan T, chan struct{}, func(error)) error) (*subscription[T], error) {
	s := &subscription[T]{
		ch:      make(chan T, updateQueue),
		done:    make(chan struct{}),
		lastErr: make(chan error, 1),
	}
	err := start(s.ch, s.done, func(err error) {
		select {
		case <-s.done: // closed by stop: not news
			return
		default:
		}
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return
		}
		select {
		case <-s.lastErr:
		default:
		}
		select {
		case s.lastErr <- err:
		default:
		}
	})
	if err != nil {
		close(s.done)
		return nil, err
	}
	return s, nil
}

// stop closes the socket and drains the channel, so the library's
// goroutine, which may be blocked sending, ends.
func (s *subscription[T]) stop() {
	if s == nil {
		return
	}
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	go func() {
		for range s.ch {
		}
	}()
}

func (s *subscription[T]) err() error {
	select {
	case err := <-s.lastErr:
		return err
	default:
		return errors.New("channel closed")
	}
}

// wait returns how long until the watcher should look again by itself.
func (w *watcher) wait() time.Duration {
	var next time.Time
	switch {
	case w.usable() || !w.gw.IsValid():
		next = w.lastRefresh.Add(w.opt.Poll)
	case w.ifindex != 0 && w.tries > 0 && (w.state == netlink.NUD_NONE || w.state == netlink.NUD_FAILED):
		next = w.lastTrigger.Add(w.backoff()) // the next resolution request
	default:
		// Resolving, or no uplink, or an entry without a MAC: look again
		// soon.
		next = w.lastRefresh.Add(w.opt.Retry)
	}
	if !w.subscribed {
		if t := w.lastRefresh.Add(w.opt.Retry); t.Before(next) {
			next = t
		}
	}
	return max(time.Until(next), 10*time.Millisecond)
}

// backoff is the interval between resolution requests: Retry, doubling
// with each unanswered one, up to Poll.
func (w *watcher) backoff() time.Duration {
	return backoff(w.opt.Retry, w.opt.Poll, w.tries)
}

func (w *watcher) usable() bool {
	return w.gw.IsValid() && w.ifindex != 0 && w.state&usableStates != 0 && w.mac != [6]byte{}
}

// refresh reads the uplink, the gateway and its neighbour entry from the
// kernel; poll says this is the periodic look, which also confirms a
// STALE entry.
func (w *watcher) refresh(poll bool) {
	w.lastRefresh = time.Now()
	link, err := w.h.LinkByName(w.ifname)
	if err != nil {
		w.fail("find uplink "+w.ifname, err)
		w.ifindex, w.state, w.mac = 0, netlink.NUD_NONE, [6]byte{}
		w.publish()
		return
	}
	if i := link.Attrs().Index; i != w.ifindex {
		if w.ifindex != 0 {
			w.log.Info("uplink has a new interface index", "ifindex", i)
		}
		w.ifindex, w.state, w.mac = i, netlink.NUD_NONE, [6]byte{}
	}
	gw := w.conf
	if !gw.IsValid() {
		if gw, err = w.defaultGateway(); err != nil {
			w.fail("list IPv6 routes", err)
			gw = w.gw // keep what we had
		}
	}
	if gw != w.gw {
		switch {
		case !gw.IsValid():
			w.log.Warn("no IPv6 default route through the uplink", "was", w.zoned(w.gw))
		case w.conf.IsValid():
		default:
			w.log.Info("uplink gateway from the default route", "gateway", w.zoned(gw))
		}
		w.gw, w.state, w.mac, w.tries = gw, netlink.NUD_NONE, [6]byte{}, 0
	}
	if !w.gw.IsValid() {
		w.publish()
		return
	}
	n, err := w.lookup()
	if err != nil {
		w.fail("list IPv6 neighbours", err)
		return
	}
	w.ok()
	w.set(n)
	w.resolve(poll)
}

// lookup returns the kernel's entry for the gateway, nil when none.
func (w *watcher) lookup() (*netlink.Neigh, error) {
	var list []netlink.Neigh
	var err error
	for range 3 {
		if list, err = w.h.NeighList(w.ifindex, netlink.FAMILY_V6); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	for i := range list {
		if w.isGateway(&list[i]) {
			return &list[i], nil
		}
	}
	return nil, nil
}

func (w *watcher) isGateway(n *netlink.Neigh) bool {
	if n.LinkIndex != w.ifindex || n.Flags&netlink.NTF_PROXY != 0 || !w.gw.IsValid() {
		return false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	return ok && a.Unmap() == w.gw
}

func (w *watcher) neighUpdate(u netlink.NeighUpdate) {
	if w.ifindex == 0 || !w.isGateway(&u.Neigh) {
		return
	}
	if u.Type == unix.RTM_DELNEIGH {
		w.set(nil)
	} else {
		w.set(&u.Neigh)
	}
	w.resolve(false)
}

// set records the gateway's entry n (nil: none) and tells update.
func (w *watcher) set(n *netlink.Neigh) {
	w.state, w.mac = netlink.NUD_NONE, [6]byte{}
	if n != nil {
		w.state = n.State
		if len(n.HardwareAddr) == 6 {
			w.mac = [6]byte(n.HardwareAddr)
		}
	}
	w.publish()
}

// publish calls update when what it last said no longer holds.
func (w *watcher) publish() {
	ok := w.usable()
	g := Gateway{Addr: w.zoned(w.gw), Ifindex: w.ifindex}
	switch {
	case ok:
		g.MAC = w.mac
		if w.sentOK && g == w.sent {
			return
		}
		w.tries = 0
		w.log.Info("uplink gateway resolved", "gateway", g.Addr, "mac", net.HardwareAddr(g.MAC[:]).String(),
			"state", stateName(w.state))
	case w.sentOK:
		if !g.Addr.IsValid() {
			g.Addr = w.sent.Addr
		}
		w.log.Warn("uplink gateway unreachable", "gateway", g.Addr, "state", stateName(w.state))
	default:
		return
	}
	w.sent, w.sentOK = g, ok
	w.update(g, ok)
}

// resolve asks the kernel to resolve the gateway when its entry is
// missing or failed and the backoff allows, or, when poll is set, to
// confirm a STALE entry.
func (w *watcher) resolve(poll bool) {
	if !w.gw.IsValid() || w.ifindex == 0 {
		return
	}
	switch s := w.state; {
	case s == netlink.NUD_STALE && w.mac != [6]byte{}:
		if !poll {
			return
		}
	case s == netlink.NUD_NONE || s == netlink.NUD_FAILED: // none includes no entry
		if w.tries > 0 && time.Since(w.lastTrigger) < w.backoff() {
			return
		}
		w.tries++
	default: // resolving, or resolved
		return
	}
	w.lastTrigger = time.Now()
	if err := w.trigger(); err != nil {
		w.fail("ask the kernel to resolve "+w.zoned(w.gw).String(), err)
		return
	}
	w.log.Debug("asked the kernel to resolve the uplink gateway", "gateway", w.zoned(w.gw),
		"state", stateName(w.state), "tries", w.tries)
}

// trigger makes the kernel start (or, for a STALE entry, confirm)
// neighbour discovery for the gateway: a netlink request with NTF_USE,
// which acts as if a packet were queued to the neighbour, as `ip neigh
// replace ADDR dev IF use` does. It needs CAP_NET_ADMIN; failing that, one
// UDP datagram to the gateway's discard port does the same.
//
// NTF_USE on a PERMANENT entry would clear PERMANENT; resolve sends it
// only for entries missing, NONE, FAILED or STALE.
func (w *watcher) trigger() error {
	return trigger(w.h, w.opt.NetNS, w.ifname, w.ifindex, w.gw, w.opt.discardOnly)
}

// trigger asks the kernel of namespace ns, through h, to resolve addr on
// the interface ifname (index ifindex): NTF_USE, else, without
// CAP_NET_ADMIN or when discardOnly, a datagram to addr's discard port.
func trigger(h *netlink.Handle, ns netns.NsHandle, ifname string, ifindex int, addr netip.Addr, discardOnly bool) error {
	if !discardOnly {
		err := h.NeighSet(&netlink.Neigh{
			LinkIndex: ifindex,
			Family:    netlink.FAMILY_V6,
			State:     netlink.NUD_NONE,
			Flags:     netlink.NTF_USE,
			IP:        addr.AsSlice(),
		})
		if err == nil || !errors.Is(err, unix.EPERM) {
			return err
		}
	}
	return sendDiscard(ns, ifname, ifindex, addr)
}

// defaultGateway returns the next hop, through the uplink, of the IPv6
// default route in the main table with the lowest metric; the zero Addr
// when there is none.
func (w *watcher) defaultGateway() (netip.Addr, error) {
	routes, err := w.h.RouteList(nil, netlink.FAMILY_V6)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return netip.Addr{}, err
	}
	var best netip.Addr
	bestMetric := -1
	for _, r := range routes {
		if !isDefaultRoute(r) || r.Type != unix.RTN_UNICAST {
			continue
		}
		hops := []netlink.NexthopInfo{{LinkIndex: r.LinkIndex, Gw: r.Gw}}
		if len(r.MultiPath) > 0 {
			hops = hops[:0]
			for _, h := range r.MultiPath {
				hops = append(hops, *h)
			}
		}
		for _, h := range hops {
			a, ok := netip.AddrFromSlice(h.Gw)
			if !ok || h.LinkIndex != w.ifindex || !a.Is6() || a.Is4In6() {
				continue
			}
			if bestMetric < 0 || r.Priority < bestMetric {
				best, bestMetric = a, r.Priority
			}
			break
		}
	}
	return best, nil
}

func isDefaultRoute(r netlink.Route) bool {
	if r.Family != netlink.FAMILY_V6 && r.Family != 0 {
		return false
	}
	if r.Table != unix.RT_TABLE_MAIN && r.Table != 0 {
		return false
	}
	if r.Dst == nil {
		return true
	}
	ones, bits := r.Dst.Mask.Size()
	return ones == 0 && bits == 128
}

func (w *watcher) zoned(a netip.Addr) netip.Addr {
	if a.IsLinkLocalUnicast() {
		return a.WithZone(w.ifname)
	}
	return a
}

func (w *watcher) fail(what string, err error) { w.errs.fail(w.log, "neighbour watch", what, err) }

func (w *watcher) ok() { w.errs.ok(w.log, "neighbour watch") }

// onceLog logs each failure once, until it changes or ok is called.
type onceLog struct{ last string }

func (o *onceLog) fail(log *slog.Logger, who, what string, err error) {
	msg := what + ": " + err.Error()
	if msg == o.last {
		return
	}
	o.last = msg
	log.Warn(who+": "+what, "error", err)
}

func (o *onceLog) ok(log *slog.Logger, who string) {
	if o.last != "" {
		log.Info(who + " recovered")
		o.last = ""
	}
}

func stateName(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "incomplete"}, {netlink.NUD_REACHABLE, "reachable"},
		{netlink.NUD_STALE, "stale"}, {netlink.NUD_DELAY, "delay"}, {netlink.NUD_PROBE, "probe"},
		{netlink.NUD_FAILED, "failed"}, {netlink.NUD_NOARP, "noarp"}, {netlink.NUD_PERMANENT, "permanent"},
	}
	for _, n := range names {
		if s&n.bit != 0 {
			return n.name
		}
	}
	return "none"
}

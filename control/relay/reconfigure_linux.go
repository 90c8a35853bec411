//go:build linux

package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Reconfigure once the Conn is closed or its Run
// has returned.
var ErrClosed = errors.New("relay: connection closed")

// reconfig is a reconfiguration prepared by Reconfigure, for commit.
type reconfig struct {
	next   *Engine              // the engine's new configuration (compile)
	opened map[string]*downlink // the new ports' sockets, open
	cfg    ConnConfig
	at     func()        // atSwitch
	done   chan struct{} // closed by commit
}

// Reconfigure applies engCfg and connCfg to the running relay without
// stopping it:
//
//   - a port in engCfg.Ports and not running is added: its sockets are
//     opened here, on the calling goroutine (so in its network
//     namespace), and Run reads them once the engine has the port;
//   - a running port not in engCfg.Ports is removed: Run stops reading it and
//     its sockets close; what it had queued is dropped;
//   - a port in both (by name) keeps its sockets, so it is
//     listened to throughout, and none of its messages is lost or
//     reordered; its Interface-ID, link-address, trust flags, addresses
//     and rate limit (connCfg.Rates, by engCfg.Ports order) take the new
//     values;
//   - the servers (and their port), trusted servers and pending bounds
//     take the new values; the Counters carry over (see
//     Engine.Reconfigure).
//
// The change is atomic for the relay: the engine's goroutine makes it
// between two messages, so each message is handled wholly under the old
// configuration or wholly under the new. Reconfigure returns once it is
// made. atSwitch, when not nil, runs on the engine's goroutine (before
// Run, on the caller's) at that point, after the last message handled under the old configuration and
// before the first under the new: what it posts to the binding Manager
// (Post, whose queue the relay's own updates go through) takes effect in
// the table exactly between the updates of the two, so a port's new
// limits and policy are in force before the first binding learned under
// the new configuration. It must not block for long.
//
// It fails cleanly: when engCfg is invalid, when a new port's sockets
// cannot be opened (the error names the port), or when connCfg changes
// what needs a restart (Uplink, ListenPort) or engCfg the RelayID
// (ErrRelayIDChanged), nothing changes. A zero ServerPort or ListenPort,
// or an empty Uplink, keeps the running one. Called before Run, it
// applies at once; after Run has returned it returns ErrClosed. One
// Reconfigure runs at a time.
func (c *Conn) Reconfigure(ctx context.Context, engCfg Config, connCfg ConnConfig, atSwitch func()) (err error) {
	c.reconfMu.Lock()
	defer c.reconfMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if connCfg.ServerPort == 0 {
		connCfg.ServerPort = c.cfg.ServerPort
	}
	if connCfg.ListenPort == 0 {
		connCfg.ListenPort = c.cfg.ListenPort
	}
	if connCfg.Uplink == "" {
		connCfg.Uplink = c.cfg.Uplink
	}
	switch {
	case connCfg.Uplink != c.cfg.Uplink:
		return fmt.Errorf("relay: uplink %s cannot change to %s at run time", c.cfg.Uplink, connCfg.Uplink)
	case connCfg.ListenPort != c.cfg.ListenPort:
		return fmt.Errorf("relay: listen port %d cannot change to %d at run time", c.cfg.ListenPort, connCfg.ListenPort)
	}

	c.mu.Lock()
	closed, running := c.closed, c.running
	old := make(map[string]*downlink, len(c.downs))
	for _, d := range c.downs {
		old[d.name] = d
	}
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}

	// The interface indexes: kept for the ports that stay, read for the
	// new ones as their sockets open.
	engCfg.Ports = slices.Clone(engCfg.Ports)
	for i := range engCfg.Ports {
		if d := old[engCfg.Ports[i].Name]; d != nil {
			engCfg.Ports[i].Index = d.ifi.Index
		}
	}
	next, err := c.eng.prepare(engCfg)
	if err != nil {
		return err
	}
	r := &reconfig{next: next, opened: make(map[string]*downlink), cfg: connCfg, at: atSwitch, done: make(chan struct{})}
	defer func() {
		if err != nil {
			for _, d := range r.opened {
				d.close()
			}
		}
	}()
	for i := range next.ports {
		p := &next.ports[i]
		if old[p.Name] != nil {
			continue
		}
		d, err := c.openDownlink(p.Name)
		if err != nil {
			return err // names the port
		}
		r.opened[p.Name] = d
		p.Index = d.ifi.Index
	}

	if !running {
		c.commit(r)
		return nil
	}
	// The channel holds one, and Reconfigures are one at a time: this
	// never waits. Run takes it at its next turn, and commit never
	// blocks.
	c.reconf <- r
	c.wake()
	select {
	case <-r.done:
		return nil
	case <-c.runDone:
		select {
		case <-r.done:
			return nil
		default:
			<-c.reconf // Run ended without it: the opened sockets close
			return ErrClosed
		}
	}
}

// commit makes r the running configuration: on Run's goroutine, between
// two turns, or on the caller's before Run.
func (c *Conn) commit(r *reconfig) {
	defer close(r.done)
	c.eng.adopt(r.next)
	if r.at != nil {
		r.at()
	}

	c.mu.Lock()
	old := make(map[string]*downlink, len(c.downs))
	for _, d := range c.downs {
		old[d.name] = d
	}
	downs := make([]*downlink, len(c.eng.ports))
	var added []*downlink
	for i, p := range c.eng.ports {
		d := old[p.Name]
		if d == nil {
			d = r.opened[p.Name]
			d.slot = len(c.bySlot)
			c.bySlot = append(c.bySlot, d)
			added = append(added, d)
		}
		delete(old, p.Name)
		d.port = i
		if d.cnt == nil { // a new port's, before it is read; a port's counts never change
			d.cnt = c.eng.Counters.port(i)
		}
		if rt := rateAt(r.cfg.Rates, i); *rt != d.rate || d.lim.burst == 0 { // changed, or a new port's
			d.setRate(rt)
		}
		downs[i] = d
	}
	c.downs = downs
	var removed []string
	for name, d := range old {
		// Out of the epoll set first: what it still holds is never read.
		unix.EpollCtl(c.ep, unix.EPOLL_CTL_DEL, d.raw, nil)
		if err := d.close(); err != nil {
			c.log.Warn("close removed downlink", "port", name, "err", err)
		}
		c.bySlot[d.slot] = nil
		removed = append(removed, name)
	}
	for _, d := range added {
		if c.closed {
			d.close() // Close came first: nothing will read or close it
			continue
		}
		if err := c.watch(d.raw, d.slot); err != nil {
			c.log.Error("read added downlink", "port", d.name, "err", err)
		}
	}
	c.mu.Unlock()
	c.cfg.Servers, c.cfg.ServerPort = slices.Clone(r.cfg.Servers), r.cfg.ServerPort
	c.cfg.Rates = slices.Clone(r.cfg.Rates)

	var addedNames []string
	for _, d := range added {
		addedNames = append(addedNames, d.name)
	}
	slices.Sort(removed)
	c.log.Info("relay reconfigured", "downlinks", portNames(c.eng.ports), "added", addedNames,
		"removed", removed, "servers", addrStrings(c.cfg.Servers))
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

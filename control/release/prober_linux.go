//go:build linux

package release

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// NeighProber is the Prober on the kernel's neighbour table over
// netlink, in the caller's network namespace. Solicit sends NTF_USE (as
// `ip neigh replace ADDR dev IF use`), which makes the kernel confirm a
// STALE entry with unicast solicitations, or resolve a missing or FAILED
// one; it needs CAP_NET_ADMIN. It never touches a PERMANENT entry.
type NeighProber struct {
	mu      sync.Mutex
	ifindex map[string]int
}

// NewNeighProber returns a prober.
func NewNeighProber() *NeighProber { return &NeighProber{ifindex: make(map[string]int)} }

type neighKey struct {
	ifindex int
	addr    netip.Addr
}

// Snapshot dumps the IPv6 neighbour table once.
func (p *NeighProber) Snapshot() (func(port string, addr netip.Addr) Reach, error) {
	var list []netlink.Neigh
	var err error
	for range 3 {
		if list, err = netlink.NeighList(0, netlink.FAMILY_V6); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	m := make(map[neighKey]Reach, len(list))
	for i := range list {
		n := &list[i]
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || n.Flags&netlink.NTF_PROXY != 0 {
			continue
		}
		m[neighKey{n.LinkIndex, a.Unmap()}] = classify(n.State, len(n.HardwareAddr) == 6)
	}
	return func(port string, addr netip.Addr) Reach {
		idx, err := p.index(port)
		if err != nil {
			return ReachUnknown // the port is gone: say nothing
		}
		r, ok := m[neighKey{idx, addr.WithZone("")}]
		if !ok {
			return ReachFailed
		}
		return r
	}, nil
}

// classify maps a neighbour state (NUD_*) to a Reach.
func classify(state int, hasMAC bool) Reach {
	switch {
	case state&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0:
		return ReachConfirmed
	case state&(netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0 && hasMAC:
		return ReachUnknown
	}
	return ReachFailed // FAILED, INCOMPLETE, NONE
}

// Solicit asks the kernel to confirm or resolve addr on port.
func (p *NeighProber) Solicit(port string, addr netip.Addr) error {
	idx, err := p.index(port)
	if err != nil {
		return err
	}
	return netlink.NeighSet(&netlink.Neigh{
		LinkIndex: idx,
		Family:    netlink.FAMILY_V6,
		State:     netlink.NUD_NONE,
		Flags:     netlink.NTF_USE,
		IP:        addr.AsSlice(),
	})
}

func (p *NeighProber) index(port string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i, ok := p.ifindex[port]; ok {
		return i, nil
	}
	ifi, err := net.InterfaceByName(port)
	if err != nil {
		return 0, err
	}
	p.ifindex[port] = ifi.Index
	return ifi.Index, nil
}

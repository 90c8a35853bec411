package daemon

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
)

// portAddrs are the IPv6 addresses of the relay's ports, by interface
// name, each with its prefix length (its on-link subnet); link-local ones
// included.
type portAddrs map[string][]netip.Prefix

// readPortAddrs reads the addresses of the config's ports from the
// kernel. A port that is missing has none.
func readPortAddrs(cfg *config.Config) portAddrs {
	m := portAddrs{}
	m[cfg.Uplink.Interface] = readAddrs(cfg.Uplink.Interface)
	for _, d := range cfg.Downlinks {
		m[d.Interface] = readAddrs(d.Interface)
	}
	return m
}

// readAddrs returns the IPv6 addresses of interface name, each with its
// prefix length, sorted; none when the interface is missing.
func readAddrs(name string) []netip.Prefix {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	as, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range as {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		ones, bits := ipn.Mask.Size()
		if !ok || !ip.Is6() || ip.Is4In6() || bits != 128 {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// addrsOf returns the addresses of prefixes.
func addrsOf(ps []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, len(ps))
	for i, p := range ps {
		out[i] = p.Addr()
	}
	return out
}

// bindingPolicy is the delegation policy of cfg (delegated_lengths,
// delegated_pools) with the relay's own prefixes: every global address of
// its ports and their on-link subnets, and every port's allowed_sources.
func bindingPolicy(cfg *config.Config, addrs portAddrs) binding.Policy {
	p := binding.Policy{
		MinLen: cfg.DelegatedLengths.Min,
		MaxLen: cfg.DelegatedLengths.Max,
		Pools:  cfg.DelegatedPools,
	}
	for i := range cfg.Downlinks {
		d := &cfg.Downlinks[i]
		if len(d.DelegatedPools) > 0 {
			if p.PortPools == nil {
				p.PortPools = map[string][]netip.Prefix{}
			}
			p.PortPools[d.Interface] = d.DelegatedPools
		}
		for _, a := range d.AllowedSources {
			p.Own = append(p.Own, binding.OwnPrefix{Prefix: a, What: "allowed_sources of " + d.Interface})
		}
	}
	names := make([]string, 0, len(addrs))
	for name := range addrs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, a := range addrs[name] {
			if a.Addr().IsLinkLocalUnicast() {
				continue // reserved space already
			}
			p.Own = append(p.Own,
				binding.OwnPrefix{Prefix: netip.PrefixFrom(a.Addr(), 128), What: "address of " + name},
				binding.OwnPrefix{Prefix: a.Masked(), What: "subnet of " + name})
		}
	}
	return p
}

// addrPoll is how often the ports' addresses are read again: an address
// added to a port is protected from delegation (and accepted as a client
// message's destination) within this time.
const addrPoll = 10 * time.Second

// watchAddrs reads the ports' addresses every addrPoll until ctx ends and
// calls update with them whenever they change (not for the first read,
// which the caller made).
func watchAddrs(ctx context.Context, cfg func() *config.Config, last portAddrs, update func(portAddrs)) error {
	t := time.NewTicker(addrPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if now := readPortAddrs(cfg()); !reflect.DeepEqual(now, last) {
			last = now
			update(now)
		}
	}
}

package nftguard

import (
	"fmt"

	"github.com/pdrelay/pdrelay/dataplane"
)

// Counters returns what the table's counters counted, by port and by the
// xdp mode's reason names (dataplane.Reason):
//
//   - spoofed: forwarded packets from the port whose source it may not
//     use, dropped (both modes; Drops has the same numbers);
//   - loop: looping packets from the port whose loop policy is drop,
//     dropped (kernel mode);
//   - icmp_sent: of those, the ones answered with an ICMPv6 Destination
//     Unreachable, code 6 (the kernel may still hold an error back under
//     its own limit, net.ipv6.icmp.ratelimit);
//   - icmp_rate_limited: of those, the ones whose error the port's rate
//     held back;
//   - forwarded: packets the table let through that leave by the port,
//     counted on the output port as in the xdp mode (kernel mode; also
//     for Config.Uplink). Another table or the qdisc may still drop one.
//
// In kernel mode the counters live in the table and outlast a restart
// (the table is adopted); a removed port's go with it.
func (g *Guard) Counters() (map[string]map[string]uint64, error) {
	c, err := g.k.counters()
	if err != nil {
		return nil, fmt.Errorf("nftguard: read counters: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]map[string]uint64, len(g.ports)+1)
	for _, p := range g.ports {
		if p.Name == "" {
			continue
		}
		m := map[string]uint64{dataplane.Spoofed.String(): c[counterName(p.Name)]}
		if g.kernelMode {
			m[dataplane.Loop.String()] = c[loopCounter(p.Name)]
			m[dataplane.ICMPSent.String()] = c[icmpCounter(p.Name)]
			m[dataplane.ICMPRateLimited.String()] = c[icmpRLCounter(p.Name)]
			m[dataplane.Forwarded.String()] = c[forwardCounter(p.Name)]
		}
		out[p.Name] = m
	}
	if g.kernelMode && g.uplink != "" && out[g.uplink] == nil {
		out[g.uplink] = map[string]uint64{dataplane.Forwarded.String(): c[forwardCounter(g.uplink)]}
	}
	return out, nil
}

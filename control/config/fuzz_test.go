package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that whatever it
// accepts is valid by the rules it enforces. The config comes from a file,
// not the wire, but a parser must not panic on any input.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"reference.yaml", "example.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Add([]byte(base + "  - <<: {interface: d2}\n    link_type: p2p\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte(base + "    loop_overrides: [{client: '0001', policy: forward}, {prefix: 2001:db8::/48, policy: drop}]\n" +
		"dataplane: {queues: 2, frame_size: 4096, icmp_rate: 10}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if c.StateDir == "" || c.APISocket == "" || len(c.Servers) == 0 || len(c.Downlinks) == 0 {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
		ids := map[string]bool{}
		for _, d := range c.Downlinks {
			if ids[d.InterfaceID] {
				t.Fatalf("accepted a repeated interface_id %q", d.InterfaceID)
			}
			ids[d.InterfaceID] = true
			if d.MaxDelegations < 0 || d.MaxPerClient < 0 {
				t.Fatalf("accepted a negative limit: %+v", d)
			}
			clients, prefixes := map[string]bool{}, map[netip.Prefix]bool{}
			for _, o := range d.LoopOverrides {
				if (o.Client == nil) == !o.Prefix.IsValid() {
					t.Fatalf("accepted an override with not exactly one of client, prefix: %+v", o)
				}
				if o.Policy != LoopDrop && o.Policy != LoopForward {
					t.Fatalf("accepted an override policy %q", o.Policy)
				}
				if o.Prefix.IsValid() && (o.Prefix != o.Prefix.Masked() || !o.Prefix.Addr().Is6()) {
					t.Fatalf("accepted an override prefix %v", o.Prefix)
				}
				if clients[string(o.Client)] || prefixes[o.Prefix] {
					t.Fatalf("accepted a repeated override %+v", o)
				}
				if o.Client != nil {
					clients[string(o.Client)] = true
				} else {
					prefixes[o.Prefix] = true
				}
			}
		}
		if dp := c.Dataplane; dp.Queues < 1 || dp.Queues > MaxQueues || (dp.FrameSize != 2048 && dp.FrameSize != 4096) ||
			dp.ICMPRate < 0 || dp.ICMPRate > MaxICMPRate {
			t.Fatalf("accepted dataplane settings %+v", dp)
		}
		if nr := c.Uplink.NoRoute; nr != NoRoutePass && nr != NoRouteDrop {
			t.Fatalf("accepted uplink.no_route %q", nr)
		}
		for _, s := range c.Leasequery.Servers {
			if !s.IsValid() || s.Port() == 0 || s.Addr().IsMulticast() {
				t.Fatalf("accepted leasequery server %v", s)
			}
		}
		if rr := c.Release.Types; rr.Request <= LastAssignedMessageType || rr.Reply <= LastAssignedMessageType || rr.Request == rr.Reply {
			t.Fatalf("accepted an assigned release type: %+v", rr)
		}
	})
}

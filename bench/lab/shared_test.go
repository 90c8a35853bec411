package lab

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestSharedSegment checks the SharedSegment topology: one relay port dl0,
// every client on it through the switch namespace, and Close removing the
// switch too.
func TestSharedSegment(t *testing.T) {
	l := NewT(t, Config{Clients: 2, SharedSegment: true})
	if l.SwitchNS == "" || len(l.Downlinks) != 1 || l.Downlinks[0].Name != "dl0" || len(l.ClientLinks) != 2 {
		t.Fatalf("switch %q, downlinks %+v, client links %+v", l.SwitchNS, l.Downlinks, l.ClientLinks)
	}
	if n := len(DefaultSubnets(l)); n != 1 {
		t.Errorf("%d default Kea subnets, want 1", n)
	}
	const to = 2 * time.Second
	for i, c := range l.ClientLinks {
		if c.Name != "dl0" || c.Index != l.Downlinks[0].Index || c.PeerNS != l.ClientNS[i] || c.PeerIndex == 0 {
			t.Errorf("client link %d: %+v", i, c)
		}
		if err := l.Ping(c.PeerNS, netip.Addr{}, DownlinkGateway.WithZone("eth0"), to); err != nil {
			t.Errorf("client %d -> gateway: %v", i, err)
		}
		if err := l.Ping(l.RelayNS, netip.Addr{}, c.PeerLinkLocal.WithZone("dl0"), to); err != nil {
			t.Errorf("relay -> client %d link-local %s: %v", i, c.PeerLinkLocal, err)
		}
	}
	// The clients share the segment: they reach each other directly.
	if err := l.Ping(l.ClientNS[0], netip.Addr{}, l.ClientLinks[1].PeerLinkLocal.WithZone("eth0"), to); err != nil {
		t.Errorf("client 0 -> client 1 link-local: %v", err)
	}
	if fwd, err := l.Forwarding(); err != nil || fwd {
		t.Fatalf("relay forwarding = %v, %v; want off", fwd, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range l.Namespaces() {
		if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
}

//go:build linux

package release_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/release"
)

// TestNeighProberKernel runs the real prober in a lab namespace: a next
// hop that answers neighbour discovery is confirmed once solicited (the
// kernel had no entry for it before: the solicitation made it resolve);
// an address nobody holds stays unresolved (INCOMPLETE, then FAILED),
// and one never asked about has no entry: both count as failed.
func TestNeighProberKernel(t *testing.T) {
	l := lab.NewT(t, lab.Config{Clients: 1})
	d := l.Downlinks[0]
	ghost := netip.MustParseAddr("fe80::dead:beef")
	never := netip.MustParseAddr("fe80::1:2:3")
	p := release.NewNeighProber()
	reach := func() (client, gone, unasked release.Reach) {
		t.Helper()
		err := l.InNS(l.RelayNS, func() error {
			look, err := p.Snapshot()
			if err != nil {
				return err
			}
			client, gone, unasked = look(d.Name, d.PeerLinkLocal), look(d.Name, ghost), look(d.Name, never)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := l.InNS(l.RelayNS, func() error {
		if err := p.Solicit(d.Name, d.PeerLinkLocal); err != nil {
			return err
		}
		return p.Solicit(d.Name, ghost)
	}); err != nil {
		t.Fatalf("solicit: %v", err)
	}
	// The kernel resolves the client in milliseconds.
	var client, gone, unasked release.Reach
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		client, gone, unasked = reach()
		if client == release.ReachConfirmed && gone == release.ReachFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %v, ghost %v after 10 s; want confirmed and failed", client, gone)
		}
	}
	if unasked != release.ReachFailed {
		t.Errorf("an address not in the table: %v, want failed", unasked)
	}
	// Another port's name that does not exist says nothing.
	if err := l.InNS(l.RelayNS, func() error {
		look, err := p.Snapshot()
		if err != nil {
			return err
		}
		if r := look("nosuch0", d.PeerLinkLocal); r != release.ReachUnknown {
			t.Errorf("unknown port: %v, want unknown", r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

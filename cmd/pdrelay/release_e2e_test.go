package main

// End-to-end check of relay-initiated release in mode client-release
// against Kea 2.2: `pdrelay clear --prefix P --release` sends a Release on
// the client's behalf through the relay's own path, Kea drops the lease
// (lease6-get-all), and the binding is cleared.

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// clientReleaseLab starts Kea, pdrelay in mode client-release and a
// dhclient on port 0, and returns once the client holds its prefix and
// the relay its binding.
func clientReleaseLab(t *testing.T) (*lab.Lab, *lab.Kea, *lab.Pdrelay, *lab.Client, netip.Prefix) {
	t.Helper()
	lab.Require(t, "kea-dhcp6", "dhclient")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 1})
	kea, err := l.StartKea(lab.KeaOptions{ValidLifetime: 600, PreferredLifetime: 500, RenewTimer: 300, RebindTimer: 400})
	if err != nil {
		t.Fatalf("kea: %v", err)
	}
	r, c, p := relayOneClient(t, l, bin, l.PdrelayConfig("release:\n  mode: client-release\n", ""))
	return l, kea, r, c, p
}

func TestEndToEndClientRelease(t *testing.T) {
	_, kea, r, _, p := clientReleaseLab(t)
	ps := []netip.Prefix{p}
	if ls, err := kea.Leases6(); err != nil || len(ls) != 1 || ls[0].Prefix != ps[0] {
		t.Fatalf("kea leases %+v (%v), want %s", ls, err, ps[0])
	}
	out, err := r.CLI("clear", "--prefix", ps[0].String(), "--release")
	if err != nil || !strings.HasPrefix(out, "cleared 1 binding, released at the server") {
		t.Fatalf("clear --release: %v\n%s\n%s", err, out, r.Proc.Log())
	}
	ls, err := kea.WaitLeases(5*time.Second, func(ls []lab.Lease6) bool { return len(ls) == 0 })
	if err != nil || len(ls) != 0 {
		t.Fatalf("kea still holds %+v (%v) after the release", ls, err)
	}
	waitBindings(t, r, 0)
	if log := r.Proc.Log(); !strings.Contains(log, "relay-initiated release") || !strings.Contains(log, "trigger=operator") {
		t.Errorf("no release log line:\n%s", log)
	}
}

// TestEndToEndClientReplaced: a CPE is swapped on a point-to-point port
// without releasing (dhclient killed); when the new one (another
// dhclient with another DUID) obtains its prefix, pdrelay releases the old DUID's binding at
// Kea on its behalf (trigger client_replaced), so the old prefix returns
// to the pool at once instead of when its lease runs out.
func TestEndToEndClientReplaced(t *testing.T) {
	l, kea, r, old, oldP := clientReleaseLab(t)
	oldPs := []netip.Prefix{oldP}
	if err := old.Proc.Signal(syscall.SIGKILL); err != nil { // gone without a Release
		t.Fatal(err)
	}
	old.Proc.Wait(5 * time.Second)
	if ls, _ := kea.Leases6(); len(ls) != 1 {
		t.Fatalf("kea leases before the swap: %+v", ls)
	}

	repl, err := l.StartDhclient(0, lab.ClientOptions{ExtraConfig: "send dhcp6.client-id 00:03:00:01:02:00:00:00:99:99;\n"})
	if err != nil {
		t.Fatalf("dhclient: %v", err)
	}
	newPs, err := repl.WaitPrefix(20 * time.Second)
	if err != nil || len(newPs) != 1 || newPs[0] == oldPs[0] {
		t.Fatalf("new dhclient's prefixes %v (old %v): %v\n%s", newPs, oldPs, err, r.Proc.Log())
	}
	ls, err := kea.WaitLeases(10*time.Second, func(ls []lab.Lease6) bool {
		return len(ls) == 1 && ls[0].Prefix == newPs[0]
	})
	if err != nil {
		t.Fatalf("kea leases %+v after the swap, want only %s: %v\n%s", ls, newPs[0], err, r.Proc.Log())
	}
	bs := bindings(t, r)
	if len(bs) != 1 || bs[0].Prefix != newPs[0] {
		t.Errorf("relay bindings %+v, want only %s", bs, newPs[0])
	}
	if log := r.Proc.Log(); !strings.Contains(log, "trigger=client_replaced") {
		t.Errorf("no client_replaced release logged:\n%s", log)
	}
}

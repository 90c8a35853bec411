package main

// End-to-end test of next hop resolution: a Reply the relay cannot match
// to a request it saw (here: the relay restarted, its store deleted,
// while the client's Renew waited at the server) gives a binding without
// a MAC, which neighbour discovery must fill in before traffic flows.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/api"
)

const zeroMAC = "00:00:00:00:00:00"

// waitMAC waits until the relay has exactly one binding, for prefix, and
// its next hop MAC is want; it returns every MAC the binding was seen
// with on the way.
func waitMAC(t *testing.T, r *lab.Pdrelay, want string, timeout time.Duration) (api.BindingJSON, []string) {
	t.Helper()
	var seen []string
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		bs := bindings(t, r)
		if len(bs) == 1 {
			if len(seen) == 0 || seen[len(seen)-1] != bs[0].NextHopMAC {
				seen = append(seen, bs[0].NextHopMAC)
			}
			if bs[0].NextHopMAC == want {
				return bs[0], seen
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bindings %+v (MACs seen %v), want one with next hop MAC %s\n%s", bs, seen, want, r.Proc.Log())
		}
	}
}

func TestEndToEndUnmatchedReplyResolvesMAC(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhcpcd")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 1})
	kea, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150})
	if err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9551"
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("metrics_listen: "+metricsAddr+"\ndataplane:\n  mode: xdp\n", ""))
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	c, err := l.StartDhcpcd(0, lab.ClientOptions{})
	if err != nil {
		t.Fatalf("dhcpcd: %v", err)
	}
	ps, err := c.WaitPrefix(20 * time.Second)
	if err != nil || len(ps) != 1 {
		t.Fatalf("dhcpcd prefixes %v: %v\n%s", ps, err, r.Proc.Log())
	}
	p := ps[0]
	clientMAC := l.Downlinks[0].PeerMAC.String()
	b, _ := waitMAC(t, r, clientMAC, 10*time.Second) // matched: the MAC of the request's frame
	if b.Prefix != p || b.NextHop != l.Downlinks[0].PeerLinkLocal {
		t.Fatalf("binding %+v, want %v via %v", b, p, l.Downlinks[0].PeerLinkLocal)
	}
	host := p.Addr().Next() // P::1 on the client
	if err := l.AddClientAddr(0, host); err != nil {
		t.Fatal(err)
	}
	// ICMPv6 (complete checksums): this test does not depend on how the
	// hosts' veths leave UDP and TCP checksums.
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("upstream -> client through pdrelay: %v\n%s", err, r.Proc.Log())
	}

	// The client renews while the server is held: the Renew is relayed
	// by this relay and recorded in its pending table, then waits in
	// Kea's socket.
	renewsUp := func() float64 {
		return metric(t, r, metricsAddr, `pdrelay_dhcp_messages_total{direction="up",type="renew"}`)
	}
	before := renewsUp()
	if err := kea.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kea.Proc.Signal(syscall.SIGCONT) })
	if err := c.Proc.Signal(syscall.SIGUSR1); err != nil { // dhcpcd: renew
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); renewsUp() <= before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the client's Renew was not relayed\n%s", c.Proc.Log())
		}
	}
	renewAt := time.Now()

	// The relay restarts with nothing: no store, no pending request. The
	// relay host's neighbour cache is emptied too, as after a reboot.
	if err := r.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(r.StateDir(), "bindings.db")
	if err := os.Remove(store); err != nil {
		t.Fatalf("delete the binding store: %v", err)
	}
	if out, err := l.Run(l.RelayNS, "ip", "-6", "neigh", "flush", "dev", l.Downlinks[0].Name); err != nil {
		t.Fatalf("flush neighbours: %v: %s", err, out)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if bs := bindings(t, r); len(bs) != 0 {
		t.Fatalf("bindings after a restart without store: %+v", bs)
	}
	// The Reply must reach the new relay before dhcpcd retransmits the
	// Renew (10 s, RFC 8415 REN_TIMEOUT): a retransmission would be
	// recorded and its Reply matched.
	if d := time.Since(renewAt); d > 8*time.Second {
		t.Fatalf("the restart took %v: the Reply could be matched to a retransmission", d)
	}
	if err := kea.Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	// The Reply is unmatched: the binding comes back with MAC zero, and
	// then with the client's own MAC, found by neighbour discovery.
	b, seen := waitMAC(t, r, clientMAC, 10*time.Second)
	t.Logf("next hop MACs seen: %v", seen)
	if b.Prefix != p || b.NextHop != l.Downlinks[0].PeerLinkLocal {
		t.Fatalf("binding %+v, want %v via %v", b, p, l.Downlinks[0].PeerLinkLocal)
	}
	if n := metric(t, r, metricsAddr, `pdrelay_snoop_events_total{event="unmatched_reply"}`); n < 1 {
		t.Fatalf("no unmatched Reply counted: the test did not exercise the path\n%s", r.Proc.Log())
	}
	log := r.Proc.Log()
	added := regexp.MustCompile(`msg="binding added" port=` + l.Downlinks[0].Name + ` .*prefix=` + regexp.QuoteMeta(p.String()) + ` .*mac=([0-9a-f:]+)`)
	var macs []string
	for _, m := range added.FindAllStringSubmatch(log, -1) {
		macs = append(macs, m[1])
	}
	if len(macs) != 1 || macs[0] != zeroMAC { // this start's log only
		t.Fatalf("binding added with MACs %v, want once with %s (learned without one)", macs, zeroMAC)
	}
	resolvedLine := fmt.Sprintf(`msg="binding next hop resolved" port=%s next_hop=%s mac=%s bindings=1`,
		l.Downlinks[0].Name, l.Downlinks[0].PeerLinkLocal, clientMAC)
	if !strings.Contains(log, resolvedLine) {
		t.Fatalf("no %q in the log:\n%s", resolvedLine, log)
	}
	if n := metric(t, r, metricsAddr, `pdrelay_bindings_unresolved`); n != 0 {
		t.Errorf("pdrelay_bindings_unresolved %v after resolution", n)
	}

	// Traffic to the client flows again through the forwarding plane.
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("after the unmatched Reply, upstream -> client: %v\n%s", err, r.Proc.Log())
	}
	fwd := metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason="forwarded"}`, l.Downlinks[0].Name))
	if fwd < 1 {
		t.Fatalf("nothing forwarded to %s by the restarted relay", l.Downlinks[0].Name)
	}

	// The resolved MAC was stored: it survives another restart.
	if err := r.Restart(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	bs := bindings(t, r)
	if len(bs) != 1 || bs[0].NextHopMAC != clientMAC {
		t.Fatalf("after a restart: bindings %+v, want the resolved MAC %s", bs, clientMAC)
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("after restoring the resolved MAC, upstream -> client: %v", err)
	}
	if err := c.Stop(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Logf("stop dhcpcd: %v", err)
	}
}

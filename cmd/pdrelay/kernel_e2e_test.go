package main

// End-to-end test of dataplane.mode kernel: IPv6 forwarding is ON in the
// relay namespace (the test owns it: it models the router pdrelay runs
// on), and the kernel forwards between the client's delegated prefix and
// the upstream host along the route pdrelay writes (dataplane/kroute),
// while pdrelay's nftables guard drops spoofed sources.

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
)

// kernelRoutes returns `ip -6 route show proto 157` in the relay
// namespace, one route a line.
func kernelRoutes(t *testing.T, l *lab.Lab, what ...string) []string {
	t.Helper()
	// -N: numbers, whatever /etc/iproute2/rt_protos.d names (make demo
	// names 157 "pdrelay").
	out, err := l.Run(l.RelayNS, append([]string{"ip", "-N", "-6"}, append(what, "proto", fmt.Sprint(kroute.Protocol))...)...)
	if err != nil {
		t.Fatalf("ip: %v %s", err, out)
	}
	var lines []string
	for _, s := range strings.Split(out, "\n") {
		if s = strings.TrimSpace(s); s != "" {
			lines = append(lines, s)
		}
	}
	return lines
}

func TestEndToEndKernelMode(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 1, Forwarding: true})
	if on, err := l.Forwarding(); err != nil || !on {
		t.Fatalf("kernel forwarding in the relay namespace must be on: %v %v", on, err)
	}
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9561"
	cfg := l.PdrelayConfig("metrics_listen: "+metricsAddr+"\ndataplane:\n  mode: kernel\n", "    loop_icmp: true\n")
	r, c, p := relayOneClient(t, l, bin, cfg)
	if !strings.Contains(r.Proc.Log(), `msg="pdrelay started" mode=kernel `) {
		t.Errorf("the start log does not say the mode:\n%s", r.Proc.Log())
	}
	if strings.Contains(r.Proc.Log(), "IPv6 forwarding is off") {
		t.Errorf("forwarding is on, yet the relay says it is off")
	}
	dl := l.Downlinks[0]

	// The route: exactly the delegated prefix, via the client's
	// link-local address on its port, pdrelay's protocol; and the next
	// hop's entry, pdrelay's, with the client's MAC.
	wantRoute := fmt.Sprintf("%s via %s dev %s metric 1024 pref medium", p, dl.PeerLinkLocal, dl.Name)
	var routes []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if routes = kernelRoutes(t, l, "route", "show"); slices.Equal(routes, []string{wantRoute}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ip -6 route show proto %d: %q, want %q\n%s", kroute.Protocol, routes, wantRoute, r.Proc.Log())
		}
	}
	neigh := kernelRoutes(t, l, "neigh", "show", "dev", dl.Name)
	if len(neigh) != 1 || !strings.HasPrefix(neigh[0], fmt.Sprintf("%s lladdr %s extern_learn ", dl.PeerLinkLocal, dl.PeerMAC)) {
		t.Errorf("ip -6 neigh show dev %s proto %d: %q", dl.Name, kroute.Protocol, neigh)
	}

	host := p.Addr().Next() // P::1
	if err := l.AddClientAddr(0, host); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(l.ClientNS[0], host, lab.UpstreamAddr, 5*time.Second); err != nil {
		t.Fatalf("client -> upstream through the kernel: %v\n%s", err, r.Proc.Log())
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("upstream -> client through the kernel: %v", err)
	}
	echoBothWays(t, l, host, "the kernel")

	// A spoofed source gets nothing through, and nftables counts it
	// under the xdp mode's reason.
	spoof := netip.MustParseAddr("2001:db8:ff00::66")
	if err := l.AddClientAddr(0, spoof); err != nil {
		t.Fatal(err)
	}
	packets := func(reason string) float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason=%q}`, dl.Name, reason))
	}
	before := packets("spoofed")
	if err := l.Ping(l.ClientNS[0], spoof, lab.UpstreamAddr, time.Second); err == nil {
		t.Fatal("a spoofed source reached the upstream host")
	}
	if packets("spoofed") <= before {
		t.Fatalf("the spoofed counter did not move (%v)", before)
	}

	// To its own delegated prefix the client loops (point-to-point, R-5):
	// the kernel would send it back; nftables drops it and, with
	// loop_icmp, answers ICMPv6 Destination Unreachable 1/6.
	before = packets("loop")
	typ, code, from, err := echoAnswer(l, l.ClientNS[0], host, host.Next()) // P::2, not configured on the client
	if err != nil {
		t.Fatalf("no answer to a looping packet: %v", err)
	}
	if typ != 1 || code != 6 {
		t.Fatalf("looping packet answered with type %d code %d from %s, want 1/6", typ, code, from)
	}
	if packets("loop") <= before || packets("icmp_sent") < 1 {
		t.Fatalf("loop %v (before %v), icmp_sent %v: want both counted", packets("loop"), before, packets("icmp_sent"))
	}
	// pdrelay stats shows the same counters by port.
	if out, err := r.CLI("stats"); err != nil || !strings.Contains(out, "spoofed") || !strings.Contains(out, "loop") {
		t.Errorf("pdrelay stats in kernel mode: %v\n%s", err, out)
	}

	// A restart while traffic flows both ways: pdrelay's route stays in
	// the kernel throughout (no deletion of it is ever notified), the
	// restart's reconcile writes nothing, and the kernel forwards the
	// stream to the client without a loss (S-1).
	f, err := os.Open("/run/netns/" + l.RelayNS)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events := make(chan netlink.RouteUpdate, 64)
	stopEvents := make(chan struct{})
	if err := netlink.RouteSubscribeAt(netns.NsHandle(f.Fd()), events, stopEvents); err != nil {
		t.Fatal(err)
	}
	var deletedMu sync.Mutex
	var deleted []string
	go func() {
		for u := range events {
			if u.Type == syscall.RTM_DELROUTE && u.Dst != nil {
				deletedMu.Lock()
				deleted = append(deleted, u.Dst.String())
				deletedMu.Unlock()
			}
		}
	}()
	down, err := l.StartStream(l.ServerNS, lab.UpstreamAddr, l.ClientNS[0], netip.AddrPortFrom(host, 7001), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	up, err := l.StartStream(l.ClientNS[0], host, l.ServerNS, netip.AddrPortFrom(lab.UpstreamAddr, 7002), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	restartAt := time.Now()
	if err := r.Restart(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	startedAt := time.Now()
	if err := r.Proc.WaitLog("kernel routes reconciled", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	close(stopEvents)
	for _, st := range []struct {
		name string
		s    *lab.Stream
	}{{"upstream -> client", down}, {"client -> upstream", up}} {
		res := st.s.Stop()
		sent, lost := res.Sent, res.Sent-res.Received
		t.Logf("%s across the restart (SIGTERM to API up again: %v): %d sent, %d lost", st.name, startedAt.Sub(restartAt).Round(time.Millisecond), sent, lost)
		if sent < 500 {
			t.Errorf("%s: only %d sent: the stream did not run", st.name, sent)
		}
		if gaps := res.MissingAt; len(gaps) > 0 {
			t.Logf("%s: losses sent between %v and %v after the SIGTERM", st.name, gaps[0].Sub(restartAt).Round(time.Millisecond), gaps[len(gaps)-1].Sub(restartAt).Round(time.Millisecond))
		}
		// Downstream the kernel's route carries the stream, upstream the
		// guard's table checks it too: the restarted relay adopts the
		// table it left and switches to its new sets in one transaction,
		// so neither loses a datagram.
		if lost != 0 {
			t.Errorf("%s: %d of %d datagrams lost across a restart", st.name, lost, sent)
		}
	}
	deletedMu.Lock()
	if slices.Contains(deleted, p.String()) {
		t.Errorf("the delegated route was deleted during the restart (deletions %v)", deleted)
	}
	deletedMu.Unlock()
	if !strings.Contains(r.Proc.Log(), `msg="kernel routes reconciled" routes=1 written=0 removed=0 neighbours_written=0 neighbours_removed=0 waiting=0`) {
		t.Errorf("the restart's reconcile did more than read the route back:\n%s", r.Proc.Log())
	}
	if got := kernelRoutes(t, l, "route", "show"); !slices.Equal(got, []string{wantRoute}) {
		t.Errorf("after the restart: %q", got)
	}

	// A crash, and a binding that ended while pdrelay was dead (its
	// route left behind, here made by hand): the next start's reconcile
	// deletes the stale route and keeps the wanted one.
	if err := r.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stale := "2001:db8:ff::/48"
	if out, err := l.Run(l.RelayNS, "ip", "-6", "route", "add", stale, "via", "fe80::99", "dev", dl.Name, "proto", fmt.Sprint(kroute.Protocol)); err != nil {
		t.Fatalf("stale route: %v %s", err, out)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r.Proc.WaitLog("kernel routes reconciled", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Proc.Log(), `msg="kernel routes reconciled" routes=1 written=0 removed=1 `) {
		t.Errorf("the reconcile after a crash:\n%s", r.Proc.Log())
	}
	if got := kernelRoutes(t, l, "route", "show"); !slices.Equal(got, []string{wantRoute}) {
		t.Errorf("after the crash and restart: %q, want %q", got, wantRoute)
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("upstream -> client after the crash: %v", err)
	}

	// After the client's Release the route and the entry go, and the
	// traffic stops.
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	waitBindings(t, r, 0)
	for deadline := time.Now().Add(5 * time.Second); len(kernelRoutes(t, l, "route", "show")) != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the released prefix's route stays: %q", kernelRoutes(t, l, "route", "show"))
		}
	}
	if got := kernelRoutes(t, l, "neigh", "show"); len(got) != 0 {
		t.Errorf("pdrelay's neighbour entries after the release: %q", got)
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, time.Second); err == nil {
		t.Fatal("traffic to a released prefix still flows")
	}
}

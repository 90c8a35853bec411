package main

// End-to-end test of the forwarding plane: kernel forwarding is OFF in the
// relay namespace, so every packet between the client's delegated prefix
// and the upstream host crosses pdrelay's AF_XDP plane or nothing.

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// metric returns the value of the first /metrics sample matching name and
// labels (a regexp fragment), or 0.
func metric(t *testing.T, r *lab.Pdrelay, addr, series string) float64 {
	t.Helper()
	m, err := r.Metrics(addr)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`)
	sub := re.FindStringSubmatch(m)
	if sub == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(sub[1], 64)
	return v
}

// echoExpectUnreach sends an echo request from src to dst in ns and
// returns the ICMPv6 type and code of the first answer that is not an
// echo reply to something else, or an error on timeout.
func echoAnswer(l *lab.Lab, ns string, src, dst netip.Addr) (typ, code byte, from netip.Addr, err error) {
	var c *net.IPConn
	err = l.InNS(ns, func() error {
		var e error
		c, e = net.ListenIP("ip6:ipv6-icmp", &net.IPAddr{IP: src.AsSlice()})
		return e
	})
	if err != nil {
		return 0, 0, from, err
	}
	defer c.Close()
	req := []byte{128, 0, 0, 0, 0x12, 0x34, 0, 1, 'l', 'o', 'o', 'p'}
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, 0, from, err
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, a, err := c.ReadFrom(buf)
		if err != nil {
			return 0, 0, from, err
		}
		if n < 4 || buf[0] == 128 { // our own request looped back is not an answer
			continue
		}
		from, _ = netip.AddrFromSlice(a.(*net.IPAddr).IP)
		return buf[0], buf[1], from, nil
	}
}

func TestEndToEndForwarding(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 1})
	if on, err := l.Forwarding(); err != nil || on {
		t.Fatalf("kernel forwarding in the relay namespace must be off: %v %v", on, err)
	}
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9548"
	cfg := l.PdrelayConfig("metrics_listen: "+metricsAddr+"\ndataplane:\n  mode: xdp\n",
		"    loop_icmp: true\n")
	r, c, p := relayOneClient(t, l, bin, cfg)
	host := p.Addr().Next() // P::1
	if err := l.AddClientAddr(0, host); err != nil {
		t.Fatal(err)
	}
	dl := l.Downlinks[0].Name
	fwd := func(port string) float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason="forwarded"}`, port))
	}

	// Up and down through the relay: ping the upstream host from the
	// delegated address, and the client from upstream.
	if err := l.Ping(l.ClientNS[0], host, lab.UpstreamAddr, 5*time.Second); err != nil {
		t.Fatalf("client -> upstream through pdrelay: %v\n%s", err, r.Proc.Log())
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("upstream -> client through pdrelay: %v", err)
	}
	if fwd(dl) < 1 || fwd(l.Uplink.Name) < 1 {
		t.Fatalf("forwarded counters did not move: %s %v, %s %v", dl, fwd(dl), l.Uplink.Name, fwd(l.Uplink.Name))
	}
	// UDP and TCP both ways, the hosts at their default offloads: their
	// veths leave the checksums partial, AF_XDP does not say so, and
	// pdrelay completes them on its veth ports.
	echoBothWays(t, l, host, "pdrelay")
	// The kernel's AF_XDP losses are exported for every port and queue.
	if m, err := r.Metrics(metricsAddr); err != nil || !strings.Contains(m, fmt.Sprintf(`pdrelay_xsk_drops_total{interface=%q,queue="0",reason="rx_ring_full"}`, dl)) {
		t.Errorf("no pdrelay_xsk_drops_total for %s queue 0: %v", dl, err)
	}
	// And the XDP programs' verdicts: the frames forwarded above were
	// redirected on both ports, and every queue had its socket.
	for _, port := range []string{dl, l.Uplink.Name} {
		v := func(verdict string) float64 {
			return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_xdp_program_total{interface=%q,verdict=%q}`, port, verdict))
		}
		if v("redirect") < 1 || v("no_socket") != 0 || v("aborted") != 0 {
			t.Errorf("pdrelay_xdp_program_total on %s: redirect %v, no_socket %v, aborted %v; want redirect > 0, no losses",
				port, v("redirect"), v("no_socket"), v("aborted"))
		}
	}
	completed := func(port string) float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason="checksum_completed"}`, port))
	}
	if completed(dl) < 1 || completed(l.Uplink.Name) < 1 {
		t.Fatalf("checksum_completed: %s %v, %s %v; want both moved", dl, completed(dl), l.Uplink.Name, completed(l.Uplink.Name))
	}
	for _, port := range []string{dl, l.Uplink.Name} {
		if want := fmt.Sprintf(`msg="dataplane port" interface=%s driver=veth complete_checksums=true`, port); !strings.Contains(r.Proc.Log(), want) {
			t.Errorf("no %q in the log", want)
		}
	}

	// uplink.no_route: pass (the default): upstream traffic to an address
	// no prefix is delegated from reaches the relay's kernel (which, with
	// forwarding off, counts it in Ip6InAddrErrors) and never pdrelay's
	// no_route counter: the XDP program passed it before any socket.
	addrErrors := func() int {
		out, err := l.Run(l.RelayNS, "cat", "/proc/net/snmp6")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^Ip6InAddrErrors\s+(\d+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no Ip6InAddrErrors in snmp6:\n%s", out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	noRoute := func() float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason="no_route"}`, l.Uplink.Name))
	}
	toKernel := func(when string) {
		t.Helper()
		kernelBefore, noRouteBefore := addrErrors(), noRoute()
		stray, err := l.ListenUDP(l.ServerNS, netip.AddrPortFrom(lab.UpstreamAddr, 0))
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			stray.WriteToUDPAddrPort([]byte("nobody"), netip.MustParseAddrPort("[2001:db8:ff00::1]:9"))
		}
		stray.Close()
		for deadline := time.Now().Add(3 * time.Second); addrErrors() < kernelBefore+5; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the relay's kernel saw %d of 5 non-delegated datagrams", when, addrErrors()-kernelBefore)
			}
		}
		if n := noRoute(); n != noRouteBefore {
			t.Fatalf("%s: no_route counter moved %v -> %v: the frames reached pdrelay instead of the kernel", when, noRouteBefore, n)
		}
	}
	toKernel("first start")

	// A spoofed source gets nothing, and is counted.
	spoof := netip.MustParseAddr("2001:db8:ff00::66")
	if err := l.AddClientAddr(0, spoof); err != nil {
		t.Fatal(err)
	}
	spoofed := func() float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason="spoofed"}`, dl))
	}
	before := spoofed()
	if err := l.Ping(l.ClientNS[0], spoof, lab.UpstreamAddr, time.Second); err == nil {
		t.Fatal("a spoofed source reached the upstream host")
	}
	if spoofed() <= before {
		t.Fatal("spoofed counter did not move")
	}

	// To its own delegated prefix the client loops (point-to-point, R-5):
	// dropped, and answered with ICMPv6 Destination Unreachable 1/6.
	loops := func() float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason="loop"}`, dl))
	}
	before = loops()
	typ, code, from, err := echoAnswer(l, l.ClientNS[0], host, host.Next()) // P::2, not configured on the client
	if err != nil {
		t.Fatalf("no answer to a looping packet: %v", err)
	}
	if typ != 1 || code != 6 {
		t.Fatalf("looping packet answered with type %d code %d from %s, want 1/6", typ, code, from)
	}
	if loops() <= before {
		t.Fatal("loop counter did not move")
	}

	// After a restart traffic flows again with no client action (S-1).
	if err := r.Restart(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("after restart, upstream -> client: %v\n%s", err, r.Proc.Log())
	}
	// The uplink's route map is refilled beside the running relay; once
	// it is, non-delegated traffic goes to the kernel again. The
	// client's prefix has a window (its range's first).
	filled := regexp.MustCompile(`msg="xdp route map filled" routes=1 took=\S+ windows=1 in_windows=1\n`)
	for deadline := time.Now().Add(5 * time.Second); !filled.MatchString(r.Proc.Log()); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("route map not refilled after the restart:\n%s", r.Proc.Log())
		}
	}
	toKernel("after restart")

	// After the client releases, traffic to the prefix stops.
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	waitBindings(t, r, 0)
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, time.Second); err == nil {
		t.Fatal("traffic to a released prefix still flows")
	}
	if !strings.Contains(r.Proc.Log(), "reason=released") {
		t.Errorf("no release logged")
	}
}

func waitBindings(t *testing.T, r *lab.Pdrelay, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		bs, err := r.Bindings()
		if err == nil && len(bs) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bindings %v (err %v), want %d", bs, err, n)
		}
	}
}

// echoBothWays checks UDP and TCP echoes between host (a client's
// delegated address in its namespace) and the upstream host, both ways,
// through the relay (via names the forwarder in failures).
func echoBothWays(t *testing.T, l *lab.Lab, host netip.Addr, via string) {
	t.Helper()
	for _, d := range []struct {
		name         string
		cliNS, srvNS string
		cli          netip.Addr
		srv          netip.AddrPort
	}{
		{"client -> upstream", l.ClientNS[0], l.ServerNS, host, netip.AddrPortFrom(lab.UpstreamAddr, 9999)},
		{"upstream -> client", l.ServerNS, l.ClientNS[0], lab.UpstreamAddr, netip.AddrPortFrom(host, 9998)},
	} {
		if err := l.EchoUDP(d.cliNS, d.cli, d.srvNS, d.srv, 1200); err != nil {
			t.Fatalf("UDP %s through %s: %v", d.name, via, err)
		}
		if err := l.EchoTCP(d.cliNS, d.cli, d.srvNS, d.srv, 256<<10, 10*time.Second); err != nil {
			t.Fatalf("TCP %s through %s: %v", d.name, via, err)
		}
	}
}

package main

// End-to-end test of RFC 8987 R-5 on a multi-access downlink: two clients
// share dl0 (a bridge in the lab's switch namespace), kernel forwarding is
// off in the relay namespace, so traffic between their delegated prefixes
// crosses pdrelay's AF_XDP plane or nothing.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

func TestEndToEndMultiAccess(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 2, SharedSegment: true})
	if on, err := l.Forwarding(); err != nil || on {
		t.Fatalf("kernel forwarding in the relay namespace must be off: %v %v", on, err)
	}
	if len(l.Downlinks) != 1 {
		t.Fatalf("downlinks %v, want only dl0", l.Downlinks)
	}
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9549"
	cfg := l.PdrelayConfigWith(lab.PdrelayConfigOptions{
		Extra:    "metrics_listen: " + metricsAddr + "\ndataplane:\n  mode: xdp\n",
		PerPort:  "    loop_icmp: true\n",
		LinkType: "multi-access",
	})
	r, err := l.StartPdrelay(bin, cfg)
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	var hosts [2]netip.Addr
	var clients [2]*lab.Client
	for i := range clients {
		if clients[i], err = l.StartDhclient(i, lab.ClientOptions{}); err != nil {
			t.Fatalf("dhclient %d: %v", i, err)
		}
	}
	for i, c := range clients {
		ps, err := c.WaitPrefix(20 * time.Second)
		if err != nil || len(ps) != 1 {
			t.Fatalf("dhclient %d prefixes %v: %v\n%s", i, ps, err, r.Proc.Log())
		}
		hosts[i] = ps[0].Addr().Next() // P::1
		if err := l.AddClientAddr(i, hosts[i]); err != nil {
			t.Fatal(err)
		}
	}
	if hosts[0] == hosts[1] {
		t.Fatalf("both clients got %s", hosts[0])
	}
	waitBindings(t, r, 2)
	dl := l.Downlinks[0].Name
	counter := func(reason string) float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_dataplane_packets_total{interface=%q,reason=%q}`, dl, reason))
	}

	// (a) Client 0 -> client 1's delegated address: not on-link, so it
	// goes to fe80::1 and pdrelay sends it back out of dl0 (source MAC is
	// client 0's, the route's MAC client 1's: no loop), and the reply the
	// same way.
	before := counter("forwarded")
	if err := l.Ping(l.ClientNS[0], hosts[0], hosts[1], 5*time.Second); err != nil {
		t.Fatalf("client 0 -> client 1 through pdrelay: %v\n%s", err, r.Proc.Log())
	}
	if n := counter("forwarded"); n < before+2 {
		t.Fatalf("forwarded on %s moved %v -> %v, want the echo and its reply", dl, before, n)
	}

	// UDP and TCP between the clients, both ways, at default offloads:
	// pdrelay completes their partial checksums.
	before = counter("checksum_completed")
	for _, d := range [][2]int{{0, 1}, {1, 0}} {
		c, s := d[0], d[1]
		if err := l.EchoUDP(l.ClientNS[c], hosts[c], l.ClientNS[s], netip.AddrPortFrom(hosts[s], 9999), 1200); err != nil {
			t.Fatalf("UDP client %d -> client %d through pdrelay: %v", c, s, err)
		}
		if err := l.EchoTCP(l.ClientNS[c], hosts[c], l.ClientNS[s], netip.AddrPortFrom(hosts[s], 9998), 256<<10, 10*time.Second); err != nil {
			t.Fatalf("TCP client %d -> client %d through pdrelay: %v", c, s, err)
		}
	}
	if n := counter("checksum_completed"); n <= before {
		t.Fatalf("checksum_completed on %s did not move (%v)", dl, n)
	}

	// (b) Client 0 -> its own prefix (P0::2, not configured): the route's
	// next hop is client 0 itself, the frame's source: a loop, answered
	// with ICMPv6 Destination Unreachable 1/6.
	before = counter("loop")
	typ, code, from, err := echoAnswer(l, l.ClientNS[0], hosts[0], hosts[0].Next())
	if err != nil {
		t.Fatalf("no answer to a looping packet: %v", err)
	}
	if typ != 1 || code != 6 {
		t.Fatalf("looping packet answered with type %d code %d from %s, want 1/6", typ, code, from)
	}
	if counter("loop") <= before {
		t.Fatal("loop counter did not move")
	}
}

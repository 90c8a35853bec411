package main

// End-to-end tests of the trust model (ARCHITECTURE.md, "Security
// model"): only the configured
// server delegates, only sane prefixes are installed, and a subscriber
// cannot make the relay speak for a relay below it.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// reply builds a server's Reply to client duid delegating prefix in
// IA_PD iaid, wrapped in a Relay-Reply for the relay's port ifid,
// addressed to peer.
func relayReply(link, peer netip.Addr, ifid string, duid []byte, iaid uint32, prefix netip.Prefix) []byte {
	iaprefix := binary.BigEndian.AppendUint32(nil, 300) // preferred
	iaprefix = binary.BigEndian.AppendUint32(iaprefix, 600)
	iaprefix = append(iaprefix, byte(prefix.Bits()))
	a := prefix.Addr().As16()
	iaprefix = append(iaprefix, a[:]...)
	iapd := binary.BigEndian.AppendUint32(nil, iaid)
	iapd = binary.BigEndian.AppendUint32(iapd, 150) // T1
	iapd = binary.BigEndian.AppendUint32(iapd, 250) // T2
	iapd = append(iapd, (&lab.Message{Options: []lab.Option{{Code: lab.OptIAPrefix, Data: iaprefix}}}).Marshal()[4:]...)
	rep := &lab.Message{Type: lab.MsgReply, XID: 0x777777, Options: []lab.Option{
		{Code: lab.OptClientID, Data: duid},
		{Code: lab.OptServerID, Data: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0xff, 1}},
		{Code: lab.OptIAPD, Data: iapd},
	}}
	rr := &lab.Message{Type: lab.MsgRelayReply, LinkAddr: link, PeerAddr: peer, Options: []lab.Option{
		{Code: lab.OptInterfaceID, Data: []byte(ifid)},
		{Code: lab.OptRelayMsg, Data: rep.Marshal()},
	}}
	return rr.Marshal()
}

// sendUDP sends payload from src (port 0: any) in namespace ns to dst.
func sendUDP(t *testing.T, l *lab.Lab, ns string, src netip.AddrPort, dst netip.AddrPort, payload []byte) {
	t.Helper()
	c, err := l.ListenUDP(ns, src)
	if err != nil {
		t.Fatalf("udp socket in %s: %v", ns, err)
	}
	defer c.Close()
	to := net.UDPAddrFromAddrPort(dst)
	if z := dst.Addr().Zone(); z != "" {
		idx, err := l.IfIndex(ns, z)
		if err != nil {
			t.Fatal(err)
		}
		to.Zone = fmt.Sprint(idx)
	}
	if _, err := c.WriteToUDP(payload, to); err != nil {
		t.Fatalf("send from %s in %s: %v", src, ns, err)
	}
}

// waitMetric waits until the relay's /metrics holds line (a full sample
// line: name, labels, value).
func waitMetric(t *testing.T, r *lab.Pdrelay, addr, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := r.Metrics(addr)
		if err == nil && strings.Contains(m, line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed %q:\n%s", line, grepLines(m, "pdrelay_dhcp|pdrelay_binding_ref"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(s, prefixes string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		for p := range strings.SplitSeq(prefixes, "|") {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

func hasBinding(t *testing.T, r *lab.Pdrelay, p netip.Prefix) bool {
	for _, b := range bindings(t, r) {
		if b.Prefix == p {
			return true
		}
	}
	return false
}

// TestEndToEndTrust: Kea and pdrelay in namespaces, every host at its
// defaults (no ethtool, no sysctl but the lab's own). Forged Relay-Replies
// and bad delegations are not learned; a subscriber's Relay-Forward, a
// frame with a bad checksum and a subscriber's Relay-Reply never reach the
// server; real clients (dhcpcd, default offloads) still get prefixes.
func TestEndToEndTrust(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhcpcd")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 2})
	if _, err := l.StartKea(lab.KeaOptions{}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9547"
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("metrics_listen: "+metricsAddr+"\n", ""))
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	capt, err := l.Capture(l.ServerNS, "eth0")
	if err != nil {
		t.Fatal(err)
	}

	// A real client at default offloads: its partial checksums are fine.
	dc, err := l.StartDhcpcd(1, lab.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.WaitPrefix(20 * time.Second); err != nil {
		t.Fatalf("dhcpcd got no prefix through pdrelay: %v\n%s", err, r.Proc.Log())
	}

	relay := netip.AddrPortFrom(lab.RelayUplinkAddr, 547)
	link := l.Downlinks[0].Addr.Addr() // the link-address pdrelay sends for dl0
	peer := netip.MustParseAddr("fe80::dead")
	duid := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0xde, 0xad}

	// 1. A Relay-Reply from a host on the uplink that is not the server.
	stranger := netip.MustParseAddr("fd00:0:0:ffff::66")
	if out, err := l.Run(l.ServerNS, "ip", "-6", "addr", "add", stranger.String()+"/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	forged := netip.MustParsePrefix("2001:db8:100:6600::/56")
	sendUDP(t, l, l.ServerNS, netip.AddrPortFrom(stranger, 0), relay, relayReply(link, peer, "dl0", duid, 1, forged))

	// 2. From the server's own address: ::/0, a multicast prefix and one
	// covering the uplink's subnet are refused; a sane one, sent last, is
	// learned: once it is, every message before it has been handled, and
	// the refusals are the policy's, not a lost message.
	server := netip.AddrPortFrom(lab.ServerAddr, 0)
	bad := []string{"::/0", "ff05:1::/48", "fd00::/48"}
	for i, p := range bad {
		sendUDP(t, l, l.ServerNS, server, relay, relayReply(link, peer, "dl0", duid, uint32(10+i), netip.MustParsePrefix(p)))
	}
	sane := netip.MustParsePrefix("2001:db8:100:6700::/56")
	sendUDP(t, l, l.ServerNS, server, relay, relayReply(link, peer, "dl0", duid, 20, sane))
	deadline := time.Now().Add(10 * time.Second)
	for !hasBinding(t, r, sane) {
		if time.Now().After(deadline) {
			t.Fatalf("the server's sane delegation %s was not learned: %v", sane, bindings(t, r))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, b := range bindings(t, r) {
		if b.Prefix == forged {
			t.Errorf("a Relay-Reply from %s (not a server) was learned: %s", stranger, forged)
		}
		for _, p := range bad {
			if b.Prefix.String() == p {
				t.Errorf("bad delegation %s installed", p)
			}
		}
	}
	waitMetric(t, r, metricsAddr, `pdrelay_dhcp_drops_total{reason="untrusted_server"} 1`)
	waitMetric(t, r, metricsAddr, `pdrelay_binding_refusals_total{interface="dl0",reason="reserved"} 2`)
	waitMetric(t, r, metricsAddr, `pdrelay_binding_refusals_total{interface="dl0",reason="relay"} 1`)

	// 3. A subscriber on dl1 sends a Relay-Forward (forging a relay below
	// it), a Relay-Reply, and a Solicit in a frame with a bad UDP
	// checksum; then a plain Solicit, which must reach the server.
	cns := l.ClientNS[1]
	cll := netip.AddrPortFrom(l.Downlinks[1].PeerLinkLocal.WithZone("eth0"), 0)
	group := netip.AddrPortFrom(netip.MustParseAddr("ff02::1:2%eth0"), 547)
	marker := func(tag byte) []byte { return []byte{0, 3, 0, 1, 2, 0, 0, 0xf0, 0x12, tag} }
	solicit := func(tag byte) []byte {
		return (&lab.Message{Type: lab.MsgSolicit, XID: 0x123456, Options: []lab.Option{
			{Code: lab.OptClientID, Data: marker(tag)}, {Code: lab.OptElapsedTime, Data: []byte{0, 0}},
		}}).Marshal()
	}
	forward := (&lab.Message{Type: lab.MsgRelayForward, PeerAddr: peer, Options: []lab.Option{
		{Code: lab.OptInterfaceID, Data: []byte("forged-remote-id")},
		{Code: lab.OptRelayMsg, Data: solicit(1)},
	}}).Marshal()
	sendUDP(t, l, cns, cll, group, forward)
	sendUDP(t, l, cns, cll, group, relayReply(link, peer, "dl1", duid, 30, netip.MustParsePrefix("2001:db8:200:6800::/56")))
	sendBadChecksum(t, l, cns, l.Downlinks[1], solicit(2))
	sendUDP(t, l, cns, cll, group, solicit(3))

	// What reached the server's link: the plain Solicit, sent last, is the
	// sign that the others were handled.
	deadline = time.Now().Add(10 * time.Second)
	var seen map[byte]bool
	for {
		seen = relayedMarkers(t, capt.Frames(), marker(0)[:9])
		if seen[3] || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	capt.Stop()
	if !seen[3] {
		t.Fatal("the subscriber's plain Solicit never reached the server: the capture proves nothing")
	}
	if seen[1] {
		t.Error("the subscriber's Relay-Forward reached the server")
	}
	if seen[2] {
		t.Error("a Solicit with a bad UDP checksum reached the server")
	}
	waitMetric(t, r, metricsAddr, `pdrelay_dhcp_client_drops_total{interface="dl1",reason="relay_forward_untrusted"} 1`)
	waitMetric(t, r, metricsAddr, `pdrelay_dhcp_client_drops_total{interface="dl1",reason="relay_reply_from_client"} 1`)
	waitMetric(t, r, metricsAddr, `pdrelay_dhcp_client_drops_total{interface="dl1",reason="bad_checksum"} 1`)
	m, _ := r.Metrics(metricsAddr)
	t.Logf("relay counters:\n%s", grepLines(m, "pdrelay_dhcp_drops_total|pdrelay_binding_refusals_total{interface=\"dl0\""))
}

// relayedMarkers decodes the Relay-Forwards pdrelay sent to the server in
// frames and returns the last byte of every client DUID starting with
// prefix found in them, at any depth of relaying.
func relayedMarkers(t *testing.T, frames [][]byte, prefix []byte) map[byte]bool {
	seen := map[byte]bool{}
	for _, f := range frames {
		u, ok := lab.ParseUDP6(f)
		if !ok || u.DstPort != 547 {
			continue
		}
		m, err := lab.ParseMessage(u.Payload)
		if err != nil || m.Type != lab.MsgRelayForward {
			continue
		}
		for depth := 0; m != nil && depth < 8; depth++ {
			if id := m.Option(lab.OptClientID); len(id) == len(prefix)+1 && bytes.HasPrefix(id, prefix) {
				seen[id[len(prefix)]] = true
			}
			if !m.IsRelayKind {
				break
			}
			if m, err = m.Inner(); err != nil {
				break
			}
		}
	}
	return seen
}

// sendBadChecksum sends payload to ff02::1:2 port 547 from the client
// behind link, in a frame written whole to a packet socket with its UDP
// checksum off by one: a frame corrupted on the wire.
func sendBadChecksum(t *testing.T, l *lab.Lab, ns string, link lab.Link, payload []byte) {
	t.Helper()
	src := link.PeerLinkLocal.As16()
	dst := netip.MustParseAddr("ff02::1:2").As16()
	udp := binary.BigEndian.AppendUint16(nil, 546)
	udp = binary.BigEndian.AppendUint16(udp, 547)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	good := lab.L4Checksum(netip.AddrFrom16(src), netip.AddrFrom16(dst), 17, udp)
	binary.BigEndian.PutUint16(udp[6:], good^0x0100) // one bit off
	frame := []byte{0x33, 0x33, 0, 1, 0, 2}
	frame = append(frame, link.PeerMAC...)
	frame = append(frame, 0x86, 0xdd, 0x60, 0, 0, 0)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(udp)))
	frame = append(frame, 17, 1)
	frame = append(frame, src[:]...)
	frame = append(frame, dst[:]...)
	frame = append(frame, udp...)
	if err := l.SendFrame(ns, "eth0", frame); err != nil {
		t.Fatal(err)
	}
}

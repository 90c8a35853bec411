package xdpfast

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	cpeMAC  = net.HardwareAddr{2, 0, 0, 0, 0xc, 1}
	coreMAC = net.HardwareAddr{2, 0, 0, 0, 0xc, 2}
	dlMAC   = net.HardwareAddr{2, 0, 0, 0, 0xd, 1}
	upMAC   = net.HardwareAddr{2, 0, 0, 0, 0xd, 2}
)

func udp6(t *testing.T, src, dst string, hop uint8, dport uint16) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: cpeMAC, DstMAC: dlMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: hop,
		SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	u := &layers.UDP{SrcPort: 4000, DstPort: layers.UDPPort(dport)}
	_ = u.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, u, gopacket.Payload(make([]byte, 18))); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// The program's verdicts, run with BPF_PROG_TEST_RUN in a namespace of
// the test's own (lo is the downlink, a veth the uplink): legitimate
// traffic both ways is redirected with the hop limit decremented and the
// MACs rewritten; spoofed sources and loops are dropped and counted;
// what is not forwarded goes to the kernel.
func TestVerdicts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("xdpfast: needs root (BPF, a network namespace); skipping")
	}
	runtime.LockOSThread() // never unlocked: the thread ends with the test's namespace
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "core0"}); err != nil {
		t.Fatal(err)
	}
	up, err := netlink.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	core, err := netlink.LinkByName("core0")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{lo, up, core} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	dl, ul := lo.Attrs().Index, up.Attrs().Index

	f, err := New(16)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.AddPort(dl, true))
	must(f.AddPort(ul, false))
	delegated := netip.MustParsePrefix("2001:db8:100::/56")
	must(f.Route(delegated, dl, cpeMAC, dlMAC))
	must(f.Source(delegated, dl))
	must(f.Route(netip.MustParsePrefix("::/0"), ul, coreMAC, upMAC))

	const redirect, drop, pass = 4, xdpDrop, xdpPass
	tests := []struct {
		name     string
		frame    []byte
		ingress  int
		verdict  uint32
		dst, src net.HardwareAddr // rewritten MACs when redirected
	}{
		{"upstream", udp6(t, "2001:db8:100::5", "2001:db8:ffff::1", 64, 9), dl, redirect, coreMAC, upMAC},
		{"downstream", udp6(t, "2001:db8:ffff::1", "2001:db8:100:7::1", 64, 9), ul, redirect, cpeMAC, dlMAC},
		{"spoofed source", udp6(t, "2001:db8:200::5", "2001:db8:ffff::1", 64, 9), dl, drop, nil, nil},
		{"loop", udp6(t, "2001:db8:100::5", "2001:db8:100:1::1", 64, 9), dl, drop, nil, nil},
		{"hop limit 1", udp6(t, "2001:db8:ffff::1", "2001:db8:100::1", 1, 9), ul, pass, nil, nil},
		{"dhcpv6", udp6(t, "2001:db8:ffff::1", "2001:db8:100::1", 64, 547), ul, pass, nil, nil},
		{"link-local", udp6(t, "2001:db8:ffff::1", "fe80::1", 64, 9), ul, pass, nil, nil},
		{"truncated", udp6(t, "2001:db8:ffff::1", "2001:db8:100::1", 64, 9)[:60], ul, pass, nil, nil},
	}
	for _, tc := range tests {
		v, out, err := f.run(tc.frame, tc.ingress)
		if err != nil {
			t.Fatalf("%s: test run: %v", tc.name, err)
		}
		if v != tc.verdict {
			t.Errorf("%s: verdict %d, want %d", tc.name, v, tc.verdict)
			continue
		}
		if v != redirect {
			continue
		}
		if !bytes.Equal(out[0:6], tc.dst) || !bytes.Equal(out[6:12], tc.src) {
			t.Errorf("%s: MACs %x -> %x, want %s -> %s", tc.name, out[6:12], out[0:6], tc.src, tc.dst)
		}
		if out[offHopLimit] != tc.frame[offHopLimit]-1 {
			t.Errorf("%s: hop limit %d, want %d", tc.name, out[offHopLimit], tc.frame[offHopLimit]-1)
		}
		if !bytes.Equal(out[12:offHopLimit], tc.frame[12:offHopLimit]) || !bytes.Equal(out[offHopLimit+1:], tc.frame[offHopLimit+1:]) {
			t.Errorf("%s: the frame changed beyond the MACs and the hop limit", tc.name)
		}
	}
	c, err := f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counters{Forwarded: 2, Spoofed: 1, Loop: 1, Pass: 4}); c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
}

package replay

import (
	"bytes"
	"encoding/json"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane"
)

var update = flag.Bool("update", false, "regenerate testdata/in.pcap and the expected outputs")

// The golden relay (testdata/pdrelay.yaml, testdata/bindings.json).
var (
	macEth0 = [6]byte{0x02, 0, 0, 0, 0, 0x01} // uplink
	macEth1 = [6]byte{0x02, 0, 0, 0, 0, 0x02} // point-to-point, loop_icmp
	macEth2 = [6]byte{0x02, 0, 0, 0, 0, 0x03} // multi-access
	macGW   = [6]byte{0x0a, 0, 0, 0, 0, 0xfe} // uplink gateway
	macA1   = [6]byte{0x0c, 0, 0, 0, 0, 0xa1} // client of 2001:db8:100:100::/56 on eth1
	macA2   = [6]byte{0x0c, 0, 0, 0, 0, 0xa2} // client of 2001:db8:100:200::/56 on eth1, loop override forward
	macB1   = [6]byte{0x0c, 0, 0, 0, 0, 0xb1} // client of 2001:db8:200:100::/56 on eth2
	macHost = [6]byte{0x0c, 0, 0, 0, 0, 0x99} // a host behind eth2 in allowed_sources
)

func goldenOptions(t testing.TB) Options {
	t.Helper()
	cfg, err := config.Load("testdata/pdrelay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/bindings.json")
	if err != nil {
		t.Fatal(err)
	}
	var bs []api.BindingJSON
	if err := json.Unmarshal(data, &bs); err != nil {
		t.Fatal(err)
	}
	gw := macGW
	return Options{
		Config:     cfg,
		MACs:       map[string][6]byte{"eth0": macEth0, "eth1": macEth1, "eth2": macEth2},
		GatewayMAC: &gw,
		Bindings:   bs,
	}
}

// rec is one captured frame of the golden input.
type rec struct {
	what  string // what it tests, for the reader of this file
	frame []byte
	cut   int // > 0: only the first cut bytes were captured
	at    time.Duration
}

func udp6(t testing.TB, srcMAC, dstMAC [6]byte, src, dst string, hop uint8) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC[:], DstMAC: dstMAC[:], EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: hop, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.IP(netip.MustParseAddr(src).AsSlice()), DstIP: net.IP(netip.MustParseAddr(dst).AsSlice())}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5001}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload("pdrelay replay golden")); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// goldenFrames is the golden capture, with the verdict each frame should
// get (the counts are checked by TestGolden besides the byte comparison).
func goldenFrames(t testing.TB) []rec {
	const (
		a1   = "2001:db8:100:100::1" // client on eth1
		b1   = "2001:db8:200:100::1" // client on eth2
		b2   = "2001:db8:200:200::1" // another client on eth2
		host = "2001:db8:200::5"     // allowed_sources on eth2
		net6 = "2001:db8:ffff::1"    // beyond the uplink
	)
	var rs []rec
	add := func(n int, what string, at time.Duration, f func(i int) []byte) {
		for i := range n {
			rs = append(rs, rec{what: what, frame: f(i), at: at + time.Duration(i)*time.Millisecond})
		}
	}
	add(3, "forwarded: uplink to client a1 on eth1", 0, func(i int) []byte {
		return udp6(t, macGW, macEth0, net6, "2001:db8:100:10"+string(rune('0'+i))+"::1", 64)
	})
	add(3, "forwarded: client a1 to the gateway", 10*time.Millisecond, func(int) []byte { return udp6(t, macA1, macEth1, a1, net6, 64) })
	add(2, "forwarded back out of multi-access eth2: b1 to b2", 20*time.Millisecond, func(int) []byte { return udp6(t, macB1, macEth2, b1, b2, 64) })
	add(1, "forwarded: allowed_sources host on eth2 to the gateway", 30*time.Millisecond, func(int) []byte { return udp6(t, macHost, macEth2, host, net6, 2) })
	add(2, "spoofed: a1 with a source outside its prefix", 40*time.Millisecond, func(int) []byte {
		return udp6(t, macA1, macEth1, "2001:db8:999::1", net6, 64)
	})
	// Twelve loops at one instant: the burst of 10 ICMPv6 errors, then
	// the rate limit (2).
	for range 12 {
		rs = append(rs, rec{what: "loop on point-to-point eth1 with ICMPv6", frame: udp6(t, macA1, macEth1, a1, "2001:db8:100:1ff::1", 64), at: 50 * time.Millisecond})
	}
	// A second burst a second later, by the capture's clock: the bucket
	// has filled again (a replay on the wall clock would find it empty).
	for range 5 {
		rs = append(rs, rec{what: "loop on eth1 again, after the bucket refilled", frame: udp6(t, macA1, macEth1, a1, "2001:db8:100:1fe::1", 64), at: 1050 * time.Millisecond})
	}
	add(1, "loop forwarded back out of eth1: the client's own loop override", 1055*time.Millisecond, func(int) []byte {
		return udp6(t, macA2, macEth1, "2001:db8:100:200::1", "2001:db8:100:2ff::1", 64)
	})
	add(1, "loop on multi-access eth2 (from the route's own MAC), no ICMPv6", 1060*time.Millisecond, func(int) []byte {
		return udp6(t, macB1, macEth2, b1, "2001:db8:200:1ff::1", 64)
	})
	add(2, "no route: uplink to an address no prefix holds (no_route: drop)", 1070*time.Millisecond, func(int) []byte {
		return udp6(t, macGW, macEth0, net6, "2001:db8:777::1", 64)
	})
	add(2, "hop limit 1 from a client", 1080*time.Millisecond, func(int) []byte { return udp6(t, macA1, macEth1, a1, net6, 1) })
	add(1, "no neighbour: the route's MAC is unknown", 1090*time.Millisecond, func(int) []byte {
		return udp6(t, macGW, macEth0, net6, "2001:db8:100:300::1", 64)
	})
	add(1, "local: a link-local destination", 1100*time.Millisecond, func(int) []byte { return udp6(t, macA1, macEth1, a1, "fe80::1", 64) })
	add(1, "malformed: IP version 4 under EtherType IPv6", 1110*time.Millisecond, func(int) []byte {
		f := udp6(t, macA1, macEth1, a1, net6, 64)
		f[14] = 0x45
		return f
	})
	add(1, "malformed: payload length beyond the frame", 1120*time.Millisecond, func(int) []byte {
		f := udp6(t, macA1, macEth1, a1, net6, 64)
		f[18], f[19] = 0x05, 0x00 // payload length 1280
		return f
	})
	add(1, "not IPv6: an IPv4 EtherType", 1130*time.Millisecond, func(int) []byte {
		f := udp6(t, macGW, macEth0, net6, a1, 64)
		f[12], f[13] = 0x08, 0x00
		return f
	})
	add(1, "unmatched: a multicast destination MAC (no --in)", 1140*time.Millisecond, func(int) []byte {
		return udp6(t, macA1, [6]byte{0x33, 0x33, 0, 0, 0, 1}, "fe80::a1", "ff02::1", 255)
	})
	rs = append(rs, rec{what: "truncated by the capture", frame: udp6(t, macGW, macEth0, net6, a1, 64), cut: 40, at: 1150 * time.Millisecond})
	return rs
}

// want are the golden capture's counts, worked out by hand from
// goldenFrames.
var want = Summary{
	Frames: 41, Unmatched: 1, Truncated: 1, Unrouted: 1,
	Reasons: map[string]uint64{
		"forwarded": 10, "spoofed": 2, "loop": 18, "icmp_sent": 15, "icmp_rate_limited": 2,
		"no_route": 2, "hop_limit": 2, "no_neighbor": 1, "local": 1, "malformed": 2, "not_ipv6": 1,
	},
	Written: map[string]uint64{"eth0": 4, "eth1": 19, "eth2": 2},
}

var goldenStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// captured is the record as a capture holds it: cut short when r.cut
// says so, at its time from goldenStart.
func (r rec) captured() (gopacket.CaptureInfo, []byte) {
	data := r.frame
	if r.cut > 0 {
		data = data[:r.cut]
	}
	return gopacket.CaptureInfo{Timestamp: goldenStart.Add(r.at), CaptureLength: len(data), Length: len(r.frame)}, data
}

func writePcap(t testing.TB, rs []rec) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriterNanos(&b)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		ci, data := r.captured()
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func writePcapng(t testing.TB, rs []rec) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "cap0", LinkType: layers.LinkTypeEthernet, TimestampResolution: 9}, pcapgo.NgWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		ci, data := r.captured()
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func replayBytes(t testing.TB, opts Options, in []byte) (Summary, []byte, []byte, []byte) {
	t.Helper()
	var out bytes.Buffer
	sum, err := Run(opts, bytes.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	WriteText(&text, sum)
	js, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return sum, out.Bytes(), text.Bytes(), append(js, '\n')
}

// TestGolden replays testdata/in.pcap and compares the output pcapng and
// both summaries byte for byte with the committed ones; it also checks
// the verdict counts against those worked out by hand (want), so that a
// wrong golden file cannot pass. go test -update regenerates the files.
func TestGolden(t *testing.T) {
	opts := goldenOptions(t)
	inPath := filepath.Join("testdata", "in.pcap")
	files := map[string]string{"out": "testdata/out.pcapng", "text": "testdata/summary.txt", "json": "testdata/summary.json"}
	if *update {
		if err := os.WriteFile(inPath, writePcap(t, goldenFrames(t)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in, err := os.ReadFile(inPath)
	if err != nil {
		t.Fatal(err)
	}
	if gen := writePcap(t, goldenFrames(t)); !bytes.Equal(gen, in) {
		t.Errorf("%s differs from what goldenFrames builds: run go test -update", inPath)
	}
	sum, out, text, js := replayBytes(t, opts, in)
	got := map[string][]byte{"out": out, "text": text, "json": js}
	if *update {
		for k, p := range files {
			if err := os.WriteFile(p, got[k], 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, p := range files {
		exp, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[k], exp) {
			t.Errorf("%s: replay output differs from the committed file (go test -update regenerates it)\n%s", p, got[k])
		}
	}
	checkSummary(t, sum, want)
	checkAccounted(t, sum)

	// The same run again gives the same bytes (fresh Forwarder, same clock).
	_, out2, _, _ := replayBytes(t, opts, in)
	if !bytes.Equal(out, out2) {
		t.Error("a second replay of the same capture wrote different bytes")
	}
}

func checkSummary(t *testing.T, got, want Summary) {
	t.Helper()
	if got.Frames != want.Frames || got.Unmatched != want.Unmatched || got.Truncated != want.Truncated ||
		got.NotEthernet != want.NotEthernet || got.Unrouted != want.Unrouted {
		t.Errorf("frames %d unmatched %d truncated %d not ethernet %d unrouted %d; want %d %d %d %d %d",
			got.Frames, got.Unmatched, got.Truncated, got.NotEthernet, got.Unrouted,
			want.Frames, want.Unmatched, want.Truncated, want.NotEthernet, want.Unrouted)
	}
	for _, m := range []struct {
		name      string
		got, want map[string]uint64
	}{{"reasons", got.Reasons, want.Reasons}, {"written", got.Written, want.Written}} {
		for k, v := range m.want {
			if m.got[k] != v {
				t.Errorf("%s[%s] = %d, want %d", m.name, k, m.got[k], v)
			}
		}
		for k, v := range m.got {
			if _, ok := m.want[k]; !ok {
				t.Errorf("%s[%s] = %d, want none", m.name, k, v)
			}
		}
	}
}

// checkAccounted: every frame read is counted exactly once, under a
// replay reason or one dataplane verdict.
func checkAccounted(t testing.TB, s Summary) {
	t.Helper()
	n := s.Unmatched + s.Truncated + s.NotEthernet
	for r := dataplane.Reason(0); r < dataplane.NumReasons; r++ {
		switch r {
		case dataplane.ICMPSent, dataplane.ICMPRateLimited, dataplane.ChecksumCompleted:
			continue // on top of a verdict
		}
		n += s.Reasons[r.String()]
	}
	if n != s.Frames {
		t.Errorf("%d frames read, %d accounted for: %+v", s.Frames, n, s)
	}
}

// TestPcapng: the same capture as pcapng replays to the same output.
func TestPcapng(t *testing.T) {
	opts := goldenOptions(t)
	rs := goldenFrames(t)
	_, out1, text1, _ := replayBytes(t, opts, writePcap(t, rs))
	_, out2, text2, _ := replayBytes(t, opts, writePcapng(t, rs))
	if !bytes.Equal(out1, out2) || !bytes.Equal(text1, text2) {
		t.Errorf("pcapng replay differs from pcap replay:\n%s\n%s", text1, text2)
	}
}

// TestIngressFlag: with --in every frame is decided as if it came in on
// that port, whatever its destination MAC: nothing is unmatched (the
// multicast frame goes to the kernel as local), and every reason but
// forwarded is counted on that port.
func TestIngressFlag(t *testing.T) {
	opts := goldenOptions(t)
	opts.In = "eth0"
	sum, err := Run(opts, bytes.NewReader(writePcap(t, goldenFrames(t))), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkAccounted(t, sum)
	if sum.Unmatched != 0 || sum.Truncated != 1 {
		t.Errorf("unmatched %d truncated %d, want 0 and 1", sum.Unmatched, sum.Truncated)
	}
	for port, rs := range sum.Ports {
		for r, n := range rs {
			if port != "eth0" && r != "forwarded" {
				t.Errorf("port %s: %s %d: with --in eth0 only eth0 counts drops", port, r, n)
			}
		}
	}
	// From the uplink nothing is a loop or spoofed: the clients' own
	// frames to the gateway go back out of the uplink.
	if sum.Reasons["loop"] != 0 || sum.Reasons["spoofed"] != 0 || sum.Reasons["local"] < 2 {
		t.Errorf("reasons %v: want no loop, no spoofed, the multicast and link-local frames local", sum.Reasons)
	}
}

// TestPcapngNotEthernet: a frame on a pcapng interface of another link
// type is read and counted as not ethernet, not skipped unseen (pcapgo's
// default), and the Ethernet frames around it are decided as usual.
func TestPcapngNotEthernet(t *testing.T) {
	rs := goldenFrames(t)
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "cap0", LinkType: layers.LinkTypeEthernet, TimestampResolution: 9}, pcapgo.NgWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := w.AddInterface(pcapgo.NgInterface{Name: "tun0", LinkType: layers.LinkTypeRaw, TimestampResolution: 9})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs[:3] {
		ci, data := r.captured()
		if i == 1 {
			ci.InterfaceIndex = raw
		}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	sum, err := Run(goldenOptions(t), &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Frames != 3 || sum.NotEthernet != 1 {
		t.Errorf("frames %d, not ethernet %d; want 3, 1", sum.Frames, sum.NotEthernet)
	}
	checkAccounted(t, sum)
}

package fwd

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pdrelay/pdrelay/internal/csum"
)

func TestFrameHeader(t *testing.T) {
	f := Frame{
		DstMAC: net.HardwareAddr{2, 0, 0, 0, 1, 1}, SrcMAC: net.HardwareAddr{2, 0, 0, 0, 1, 2},
		Src: LeasePrefix(1).Addr().Next(), Dst: netip.MustParseAddr("fd00:beef::1"),
		SrcPort: 10000, DstPort: PortLegit, Size: 64,
	}
	want := []byte{
		0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // destination MAC: the relay's port
		0x02, 0x00, 0x00, 0x00, 0x01, 0x02, // source MAC: the generator
		0x86, 0xdd, // EtherType IPv6
		0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
		0x00, 0x0a, // payload length 10: UDP header + 2 bytes of payload (64-14-40)
		0x11, 0x40, // next header UDP, hop limit 64
		0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x01, // source 2001:db8:0:100::1, in lease 1
		0xfd, 0x00, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // destination fd00:beef::1
		0x27, 0x10, // source port 10000
		0x23, 0x28, // destination port 9000
		0x00, 0x0a, // UDP length 10
		0xca, 0xf6, // checksum, computed by hand over the pseudo-header and the datagram
	}
	if got := f.Header(); !bytes.Equal(got, want) {
		t.Errorf("header\n got % x\nwant % x", got, want)
	}
}

// TestFramesChecksum checks every frame's UDP checksum the receiver's way:
// the sum over the pseudo-header and the whole datagram, payload zeros
// included, folds to 0xffff.
func TestFramesChecksum(t *testing.T) {
	for _, size := range []int{MinFrame, 64, 512, 1500} {
		tr := Traffic{Dir: Up, N: 1000, Flows: 7, SpoofPct: 50, Size: size,
			GenMAC: net.HardwareAddr{2, 0, 0, 0, 1, 2}, RelayMAC: net.HardwareAddr{2, 0, 0, 0, 1, 1},
			Core: netip.MustParseAddr("fd00:beef::1")}
		if err := tr.Validate(); err != nil {
			t.Fatal(err)
		}
		for i, f := range tr.Frames() {
			b := append(f.Header(), make([]byte, size-MinFrame)...)
			udp := b[14+40:]
			ph := make([]byte, 40)
			copy(ph, b[14+8:14+40])
			binary.BigEndian.PutUint32(ph[32:], uint32(len(udp)))
			ph[39] = 17
			if got := csum.Fold(csum.Sum(ph) + csum.Sum(udp)); got != 0xffff {
				t.Errorf("size %d frame %d: checksum does not verify (folds to %#x)", size, i, got)
			}
		}
	}
}

func TestFramesShares(t *testing.T) {
	core := netip.MustParseAddr("fd00:beef::1")
	for _, tc := range []struct {
		flows, spoof, n int
		legit, spoofed  int
	}{
		{flows: 1, spoof: 0, n: 100, legit: 1, spoofed: 0},
		{flows: 1, spoof: 50, n: 100, legit: 1, spoofed: 1},
		{flows: 10_000, spoof: 50, n: 100_000, legit: 10_000, spoofed: 10_000},
		{flows: 4, spoof: 20, n: 3, legit: 4, spoofed: 1},
	} {
		tr := Traffic{Dir: Up, N: tc.n, Flows: tc.flows, SpoofPct: tc.spoof, Size: 64, Core: core}
		fs := tr.Frames()
		legit, spoofed := Counts(fs)
		if legit != tc.legit || spoofed != tc.spoofed {
			t.Errorf("%+v: %d legit, %d spoofed", tc, legit, spoofed)
		}
		for i, f := range fs {
			// Legitimate sources lie in a lease below N, spoofed ones in none.
			a := f.Src.As16()
			lease := int(binary.BigEndian.Uint32(a[4:8]) >> 8)
			inside := lease < tc.n && LeasePrefix(lease).Contains(f.Src)
			if inside != (f.DstPort == PortLegit) {
				t.Errorf("%+v: frame %d from %s port %d: inside a lease %v", tc, i, f.Src, f.DstPort, inside)
			}
			// Spoofed frames are interleaved: never two in a row at 50%.
			if tc.spoof == 50 && i > 0 && f.DstPort == PortSpoof && fs[i-1].DstPort == PortSpoof {
				t.Errorf("%+v: frames %d and %d both spoofed", tc, i-1, i)
			}
		}
	}
	if err := (Traffic{Dir: Down, N: 10, Flows: 1, SpoofPct: 50, Size: 64}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "downstream") {
		t.Errorf("spoofing downstream validated: %v", err)
	}
}

func TestSplit(t *testing.T) {
	fs := Traffic{Dir: Up, N: 10, Flows: 2, SpoofPct: 50, Size: 64, Core: netip.MustParseAddr("fd00:beef::1")}.Frames()
	// Sequence: legit, spoofed, legit, spoofed; trafgen cycles it.
	for _, tc := range []struct{ n, legit, spoofed uint64 }{
		{0, 0, 0}, {1, 1, 0}, {2, 1, 1}, {3, 2, 1}, {4, 2, 2}, {9, 5, 4},
	} {
		l, s := split(fs, tc.n)
		if l != tc.legit || s != tc.spoofed {
			t.Errorf("split(%d) = %d, %d; want %d, %d", tc.n, l, s, tc.legit, tc.spoofed)
		}
	}
}

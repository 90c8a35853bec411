package bench

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// BenchmarkPacketSocketCost measures what an idle AF_PACKET socket on a
// downlink costs the packets the kernel forwards from it, as the one
// control/relay opens per downlink for DHCPv6: bound to the port, with a
// classic BPF filter (here one that rejects every frame, attached before
// the bind, so nothing is ever queued). The relay namespace forwards
// 64-byte UDP frames from a client's address to the upstream host along a
// hand-built route, with no nftables table, and alternates every second:
// no socket, a socket bound to ETH_P_IPV6 (what the relay does), a socket
// bound to ETH_P_ALL with PACKET_IGNORE_OUTGOING. It reports the median
// rate with each socket over the one without.
//
// A socket bound to one protocol on a device sits in the device's
// ptype_specific list, which the receive path walks after ipv6_rcv's
// entry: ipv6_rcv is handed the frame with a second reference, so
// ip6_rcv_core clones it and ip6_forward then copies the cloned head to
// decrement the hop limit. A socket bound to ETH_P_ALL is handed the frame
// first and drops its reference before ipv6_rcv runs.
//
//	go test -run '^$' -bench PacketSocketCost -benchtime 1x ./bench/
func BenchmarkPacketSocketCost(b *testing.B) {
	const cycles, slice = 12, time.Second
	l := lab.NewT(b, lab.Config{Clients: 1, Forwarding: true, Tag: "kbps"})
	dl := l.Downlinks[0]
	p := lab.DefaultPDPool(0)
	p = netip.PrefixFrom(p.Addr(), 56)
	src := p.Addr().Next()
	if out, err := l.Run(l.RelayNS, "ip", "-6", "route", "add", p.String(), "via", dl.PeerLinkLocal.String(), "dev", dl.Name); err != nil {
		b.Fatal(err, out)
	}
	if err := l.AddClientAddr(0, src); err != nil {
		b.Fatal(err)
	}
	if err := l.Ping(l.ClientNS[0], src, lab.UpstreamAddr, 5*time.Second); err != nil {
		b.Fatal(err)
	}
	open := func(proto uint16) int {
		b.Helper()
		var fd int
		err := l.InNS(l.RelayNS, func() error {
			var err error
			if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
				return err
			}
			prog, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
			if err != nil {
				return err
			}
			f := []unix.SockFilter{{Code: prog[0].Op, K: prog[0].K}}
			if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &f[0]}); err != nil {
				return err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto<<8 | proto>>8, Ifindex: dl.Index})
		})
		if err != nil {
			b.Fatalf("packet socket: %v", err)
		}
		return fd
	}
	var none, v6, all, v6Ratio, allRatio []float64
	b.ResetTimer()
	for range cycles {
		x, _ := blastBetween(b, l, l.ClientNS[0], src, l.ServerNS, lab.UpstreamAddr, slice)
		fd := open(unix.ETH_P_IPV6)
		y, _ := blastBetween(b, l, l.ClientNS[0], src, l.ServerNS, lab.UpstreamAddr, slice)
		unix.Close(fd)
		fd = open(unix.ETH_P_ALL)
		z, _ := blastBetween(b, l, l.ClientNS[0], src, l.ServerNS, lab.UpstreamAddr, slice)
		unix.Close(fd)
		none, v6, all = append(none, x), append(v6, y), append(all, z)
		v6Ratio, allRatio = append(v6Ratio, y/x), append(allRatio, z/x)
	}
	b.StopTimer()
	b.Logf("ETH_P_IPV6/none per cycle %.3f", v6Ratio)
	b.Logf("ETH_P_ALL/none per cycle %.3f", allRatio)
	b.ReportMetric(median(none), "none-pps")
	b.ReportMetric(median(v6), "ipv6sock-pps")
	b.ReportMetric(median(all), "allsock-pps")
	b.ReportMetric(median(v6Ratio), "ipv6sock/none")
	b.ReportMetric(median(allRatio), "allsock/none")
}

package bench

import (
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// BenchmarkVethForwarding sends 64-byte frames (2 bytes of UDP payload)
// from a client's delegated address to the upstream host, through the
// relay namespace, first with pdrelay's AF_XDP plane forwarding (kernel
// forwarding off), then with pdrelay stopped and Linux forwarding the same
// prefix, and reports both rates and their ratio. The sender is the same
// in both runs, so the ratio compares the forwarders; on veth both are
// bounded by the copy veth makes (no zero-copy) and by the two cores the
// sender, the forwarder and the receiver share.
//
//	go test -run '^$' -bench VethForwarding -benchtime 1x ./bench/
func BenchmarkVethForwarding(b *testing.B) {
	lab.Require(b, "kea-dhcp6", "dhclient")
	bin := buildPdrelay(b)
	l := lab.NewT(b, lab.Config{Clients: 1})
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 600, PreferredLifetime: 500, RenewTimer: 300, RebindTimer: 400}); err != nil {
		b.Fatal(err)
	}
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("dataplane:\n  mode: xdp\n", ""))
	if err != nil {
		b.Fatal(err)
	}
	prefix, src := delegatedSource(b, l)
	if err := l.Ping(l.ClientNS[0], src, lab.UpstreamAddr, 5*time.Second); err != nil {
		b.Fatalf("no path through pdrelay: %v", err)
	}
	const d = 3 * time.Second
	b.ResetTimer()
	relayPPS, sent1 := blast(b, l, src, d)
	if out, err := r.CLI("stats"); err == nil {
		b.Logf("pdrelay stats after the run:\n%s", out)
	}

	// Linux forwarding in the same namespaces: pdrelay gone (its XDP
	// program detaches), the kernel routes the prefix to the client.
	r.Proc.Signal(syscall.SIGTERM)
	r.Proc.Wait(10 * time.Second)
	if err := l.SetForwarding(true); err != nil {
		b.Fatal(err)
	}
	dl := l.Downlinks[0]
	if out, err := l.Run(l.RelayNS, "ip", "-6", "route", "replace", prefix.String(), "via", dl.PeerLinkLocal.String(), "dev", dl.Name); err != nil {
		b.Fatalf("route: %v %s", err, out)
	}
	if err := l.Ping(l.ClientNS[0], src, lab.UpstreamAddr, 5*time.Second); err != nil {
		b.Fatalf("no path through Linux: %v", err)
	}
	linuxPPS, sent2 := blast(b, l, src, d)
	b.StopTimer()
	b.ReportMetric(relayPPS, "pdrelay-pps")
	b.ReportMetric(linuxPPS, "linux-pps")
	b.ReportMetric(relayPPS/linuxPPS, "pdrelay/linux")
	b.Logf("pdrelay: %.0f pps received (%.0f offered); linux: %.0f pps received (%.0f offered)",
		relayPPS, sent1, linuxPPS, sent2)
}

// blast sends 64-byte frames from src to the upstream host for d with two
// sending goroutines and returns the rate received upstream and the rate
// offered.
func blast(b *testing.B, l *lab.Lab, src netip.Addr, d time.Duration) (recvPPS, sentPPS float64) {
	return blastBetween(b, l, l.ClientNS[0], src, l.ServerNS, lab.UpstreamAddr, d)
}

// blastBetween is blast from src in namespace srcNS to dst (UDP port 9)
// in namespace dstNS.
func blastBetween(b *testing.B, l *lab.Lab, srcNS string, src netip.Addr, dstNS string, dstAddr netip.Addr, d time.Duration) (recvPPS, sentPPS float64) {
	sink, err := l.ListenUDP(dstNS, netip.AddrPortFrom(dstAddr, 9))
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	sink.SetReadBuffer(8 << 20)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		pc := ipv6.NewPacketConn(sink)
		ms := make([]ipv6.Message, 64)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 64)}
		}
		for {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return
			}
			got.Add(int64(n))
		}
	}()
	var sent atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for g := 0; g < 2; g++ {
		conn, err := l.ListenUDP(srcNS, netip.AddrPortFrom(src, 0))
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			pc := ipv6.NewPacketConn(conn)
			dst := &net.UDPAddr{IP: dstAddr.AsSlice(), Port: 9}
			ms := make([]ipv6.Message, 64)
			for i := range ms {
				ms[i] = ipv6.Message{Buffers: [][]byte{{0, 0}}, Addr: dst} // 14+40+8+2 = 64 bytes
			}
			for time.Now().Before(stop) {
				n, err := pc.WriteBatch(ms, 0)
				if err != nil {
					time.Sleep(time.Microsecond)
					continue
				}
				sent.Add(int64(n))
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // let the last frames land
	elapsed := time.Since(start).Seconds() - 0.2
	sink.Close()
	<-done
	if got.Load() == 0 {
		b.Fatalf("nothing arrived at %s (%d sent)", dstAddr, sent.Load())
	}
	return float64(got.Load()) / elapsed, float64(sent.Load()) / elapsed
}

// delegatedSource has the lab's first client (dhclient) get a prefix
// through the running relay and gives its interface the prefix's first
// address, the source the benchmarks send from.
func delegatedSource(b *testing.B, l *lab.Lab) (netip.Prefix, netip.Addr) {
	b.Helper()
	c, err := l.StartDhclient(0, lab.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ps, err := c.WaitPrefix(20 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	src := ps[0].Addr().Next()
	if err := l.AddClientAddr(0, src); err != nil {
		b.Fatal(err)
	}
	return ps[0], src
}

// buildPdrelay builds ../cmd/pdrelay into the benchmark's temporary
// directory and returns its path.
func buildPdrelay(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "pdrelay")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/pdrelay").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

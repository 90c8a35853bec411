package bench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// BenchmarkXDPVariants measures pdrelay's xdp mode over the lab's veths
// for several variants in one run, alternating them round by round, and
// reports each variant's median: pps delivered upstream (blast from the
// client, as BenchmarkVethForwarding, or trafgen at a fixed rate), pps
// offered, and the relay's own CPU time (user + system, from
// /proc/PID/stat) per delivered packet. Each round also logs the relay's
// loss counters (pdrelay stats, or xskfwd's JSON line) and the losses
// after it (up0's tx drops, the sink's UDP buffer overflows).
//
// Variants are binaries times queue counts:
//
//	XDPV_BINS="old=/tmp/pdrelay.old,new=/tmp/pdrelay.new"  (default: ../cmd/pdrelay built as "cur")
//	XDPV_QUEUES="1,2"    dataplane.queues values (default 1)
//	XDPV_ROUNDS=5        rounds (default 3)
//	XDPV_SECONDS=3       seconds per measurement (default 3)
//	XDPV_PERF=/tmp/prof  record `perf record -a -g` during each variant's
//	                     first round to /tmp/prof-<bin>-q<queues>.data
//	XDPV_XSKFWD=/path/to/xskfwd   add the minimal forwarder (bench/cmd/xskfwd)
//	                     as a variant: the ceiling. It does not complete
//	                     checksums, so use it with XDPV_TRAFGEN.
//	XDPV_TRAFGEN=50000pps   send with trafgen (one process, finished
//	                     checksums) at this rate instead of blast
//
// When a queue count above 1 is asked for, the lab's veths (up0 and dl0,
// and their peers) get as many channels as each variant has queues, with
// `ethtool -L` (veths allocate a queue per possible CPU and use one
// unless told), in the lab's own namespaces.
//
//	XDPV_QUEUES=1,2 go test -run '^$' -bench XDPVariants -benchtime 1x ./bench/
func BenchmarkXDPVariants(b *testing.B) {
	lab.Require(b, "kea-dhcp6", "dhclient")
	type bin struct {
		name, path string
		xskfwd     bool // the minimal forwarder, not pdrelay
	}
	var bins []bin
	if s := os.Getenv("XDPV_BINS"); s != "" {
		for _, kv := range strings.Split(s, ",") {
			name, path, ok := strings.Cut(kv, "=")
			if !ok {
				b.Fatalf("XDPV_BINS entry %q: want name=path", kv)
			}
			bins = append(bins, bin{name: name, path: path})
		}
	} else {
		p := buildPdrelay(b)
		bins = []bin{{name: "cur", path: p}}
	}
	if p := os.Getenv("XDPV_XSKFWD"); p != "" {
		bins = append(bins, bin{"xskfwd", p, true})
	}
	queues := []int{1}
	if s := os.Getenv("XDPV_QUEUES"); s != "" {
		queues = nil
		for _, f := range strings.Split(s, ",") {
			q, err := strconv.Atoi(f)
			if err != nil || q < 1 {
				b.Fatalf("XDPV_QUEUES %q", s)
			}
			queues = append(queues, q)
		}
	}
	envInt := func(k string, d int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return d
	}
	rounds := envInt("XDPV_ROUNDS", 3)
	d := time.Duration(envInt("XDPV_SECONDS", 3)) * time.Second
	perf := os.Getenv("XDPV_PERF")
	rate := os.Getenv("XDPV_TRAFGEN")

	l := lab.NewT(b, lab.Config{Clients: 1, Tag: "cx"})
	// channels gives the lab's four veth ends q queues each: with fewer
	// sockets than queues, frames on the others would go to the kernel
	// (xdp_no_socket), so each variant gets as many as it has sockets.
	channels := func(q int) {
		dl := l.Downlinks[0]
		for _, e := range []struct{ ns, dev string }{
			{l.RelayNS, "up0"}, {l.ServerNS, "eth0"}, {l.RelayNS, dl.Name}, {dl.PeerNS, "eth0"},
		} {
			if out, err := l.Run(e.ns, "ethtool", "-L", e.dev, "rx", strconv.Itoa(q), "tx", strconv.Itoa(q)); err != nil {
				b.Fatalf("ethtool -L %s rx %d tx %d in %s: %v %s", e.dev, q, q, e.ns, err, out)
			}
		}
	}
	if slices.Max(queues) > 1 {
		channels(queues[0])
	}
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 3600, PreferredLifetime: 3000, RenewTimer: 1800, RebindTimer: 2400}); err != nil {
		b.Fatal(err)
	}
	config := func(q int) string {
		return l.PdrelayConfig(fmt.Sprintf("dataplane:\n  mode: xdp\n  queues: %d\n", q), "")
	}
	r, err := l.StartPdrelay(bins[0].path, config(queues[0]))
	if err != nil {
		b.Fatal(err)
	}
	_, src := delegatedSource(b, l)

	running := true // r, the pdrelay started above
	type sample struct{ recv, sent, cpuNs float64 }
	results := map[string][]sample{}
	var order []string
	b.ResetTimer()
	for round := range rounds {
		for _, bn := range bins {
			for _, q := range queues {
				name := fmt.Sprintf("%s-q%d", bn.name, q)
				if round == 0 {
					order = append(order, name)
				}
				if running {
					if err := r.Stop(syscall.SIGTERM); err != nil {
						b.Fatal(err)
					}
					running = false
				}
				if slices.Max(queues) > 1 {
					channels(q)
				}
				var pid int
				var stats func() string
				if bn.xskfwd {
					dl := l.Downlinks[0]
					x, err := l.Start(l.RelayNS, "xskfwd", bn.path, "-a", dl.Name, "-b", l.Uplink.Name,
						"-mac-a", dl.PeerMAC.String(), "-mac-b", l.Uplink.PeerMAC.String(), "-queues", strconv.Itoa(q))
					if err != nil {
						b.Fatal(err)
					}
					if err := x.WaitLog("ready", 10*time.Second); err != nil {
						b.Fatal(err)
					}
					pid = x.Pid()
					stats = func() string {
						_ = x.Signal(syscall.SIGTERM)
						_ = x.Wait(10 * time.Second)
						lines := strings.Split(strings.TrimSpace(x.Log()), "\n")
						return lines[len(lines)-1]
					}
				} else {
					r.Bin = bn.path
					if err := r.WriteConfig(config(q)); err != nil {
						b.Fatal(err)
					}
					if err := r.Start(); err != nil {
						b.Fatal(err)
					}
					running = true
					pid = r.Proc.Pid()
					stats = func() string {
						out, err := r.CLI("stats")
						if err != nil {
							return err.Error()
						}
						return out
					}
				}
				if err := l.Ping(l.ClientNS[0], src, lab.UpstreamAddr, 10*time.Second); err != nil {
					b.Fatalf("%s: no path through the relay: %v", name, err)
				}
				var rec *exec.Cmd
				if perf != "" && round == 0 {
					rec = exec.Command("perf", "record", "-a", "-g", "-q", "-o", fmt.Sprintf("%s-%s.data", perf, name), "--", "sleep", strconv.Itoa(int(d/time.Second)))
					if err := rec.Start(); err != nil {
						b.Fatalf("perf record: %v", err)
					}
				}
				loss0 := pathLosses(b, l)
				cpu0 := procCPU(b, pid)
				var recv, sent float64
				if rate != "" {
					recv, sent = trafgen(b, l, src, rate, d)
				} else {
					recv, sent = blast(b, l, src, d)
				}
				cpu1 := procCPU(b, pid)
				loss1 := pathLosses(b, l)
				if rec != nil {
					if err := rec.Wait(); err != nil {
						b.Logf("perf record: %v", err)
					}
				}
				delivered := recv * (d.Seconds())
				s := sample{recv, sent, float64(cpu1-cpu0) / delivered}
				results[name] = append(results[name], s)
				b.Logf("round %d %s: %.0f pps delivered, %.0f offered, %.0f ns relay CPU per delivered packet; after the relay: up0 tx dropped %d, sink Udp6RcvbufErrors %d",
					round, name, s.recv, s.sent, s.cpuNs, loss1.upTxDropped-loss0.upTxDropped, loss1.sinkRcvbuf-loss0.sinkRcvbuf)
				b.Logf("%s round %d: stats:\n%s", name, round, stats())
			}
		}
	}
	b.StopTimer()
	for _, name := range order {
		var recv, sent, cpu []float64
		for _, s := range results[name] {
			recv, sent, cpu = append(recv, s.recv), append(sent, s.sent), append(cpu, s.cpuNs)
		}
		b.Logf("%s: median of %d: %.0f pps delivered (all %.0f), %.0f offered, %.0f ns CPU/packet (all %.0f)",
			name, len(recv), median(recv), recv, median(sent), median(cpu), cpu)
		b.ReportMetric(median(recv), name+"-pps")
		b.ReportMetric(median(cpu), name+"-cpu-ns/pkt")
	}
}

// procCPU is a process's user + system CPU time in nanoseconds.
func procCPU(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces), from field 3 on.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)    // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)    // field 15
	return (ut + st) * int64(time.Second) / 100 // USER_HZ
}

// losses are the counters of frames lost after pdrelay sent them: up0's
// TX drops (the veth could not hand the frame to its peer: xsk's sendto
// returns EBUSY and completes the frame) and the sink's UDP receive
// buffer overflows.
type losses struct{ upTxDropped, sinkRcvbuf int64 }

func pathLosses(b *testing.B, l *lab.Lab) losses {
	var out losses
	if s, err := l.Run(l.RelayNS, "cat", "/sys/class/net/up0/statistics/tx_dropped"); err == nil {
		out.upTxDropped, _ = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	}
	if s, err := l.Run(l.ServerNS, "cat", "/proc/net/snmp6"); err == nil {
		for _, line := range strings.Split(s, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
				out.sinkRcvbuf, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return out
}

// trafgen sends 64-byte UDP frames from src (in the client namespace) to
// the upstream host's port 9 at rate (trafgen's -b, say "50000pps") for
// d with one trafgen process, and returns the rate received upstream and
// the rate trafgen reports it sent. Unlike blast's UDP sockets its frames
// carry finished checksums, so a forwarder that does not complete
// checksums (xskfwd) delivers them too. trafgen runs with --no-sock-mem and
// --notouch-irq: it
// touches no socket memory sysctl and no IRQ affinity.
func trafgen(b *testing.B, l *lab.Lab, src netip.Addr, rate string, d time.Duration) (recvPPS, sentPPS float64) {
	dl := l.Downlinks[0]
	var cfg strings.Builder
	hexes := func(bs []byte) {
		for _, x := range bs {
			fmt.Fprintf(&cfg, "0x%02x, ", x)
		}
	}
	cfg.WriteString("{ ")
	hexes(dl.MAC)                                           // to the relay's downlink
	hexes(dl.PeerMAC)                                       // from the client
	hexes([]byte{0x86, 0xdd, 0x60, 0, 0, 0, 0, 10, 17, 64}) // IPv6, payload 10, UDP, hop limit 64
	s16, d16 := src.As16(), lab.UpstreamAddr.As16()
	hexes(s16[:])
	hexes(d16[:])
	hexes([]byte{0x30, 0x39, 0, 9, 0, 10}) // ports 12345 -> 9, length 10
	cfg.WriteString("csumudp6(14, 54), 0x00, 0x00 }\n")
	path := filepath.Join(b.TempDir(), "udp.trafgen")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	sink, err := l.ListenUDP(l.ServerNS, netip.AddrPortFrom(lab.UpstreamAddr, 9))
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	sink.SetReadBuffer(8 << 20)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", dl.PeerNS, "timeout", "-s", "INT", strconv.Itoa(int(d/time.Second)),
		"trafgen", "-o", "eth0", "-i", path, "-P", "1", "-b", rate, "--no-sock-mem", "--notouch-irq").CombinedOutput()
	elapsed := time.Since(start).Seconds()
	time.Sleep(200 * time.Millisecond)
	sink.Close()
	<-done
	var sent float64
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "packets" && f[2] == "outgoing" {
			sent, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if got.Load() == 0 || sent == 0 {
		b.Fatalf("trafgen: %d received of %v sent (%v): %s", got.Load(), sent, err, out)
	}
	return float64(got.Load()) / elapsed, sent / elapsed
}

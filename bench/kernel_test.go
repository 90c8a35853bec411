package bench

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
)

// BenchmarkKernelForwarding compares pdrelay's kernel mode with the
// same forwarding set up by hand, in one lab and one run: both are the
// Linux kernel, so the rates should match within noise. IPv6 forwarding
// is on in the relay namespace (the benchmark owns it: it models the
// router), every host keeps its default offloads.
//
//   - pdrelay: dataplane.mode kernel, its route for the client's
//     delegated prefix (protocol 157, via the client's link-local address
//     on dl0) and its nftables table (ip6 pdrelay: sources, loops,
//     forwarded counts).
//   - hand-built: pdrelay stopped with kernel.flush_on_stop (its route and
//     table go), then `ip -6 route add <prefix> via <client LL> dev dl0`
//     and a table written with nft(8) that checks the same sources and
//     loops: the delegated prefix in an interval set, a drop for a source
//     outside it and one for a packet that would go back out of dl0 to it.
//
// Each of rounds rounds measures both, in turn A B, B A, A B, ..., each
// for slice in both directions with 64-byte UDP frames (blast): client
// (delegated address) to upstream host ("up"), and upstream host to
// client ("down"). Each round gives a ratio pdrelay/hand-built per direction; the medians of
// the ratios are reported with each side's median rate and the sender's
// median offered rate. The sender, the forwarder and the receiver share
// the machine's cores: the rates are this machine's, the ratios are what
// to read.
//
//	go test -run '^$' -bench KernelForwarding -benchtime 1x -count 3 ./bench/
func BenchmarkKernelForwarding(b *testing.B) {
	const rounds, slice = 6, 1500 * time.Millisecond
	lab.Require(b, "kea-dhcp6", "dhclient", "nft")
	bin := buildPdrelay(b)
	l := lab.NewT(b, lab.Config{Clients: 1, Forwarding: true, Tag: "kb"})
	if on, err := l.Forwarding(); err != nil || !on {
		b.Fatalf("IPv6 forwarding in the relay namespace must be on: %v %v", on, err)
	}
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 600, PreferredLifetime: 500, RenewTimer: 300, RebindTimer: 400}); err != nil {
		b.Fatal(err)
	}
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("dataplane:\n  mode: kernel\nkernel:\n  flush_on_stop: true\n", ""))
	if err != nil {
		b.Fatal(err)
	}
	if !strings.Contains(r.Proc.Log(), "mode=kernel") {
		b.Fatalf("pdrelay does not run in kernel mode:\n%s", r.Proc.Log())
	}
	p, src := delegatedSource(b, l)
	spoof := netip.MustParseAddr("2001:db8:ff00::66")
	if err := l.AddClientAddr(0, spoof); err != nil {
		b.Fatal(err)
	}
	dl := l.Downlinks[0]
	hand := handBuilt(b, l, p, dl)

	// spoofDrops reads the drops of dl0's source check: a counter named
	// drops_dl0 in both tables.
	spoofDrops := func(table string) int {
		b.Helper()
		out, err := l.Run(l.RelayNS, "nft", "list", "counter", "ip6", table, "drops_dl0")
		if err != nil {
			b.Fatal(err)
		}
		var n int
		if _, rest, ok := strings.Cut(out, "packets "); !ok {
			b.Fatalf("no packets in %q", out)
		} else if _, err := fmt.Sscan(rest, &n); err != nil {
			b.Fatalf("packets in %q: %v", out, err)
		}
		return n
	}
	// ready checks a side before it is measured: the prefix is routed,
	// the client's address reaches the upstream host and back, a spoofed
	// source does not.
	ready := func(side, table string) {
		b.Helper()
		if err := l.Ping(l.ClientNS[0], src, lab.UpstreamAddr, 5*time.Second); err != nil {
			b.Fatalf("%s: no path from %s: %v", side, src, err)
		}
		if err := l.Ping(l.ServerNS, lab.UpstreamAddr, src, 5*time.Second); err != nil {
			b.Fatalf("%s: no path to %s: %v", side, src, err)
		}
		before := spoofDrops(table)
		if err := l.Ping(l.ClientNS[0], spoof, lab.UpstreamAddr, 500*time.Millisecond); err == nil {
			b.Fatalf("%s: the spoofed source %s reached the upstream host", side, spoof)
		}
		// No answer alone proves little: the upstream host has no route
		// back to the spoofed source either. The table must have dropped it.
		if after := spoofDrops(table); after <= before {
			b.Fatalf("%s: table %s did not drop the spoofed source (drops_dl0 %d, then %d)", side, table, before, after)
		}
	}
	pdrelayUp := func() {
		b.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := l.Run(l.RelayNS, "ip", "-6", "route", "show", p.String(), "proto", fmt.Sprint(kroute.Protocol))
			_, err := l.Run(l.RelayNS, "nft", "list", "table", "ip6", "pdrelay")
			if strings.Contains(out, dl.PeerLinkLocal.String()) && err == nil {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("pdrelay wrote no route for %s or no table: route %q, table: %v\n%s", p, out, err, r.Proc.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pdrelayUp()

	type rates struct{ up, down, sent float64 }
	measure := func() rates {
		var x rates
		x.up, x.sent = blastBetween(b, l, l.ClientNS[0], src, l.ServerNS, lab.UpstreamAddr, slice)
		x.down, _ = blastBetween(b, l, l.ServerNS, lab.UpstreamAddr, l.ClientNS[0], src, slice)
		return x
	}
	// The sides go A B, B A, A B, ...: each round measures both, in the
	// other order than the round before, so that a drift of the machine
	// between the first and the second half of a round does not favour
	// one side, and the side changes once a round.
	const pdrelaySide, handSide = "pdrelay", "hand-built"
	side := pdrelaySide
	switchTo := func(to string) {
		b.Helper()
		if to == side {
			return
		}
		if to == handSide {
			if err := r.Stop(syscall.SIGTERM); err != nil {
				b.Fatal(err)
			}
			// kernel.flush_on_stop: nothing of pdrelay's stays to forward.
			if out, _ := l.Run(l.RelayNS, "ip", "-6", "route", "show", "proto", fmt.Sprint(kroute.Protocol)); strings.TrimSpace(out) != "" {
				b.Fatalf("pdrelay's routes outlived it with flush_on_stop: %s", out)
			}
			if _, err := l.Run(l.RelayNS, "nft", "list", "table", "ip6", "pdrelay"); err == nil {
				b.Fatal("pdrelay's nftables table outlived it with flush_on_stop")
			}
			hand.install()
		} else {
			hand.remove()
			if err := r.Start(); err != nil {
				b.Fatal(err)
			}
			pdrelayUp()
		}
		side = to
	}
	var relay, manual []rates
	b.ResetTimer()
	for i := range rounds {
		order := []string{pdrelaySide, handSide}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, s := range order {
			switchTo(s)
			ready(s, map[string]string{pdrelaySide: "pdrelay", handSide: "handbuilt"}[s])
			if s == pdrelaySide {
				relay = append(relay, measure())
			} else {
				manual = append(manual, measure())
			}
		}
	}
	b.StopTimer()
	if side == pdrelaySide {
		if out, err := r.CLI("stats"); err == nil {
			b.Logf("pdrelay stats after its last round (since its last start):\n%s", out)
		}
	}
	switchTo(handSide)
	if out, err := l.Run(l.RelayNS, "nft", "list", "table", "ip6", "handbuilt"); err == nil {
		b.Logf("the hand-built table after its last round:\n%s", out)
	}

	var upRatio, downRatio, sent []float64
	for i := range relay {
		upRatio = append(upRatio, relay[i].up/manual[i].up)
		downRatio = append(downRatio, relay[i].down/manual[i].down)
		sent = append(sent, relay[i].sent, manual[i].sent)
		b.Logf("round %d: up pdrelay %.0f hand-built %.0f pps (%.3f); down pdrelay %.0f hand-built %.0f pps (%.3f); offered %.0f / %.0f pps",
			i+1, relay[i].up, manual[i].up, upRatio[i], relay[i].down, manual[i].down, downRatio[i], relay[i].sent, manual[i].sent)
	}
	pick := func(rs []rates, f func(rates) float64) []float64 {
		var out []float64
		for _, x := range rs {
			out = append(out, f(x))
		}
		return out
	}
	up := func(x rates) float64 { return x.up }
	down := func(x rates) float64 { return x.down }
	b.ReportMetric(median(pick(relay, up)), "pdrelay-up-pps")
	b.ReportMetric(median(pick(manual, up)), "handbuilt-up-pps")
	b.ReportMetric(median(upRatio), "up-pdrelay/handbuilt")
	b.ReportMetric(median(pick(relay, down)), "pdrelay-down-pps")
	b.ReportMetric(median(pick(manual, down)), "handbuilt-down-pps")
	b.ReportMetric(median(downRatio), "down-pdrelay/handbuilt")
	b.ReportMetric(median(sent), "offered-pps")
}

// handSetup is the hand-built equivalent of pdrelay's kernel mode for
// one delegated prefix on one point-to-point downlink.
type handSetup struct {
	install, remove func()
}

// handBuilt returns the hand-built route and nftables table for prefix p
// delegated on downlink dl, written with ip(8) and nft(8).
func handBuilt(b *testing.B, l *lab.Lab, p netip.Prefix, dl lab.Link) handSetup {
	b.Helper()
	// The delegated prefix is both the allowed sources of dl and the
	// destinations that must not go back out of it (a loop).
	ruleset := fmt.Sprintf(`table ip6 handbuilt {
	counter drops_%[1]s { }
	set %[1]s_delegated {
		type ipv6_addr
		flags interval
		elements = { %[2]s }
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "%[1]s" ip6 saddr != @%[1]s_delegated counter name "drops_%[1]s" drop
		iifname "%[1]s" oifname "%[1]s" ip6 daddr @%[1]s_delegated counter drop
	}
}
`, dl.Name, p)
	file := filepath.Join(b.TempDir(), "handbuilt.nft")
	if err := os.WriteFile(file, []byte(ruleset), 0o644); err != nil {
		b.Fatal(err)
	}
	route := []string{"ip", "-6", "route", "add", p.String(), "via", dl.PeerLinkLocal.String(), "dev", dl.Name}
	return handSetup{
		install: func() {
			b.Helper()
			if out, err := l.Run(l.RelayNS, route...); err != nil {
				b.Fatalf("hand-built route: %v %s", err, out)
			}
			if out, err := l.Run(l.RelayNS, "nft", "-f", file); err != nil {
				b.Fatalf("hand-built table: %v %s", err, out)
			}
		},
		remove: func() {
			b.Helper()
			route[3] = "del"
			defer func() { route[3] = "add" }()
			if out, err := l.Run(l.RelayNS, route...); err != nil {
				b.Fatalf("hand-built route: %v %s", err, out)
			}
			if out, err := l.Run(l.RelayNS, "nft", "delete", "table", "ip6", "handbuilt"); err != nil {
				b.Fatalf("hand-built table: %v %s", err, out)
			}
		},
	}
}

// median returns the median of xs (the mean of the middle two for an
// even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

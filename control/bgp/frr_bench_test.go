package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// The scale benchmark announces many prefixes to FRR (bgpd and zebra) in
// a lab namespace and measures how long FRR takes to hold them all. The
// Speaker must open its sockets inside the relay namespace, which a Go
// process cannot do for threads it does not own, so the benchmark runs
// the Speaker in a child: this test binary again, under `ip netns exec`,
// in TestFRRSpeakerChild.
//
//	go test -run '^$' -bench AnnounceToFRR -benchtime 1x ./control/bgp/   # as root, frr installed

const childEnv = "PDRELAY_BGP_BENCH_CHILD" // the number of prefixes

// benchPrefix is the i-th /56 of 2001:db8::/32 from 2001:db8:100::/56.
func benchPrefix(i int) netip.Prefix {
	i += 0x100
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)}), 56)
}

func BenchmarkAnnounceToFRR(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchAnnounce(b, n) })
	}
}

func benchAnnounce(b *testing.B, n int) {
	lab.Require(b, "zebra", "bgpd", "vtysh")
	for range b.N {
		b.StopTimer()
		// A new lab and FRR each time: FRR keeps the routes of a
		// speaker that stopped (graceful restart).
		l, err := lab.New(lab.Config{Tag: "bg", NoPoolRoute: true, Logf: b.Logf})
		if err != nil {
			b.Fatal(err)
		}
		f, err := l.StartFRR(lab.FRROptions{})
		if err != nil {
			l.Close()
			b.Fatal(err)
		}
		logPath := filepath.Join(l.Dir, "speaker.log")
		logf, err := os.Create(logPath)
		if err != nil {
			b.Fatal(err)
		}
		cmd := l.Exec(l.RelayNS, os.Args[0], "-test.run=^TestFRRSpeakerChild$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(n))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

		b.StartTimer()
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var up, all, fib time.Duration
		for deadline := start.Add(10 * time.Minute); all == 0 || fib == 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				break
			}
			if up == 0 {
				if s, err := f.Session(lab.RelayUplinkAddr); err == nil && s.State == "Established" {
					up = time.Since(start)
				}
				continue
			}
			if all == 0 {
				if c, err := f.RouteCount(); err == nil && c >= n {
					all = time.Since(start)
				}
			}
			if fib == 0 {
				if c, err := fibCount(f); err == nil && c >= n {
					fib = time.Since(start)
				}
			}
		}
		b.StopTimer()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if all == 0 || fib == 0 {
			log, _ := os.ReadFile(logPath)
			l.Close()
			b.Fatalf("FRR never held %d prefixes (up %v, bgp %v, fib %v); speaker log:\n%s", n, up, all, fib, log)
		}
		took := speakerTook(logPath)
		l.Close()
		b.ReportMetric(all.Seconds(), "s-to-bgpd")
		b.ReportMetric(fib.Seconds(), "s-to-fib")
		b.ReportMetric(float64(n)/(all-up).Seconds(), "prefixes/s")
		b.Logf("%d prefixes: speaker table built in %s; session up %v after the start, bgpd holds all %v, kernel (zebra) %v; %.0f prefixes/s from session up to bgpd",
			n, took, up.Round(time.Millisecond), all.Round(time.Millisecond), fib.Round(time.Millisecond), float64(n)/(all-up).Seconds())
	}
}

// fibCount is how many BGP routes zebra has installed in the kernel.
func fibCount(f *lab.FRR) (int, error) {
	out, err := f.Vtysh("show ipv6 route summary json")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Routes []struct {
			Type string `json:"type"`
			FIB  int    `json:"fib"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, fmt.Errorf("show ipv6 route summary json: %w: %.200s", err, out)
	}
	for _, r := range doc.Routes {
		if r.Type == "ebgp" {
			return r.FIB, nil
		}
	}
	return 0, nil
}

// speakerTook reads how long the child's Speaker took to build its table
// (its "bgp speaker started" log line).
func speakerTook(path string) string {
	fh, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "bgp speaker started" {
			if ns, ok := rec["took"].(float64); ok {
				return time.Duration(ns).String()
			}
		}
	}
	return "?"
}

// TestFRRSpeakerChild is the benchmark's Speaker, run in the lab's relay
// namespace: it announces $PDRELAY_BGP_BENCH_CHILD restored prefixes to
// the lab's FRR until SIGTERM. It skips when not run by the benchmark.
func TestFRRSpeakerChild(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(childEnv))
	if err != nil {
		t.Skip("run by BenchmarkAnnounceToFRR only")
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(Config{
		ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), NextHop: lab.RelayUplinkAddr,
		Neighbors: []Neighbor{{Address: lab.ServerAddr, ASN: 65000}},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	s.Restore(func(yield func(netip.Prefix) bool) {
		for i := range n {
			if !yield(benchPrefix(i)) {
				return
			}
		}
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

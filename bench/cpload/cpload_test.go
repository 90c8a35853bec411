package cpload

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// shim stands in for a relay on loopback: it wraps each client message
// in a Relay-Forward, lets r answer it, and sends the inner message of
// the Relay-Reply back. Every dropEvery-th message (0: none) is lost.
func shim(t *testing.T, r *Responder, dropEvery int) (*net.UDPConn, *atomic.Uint64) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	var dropped atomic.Uint64
	go func() {
		buf := make([]byte, 65536)
		var fwd, rep []byte
		for n := 1; ; n++ {
			k, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if dropEvery > 0 && n%dropEvery == 0 {
				dropped.Add(1)
				continue
			}
			fwd = dhcp6.AppendRelayHeader(fwd[:0], dhcp6.MsgRelayForw, 0, netip.IPv6Unspecified(), netip.MustParseAddr("fe80::2"))
			fwd = dhcp6.AppendOption(fwd, dhcp6.OptInterfaceID, []byte("dl0"))
			fwd = dhcp6.AppendOption(fwd, dhcp6.OptRelayMsg, buf[:k])
			if rep, err = r.Answer(rep[:0], fwd); err != nil {
				continue
			}
			rr, err := dhcp6.ParseRelay(rep)
			if err != nil {
				continue
			}
			if id, _ := rr.InterfaceID(); string(id) != "dl0" || rr.PeerAddr != netip.MustParseAddr("fe80::2") {
				continue // the relay could not deliver it
			}
			_, _ = c.WriteToUDPAddrPort(rr.Inner, from)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return c, &dropped
}

// TestGeneratorLoopback runs every phase for 2,000 clients through the
// responder on loopback, one message in 7 lost: every client binds the
// responder's prefix for its DUID, renews it and releases it, the lost
// messages are sent again, and nothing is left bound.
func TestGeneratorLoopback(t *testing.T) {
	r := NewResponder()
	s, dropped := shim(t, r, 7)
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 2000
	g, err := NewGenerator(GenConfig{Conn: c, Dst: s.LocalAddr().(*net.UDPAddr).AddrPort(), Clients: n, Window: 64, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go g.Receive()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wantSent := map[Phase]uint64{PhaseBind: 2 * n, PhaseRenew: n, PhaseRelease: n}
	for _, p := range []Phase{PhaseBind, PhaseRenew, PhaseRelease} {
		res, err := g.RunPhase(ctx, p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if res.Failed != 0 || res.Clients != n {
			t.Fatalf("%s: %d of %d clients failed", p, res.Failed, res.Clients)
		}
		if res.Sent != wantSent[p]+res.Retransmits {
			t.Errorf("%s: sent %d, want %d messages and %d retransmissions", p, res.Sent, wantSent[p], res.Retransmits)
		}
		if p == PhaseBind {
			bs := g.Bindings()
			if len(bs) != n {
				t.Fatalf("bound %d clients, want %d", len(bs), n)
			}
			seen := map[netip.Prefix]bool{}
			for _, b := range bs {
				if want := PrefixFor(ClientDUID(b.Client)); b.Prefix != want {
					t.Fatalf("client %d holds %s, want %s", b.Client, b.Prefix, want)
				}
				if seen[b.Prefix] {
					t.Fatalf("prefix %s delegated twice", b.Prefix)
				}
				seen[b.Prefix] = true
				if b.ReplyAt.Before(g.epoch) || time.Since(b.ReplyAt) > time.Minute {
					t.Fatalf("client %d: reply time %v not during the run", b.Client, b.ReplyAt)
				}
			}
		}
	}
	if dropped.Load() == 0 || g.Retransmits.Load() < dropped.Load() {
		t.Errorf("lost %d messages but retransmitted %d", dropped.Load(), g.Retransmits.Load())
	}
	if bs := g.Bindings(); len(bs) != 0 {
		t.Errorf("%d clients still bound after release", len(bs))
	}
	if g.Unparsable.Load() != 0 {
		t.Errorf("%d unparsable answers", g.Unparsable.Load())
	}
	// Every answer's time is the kernel's, taken as it arrived.
	if got := g.NoStamp.Load(); got != 0 {
		t.Errorf("%d of %d answers without the kernel's receive time", got, g.Received.Load())
	}
}

// TestGeneratorGivesUp: a client whose messages all go unanswered fails
// after MaxTries sends, and the phase still ends.
func TestGeneratorGivesUp(t *testing.T) {
	sink, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer sink.Close()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := NewGenerator(GenConfig{Conn: c, Dst: sink.LocalAddr().(*net.UDPAddr).AddrPort(), Clients: 3, Timeout: 10 * time.Millisecond, MaxTries: 3})
	if err != nil {
		t.Fatal(err)
	}
	go g.Receive()
	res, err := g.RunPhase(context.Background(), PhaseBind)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 3 || res.Sent != 9 || res.Retransmits != 6 {
		t.Errorf("failed %d sent %d retransmits %d, want 3, 9, 6", res.Failed, res.Sent, res.Retransmits)
	}
	// Nothing bound: renew has nobody to renew.
	res, err = g.RunPhase(context.Background(), PhaseRenew)
	if err != nil || res.Failed != 3 || res.Sent != 0 {
		t.Errorf("renew after a failed bind: %+v %v", res, err)
	}
}

// relayForwardSolicit is a Relay-Forward of a Solicit as pdrelay sends it.
var relayForwardSolicit = []byte{
	12, 0, // Relay-Forward, hop count 0
	0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // link-address fd00:0:0:1::1
	0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // peer-address fe80::2
	0, 18, 0, 3, 'd', 'l', '0', // Interface-ID "dl0"
	0, 9, 0, 40, // Relay Message, 40 bytes:
	1, 0xab, 0xcd, 0xef, // Solicit, xid abcdef
	0, 1, 0, 10, 0, 3, 0, 1, 0x0a, 0, 0, 0, 0x01, 0x02, // Client ID: DUID-LL 0a:00:00:00:01:02 (client 258)
	0, 8, 0, 2, 0, 0, // Elapsed Time 0
	0, 25, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, // IA_PD IAID 1, T1 0, T2 0
}

func TestResponderAnswer(t *testing.T) {
	r := NewResponder()
	tests := []struct {
		name    string
		typ     dhcp6.MessageType // replaces the inner message's type
		want    dhcp6.MessageType
		prefix  bool
		wantErr bool
	}{
		{"solicit", dhcp6.MsgSolicit, dhcp6.MsgAdvertise, true, false},
		{"request", dhcp6.MsgRequest, dhcp6.MsgReply, true, false},
		{"renew", dhcp6.MsgRenew, dhcp6.MsgReply, true, false},
		{"release", dhcp6.MsgRelease, dhcp6.MsgReply, false, false},
		{"information-request", dhcp6.MsgInformationRequest, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := bytes.Clone(relayForwardSolicit)
			in[45] = byte(tt.typ) // the inner message's type byte
			out, err := r.Answer(nil, in)
			if tt.wantErr {
				if !errors.Is(err, errNotAnswered) {
					t.Fatalf("err %v, want %v", err, errNotAnswered)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rr, err := dhcp6.ParseRelay(out)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Type != dhcp6.MsgRelayRepl || rr.HopCount != 0 || !bytes.Equal(out[2:34], in[2:34]) {
				t.Errorf("relay header % x, want the Relay-Forward's addresses", out[:34])
			}
			if id, _ := rr.InterfaceID(); string(id) != "dl0" {
				t.Errorf("interface-id %q", id)
			}
			m, err := ParseServerMsg(rr.Inner)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != tt.want || m.XID != [3]byte{0xab, 0xcd, 0xef} || !bytes.Equal(m.DUID, ClientDUID(258)) || !bytes.Equal(m.ServerID, r.ServerID) {
				t.Errorf("answer %+v", m)
			}
			wantPrefix := netip.Prefix{}
			if tt.prefix {
				wantPrefix = netip.MustParsePrefix("2001:db8:1:200::/56") // /56 number 258: 0x102 << 8
			}
			if m.Prefix != wantPrefix || m.HasIA != tt.prefix || m.Status != dhcp6.StatusSuccess {
				t.Errorf("prefix %s (ia %v, status %d), want %s", m.Prefix, m.HasIA, m.Status, wantPrefix)
			}
		})
	}
}

func TestPrefixFor(t *testing.T) {
	for _, tt := range []struct {
		duid []byte
		want string
	}{
		{ClientDUID(0), "2001:db8::/56"},
		{ClientDUID(1), "2001:db8:0:100::/56"},
		{ClientDUID(258), "2001:db8:1:200::/56"},
		{ClientDUID(MaxClients - 1), "2001:db8:ffff:ff00::/56"},
	} {
		if got := PrefixFor(tt.duid); got.String() != tt.want {
			t.Errorf("PrefixFor(% x) = %s, want %s", tt.duid, got, tt.want)
		}
	}
	// Any other DUID lands in the pool too.
	if p := PrefixFor([]byte{0, 1, 2, 3}); !DelegatedPool.Contains(p.Addr()) || p.Bits() != 56 {
		t.Errorf("foreign DUID: %s", p)
	}
}

func TestParseMetrics(t *testing.T) {
	in := "# HELP x y\n# TYPE pdrelay_bindings gauge\npdrelay_bindings{interface=\"dl0\"} 3\npdrelay_bindings{interface=\"dl1\"} 4\n" +
		"process_cpu_seconds_total 1.5\ngo_memstats_next_gc_bytes 4.194304e+06\npdrelay_dhcp_messages_total{direction=\"up\",type=\"solicit\"} 7 1700000000\n"
	s, err := parseMetrics(strings.NewReader(in), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"pdrelay_bindings", nil, 7},
		{"pdrelay_bindings", []string{`interface="dl1"`}, 4},
		{"process_cpu_seconds_total", nil, 1.5},
		{"go_memstats_next_gc_bytes", nil, 4194304},
		{"pdrelay_dhcp_messages_total", []string{`direction="up"`}, 7},
		{"pdrelay_dhcp_messages", nil, 0},
	} {
		if got := s.Sum(tt.name, tt.match...); got != tt.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", tt.name, tt.match, got, tt.want)
		}
	}
	if _, err := parseMetrics(strings.NewReader("x{a=\"b\"}\n"), time.Now()); err == nil {
		t.Error("a series without a value parsed")
	}
}

func FuzzParseServerMsg(f *testing.F) {
	r := NewResponder()
	for _, typ := range []dhcp6.MessageType{dhcp6.MsgSolicit, dhcp6.MsgRequest, dhcp6.MsgRelease} {
		in := bytes.Clone(relayForwardSolicit)
		in[45] = byte(typ)
		out, _ := r.Answer(nil, in)
		if rr, err := dhcp6.ParseRelay(out); err == nil {
			f.Add(rr.Inner)
		}
	}
	f.Add([]byte{7, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseServerMsg(b)
		if err == nil && m.Type != dhcp6.MsgAdvertise && m.Type != dhcp6.MsgReply {
			t.Fatalf("parsed a %s", m.Type)
		}
	})
}

func FuzzAnswer(f *testing.F) {
	f.Add(relayForwardSolicit)
	f.Add([]byte{12, 0})
	r := NewResponder()
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := r.Answer(nil, b)
		if err != nil {
			return
		}
		rr, err := dhcp6.ParseRelay(out)
		if err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if _, err := ParseServerMsg(rr.Inner); err != nil {
			t.Fatalf("inner answer does not parse: %v", err)
		}
	})
}

func buildPdrelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pdrelay")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/pdrelay").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// checkRun asserts the counts of a Run, never its speed: every client got
// its prefix, pdrelay held exactly that many bindings (each the one the
// generator holds), every route was seen, and the releases removed every
// binding and route.
func checkRun(t *testing.T, res Result, n int) {
	t.Helper()
	for _, p := range res.Phases {
		if p.Failed != 0 {
			t.Errorf("%s: %d clients failed", p.Phase, p.Failed)
		}
	}
	if len(res.Phases) != 3 {
		t.Fatalf("%d phases ran", len(res.Phases))
	}
	if res.Bound != n || res.WrongPrefix != 0 {
		t.Errorf("bound %d (wrong prefix %d), want %d", res.Bound, res.WrongPrefix, n)
	}
	if res.APIBindings != n || res.APIMismatch != 0 {
		t.Errorf("pdrelay lists %d bindings (%d of the generator's missing), want %d", res.APIBindings, res.APIMismatch, n)
	}
	if res.Latency.N != n || res.Latency.Missing != 0 || res.Latency.NoStamp != 0 {
		t.Errorf("routes timed %d, never seen %d, replies without a kernel time %d, want %d, 0, 0", res.Latency.N, res.Latency.Missing, res.Latency.NoStamp, n)
	}
	if res.Phases[0].Relayed < float64(4*n) {
		t.Errorf("bind relayed %.0f messages, want at least %d", res.Phases[0].Relayed, 4*n)
	}
	if res.BindingsAfterRelease != 0 || res.RoutesLeft != 0 {
		t.Errorf("after release: %d bindings, %d routes", res.BindingsAfterRelease, res.RoutesLeft)
	}
}

// TestRunShort runs a few hundred clients through pdrelay (kernel mode)
// to the fast responder, and fifty to Kea.
// checkCPUs checks that the relay ran on cpus alone, and that the report
// says so.
func checkCPUs(t *testing.T, res Result, cpus string) {
	t.Helper()
	if res.RelayCPUs != cpus {
		t.Errorf("relay allowed cpus %q, want %q", res.RelayCPUs, cpus)
	}
	var b strings.Builder
	res.Report(&b)
	if !strings.Contains(b.String(), " on cpus "+cpus+",") {
		t.Errorf("report does not name the relay's cpus %s:\n%s", cpus, b.String())
	}
}

func TestRunShort(t *testing.T) {
	lab.Require(t, "nft")
	bin := buildPdrelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Two of the runs put the relay on one core of its own, as
	// -relay-cpus does.
	cpu := strconv.Itoa(runtime.NumCPU() - 1)
	t.Run("fast", func(t *testing.T) {
		const n = 300
		res, err := Run(ctx, Options{Pdrelay: bin, Clients: n, Window: 32, RelayCPUs: cpu, Tag: "cl", Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		checkRun(t, res, n)
		checkCPUs(t, res, cpu)
	})
	for _, mode := range []string{"off", "xdp"} {
		t.Run("dataplane "+mode, func(t *testing.T) {
			const n = 200
			o := Options{Pdrelay: bin, Dataplane: mode, Clients: n, Window: 32, Tag: "cl", Logf: t.Logf}
			if mode == "off" {
				if err := lab.CPULimitAvailable(); err != nil {
					t.Logf("not capped: %v", err)
				} else {
					o.RelayCPUShare = 0.5 // as -relay-cpu-share
				}
			}
			res, err := Run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Latency.N != 0 || res.Latency.Missing != n {
				t.Errorf("kernel routes timed %d, never seen %d, want none with the dataplane %s", res.Latency.N, res.Latency.Missing, mode)
			}
			res.Latency = LatencyFigures{N: n}
			checkRun(t, res, n)
			if got := res.Installs; len(got) == 0 || got[len(got)-1].Count != n {
				t.Errorf("install histogram %v, want %d bindings", got, n)
			}
			if o.RelayCPUShare > 0 {
				var b strings.Builder
				res.Report(&b)
				if !strings.Contains(b.String(), "capped at 0.50 of a cpu") || strings.Count(b.String(), "% of its share") != 3 {
					t.Errorf("report of a capped relay:\n%s", b.String())
				}
			}
		})
	}
	t.Run("dhcrelay baseline", func(t *testing.T) {
		lab.Require(t, "dhcrelay")
		const n = 200
		res, err := Run(ctx, Options{Relay: RelayDhcrelay, Clients: n, Window: 32, RelayCPUs: cpu, Tag: "cl", Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Phases) != 3 || res.Bound != n || res.WrongPrefix != 0 {
			t.Fatalf("%d phases, bound %d (wrong prefix %d), want 3 and %d", len(res.Phases), res.Bound, res.WrongPrefix, n)
		}
		for i, want := range []float64{4 * n, 2 * n, 2 * n} {
			p := res.Phases[i]
			if p.Failed != 0 || p.Relayed < want || p.RelayCPU <= 0 {
				t.Errorf("%s: %d failed, relayed %.0f (want at least %.0f), cpu %.2fs", p.Phase, p.Failed, p.Relayed, want, p.RelayCPU)
			}
		}
		var b strings.Builder
		res.Report(&b)
		if !strings.Contains(b.String(), "relay dhcrelay") {
			t.Errorf("report:\n%s", b.String())
		}
		checkCPUs(t, res, cpu)
	})
	t.Run("kea", func(t *testing.T) {
		lab.Require(t, "kea-dhcp6")
		const n = 50
		res, err := Run(ctx, Options{Pdrelay: bin, Clients: n, Server: ServerKea, Window: 16, Tag: "cl", Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		res.WrongPrefix = 0 // Kea picks its own prefixes
		checkRun(t, res, n)
	})
}

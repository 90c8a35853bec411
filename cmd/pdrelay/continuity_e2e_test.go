package main

// End-to-end test of service continuity and relay-initiated release: Kea
// keeps each lease's relay data (store-extended-info), `pdrelay lqserver`
// answers Bulk Leasequery and RELEASE-REQUEST from Kea's leases, and a
// relay that lost its whole state directory gets its bindings back from
// it, forwarding to them again.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/api"
)

// lqPort and releasePort are where the test's lqserver listens in the
// server namespace: Bulk Leasequery on TCP 547, the standard port (Kea
// holds UDP 547), and RELEASE-REQUEST on UDP 5547.
const (
	lqPort      = 547
	releasePort = 5547
)

// startLqserver runs `pdrelay lqserver` beside Kea and waits until it
// accepts connections.
func startLqserver(t *testing.T, l *lab.Lab, bin string, kea *lab.Kea) *lab.Proc {
	t.Helper()
	p, err := l.Start(l.ServerNS, "lqserver", bin, "lqserver",
		"--kea-socket", kea.Socket,
		"--listen", netip.AddrPortFrom(lab.ServerAddr, lqPort).String(),
		"--release-listen", netip.AddrPortFrom(lab.ServerAddr, releasePort).String(),
		"--server-id", fmt.Sprintf("%x", kea.ServerDUID()),
		"--allow", "fd00::/16")
	if err != nil {
		t.Fatalf("lqserver: %v", err)
	}
	addr := netip.AddrPortFrom(lab.ServerAddr, lqPort).String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := l.InNS(l.ServerNS, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return p
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("lqserver does not listen on %s: %v\n%s", addr, err, p.Log())
		}
	}
}

// pingAll checks that each host answers a ping from upstream: traffic to
// the delegated prefixes crosses the relay.
func pingAll(t *testing.T, l *lab.Lab, r *lab.Pdrelay, hosts []netip.Addr, when string) {
	t.Helper()
	for _, h := range hosts {
		if err := l.Ping(l.ServerNS, lab.UpstreamAddr, h, 5*time.Second); err != nil {
			t.Fatalf("%s: upstream -> %s through pdrelay: %v\n%s", when, h, err, r.Proc.Log())
		}
	}
}

// keaHas reports whether Kea holds an active lease of prefix p.
func keaHas(t *testing.T, kea *lab.Kea, p netip.Prefix) bool {
	t.Helper()
	ls, err := kea.Leases6()
	if err != nil {
		t.Fatalf("kea lease6-get-all: %v", err)
	}
	return slices.ContainsFunc(ls, func(l lab.Lease6) bool { return l.Prefix == p && l.State == 0 })
}

func TestEndToEndRecoveryAndRelease(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient", "dhcpcd", "tshark")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 2})
	kea, err := l.StartKea(lab.KeaOptions{
		ValidLifetime: 600, PreferredLifetime: 400, RenewTimer: 300, RebindTimer: 500,
		Extra: map[string]any{"store-extended-info": true},
	})
	if err != nil {
		t.Fatalf("kea: %v", err)
	}
	lqs := startLqserver(t, l, bin, kea)

	const metricsAddr = "127.0.0.1:9551"
	relayConf := func(mode string) string {
		// No relay_id: the generated one (a DUID-LL of the uplink's MAC)
		// is made again the same after the state directory is lost.
		return l.PdrelayConfig(fmt.Sprintf(`metrics_listen: %s
dataplane:
  mode: xdp
leasequery:
  servers: [%s]
release:
  mode: %s
  server: "%s"
`, metricsAddr, lab.ServerAddr, mode, netip.AddrPortFrom(lab.ServerAddr, releasePort)), "")
	}
	r, err := l.StartPdrelay(bin, relayConf("release-request"))
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	c, err := l.StartDhclient(0, lab.ClientOptions{IAPDs: 2})
	if err != nil {
		t.Fatalf("dhclient: %v", err)
	}
	c2, err := l.StartDhcpcd(1, lab.ClientOptions{})
	if err != nil {
		t.Fatalf("dhcpcd: %v", err)
	}
	for name, c := range map[string]*lab.Client{"dhclient": c, "dhcpcd": c2} {
		if _, err := c.WaitPrefix(20 * time.Second); err != nil {
			t.Fatalf("%s got no prefix: %v\n%s", name, err, r.Proc.Log())
		}
	}
	// dhclient's two prefixes on dl0 and dhcpcd's one on dl1: Kea's answer
	// is a REPLY with one client, a DATA with the other, and a DONE.
	before := waitMatch(t, r, kea, 3)
	port := map[string]int{}
	for i, d := range l.Downlinks {
		port[d.Name] = i
	}
	var hosts []netip.Addr
	var dl0 []netip.Prefix // dhclient's: released below
	for _, b := range before {
		h := b.Prefix.Addr().Next()
		if err := l.AddClientAddr(port[b.Interface], h); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
		if b.Interface == l.Downlinks[0].Name {
			dl0 = append(dl0, b.Prefix)
		}
	}
	if len(dl0) != 2 {
		t.Fatalf("dhclient's bindings on %s: %v, want 2", l.Downlinks[0].Name, dl0)
	}
	pingAll(t, l, r, hosts, "before the state is lost")

	// The relay loses its whole state directory: a crash, then a new disk.
	capture, err := l.CaptureBoth(l.RelayNS, l.Uplink.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(r.StateDir()); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatalf("restart with no state: %v", err)
	}
	after := waitMatch(t, r, kea, 3)
	for _, b := range after {
		d := l.Downlinks[port[b.Interface]]
		if b.Source != "leasequery" {
			t.Errorf("binding %s source %q, want leasequery", b.Prefix, b.Source)
		}
		if b.NextHop != d.PeerLinkLocal || b.NextHopMAC != d.PeerMAC.String() {
			t.Errorf("recovered binding %s on %s via %s %s, want %s via %s %s",
				b.Prefix, b.Interface, b.NextHop, b.NextHopMAC, d.Name, d.PeerLinkLocal, d.PeerMAC)
		}
		if b.ServerDUID != fmt.Sprintf("%x", kea.ServerDUID()) {
			t.Errorf("recovered binding %s server DUID %s, want Kea's %x", b.Prefix, b.ServerDUID, kea.ServerDUID())
		}
		if b.ValidLifetime == 0 || b.ValidLifetime > 600 {
			t.Errorf("recovered binding %s valid lifetime %d", b.Prefix, b.ValidLifetime)
		}
	}
	pingAll(t, l, r, hosts, "after recovery by Bulk Leasequery")

	// The operator's recover: the same bindings, nothing added or removed.
	out, err := r.CLI("recover")
	if err != nil {
		t.Fatalf("pdrelay recover: %v\n%s", err, out)
	}
	t.Logf("pdrelay recover:\n%s", out)
	if !strings.Contains(out, lab.ServerAddr.String()) {
		t.Errorf("pdrelay recover names no server:\n%s", out)
	}
	if got := bindingKeys(bindings(t, r)); !slices.Equal(got, bindingKeys(after)) {
		t.Errorf("after recover bindings %v, want %v", got, bindingKeys(after))
	}

	// The protocol trace decodes in tshark with no malformed frame.
	time.Sleep(200 * time.Millisecond)
	pcap := filepath.Join(t.TempDir(), "leasequery.pcap")
	if dir := os.Getenv("PDRELAY_KEEP_PCAP"); dir != "" {
		pcap = filepath.Join(dir, "leasequery.pcap")
	}
	capture.Stop()
	if err := lab.WritePcap(pcap, capture.Timed()); err != nil {
		t.Fatal(err)
	}
	checkTrace(t, pcap)

	// Release at the server, in each mode: Kea drops the lease.
	clearRelease := func(p netip.Prefix, mode string) {
		t.Helper()
		if !keaHas(t, kea, p) {
			t.Fatalf("%s: Kea does not hold %s before the release", mode, p)
		}
		out, err := r.CLI("clear", "--prefix", p.String(), "--release")
		if err != nil {
			t.Fatalf("%s: pdrelay clear --release: %v\n%s\n%s", mode, err, out, r.Proc.Log())
		}
		for deadline := time.Now().Add(5 * time.Second); keaHas(t, kea, p); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Kea still holds %s after pdrelay clear --release\n%s", mode, p, out)
			}
		}
		if slices.ContainsFunc(bindings(t, r), func(b api.BindingJSON) bool { return b.Prefix == p }) {
			t.Errorf("%s: the relay still holds %s", mode, p)
		}
	}
	clearRelease(dl0[0], "release-request")

	if err := r.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.Config, []byte(strings.ReplaceAll(relayConf("client-release"), "$DIR", r.Dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatalf("restart in client-release mode: %v", err)
	}
	// A Release on the client's behalf names its IAID, which Kea checks:
	// the recovered binding carries it (lqserver sends IA_PD wrappers).
	clearRelease(dl0[1], "client-release")
	if lqs.Exited() {
		t.Errorf("lqserver exited:\n%s", lqs.Log())
	}
}

// traceSuspect selects malformed frames, and DHCPv6 frames with an
// expert warning or error (TCP's own notes, such as a reset, are not the
// protocol's fault). Wireshark shows the relay message inside
// OPTION_LQ_RELAY_DATA as text, and warns of "trailing stray characters"
// (group Undecoded) after its first zero byte: that warning is about the
// display, not the message.
const traceSuspect = `_ws.malformed || ((dhcpv6 || dhcpv6.bulk_leasequery) && _ws.expert.severity >= "Warning" && _ws.expert.group != "Undecoded")`

// checkTrace decodes a capture with tshark: the Bulk Leasequery exchange
// must be there, both ways, and no frame may be malformed.
func checkTrace(t *testing.T, pcap string) {
	t.Helper()
	out, err := tshark(pcap, "-Y", "dhcpv6.bulk_leasequery", "-T", "fields", "-e", "dhcpv6.bulk_leasequery.msgtype")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, f := range strings.Fields(string(out)) {
		for _, v := range strings.Split(f, ",") {
			types[v]++
		}
	}
	t.Logf("bulk leasequery message types in the trace: %v", types)
	for _, want := range []string{"14", "15", "16", "17"} { // LEASEQUERY, -REPLY, -DONE, -DATA
		if types[want] == 0 {
			t.Errorf("trace has no message of type %s: %v", want, types)
		}
	}
	bad, err := tshark(pcap, "-Y", traceSuspect)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(string(bad)); s != "" {
		detail, _ := tshark(pcap, "-V", "-Y", traceSuspect)
		t.Errorf("tshark finds malformed or suspect frames:\n%s\n%s", s, lastLines(string(detail), 80))
	}
}

// tshark reads pcap with args and returns what it prints; its notes on
// stderr (such as running as root) are not its output.
func tshark(pcap string, args ...string) ([]byte, error) {
	cmd := exec.Command("tshark", append([]string{"-r", pcap}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

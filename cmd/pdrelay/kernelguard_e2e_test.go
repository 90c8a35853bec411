package main

// End-to-end test of the kernel guard (dataplane/nftguard): kernel IPv6
// forwarding is ON in the relay namespace, as on a router, so every frame
// the XDP program passes to the kernel is forwarded by the kernel unless
// pdrelay's nf_tables table drops it. Frames are made by hand (any
// source, a hop-by-hop header, ND types to a global address) and sent
// from the client's namespace with a packet socket; a packet socket on
// the server's eth0 sees what leaves the relay, whatever checksum
// offloads did to it.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/api"
)

// guardClass is one kind of frame for the kernel guard test.
type guardClass struct {
	name string
	p    lab.Probe
	// kernel: the XDP program passes it to the kernel, which forwards
	// it when forwarding is on (so the guard sees it). Otherwise it goes
	// to pdrelay's AF_XDP plane (ordinary UDP) or is not forwarded at
	// all (hop limit 1: Time Exceeded).
	kernel bool
	// arrives from the client's own delegated address with forwarding on.
	arrives bool
}

var guardClasses = []guardClass{
	{"hop-by-hop header", lab.Probe{HopByHop: true, SrcPort: 7000, DstPort: 40001}, true, true},
	{"udp source port 546", lab.Probe{SrcPort: 546, DstPort: 40002}, true, true},
	{"udp source port 547", lab.Probe{SrcPort: 547, DstPort: 40003}, true, true},
	{"udp destination port 546", lab.Probe{SrcPort: 7000, DstPort: 546}, true, true},
	{"udp destination port 547", lab.Probe{SrcPort: 7000, DstPort: 547}, true, true},
	{"icmpv6 135 (NS) to a global address", lab.Probe{ICMPType: 135, HopLimit: 255}, true, true},
	{"icmpv6 136 (NA) to a global address", lab.Probe{ICMPType: 136, HopLimit: 255}, true, true},
	{"hop limit 1", lab.Probe{HopLimit: 1, SrcPort: 7000, DstPort: 40004}, false, false},
	{"ordinary udp (AF_XDP plane)", lab.Probe{SrcPort: 7000, DstPort: 40005}, false, true},
}

func TestEndToEndKernelGuard(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 1, Forwarding: true})
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9551"
	r, _, delegated := relayOneClient(t, l, bin, l.PdrelayConfig("metrics_listen: "+metricsAddr+"\ndataplane:\n  mode: xdp\n", ""))
	if err := r.Proc.WaitLog("kernel guard filled", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	own := delegated.Addr().Next() // P::1, inside the client's delegated prefix
	spoofed := netip.MustParseAddr("2001:db8:ffff::1")
	dl := l.Downlinks[0]

	var send, capture *lab.PacketConn
	if err := l.InNS(l.ClientNS[0], func() (err error) { send, err = lab.ListenPacket("eth0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	if err := l.InNS(l.ServerNS, func() (err error) { capture, err = lab.ListenPacket("eth0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	tag := uint32(0)
	// round sends every class from own and from spoofed and returns which
	// of them reached the server's link, by class index.
	round := func() (ownGot, spoofGot []bool) {
		t.Helper()
		var sent []lab.Probe
		for _, gc := range guardClasses {
			for _, src := range []netip.Addr{own, spoofed} {
				tag++
				p := gc.p
				p.Src, p.Dst, p.Tag = src, lab.UpstreamAddr, tag
				sent = append(sent, p)
				if err := send.Send(p.Frame(dl.PeerMAC, dl.MAC)); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := capture.Probes(500 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for i := range guardClasses {
			_, a := got[sent[2*i].Tag]
			_, b := got[sent[2*i+1].Tag]
			ownGot, spoofGot = append(ownGot, a), append(spoofGot, b)
		}
		return ownGot, spoofGot
	}
	guardDrops := func() float64 {
		return metric(t, r, metricsAddr, fmt.Sprintf(`pdrelay_kernel_guard_drops_total{interface=%q}`, dl.Name))
	}
	kernelClasses := 0
	for _, gc := range guardClasses {
		if gc.kernel {
			kernelClasses++
		}
	}
	check := func(when string, forwarding bool) {
		t.Helper()
		before := guardDrops()
		ownGot, spoofGot := round()
		for i, gc := range guardClasses {
			if spoofGot[i] {
				t.Errorf("%s: %s from a spoofed source reached the server's link", when, gc.name)
			}
			want := gc.arrives && (forwarding || !gc.kernel)
			if ownGot[i] != want {
				t.Errorf("%s: %s from the client's delegated address: arrived %v, want %v", when, gc.name, ownGot[i], want)
			}
		}
		want := float64(0)
		if forwarding {
			want = float64(kernelClasses) // every spoofed frame the kernel would have forwarded
		}
		if d := guardDrops() - before; d != want {
			t.Errorf("%s: guard drop counter moved by %v, want %v", when, d, want)
		}
	}

	check("forwarding on", true)
	out, err := r.CLI("stats", "--json")
	if err != nil {
		t.Fatalf("pdrelay stats: %v\n%s", err, out)
	}
	var st []api.PortStatsJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	found := false
	for _, p := range st {
		if p.Interface == dl.Name {
			found = p.Packets["kernel_spoofed"] == uint64(kernelClasses)
		}
	}
	if !found {
		t.Errorf("pdrelay stats does not show %d kernel_spoofed on %s:\n%s", kernelClasses, dl.Name, out)
	}

	// A crash leaves the table (the kernel still drops spoofed sources
	// while pdrelay is down); the next start replaces it and refills it
	// from the restored binding.
	if err := r.Restart(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := r.Proc.WaitLog("kernel guard filled", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Proc.Log(), `msg="kernel guard filled" sources=1 `) {
		t.Errorf("the fill after the restart did not restore the one binding:\n%s", r.Proc.Log())
	}
	rules := guardRules(t, l.RelayNS, "port_"+dl.Name)
	if rules != 2 { // the /56 set's rule and the counted drop: nothing doubled by the stale table
		t.Errorf("port chain has %d rules after the restart, want 2", rules)
	}
	check("forwarding on, after a crash and restart", true)

	// With forwarding off the kernel forwards nothing: only the AF_XDP
	// plane's traffic leaves, and never from a spoofed source.
	if err := l.SetForwarding(false); err != nil {
		t.Fatal(err)
	}
	check("forwarding off", false)

	// A clean stop removes the table.
	if err := r.Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := r.Proc.Wait(10 * time.Second); err != nil && !r.Proc.Exited() {
		t.Fatal(err)
	}
	if n := guardRules(t, l.RelayNS, ""); n != -1 {
		t.Errorf("table ip6 pdrelay still there after a clean stop")
	}

	// Without CAP_NET_ADMIN there is no nf_tables: with forwarding on
	// the relay refuses to start and names the sysctl; with it off it
	// warns and runs (root keeps enough other capabilities for XDP).
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv (util-linux): the refusal without CAP_NET_ADMIN is not tested")
	}
	noAdmin := []string{"setpriv", "--bounding-set=-net_admin", r.Bin, "run", "-c", r.Config}
	if err := l.SetForwarding(true); err != nil {
		t.Fatal(err)
	}
	b, err := l.Exec(l.RelayNS, noAdmin...).CombinedOutput()
	if out := string(b); err == nil || !strings.Contains(out, "Set net.ipv6.conf.all.forwarding=0") || !strings.Contains(out, "CAP_NET_ADMIN") ||
		strings.Contains(out, "pdrelay started") {
		t.Errorf("without CAP_NET_ADMIN and with forwarding on, want a refusal naming the sysctl and the cause: %v\n%s", err, out)
	}
	if err := l.SetForwarding(false); err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(l.RelayNS, "pdrelay-no-net-admin", noAdmin...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.WaitLog(`level=WARN msg="kernel guard not installed`, 5*time.Second); err != nil {
		t.Errorf("without CAP_NET_ADMIN and with forwarding off: %v", err)
	}
}

// guardRules returns the number of rules in chain of table ip6 pdrelay in
// namespace ns, or -1 if there is no such table ("" only checks the
// table).
func guardRules(t *testing.T, ns, chain string) int {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tabs, err := c.ListTablesOfFamily(nftables.TableFamilyIPv6)
	if err != nil {
		t.Fatal(err)
	}
	for _, tab := range tabs {
		if tab.Name != "pdrelay" {
			continue
		}
		if chain == "" {
			return 0
		}
		rs, err := c.GetRules(tab, &nftables.Chain{Name: chain, Table: tab})
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}
	return -1
}

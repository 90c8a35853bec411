package main

// End-to-end test of reloading the config (SIGHUP, `pdrelay reload`) and
// of the systemd readiness protocol (sd_notify), in kernel mode with the
// relay namespace forwarding, as on a router.

import (
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/api"
)

// notifySocket is what systemd listens on for sd_notify(3): a unix
// datagram socket whose path goes to the service in NOTIFY_SOCKET.
type notifySocket struct {
	c      *net.UnixConn
	states chan string
}

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{c: c, states: make(chan string, 64)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.states)
				return
			}
			// One datagram may carry several NAME=value lines; the
			// state is the first (MONOTONIC_USEC follows RELOADING).
			n.states <- strings.SplitN(string(buf[:k]), "\n", 2)[0]
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

// expect waits for the next states to be want, in order.
func (n *notifySocket) expect(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-n.states:
			if got != w {
				t.Fatalf("sd_notify: got %q, want %q", got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("sd_notify: no %q within 10s", w)
		}
	}
}

func TestEndToEndReload(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 2, Forwarding: true})
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	const kernel = "dataplane:\n  mode: kernel\n"
	one := l.PdrelayConfigWith(lab.PdrelayConfigOptions{Extra: kernel, Ports: []int{0}})
	two := l.PdrelayConfigWith(lab.PdrelayConfigOptions{Extra: kernel})

	notify := listenNotify(t, filepath.Join(l.Dir, "notify.sock"))
	r, err := l.StartPdrelayEnv(bin, one, "NOTIFY_SOCKET="+filepath.Join(l.Dir, "notify.sock"))
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	notify.expect(t, "READY=1")
	_, p0 := delegateOne(t, l, r, 0)
	waitBindings(t, r, 1)
	addr0 := p0.Addr().Next()
	if err := l.AddClientAddr(0, addr0); err != nil {
		t.Fatal(err)
	}
	// Traffic to the first client through the kernel, all through the
	// reloads below.
	stream, err := l.StartStream(l.ServerNS, netip.Addr{}, l.ClientNS[0], netip.AddrPortFrom(addr0, 9000), 2*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream to reach the client", func() bool { _, got := stream.Counts(); return got > 50 })

	// A config that does not validate is refused, naming the key; so is
	// one that changes what needs a restart. Nothing changes.
	for _, bad := range []struct{ config, want string }{
		{one + "bogus_key: 1\n", "bogus_key"},
		{strings.Replace(one, "state_dir: $DIR/state", "state_dir: $DIR/elsewhere", 1), "state_dir"},
	} {
		if err := r.WriteConfig(bad.config); err != nil {
			t.Fatal(err)
		}
		out, err := r.CLI("reload")
		if err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("reload of a config with %s: want a refusal naming it, got %v: %s", bad.want, err, out)
		}
		notify.expect(t, "RELOADING=1", "READY=1")
	}

	// Adding dl1: the relay listens there at once, and routes what it
	// learns there.
	if err := r.WriteConfig(two); err != nil {
		t.Fatal(err)
	}
	out, err := r.CLI("reload")
	if err != nil || !strings.Contains(out, "dl1") {
		t.Fatalf("reload adding dl1: %v: %s", err, out)
	}
	notify.expect(t, "RELOADING=1", "READY=1")
	_, p1 := delegateOne(t, l, r, 1) // relayed on dl1 only after the reload
	waitBindings(t, r, 2)
	addr1 := p1.Addr().Next()
	if err := l.AddClientAddr(1, addr1); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, addr1, 5*time.Second); err != nil {
		t.Errorf("ping the prefix learned on dl1 after the reload: %v", err)
	}

	// The added port is guarded from the reload on: a spoofed
	// source is dropped, and counted on dl1.
	spoof := netip.MustParseAddr("2001:db8:ff00::67")
	if err := l.AddClientAddr(1, spoof); err != nil {
		t.Fatal(err)
	}
	spoofedOnDl1 := func() uint64 {
		t.Helper()
		for _, p := range cliJSON[[]api.PortStatsJSON](t, r, "stats") {
			if p.Interface == "dl1" {
				return p.Packets["spoofed"]
			}
		}
		return 0
	}
	spoofCheck := func(when string) {
		t.Helper()
		before := spoofedOnDl1()
		if err := l.Ping(l.ClientNS[1], spoof, lab.UpstreamAddr, time.Second); err == nil {
			t.Errorf("%s: a spoofed source on dl1 reached the upstream host", when)
		}
		if spoofedOnDl1() <= before {
			t.Errorf("%s: a spoofed source on dl1 was not dropped as spoofed", when)
		}
	}
	spoofCheck("after dl1 was added")

	// SIGHUP reloads too: removing dl1 keeps its binding (and route)
	// until it expires.
	if err := r.WriteConfig(one); err != nil {
		t.Fatal(err)
	}
	if err := r.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "RELOADING=1", "READY=1")
	if err := r.Proc.WaitLog("config reloaded", 10*time.Second); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	if bs := bindings(t, r); len(bs) != 2 {
		t.Errorf("after removing dl1: %d bindings, want both kept", len(bs))
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, addr1, 5*time.Second); err != nil {
		t.Errorf("ping dl1's prefix after dl1 left the config (its binding stays): %v", err)
	}
	// A removed port stays guarded while its bindings route.
	spoofCheck("after dl1 left the config")

	res := stream.Stop()
	t.Logf("stream to the dl0 client across three reloads: %v", res)
	if res.Sent < 100 || res.Received != res.Sent {
		t.Errorf("traffic on dl0 across the reloads: %v; want every datagram", res)
	}
	if err := r.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "STOPPING=1")
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

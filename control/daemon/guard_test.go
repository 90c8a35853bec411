package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane/nftguard"
	"github.com/pdrelay/pdrelay/fib"
)

// TestStartGuard: when the guard cannot be installed the relay refuses
// to start if IPv6 forwarding is on, naming the sysctl and the cause, and
// starts with a warning if it is off; with dataplane.mode off nothing is
// installed at all.
func TestStartGuard(t *testing.T) {
	cause := fmt.Errorf("nftguard: install table: %w (nf_tables needs CAP_NET_ADMIN)", syscall.EPERM)
	cfg := func(mode config.DataplaneMode) *config.Config {
		return &config.Config{Dataplane: config.Dataplane{Mode: mode}, Downlinks: []config.Downlink{{Interface: "dl0"}, {Interface: "dl1"}}}
	}
	for _, c := range []struct {
		name    string
		mode    config.DataplaneMode
		on      []string
		readErr error
		wantErr []string // substrings; nil: no error
		warn    bool
	}{
		{name: "forwarding on", mode: config.DataplaneXDP, on: []string{"net.ipv6.conf.all.forwarding=1"},
			wantErr: []string{"net.ipv6.conf.all.forwarding=0", "IPv6 forwarding is on (net.ipv6.conf.all.forwarding=1)", "CAP_NET_ADMIN", "operation not permitted"}},
		{name: "forced on a downlink", mode: config.DataplaneXDPGeneric, on: []string{"net.ipv6.conf.dl1.force_forwarding=1"},
			wantErr: []string{"net.ipv6.conf.all.forwarding=0", "dl1.force_forwarding=1"}},
		{name: "forwarding off", mode: config.DataplaneXDP, warn: true},
		{name: "sysctls unreadable", mode: config.DataplaneXDP, readErr: os.ErrPermission,
			wantErr: []string{"CAP_NET_ADMIN", "reading whether IPv6 forwarding is on failed", "permission denied"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log strings.Builder
			var asked []string
			k := guardKernel{
				install: func(gc nftguard.Config) (*nftguard.Guard, error) {
					for _, p := range gc.Ports {
						asked = append(asked, p.Name)
					}
					return nil, cause
				},
				forwarding: func(d []string) ([]string, error) { return c.on, c.readErr },
			}
			g, err := startGuard(cfg(c.mode), slog.New(slog.NewTextHandler(&log, nil)), k)
			if g != nil {
				t.Fatal("a guard from a failed install")
			}
			if !slices.Equal(asked, []string{"dl0", "dl1"}) {
				t.Errorf("guard asked for ports %v", asked)
			}
			switch {
			case c.wantErr == nil && err != nil:
				t.Fatalf("start refused: %v", err)
			case c.wantErr != nil && err == nil:
				t.Fatal("start not refused")
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if c.warn && !strings.Contains(log.String(), "level=WARN msg=\"kernel guard not installed") {
				t.Errorf("no warning logged:\n%s", log.String())
			}
		})
	}
	t.Run("mode off", func(t *testing.T) {
		k := guardKernel{install: func(nftguard.Config) (*nftguard.Guard, error) {
			t.Fatal("install called with dataplane.mode off")
			return nil, nil
		}}
		if g, err := startGuard(cfg(config.DataplaneOff), slog.New(slog.DiscardHandler), k); g != nil || err != nil {
			t.Fatalf("%v %v", g, err)
		}
	})
}

// inNewNS runs fn with the test goroutine's thread in a new network
// namespace, deleted after; nsFD is the namespace, for sockets made on
// other goroutines.
func inNewNS(t *testing.T, fn func(nsFD int)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("daemon: needs root (network namespaces, nf_tables); skipping")
	}
	name := fmt.Sprintf("kg-%d-daemon-%d", os.Getpid(), time.Now().UnixNano()%1_000_000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("daemon: ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		// Back home, also after a t.Fatal in fn; a thread that cannot
		// go back stays locked and ends with the test's goroutine.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn(int(h))
}

// TestForwardingOn reads the sysctls of a namespace of its own.
func TestForwardingOn(t *testing.T) {
	inNewNS(t, func(int) {
		write := func(path, v string) {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+path, []byte(v), 0); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command("ip", "link", "add", "dl0", "type", "veth", "peer", "name", "dl0p").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		write("all/forwarding", "0")
		on, err := forwardingOn([]string{"dl0", "absent"})
		if err != nil || len(on) != 0 {
			t.Fatalf("all off: %v %v", on, err)
		}
		write("dl0/forwarding", "1")
		if on, _ = forwardingOn([]string{"dl0"}); !slices.Equal(on, []string{"net.ipv6.conf.dl0.forwarding=1"}) {
			t.Fatalf("dl0 on: %v", on)
		}
		write("all/forwarding", "1") // sets every interface's too
		if on, _ = forwardingOn([]string{"dl0"}); !slices.Contains(on, "net.ipv6.conf.all.forwarding=1") {
			t.Fatalf("all on: %v", on)
		}
	})
}

// TestGuardSink drives the sink with a real binding table into a guard
// in a namespace of its own: its sets hold exactly the live bindings'
// prefixes on their ports, the restored ones included, and `pdrelay
// stats` and /metrics carry its drop counters.
func TestGuardSink(t *testing.T) {
	inNewNS(t, func(nsFD int) {
		g, err := nftguard.New(nftguard.Config{NetNS: nsFD, Check: -1, Ports: []nftguard.Port{{Name: "dl1"}, {Name: "dl2"}}})
		if err != nil {
			t.Fatal(err)
		}
		k := &kernelGuard{g: g, log: slog.New(slog.DiscardHandler)}
		defer k.close()
		sinks := k.sinks(nil)
		if len(sinks) != 1 {
			t.Fatalf("%d sinks", len(sinks))
		}
		// Restored: one binding, already in the FIB when the relay runs.
		ft := fib.NewTable()
		ports := map[string]fib.PortID{"up0": 0, "dl1": 1, "dl2": 2}
		restored := netip.MustParsePrefix("2001:db8:300::/56")
		if err := ft.AddRoute(fib.Route{Prefix: restored, Port: 2, NextHop: netip.MustParseAddr("fe80::2"), MAC: [6]byte{2}}); err != nil {
			t.Fatal(err)
		}
		ft.Publish()

		tab := binding.NewTable(binding.PortLimits{MaxPerClient: 8}, nil)
		now := time.Unix(1_000_000, 0)
		learn := func(port, prefix string, mac byte, valid time.Duration) {
			t.Helper()
			if _, err := tab.Learn(now, binding.Learned{
				Key:     binding.Key{Port: port, DUID: "\x00\x03\x00\x01" + port, IAID: 1, Prefix: netip.MustParsePrefix(prefix)},
				NextHop: netip.MustParseAddr("fe80::1"), MAC: [6]byte{2, 0, 0, 0, 0, mac}, MACKnown: true, Valid: valid, Preferred: valid,
			}); err != nil {
				t.Fatal(err)
			}
			sinks[0](tab.TakeChanges())
		}
		learn("dl1", "2001:db8:100::/56", 1, 100*time.Second)
		learn("dl2", "2001:db8:200::/48", 2, 200*time.Second)
		learn("dl1", "2001:db8:100::/56", 3, 100*time.Second) // a new MAC: no source change
		learn("up0", "2001:db8:400::/56", 4, 100*time.Second) // not a downlink: ignored

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- k.run(ctx, ft.Load(), ports) }()
		defer func() { cancel(); <-done }()
		for deadline := time.Now().Add(5 * time.Second); !g.Filled(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("guard not filled")
			}
		}
		want := []string{"dl1 2001:db8:100::/56", "dl2 2001:db8:200::/48", "dl2 2001:db8:300::/56"}
		if got := guardSets(t, nsFD); !slices.Equal(got, want) {
			t.Fatalf("guard holds %v, want %v", got, want)
		}
		tab.Expire(now.Add(150 * time.Second)) // the /56 on dl1 ends
		sinks[0](tab.TakeChanges())
		if got := guardSets(t, nsFD); !slices.Equal(got, want[1:]) {
			t.Fatalf("after expiry the guard holds %v, want %v", got, want[1:])
		}

		st := k.stats(func() []api.PortStatsJSON {
			return []api.PortStatsJSON{{Interface: "dl1", Packets: map[string]uint64{"spoofed": 2}}, {Interface: "up0"}}
		})()
		if v, ok := st[0].Packets[guardReason]; !ok || v != 0 || st[0].Packets["spoofed"] != 2 {
			t.Errorf("stats dl1: %v", st[0].Packets)
		}
		if _, ok := st[1].Packets[guardReason]; ok {
			t.Errorf("the uplink got a guard counter: %v", st[1].Packets)
		}
		var nilGuard *kernelGuard
		if nilGuard.stats(nil) != nil || len(nilGuard.sinks(nil)) != 0 {
			t.Error("a nil guard adds something")
		}
	})
}

// guardSets returns the elements of the guard's sets as "port prefix".
func guardSets(t *testing.T, nsFD int) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		t.Fatal(err)
	}
	tab := &nftables.Table{Name: nftguard.DefaultTable, Family: nftables.TableFamilyIPv6}
	sets, err := c.GetSets(tab)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range sets {
		rest, ok := strings.CutPrefix(s.Name, "src_")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, '_')
		port, bits := rest[:i], rest[i+1:]
		elems, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range elems {
			a, _ := netip.AddrFromSlice(e.Key)
			out = append(out, fmt.Sprintf("%s %v/%s", port, a, bits))
		}
	}
	slices.Sort(out)
	return out
}

package main

// End-to-end tests: the pdrelay binary relays between Kea and real PD
// clients (ISC dhclient, dhcpcd) in network namespaces built by bench/lab.
// They need root and the Debian packages `make test` installs; without
// them they skip with the reason.

import (
	"encoding/json"
	"fmt"
	"net/netip"
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

// buildRelay compiles the binary under test once per test binary.
func buildRelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pdrelay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// bindings lists the relay's bindings with the binary's own command.
func bindings(t *testing.T, r *lab.Pdrelay) []api.BindingJSON {
	t.Helper()
	return cliJSON[[]api.BindingJSON](t, r, "bindings")
}

// cliJSON runs the binary's operator command with --json and decodes
// what it prints.
func cliJSON[T any](t *testing.T, r *lab.Pdrelay, command string) T {
	t.Helper()
	var v T
	out, err := r.CLI(command, "--json")
	if err != nil {
		t.Fatalf("pdrelay %s --json: %v\n%s", command, err, out)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("pdrelay %s --json: %v\n%s", command, err, out)
	}
	return v
}

// relayOneClient starts pdrelay with config on l, then a dhclient on
// port 0, and returns once the client holds its one prefix and the relay
// its binding.
func relayOneClient(t *testing.T, l *lab.Lab, bin, config string) (*lab.Pdrelay, *lab.Client, netip.Prefix) {
	t.Helper()
	r, err := l.StartPdrelay(bin, config)
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	c, p := delegateOne(t, l, r, 0)
	waitBindings(t, r, 1)
	return r, c, p
}

// delegateOne starts a dhclient behind downlink port and returns it with
// the one prefix it is delegated through r.
func delegateOne(t *testing.T, l *lab.Lab, r *lab.Pdrelay, port int) (*lab.Client, netip.Prefix) {
	t.Helper()
	c, err := l.StartDhclient(port, lab.ClientOptions{})
	if err != nil {
		t.Fatalf("dhclient: %v", err)
	}
	ps, err := c.WaitPrefix(20 * time.Second)
	if err != nil || len(ps) != 1 {
		t.Fatalf("dhclient behind dl%d: prefixes %v: %v\n%s", port, ps, err, r.Proc.Log())
	}
	return c, ps[0]
}

// key is what a binding and a Kea IA_PD lease must agree on.
type key struct {
	duid   string
	iaid   uint32
	prefix netip.Prefix
}

func bindingKeys(bs []api.BindingJSON) []key {
	var ks []key
	for _, b := range bs {
		ks = append(ks, key{b.ClientDUID, b.IAID, b.Prefix})
	}
	return sortKeys(ks)
}

func leaseKeys(ls []lab.Lease6) []key {
	var ks []key
	for _, l := range ls {
		if l.State != 0 { // 0 = default (active) in Kea's lease states
			continue
		}
		ks = append(ks, key{l.DUIDHex(), l.IAID, l.Prefix})
	}
	return sortKeys(ks)
}

func sortKeys(ks []key) []key {
	slices.SortFunc(ks, func(a, b key) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	return ks
}

// waitMatch waits until the relay's bindings are exactly Kea's active PD
// leases and number want, and returns them.
func waitMatch(t *testing.T, r *lab.Pdrelay, kea *lab.Kea, want int) []api.BindingJSON {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		bs := bindings(t, r)
		ls, err := kea.Leases6()
		if err != nil {
			t.Fatalf("kea lease6-get-all: %v", err)
		}
		bk, lk := bindingKeys(bs), leaseKeys(ls)
		if len(bk) == want && slices.Equal(bk, lk) {
			return bs
		}
		if time.Now().After(deadline) {
			t.Fatalf("bindings never matched Kea's leases (want %d):\nrelay: %v\nkea:   %v", want, bk, lk)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEndToEndKea runs pdrelay between Kea and two real PD clients, each
// asking for two IA_PDs, and checks the bindings against Kea's lease
// database through restarts, a client Release and the operator's clear.
func TestEndToEndKea(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient", "dhcpcd")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 2})
	kea, err := l.StartKea(lab.KeaOptions{ValidLifetime: 120, PreferredLifetime: 90, RenewTimer: 30, RebindTimer: 60})
	if err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9547"
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("metrics_listen: "+metricsAddr+"\n", ""))
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}

	dh, err := l.StartDhclient(0, lab.ClientOptions{IAPDs: 2})
	if err != nil {
		t.Fatalf("dhclient: %v", err)
	}
	dc, err := l.StartDhcpcd(1, lab.ClientOptions{IAPDs: 2})
	if err != nil {
		t.Fatalf("dhcpcd: %v", err)
	}
	for name, c := range map[string]*lab.Client{"dhclient": dh, "dhcpcd": dc} {
		ps, err := c.WaitPrefix(20 * time.Second)
		if err != nil {
			t.Fatalf("%s got no prefix through pdrelay: %v\n%s", name, err, r.Proc.Log())
		}
		t.Logf("%s delegated %v", name, ps)
	}

	// Two clients with two IA_PDs each: four bindings, exactly Kea's.
	bs := waitMatch(t, r, kea, 4)
	for _, b := range bs {
		i := slices.IndexFunc(l.Downlinks, func(d lab.Link) bool { return d.Name == b.Interface })
		if i < 0 {
			t.Fatalf("binding on unknown port: %+v", b)
		}
		d := l.Downlinks[i]
		if b.NextHop != d.PeerLinkLocal || b.NextHopMAC != d.PeerMAC.String() {
			t.Errorf("binding %s next hop %s %s, want the client's link-local %s and MAC %s",
				b.Prefix, b.NextHop, b.NextHopMAC, d.PeerLinkLocal, d.PeerMAC)
		}
		if b.ValidLifetime == 0 || b.ValidLifetime > 120 || b.PreferredLifetime > b.ValidLifetime {
			t.Errorf("binding %s lifetimes preferred %d valid %d", b.Prefix, b.PreferredLifetime, b.ValidLifetime)
		}
		if b.ServerDUID != fmt.Sprintf("%x", kea.ServerDUID()) {
			t.Errorf("binding %s server DUID %s, want %x", b.Prefix, b.ServerDUID, kea.ServerDUID())
		}
	}
	if out, _ := r.CLI("bindings"); strings.Count(out, "\n") != 5 || !strings.Contains(out, bs[0].Prefix.String()) {
		t.Errorf("pdrelay bindings (table) wants a header and 4 rows:\n%s", out)
	}
	m, err := r.Metrics(metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`pdrelay_bindings{interface="dl0"} 2`,
		`pdrelay_bindings{interface="dl1"} 2`,
		`pdrelay_dhcp_messages_total{direction="up",type="request"}`,
		`pdrelay_dhcp_messages_total{direction="down",type="reply"}`,
		`pdrelay_binding_changes_total{op="added",reason=""} 4`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A graceful restart and a SIGKILL keep every binding (S-1).
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		time.Sleep(500 * time.Millisecond) // let the write-behind store flush (200 ms)
		if err := r.Restart(sig); err != nil {
			t.Fatalf("restart after %v: %v", sig, err)
		}
		if got := bindingKeys(bindings(t, r)); !slices.Equal(got, bindingKeys(bs)) {
			t.Fatalf("after %v restart bindings %v, want %v", sig, got, bindingKeys(bs))
		}
	}

	// A port going down keeps its bindings (S-2); up again, the client's
	// next exchange is relayed as before.
	dl1 := l.Downlinks[1].Name
	if out, err := l.Run(l.RelayNS, "ip", "link", "set", dl1, "down"); err != nil {
		t.Fatalf("link down: %v %s", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	if got := bindingKeys(bindings(t, r)); !slices.Equal(got, bindingKeys(bs)) {
		t.Fatalf("link down changed bindings: %v, want %v", got, bindingKeys(bs))
	}
	if out, err := l.Run(l.RelayNS, "ip", "link", "set", dl1, "up"); err != nil {
		t.Fatalf("link up: %v %s", err, out)
	}
	// SIGHUP makes dhcpcd rebind: the Reply through the relay must renew
	// the bindings' lifetimes.
	before := bindings(t, r)
	time.Sleep(1100 * time.Millisecond) // lifetimes count whole seconds
	if err := dc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	renewed := func() bool {
		for _, b := range bindings(t, r) {
			for _, o := range before {
				if b.Prefix == o.Prefix && b.Interface == dl1 && b.Expires.After(o.Expires) {
					return true
				}
			}
		}
		return false
	}
	for deadline := time.Now().Add(15 * time.Second); !renewed(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no rebind relayed on %s after link up\n%s", dl1, r.Proc.Log())
		}
	}

	// dhclient releases both its IA_PDs: their bindings go (G-9) and
	// Kea's leases too; dhcpcd's stay.
	if err := dh.Release(); err != nil {
		t.Fatalf("dhclient release: %v", err)
	}
	bs = waitMatch(t, r, kea, 2)
	for _, b := range bs {
		if b.Interface != l.Downlinks[1].Name {
			t.Fatalf("binding of the released client survived: %+v", b)
		}
	}

	// The operator clears one prefix, then everything (O-2).
	out, err := r.CLI("clear", "--prefix", bs[0].Prefix.String())
	if err != nil || !strings.Contains(out, "1") {
		t.Fatalf("pdrelay clear --prefix: %v %s", err, out)
	}
	if got := bindings(t, r); len(got) != 1 || got[0].Prefix == bs[0].Prefix {
		t.Fatalf("after clear --prefix: %+v", got)
	}
	if out, err := r.CLI("clear", "--all"); err != nil {
		t.Fatalf("pdrelay clear --all: %v %s", err, out)
	}
	if got := bindings(t, r); len(got) != 0 {
		t.Fatalf("after clear --all: %+v", got)
	}
}

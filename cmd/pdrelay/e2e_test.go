package main

// End-to-end tests: the pdrelay binary relays between Kea and real PD
// clients (ISC dhclient, dhcpcd) in network namespaces built by bench/lab.
// They need root and the Debian packages `make test` installs; without
// them they skip with the reason.

import (
	"encoding/json"
	"fmt"
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

type relayUnderTest struct {
	t      *testing.T
	l      *lab.Lab
	bin    string
	config string
	socket string
	proc   *lab.Proc
}

func newRelay(t *testing.T, l *lab.Lab, bin string, extra string) *relayUnderTest {
	t.Helper()
	dir := t.TempDir()
	r := &relayUnderTest{t: t, l: l, bin: bin, config: filepath.Join(dir, "pdrelay.yaml"), socket: filepath.Join(dir, "api.sock")}
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: %s\napi_socket: %s\nlog_level: debug\n", filepath.Join(dir, "state"), r.socket)
	fmt.Fprintf(&b, "servers: [%s]\nuplink:\n  interface: %s\ndownlinks:\n", lab.ServerAddr, l.Uplink.Name)
	for _, d := range l.Downlinks {
		fmt.Fprintf(&b, "  - interface: %s\n    link_type: point-to-point\n", d.Name)
	}
	b.WriteString(extra)
	if err := os.WriteFile(r.config, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	return r
}

func (r *relayUnderTest) start() {
	r.t.Helper()
	p, err := r.l.Start(r.l.RelayNS, "pdrelay", r.bin, "run", "-c", r.config)
	if err != nil {
		r.t.Fatalf("start pdrelay: %v", err)
	}
	r.proc = p
	if err := p.WaitLog("pdrelay started", 10*time.Second); err != nil {
		r.t.Fatalf("pdrelay did not start: %v\n%s", err, p.Log())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(r.socket); err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no api socket %s\n%s", r.socket, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *relayUnderTest) stop(sig syscall.Signal) {
	r.t.Helper()
	if err := r.proc.Signal(sig); err != nil {
		r.t.Fatalf("signal pdrelay: %v", err)
	}
	if err := r.proc.Wait(10 * time.Second); err != nil && sig == syscall.SIGTERM {
		r.t.Logf("pdrelay exit after SIGTERM: %v", err)
	}
	if !r.proc.Exited() {
		r.t.Fatalf("pdrelay did not exit on %v", sig)
	}
}

// cli runs an operator command of the binary under test.
func (r *relayUnderTest) cli(args ...string) (string, error) {
	args = append(args, "-s", r.socket)
	out, err := exec.Command(r.bin, args...).CombinedOutput()
	return string(out), err
}

func (r *relayUnderTest) bindings() []api.BindingJSON {
	r.t.Helper()
	out, err := r.cli("bindings", "--json")
	if err != nil {
		r.t.Fatalf("pdrelay bindings --json: %v\n%s", err, out)
	}
	var bs []api.BindingJSON
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		r.t.Fatalf("pdrelay bindings --json: %v\n%s", err, out)
	}
	return bs
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
func waitMatch(t *testing.T, r *relayUnderTest, kea *lab.Kea, want int) []api.BindingJSON {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		bs := r.bindings()
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
	r := newRelay(t, l, bin, "")

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
			t.Fatalf("%s got no prefix through pdrelay: %v\n%s", name, err, r.proc.Log())
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
	if out, _ := r.cli("bindings"); strings.Count(out, "\n") < 5 {
		t.Errorf("pdrelay bindings (table) printed too little:\n%s", out)
	}

	// A graceful restart and a SIGKILL keep every binding (S-1).
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		time.Sleep(500 * time.Millisecond) // let the write-behind store flush (200 ms)
		r.stop(sig)
		r.start()
		if got := bindingKeys(r.bindings()); !slices.Equal(got, bindingKeys(bs)) {
			t.Fatalf("after %v restart bindings %v, want %v", sig, got, bindingKeys(bs))
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
	out, err := r.cli("clear", "--prefix", bs[0].Prefix.String())
	if err != nil || !strings.Contains(out, "1") {
		t.Fatalf("pdrelay clear --prefix: %v %s", err, out)
	}
	if got := r.bindings(); len(got) != 1 || got[0].Prefix == bs[0].Prefix {
		t.Fatalf("after clear --prefix: %+v", got)
	}
	if out, err := r.cli("clear", "--all"); err != nil {
		t.Fatalf("pdrelay clear --all: %v %s", err, out)
	}
	if got := r.bindings(); len(got) != 0 {
		t.Fatalf("after clear --all: %+v", got)
	}
}

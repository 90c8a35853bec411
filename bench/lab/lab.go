package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Addresses of the fixed part of the topology. They are the same in every
// Lab: each Lab lives in its own namespaces, so they never meet.
var (
	// UplinkPrefix is the link between the relay (up0) and the server (eth0).
	UplinkPrefix = netip.MustParsePrefix("fd00:0:0:ffff::/64")
	// ServerAddr is the server's address on the uplink; Kea listens on it.
	ServerAddr = netip.MustParseAddr("fd00:0:0:ffff::1")
	// RelayUplinkAddr is the relay's address on the uplink (up0).
	RelayUplinkAddr = netip.MustParseAddr("fd00:0:0:ffff::2")
	// UpstreamAddr is a host address on the server namespace's loopback,
	// the "upstream host" that clients ping through the relay.
	UpstreamAddr = netip.MustParseAddr("fd00:beef::1")
	// DownlinkGateway is the extra link-local address every downlink port
	// carries on the relay side; clients use it as their default gateway.
	DownlinkGateway = netip.MustParseAddr("fe80::1")
	// DelegatedSpace covers every default PD pool; the server namespace
	// routes it to the relay (unless Config.NoPoolRoute).
	DelegatedSpace = netip.MustParsePrefix("2001:db8::/32")
)

// DownlinkPrefix is the global /64 of downlink port i (fd00:0:0:<i+1>::/64).
// The relay side holds ::1 of it unless Config.NoDownlinkAddrs is set.
func DownlinkPrefix(i int) netip.Prefix {
	var a [16]byte
	a[0] = 0xfd
	a[6] = byte((i + 1) >> 8)
	a[7] = byte(i + 1)
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// DefaultPDPool is the default Kea pd-pool of downlink port i:
// 2001:db8:<i+1>00::/40 (so 2001:db8:100::/40 for port 0), delegating /56s.
func DefaultPDPool(i int) netip.Prefix {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i + 1)}
	return netip.PrefixFrom(netip.AddrFrom16(a), 40)
}

// Config describes the topology New builds.
type Config struct {
	// Clients is the number of client namespaces, each behind its own
	// downlink port on the relay. Zero means one.
	Clients int
	// Forwarding enables net.ipv6.conf.all.forwarding in the relay
	// namespace. Off by default: pdrelay forwards in user space and the
	// tests need the kernel not to.
	Forwarding bool
	// NoDownlinkAddrs leaves the relay's downlink ports with link-local
	// addresses only (fe80::1 and the EUI-64 one).
	NoDownlinkAddrs bool
	// SharedSegment puts every client on ONE multi-access downlink, dl0:
	// a Linux bridge (br0) in an extra switch namespace joins a veth to
	// the relay's dl0 and one veth per client's eth0. Downlinks then holds
	// only dl0, and ClientLinks says which port each client is behind.
	// False (the default) gives each client its own point-to-point port.
	SharedSegment bool
	// NoPoolRoute leaves the server namespace without the static route
	// for DelegatedSpace via the relay: something else (BGP) must route
	// the delegated prefixes there.
	NoPoolRoute bool
	// Tag, when set, is put in the namespace names ("pdl-<pid>-<hex>-
	// <tag>srv"), so a test's namespaces say whose they are. Letters and
	// digits only.
	Tag string
	// Dir is where configuration, leases and logs go. Empty: a new
	// directory /tmp/lab-*, removed by Close unless KeepDir is set.
	Dir string
	// KeepDir keeps the directory New created.
	KeepDir bool
	// Logf, when set, receives progress messages (t.Logf fits).
	Logf func(format string, args ...any)
	// Queues, when above one, gives every veth pair (both ends) that many
	// rx and tx queues, for multi-queue AF_XDP.
	Queues int
	// Phys replaces the veth pair of a point-to-point link ("up0", "dl0",
	// "dl1", ...) with two interfaces of the caller's namespace that are
	// cabled to each other: NIC ports, for AF_XDP zero-copy, which veth
	// never offers. The first goes into the relay's namespace under the
	// link's name, the second into the peer's as eth0, each with the
	// lab's MAC; Close gives them back, with their names, MACs and up
	// state, to the caller's namespace. Queues does not apply to them. If
	// the process dies first, deleting its namespaces (SweepStale) sends
	// a NIC back under the lab's name and MAC.
	Phys map[string][2]string
}

// Link is one veth pair that has an end in the relay namespace.
type Link struct {
	Name      string           // interface name on the relay side: "up0", "dl0", "dl1", ...
	Index     int              // its ifindex in the relay namespace
	MAC       net.HardwareAddr // relay side MAC (fixed, see doc.go)
	LinkLocal netip.Addr       // relay side EUI-64 link-local address
	Addr      netip.Prefix     // relay side global address; invalid if none

	PeerNS        string           // namespace of the other end
	PeerName      string           // interface name there: always "eth0"
	PeerIndex     int              // its ifindex there
	PeerMAC       net.HardwareAddr // its MAC
	PeerLinkLocal netip.Addr       // its EUI-64 link-local address
	PeerAddr      netip.Prefix     // its global address (uplink only)
}

// Lab is one network-namespace topology:
//
//	client ns c<i> (eth0) ──veth── dl<i> ┐
//	                                     ├ relay ns (up0) ──veth── (eth0) server ns
//	client ns c<j> (eth0) ──veth── dl<j> ┘
//
// All names carry a per-Lab suffix; Close removes everything.
type Lab struct {
	ID        string   // unique part of the namespace names
	Dir       string   // scratch directory
	ServerNS  string   // Kea runs here; also the upstream host
	RelayNS   string   // the relay under test runs here
	ClientNS  []string // one per downlink
	Uplink    Link     // relay up0 <-> server eth0
	Downlinks []Link   // relay dl<i> <-> client<i> eth0; only dl0 with SharedSegment
	// ClientLinks has one entry per client namespace: the relay port the
	// client is behind (Name, Index, MAC, LinkLocal, Addr of that port)
	// and the client's eth0 as the peer (PeerNS == ClientNS[i], PeerMAC,
	// PeerLinkLocal, PeerIndex). Without SharedSegment it equals
	// Downlinks; with it every entry names dl0.
	ClientLinks []Link
	// SwitchNS is the namespace of the bridge with SharedSegment, else "".
	SwitchNS string

	cfg      Config
	phys     []physEnd // in the order taken
	ownDir   bool
	mu       sync.Mutex
	procs    []*Proc
	closed   bool
	closeErr error
}

const nsPrefix = "pdl-"

// Namespaces returns every namespace of the Lab: server, relay, clients,
// and the switch namespace with SharedSegment.
func (l *Lab) Namespaces() []string {
	ns := append([]string{l.ServerNS, l.RelayNS}, l.ClientNS...)
	if l.SwitchNS != "" {
		ns = append(ns, l.SwitchNS)
	}
	return ns
}

// New builds the topology. On error everything created so far is removed.
// Callers must Close the Lab (NewT does that through t.Cleanup).
func New(cfg Config) (*Lab, error) {
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Clients > 250 {
		return nil, fmt.Errorf("lab: at most 250 clients, got %d", cfg.Clients)
	}
	if strings.ContainsFunc(cfg.Tag, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9') }) {
		return nil, fmt.Errorf("lab: tag %q: lower-case letters and digits only", cfg.Tag)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	SweepStale()

	l := &Lab{cfg: cfg}
	var err error
	for try := 0; ; try++ {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		l.ID = fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(b))
		if _, err := os.Stat("/run/netns/" + nsPrefix + l.ID + "-" + cfg.Tag + "rly"); errors.Is(err, os.ErrNotExist) || try > 5 {
			break
		}
	}
	if cfg.Dir != "" {
		l.Dir = cfg.Dir
		err = os.MkdirAll(l.Dir, 0o755)
	} else {
		l.Dir, err = os.MkdirTemp("", "lab-"+l.ID+"-")
		l.ownDir = true
	}
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	base := nsPrefix + l.ID + "-" + cfg.Tag
	l.ServerNS = base + "srv"
	l.RelayNS = base + "rly"
	for i := 0; i < cfg.Clients; i++ {
		l.ClientNS = append(l.ClientNS, fmt.Sprintf("%sc%d", base, i))
	}
	if cfg.SharedSegment {
		l.SwitchNS = base + "sw"
	}
	start := time.Now()
	if err := l.build(); err != nil {
		_ = l.Close()
		return nil, err
	}
	l.logf("lab %s: %d namespaces up in %v (dir %s)", l.ID, len(l.Namespaces()), time.Since(start).Round(time.Millisecond), l.Dir)
	return l, nil
}

func (l *Lab) logf(format string, args ...any) {
	if l.cfg.Logf != nil {
		l.cfg.Logf(format, args...)
	}
}

func mac(b4, b5 int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, byte(b4), byte(b5)}
}

// eui64 is the link-local address the kernel derives from a MAC
// (addr_gen_mode 0, the default).
func eui64(m net.HardwareAddr) netip.Addr {
	a := [16]byte{0: 0xfe, 1: 0x80}
	a[8] = m[0] ^ 0x02
	a[9], a[10] = m[1], m[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = m[3], m[4], m[5]
	return netip.AddrFrom16(a)
}

// parallel runs fn for every element of items concurrently and joins the
// errors. Namespace creation mostly waits in the kernel, so this pays.
func parallel[T any](items []T, fn func(T) error) error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(it)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) build() error {
	err := parallel(l.Namespaces(), func(ns string) error {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: ip netns add %s: %v: %s", ns, err, bytes.TrimSpace(out))
		}
		// Every namespace gets its own resolv.conf: `ip netns exec` mounts
		// it over /etc/resolv.conf, so no process in the lab can rewrite
		// the machine's.
		dir := filepath.Join("/etc/netns", ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		// No DAD: addresses are usable at once (dhclient and Kea would
		// otherwise wait for tentative link-locals).
		fwd := "0"
		if ns == l.RelayNS && l.cfg.Forwarding {
			fwd = "1"
		}
		// The switch is a plain layer-2 bridge: no IPv6 of its own, so
		// it sends no RS or MLD onto the segment.
		v6off := "0"
		if ns == l.SwitchNS {
			v6off = "1"
		}
		_, err := l.Run(ns, "sysctl", "-q", "-w",
			"net.ipv6.conf.all.accept_dad=0",
			"net.ipv6.conf.default.accept_dad=0",
			"net.ipv6.conf.all.disable_ipv6="+v6off,
			"net.ipv6.conf.default.disable_ipv6="+v6off,
			"net.ipv6.conf.all.forwarding="+fwd,
			"net.ipv6.conf.default.forwarding="+fwd,
		)
		return err
	})
	if err != nil {
		return err
	}

	// Uplink: relay up0 <-> server eth0.
	l.Uplink = Link{
		Name: "up0", MAC: mac(0xff, 0x02), Addr: netip.PrefixFrom(RelayUplinkAddr, 64),
		PeerNS: l.ServerNS, PeerName: "eth0", PeerMAC: mac(0xff, 0x01), PeerAddr: netip.PrefixFrom(ServerAddr, 64),
	}
	// q is the queue clause of a veth end ("" for the default single queue).
	q := ""
	if l.cfg.Queues > 1 {
		q = fmt.Sprintf(" numtxqueues %d numrxqueues %d", l.cfg.Queues, l.cfg.Queues)
	}
	var rly strings.Builder
	fmt.Fprintf(&rly, "link set lo up\n")
	// peerCmds are the commands a peer namespace's batch starts with:
	// naming a physical end eth0.
	peerCmds := map[string]string{}
	link := func(d Link, q string) {
		if p, ok := l.cfg.Phys[d.Name]; ok {
			fmt.Fprintf(&rly, "link set dev %s name %s address %s\n", p[0], d.Name, d.MAC)
			peerCmds[d.PeerNS] = fmt.Sprintf("link set dev %s name eth0 address %s\n", p[1], d.PeerMAC)
			return
		}
		fmt.Fprintf(&rly, "link add %s address %s%s type veth peer name eth0 address %s%s netns %s\n", d.Name, d.MAC, q, d.PeerMAC, q, d.PeerNS)
	}
	if err := l.takePhys(); err != nil {
		return err
	}
	link(l.Uplink, q)
	fmt.Fprintf(&rly, "link set up0 up\n")
	fmt.Fprintf(&rly, "addr add %s dev up0 nodad\n", l.Uplink.Addr)
	var sw strings.Builder
	if l.SwitchNS != "" {
		// One port dl0; the relay end of the switch is "rly", the
		// clients' ends "c<i>", all enslaved to br0 (no STP, no MLD
		// snooping: every port forwards at once and floods multicast).
		fmt.Fprintf(&sw, "link set lo up\n")
		fmt.Fprintf(&sw, "link add br0 type bridge stp_state 0 mcast_snooping 0\n")
		fmt.Fprintf(&sw, "link set br0 up\n")
		fmt.Fprintf(&sw, "link set rly master br0\n")
		fmt.Fprintf(&sw, "link set rly up\n")
	}
	for i, cns := range l.ClientNS {
		d := Link{
			Name: fmt.Sprintf("dl%d", i), MAC: mac(i+1, 0x01),
			PeerNS: cns, PeerName: "eth0", PeerMAC: mac(i+1, 0x02),
		}
		if l.SwitchNS != "" {
			d.Name, d.MAC = "dl0", mac(1, 0x01)
		}
		if !l.cfg.NoDownlinkAddrs {
			p := DownlinkPrefix(0)
			if l.SwitchNS == "" {
				p = DownlinkPrefix(i)
			}
			d.Addr = netip.PrefixFrom(p.Addr().Next(), 64)
		}
		l.ClientLinks = append(l.ClientLinks, d)
		if l.SwitchNS != "" {
			fmt.Fprintf(&sw, "link add c%d type veth peer name eth0 address %s netns %s\n", i, d.PeerMAC, cns)
			fmt.Fprintf(&sw, "link set c%d master br0\n", i)
			fmt.Fprintf(&sw, "link set c%d up\n", i)
			if i > 0 {
				continue
			}
			fmt.Fprintf(&rly, "link add %s address %s type veth peer name rly netns %s\n", d.Name, d.MAC, l.SwitchNS)
		} else {
			link(d, q)
		}
		fmt.Fprintf(&rly, "link set %s up\n", d.Name)
		fmt.Fprintf(&rly, "addr add %s/64 dev %s nodad\n", DownlinkGateway, d.Name)
		if d.Addr.IsValid() {
			fmt.Fprintf(&rly, "addr add %s dev %s nodad\n", d.Addr, d.Name)
		}
		l.Downlinks = append(l.Downlinks, d)
	}
	fmt.Fprintf(&rly, "route add default via %s dev up0\n", ServerAddr)
	if err := l.ipBatch(l.RelayNS, rly.String()); err != nil {
		return err
	}
	if l.SwitchNS != "" {
		if err := l.ipBatch(l.SwitchNS, sw.String()); err != nil {
			return err
		}
	}

	batches := map[string]string{}
	var srv strings.Builder
	fmt.Fprintf(&srv, "link set lo up\n")
	fmt.Fprintf(&srv, "link set eth0 up\n")
	fmt.Fprintf(&srv, "addr add %s dev eth0 nodad\n", l.Uplink.PeerAddr)
	fmt.Fprintf(&srv, "addr add %s/128 dev lo\n", UpstreamAddr)
	if !l.cfg.NoPoolRoute {
		fmt.Fprintf(&srv, "route add %s via %s dev eth0\n", DelegatedSpace, RelayUplinkAddr)
	}
	for i := range l.Downlinks {
		fmt.Fprintf(&srv, "route add %s via %s dev eth0\n", DownlinkPrefix(i), RelayUplinkAddr)
	}
	batches[l.ServerNS] = peerCmds[l.ServerNS] + srv.String()
	for _, cns := range l.ClientNS {
		batches[cns] = peerCmds[cns] + "link set lo up\nlink set eth0 up\n" +
			fmt.Sprintf("route add default via %s dev eth0\n", DownlinkGateway)
	}
	peerIdx := map[string]int{}
	var mu sync.Mutex
	err = parallel(append([]string{l.ServerNS}, l.ClientNS...), func(ns string) error {
		if err := l.ipBatch(ns, batches[ns]); err != nil {
			return err
		}
		m, err := l.ifIndexes(ns)
		if err != nil {
			return err
		}
		mu.Lock()
		peerIdx[ns] = m["eth0"]
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}

	// Fill in interface indexes and link-local addresses.
	idx, err := l.ifIndexes(l.RelayNS)
	if err != nil {
		return err
	}
	l.Uplink.Index = idx["up0"]
	l.Uplink.LinkLocal = eui64(l.Uplink.MAC)
	l.Uplink.PeerLinkLocal = eui64(l.Uplink.PeerMAC)
	l.Uplink.PeerIndex = peerIdx[l.ServerNS]
	for i := range l.ClientLinks {
		d := &l.ClientLinks[i]
		d.Index = idx[d.Name]
		d.LinkLocal = eui64(d.MAC)
		d.PeerLinkLocal = eui64(d.PeerMAC)
		d.PeerIndex = peerIdx[d.PeerNS]
	}
	// Downlinks: one per port. With SharedSegment dl0's peer fields are
	// client 0's.
	l.Downlinks = nil
	for _, d := range l.ClientLinks {
		if len(l.Downlinks) == 0 || l.Downlinks[len(l.Downlinks)-1].Name != d.Name {
			l.Downlinks = append(l.Downlinks, d)
		}
	}
	return nil
}

func (l *Lab) ipBatch(ns, batch string) error {
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: ip -n %s -batch: %v: %s\nbatch:\n%s", ns, err, bytes.TrimSpace(out), batch)
	}
	return nil
}

func (l *Lab) ifIndexes(ns string) (map[string]int, error) {
	out, err := exec.Command("ip", "-n", ns, "-j", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("lab: ip -n %s link show: %w", ns, err)
	}
	var links []struct {
		Index int    `json:"ifindex"`
		Name  string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("lab: ip -j link: %w", err)
	}
	m := map[string]int{}
	for _, k := range links {
		m[k.Name] = k.Index
	}
	return m, nil
}

// Exec returns a command that runs args in namespace ns
// (`ip netns exec ns args...`), which also mounts /etc/netns/ns/resolv.conf
// over /etc/resolv.conf. The caller runs and waits for it; for long-running
// processes use Start, which Close stops.
func (l *Lab) Exec(ns string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// Run runs args in namespace ns and returns the combined output; the error
// includes the output.
func (l *Lab) Run(ns string, args ...string) (string, error) {
	out, err := l.Exec(ns, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: %s in %s: %v: %s", strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// SetForwarding turns IPv6 forwarding in the relay namespace on or off.
func (l *Lab) SetForwarding(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	_, err := l.Run(l.RelayNS, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding="+v)
	return err
}

// Forwarding reports net.ipv6.conf.all.forwarding of the relay namespace.
func (l *Lab) Forwarding() (bool, error) {
	out, err := l.Run(l.RelayNS, "sysctl", "-n", "net.ipv6.conf.all.forwarding")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(out) == "1", nil
}

// Close stops every process the Lab started (SIGTERM, then SIGKILL), kills
// whatever else still runs in its namespaces, deletes the namespaces and
// /etc/netns/<ns>, and removes the scratch directory if New made it.
// It is idempotent and safe after a failed New.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.closeErr
	}
	l.closed = true
	procs := l.procs
	l.mu.Unlock()

	var errs []error
	_ = parallel(procs, func(p *Proc) error { return p.Stop() })
	if err := l.givePhysBack(); err != nil {
		errs = append(errs, err)
	}
	if err := parallel(l.Namespaces(), removeNS); err != nil {
		errs = append(errs, err)
	}
	if l.ownDir && !l.cfg.KeepDir && l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	l.closeErr = errors.Join(errs...)
	l.logf("lab %s: closed", l.ID)
	return l.closeErr
}

// removeNS kills every process in ns, deletes it and its /etc/netns entry.
func removeNS(ns string) error {
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		for try := 0; try < 50; try++ {
			out, _ := exec.Command("ip", "netns", "pids", ns).Output()
			pids := strings.Fields(string(out))
			if len(pids) == 0 {
				break
			}
			for _, p := range pids {
				if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: ip netns del %s: %v: %s", ns, err, bytes.TrimSpace(out))
		}
	}
	if err := os.RemoveAll(filepath.Join("/etc/netns", ns)); err != nil {
		return err
	}
	return nil
}

var staleRE = regexp.MustCompile(`^` + nsPrefix + `(\d+)-[0-9a-f]+-`)

// SweepStale removes lab namespaces left behind by processes that no longer
// exist (a test binary killed before its cleanup ran). Namespace names
// carry the creating process's pid, so labs of live processes are never
// touched. New calls it.
func SweepStale() {
	seen := map[string]bool{}
	for _, dir := range []string{"/run/netns", "/etc/netns"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			m := staleRE.FindStringSubmatch(e.Name())
			if m == nil || seen[e.Name()] {
				continue
			}
			pid, _ := strconv.Atoi(m[1])
			if pid <= 0 || pid == os.Getpid() {
				continue
			}
			if pidAlive(pid) {
				continue
			}
			seen[e.Name()] = true
			_ = removeNS(e.Name())
			// The scratch directory of that lab, if New made it.
			if id := staleID(e.Name()); id != "" {
				dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "lab-"+id+"-*"))
				for _, d := range dirs {
					_ = os.RemoveAll(d)
				}
			}
		}
	}
}

// pidAlive reports whether pid is a live process (zombies are dead: in
// containers whose init does not reap, a killed test binary stays one).
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces and parens.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// staleID is the lab ID ("<pid>-<hex>") inside a namespace name.
func staleID(ns string) string {
	rest := strings.TrimPrefix(ns, nsPrefix)
	if i := strings.LastIndex(rest, "-"); i > 0 {
		return rest[:i]
	}
	return ""
}

var (
	availOnce sync.Once
	availErr  error
)

// Available reports why labs cannot be built here (nil if they can):
// not root, no `ip`, or namespaces cannot be created. Extra binaries (for
// example "kea-dhcp6", "dhclient") are checked too when named.
func Available(bins ...string) error {
	availOnce.Do(func() {
		if os.Geteuid() != 0 {
			availErr = errors.New("lab: needs root (network namespaces)")
			return
		}
		for _, b := range []string{"ip", "sysctl"} {
			if _, err := exec.LookPath(b); err != nil {
				availErr = fmt.Errorf("lab: %s not found (apt-get install iproute2 procps)", b)
				return
			}
		}
		probe := fmt.Sprintf("%sprobe-%d", nsPrefix, os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
			availErr = fmt.Errorf("lab: ip netns unavailable: %v: %s", err, bytes.TrimSpace(out))
			return
		}
		_ = exec.Command("ip", "netns", "del", probe).Run()
	})
	if availErr != nil {
		return availErr
	}
	for _, b := range bins {
		if _, err := lookBin(b); err != nil {
			return err
		}
	}
	return nil
}

var packageOf = map[string]string{
	"kea-dhcp6": "kea-dhcp6-server",
	"dhclient":  "isc-dhcp-client",
	"dhcpcd":    "dhcpcd-base",
	"dhcrelay":  "isc-dhcp-relay",
	"unshare":   "util-linux",
	"zebra":     "frr",
	"bgpd":      "frr",
	"vtysh":     "frr",
	"nft":       "nftables",
}

// lookBin finds a binary in PATH or the sbin directories.
func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin", frrDir} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if pkg, ok := packageOf[name]; ok {
		return "", fmt.Errorf("lab: %s not found (Debian package %s)", name, pkg)
	}
	return "", fmt.Errorf("lab: %s not found", name)
}

// IfIndex returns the index of interface name in namespace ns.
func (l *Lab) IfIndex(ns, name string) (int, error) {
	m, err := l.ifIndexes(ns)
	if err != nil {
		return 0, err
	}
	i, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("lab: no interface %s in %s", name, ns)
	}
	return i, nil
}

package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// frrDir is where Debian's frr package keeps the daemons.
const frrDir = "/usr/lib/frr"

// FRRNeighbor is one BGP neighbour of the lab's FRR.
type FRRNeighbor struct {
	Addr     netip.Addr
	ASN      uint32
	Password string // TCP MD5 key; empty for none
}

// FRROptions configures StartFRR. Zero values: AS 65000, router ID
// 192.0.2.254, one neighbour, the relay's uplink address in AS 65001, in
// the server namespace.
type FRROptions struct {
	ASN       uint32
	RouterID  netip.Addr
	Neighbors []FRRNeighbor
	// NS is the namespace FRR runs in; empty means the server namespace.
	NS string
	// Extra is appended inside "router bgp" (FRR syntax, one space
	// indent), for example " bgp graceful-restart\n".
	Extra string
}

// FRR is zebra and bgpd running in one of the Lab's namespaces, with
// their config, pid files and sockets in a directory of their own
// (Dir). They never use /etc/frr or the sockets of a host-wide FRR, and
// zebra installs the routes bgpd learns into that namespace's kernel
// table, as on a real upstream router.
type FRR struct {
	Zebra, Bgpd *Proc
	Dir         string // config, pid files, vty and zserv sockets
	NS          string
	lab         *Lab
}

// StartFRR writes FRR's config for o and starts zebra and bgpd, as FRR's
// own user (they refuse root without the frrvty group), and returns once
// bgpd answers vtysh. FRR's defaults hold otherwise: graceful restart
// helper mode, the RFC 8538 N-bit, "traditional" profile. eBGP needs no
// policy ("no bgp ebgp-requires-policy") so that routes are accepted.
func (l *Lab) StartFRR(o FRROptions) (*FRR, error) {
	if err := Available("zebra", "bgpd", "vtysh"); err != nil {
		return nil, err
	}
	if o.ASN == 0 {
		o.ASN = 65000
	}
	if !o.RouterID.IsValid() {
		o.RouterID = netip.MustParseAddr("192.0.2.254")
	}
	if o.Neighbors == nil {
		o.Neighbors = []FRRNeighbor{{Addr: RelayUplinkAddr, ASN: 65001}}
	}
	if o.NS == "" {
		o.NS = l.ServerNS
	}
	fu, err := user.Lookup("frr")
	if err != nil {
		return nil, fmt.Errorf("lab: FRR's user: %w (Debian package frr)", err)
	}
	uid, _ := strconv.Atoi(fu.Uid)
	gid, _ := strconv.Atoi(fu.Gid)
	// The daemons run as frr: they must reach their directory through
	// the Lab's (search permission only) and own it.
	if err := os.Chmod(l.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	dir, err := os.MkdirTemp(l.Dir, "frr-")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	f := &FRR{Dir: dir, NS: o.NS, lab: l}

	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname lab-frr\nlog stdout informational\n")
	fmt.Fprintf(&b, "debug bgp neighbor-events\ndebug bgp graceful-restart\n!\n")
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n", o.ASN, o.RouterID)
	for _, n := range o.Neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", n.Addr, n.ASN)
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.Addr, n.Password)
		}
	}
	b.WriteString(o.Extra)
	b.WriteString(" address-family ipv6 unicast\n")
	for _, n := range o.Neighbors {
		fmt.Fprintf(&b, "  neighbor %s activate\n", n.Addr)
	}
	b.WriteString(" exit-address-family\n!\n")
	files := map[string]string{"bgpd.conf": b.String(), "zebra.conf": "hostname lab-zebra\n", "vtysh.conf": ""}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	zserv := filepath.Join(dir, "zserv.api")
	common := func(daemon string) []string {
		return []string{filepath.Join(frrDir, daemon), "-f", filepath.Join(dir, daemon+".conf"),
			"-i", filepath.Join(dir, daemon+".pid"), "-z", zserv, "--vty_socket", dir, "--log", "stdout"}
	}
	// -r: zebra leaves its routes in the kernel when it stops (the
	// namespace goes with them), so a large table does not hold it past
	// Close's SIGTERM grace into a SIGKILL, which would leave its crash
	// directory in /var/tmp/frr.
	if f.Zebra, err = l.Start(o.NS, "zebra", append(common("zebra"), "-r")...); err != nil {
		return nil, err
	}
	if err := waitFile(zserv, 10*time.Second, f.Zebra); err != nil {
		return nil, err
	}
	if f.Bgpd, err = l.Start(o.NS, "bgpd", append(common("bgpd"), "-p", "179")...); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := f.Vtysh("show bgp summary json")
		if err == nil {
			return f, nil
		}
		if f.Bgpd.Exited() || time.Now().After(deadline) {
			return nil, fmt.Errorf("lab: bgpd does not answer: %v\n%s", err, tail(f.Bgpd.Log(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFile(path string, timeout time.Duration, p *Proc) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if p.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("lab: %s did not create %s:\n%s", p.Name, path, tail(p.Log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Vtysh runs FRR commands through vtysh, against this FRR's sockets only.
func (f *FRR) Vtysh(cmds ...string) (string, error) {
	args := []string{"--vty_socket", f.Dir, "--config_dir", f.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	bin, err := lookBin("vtysh")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: vtysh %s: %v: %s", strings.Join(cmds, "; "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// FRRRoute is FRR's best path for one IPv6 prefix.
type FRRRoute struct {
	NextHop netip.Addr // global next hop
	Stale   bool       // kept across the peer's restart (graceful restart)
	ASPath  string
	PeerID  string // the peer it came from
}

// Routes returns FRR's IPv6 unicast BGP table: the best path of each
// prefix (`show bgp ipv6 unicast json`).
func (f *FRR) Routes() (map[netip.Prefix]FRRRoute, error) {
	out, err := f.Vtysh("show bgp ipv6 unicast json")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Routes map[string][]struct {
			Valid    bool   `json:"valid"`
			Best     bool   `json:"bestpath"`
			Stale    bool   `json:"stale"`
			Path     string `json:"path"`
			PeerID   string `json:"peerId"`
			NextHops []struct {
				IP    string `json:"ip"`
				Scope string `json:"scope"`
			} `json:"nexthops"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("lab: show bgp ipv6 unicast json: %w: %.200s", err, out)
	}
	m := make(map[netip.Prefix]FRRRoute, len(doc.Routes))
	for k, paths := range doc.Routes {
		p, err := netip.ParsePrefix(k)
		if err != nil {
			return nil, fmt.Errorf("lab: FRR route %q: %w", k, err)
		}
		for _, pa := range paths {
			if !pa.Best || !pa.Valid {
				continue
			}
			r := FRRRoute{Stale: pa.Stale, ASPath: pa.Path, PeerID: pa.PeerID}
			for _, nh := range pa.NextHops {
				if a, err := netip.ParseAddr(nh.IP); err == nil && nh.Scope != "link-local" {
					r.NextHop = a
					break
				}
			}
			m[p] = r
		}
	}
	return m, nil
}

// RouteCount returns how many IPv6 unicast prefixes FRR holds, without
// listing them (for large tables).
func (f *FRR) RouteCount() (int, error) {
	out, err := f.Vtysh("show bgp ipv6 unicast summary json")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Peers map[string]struct {
			PfxRcd int    `json:"pfxRcd"`
			State  string `json:"state"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, fmt.Errorf("lab: bgp summary json: %w: %.200s", err, out)
	}
	n := 0
	for _, p := range doc.Peers {
		n += p.PfxRcd
	}
	return n, nil
}

// FRRSession is FRR's view of one neighbour.
type FRRSession struct {
	State string // "Established", "Active", ...
	// RBit, NBit: the peer's last OPEN set the Restart State and the
	// RFC 8538 N bit; FBit: it set the Forwarding State bit for IPv6
	// unicast.
	RBit, NBit, FBit bool
	// PfxRcd is how many prefixes the peer sent (IPv6 unicast).
	PfxRcd int
	// LastReset is why the session last went down.
	LastReset string
}

// Session returns FRR's view of neighbour addr.
func (f *FRR) Session(addr netip.Addr) (FRRSession, error) {
	out, err := f.Vtysh("show bgp neighbors " + addr.String() + " json")
	if err != nil {
		return FRRSession{}, err
	}
	var doc map[string]struct {
		State     string `json:"bgpState"`
		LastReset string `json:"lastResetDueTo"`
		GR        struct {
			RBit bool `json:"rBit"`
			NBit bool `json:"nBit"`
			IPv6 struct {
				FBit bool `json:"fBit"`
			} `json:"ipv6Unicast"`
		} `json:"gracefulRestartInfo"`
		AF map[string]struct {
			PfxRcd int `json:"acceptedPrefixCounter"`
		} `json:"addressFamilyInfo"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return FRRSession{}, fmt.Errorf("lab: show bgp neighbors json: %w: %.200s", err, out)
	}
	n, ok := doc[addr.String()]
	if !ok {
		return FRRSession{}, errors.New("lab: FRR has no neighbor " + addr.String())
	}
	return FRRSession{State: n.State, RBit: n.GR.RBit, NBit: n.GR.NBit, FBit: n.GR.IPv6.FBit,
		PfxRcd: n.AF["ipv6Unicast"].PfxRcd, LastReset: n.LastReset}, nil
}

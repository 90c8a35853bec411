package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PDPool is one Kea pd-pool.
type PDPool struct {
	Prefix       netip.Prefix // the pool, e.g. 2001:db8:100::/40
	DelegatedLen int          // length of each delegated prefix; 0 means 56
}

// KeaSubnet is one Kea subnet6. Kea picks the subnet of a relayed message
// by, in order: Interface-ID (option 18) equal to InterfaceID; the relay's
// link-address listed in RelayAddrs; the link-address inside Subnet.
// Only a message whose link-address is global (not :: and not link-local)
// counts as relayed: with link-address :: Kea 2.2 ignores the Interface-ID
// and finds no subnet (see NOTES.md).
type KeaSubnet struct {
	ID          int          // subnet-id; 0 means index+1
	Subnet      netip.Prefix // required by Kea; matched against link-address
	InterfaceID string       // raw bytes of option 18 to match; empty: none
	RelayAddrs  []netip.Addr // "relay": {"ip-addresses": [...]}
	Pools       []PDPool
	RapidCommit *bool // per-subnet override of KeaOptions.RapidCommit
}

// KeaOptions configures StartKea. Zero values give short timers suitable
// for tests: T1 10 s, T2 20 s, preferred 30 s, valid 40 s.
type KeaOptions struct {
	// Subnets; nil means DefaultSubnets(l): one per downlink port.
	Subnets []KeaSubnet
	// Timers in seconds; zero means the defaults above.
	RenewTimer, RebindTimer, PreferredLifetime, ValidLifetime int
	// RapidCommit allows two-message exchanges for clients that ask.
	RapidCommit bool
	// KeepReclaimed keeps expired leases in the lease database in state
	// 2 (expired-reclaimed) for an hour instead of deleting them when they
	// are reclaimed (every second). Released leases are always deleted
	// by Kea 2.2.
	KeepReclaimed bool
	// Preference is the Preference option (7) Kea puts in Advertise.
	// Zero means 255, which lets clients take the first Advertise at once
	// instead of collecting Advertises for a second; negative means none.
	Preference int
	// Debug turns on Kea's DEBUG logging (level 99, with packet dumps).
	Debug bool
	// Extra entries merged into the "Dhcp6" map, overriding generated ones.
	Extra map[string]any
}

// Kea is a running kea-dhcp6 in the server namespace.
type Kea struct {
	*Proc
	ConfigPath string
	Socket     string // unix control socket
	Config     map[string]any
	lab        *Lab
}

// DefaultSubnets is one subnet per downlink port i: subnet-id i+1, subnet
// DownlinkPrefix(i), relay ip-address DownlinkPrefix(i)::1 (the port's
// global address, also when the Lab has NoDownlinkAddrs), Interface-ID the
// port's name ("dl0", "dl1", ...), and pool DefaultPDPool(i) delegating
// /56s. So a relay that sends either the port name as Interface-ID or the
// port's global address as link-address gets port i's pool.
func DefaultSubnets(l *Lab) []KeaSubnet {
	var s []KeaSubnet
	for i, d := range l.Downlinks {
		ks := KeaSubnet{
			ID:          i + 1,
			Subnet:      DownlinkPrefix(i),
			InterfaceID: d.Name,
			Pools:       []PDPool{{Prefix: DefaultPDPool(i), DelegatedLen: 56}},
		}
		ks.RelayAddrs = []netip.Addr{DownlinkPrefix(i).Addr().Next()}
		s = append(s, ks)
	}
	return s
}

var leaseCmdsPaths = []string{
	"/usr/lib/x86_64-linux-gnu/kea/hooks/libdhcp_lease_cmds.so",
	"/usr/lib/aarch64-linux-gnu/kea/hooks/libdhcp_lease_cmds.so",
	"/usr/lib/kea/hooks/libdhcp_lease_cmds.so",
	"/usr/lib64/kea/hooks/libdhcp_lease_cmds.so",
}

// LeaseCmdsHook returns the path of Kea's lease_cmds hook library.
func LeaseCmdsHook() (string, error) {
	for _, p := range leaseCmdsPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	out, _ := exec.Command("dpkg", "-S", "libdhcp_lease_cmds.so").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, ": "); i > 0 {
			p := strings.TrimSpace(line[i+2:])
			if strings.HasSuffix(p, ".so") {
				return p, nil
			}
		}
	}
	return "", errors.New("lab: libdhcp_lease_cmds.so not found (Debian package kea-common)")
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

// KeaConfig builds the kea-dhcp6 configuration StartKea would write.
func (l *Lab) KeaConfig(opts KeaOptions) (map[string]any, error) {
	hook, err := LeaseCmdsHook()
	if err != nil {
		return nil, err
	}
	subnets := opts.Subnets
	if subnets == nil {
		subnets = DefaultSubnets(l)
	}
	var sub []any
	for i, s := range subnets {
		if !s.Subnet.IsValid() {
			return nil, fmt.Errorf("lab: kea subnet %d has no Subnet", i)
		}
		m := map[string]any{
			"id":     orDefault(s.ID, i+1),
			"subnet": s.Subnet.Masked().String(),
		}
		if s.InterfaceID != "" {
			m["interface-id"] = s.InterfaceID
		}
		if len(s.RelayAddrs) > 0 {
			var a []string
			for _, r := range s.RelayAddrs {
				a = append(a, r.String())
			}
			m["relay"] = map[string]any{"ip-addresses": a}
		}
		var pools []any
		for _, p := range s.Pools {
			pools = append(pools, map[string]any{
				"prefix":        p.Prefix.Masked().Addr().String(),
				"prefix-len":    p.Prefix.Bits(),
				"delegated-len": orDefault(p.DelegatedLen, 56),
			})
		}
		m["pd-pools"] = pools
		// Kea 2.2 has rapid-commit per subnet only, not globally.
		m["rapid-commit"] = opts.RapidCommit
		if s.RapidCommit != nil {
			m["rapid-commit"] = *s.RapidCommit
		}
		sub = append(sub, m)
	}
	reclaim := map[string]any{
		"reclaim-timer-wait-time":         1,
		"flush-reclaimed-timer-wait-time": 0, // 0: reclaimed leases are deleted
		"hold-reclaimed-time":             0,
		"unwarned-reclaim-cycles":         0,
	}
	if opts.KeepReclaimed {
		reclaim["flush-reclaimed-timer-wait-time"] = 25
		reclaim["hold-reclaimed-time"] = 3600
	}
	logger := map[string]any{
		"name":           "kea-dhcp6",
		"output_options": []any{map[string]any{"output": "stdout", "flush": true}},
		"severity":       "INFO",
	}
	if opts.Debug {
		logger["severity"] = "DEBUG"
		logger["debuglevel"] = 99
	}
	d6 := map[string]any{
		"interfaces-config": map[string]any{
			// eth0 for multicast, eth0/addr to also receive unicast from relays.
			"interfaces": []string{"eth0", "eth0/" + ServerAddr.String()},
		},
		"lease-database": map[string]any{
			"type": "memfile", "persist": true, "lfc-interval": 0,
			"name": filepath.Join(l.Dir, "kea-leases6.csv"),
		},
		"control-socket": map[string]any{
			"socket-type": "unix",
			"socket-name": filepath.Join(l.Dir, "kea6.sock"),
		},
		"hooks-libraries":           []any{map[string]any{"library": hook}},
		"server-id":                 map[string]any{"type": "LL", "persist": false},
		"data-directory":            l.Dir,
		"renew-timer":               orDefault(opts.RenewTimer, 10),
		"rebind-timer":              orDefault(opts.RebindTimer, 20),
		"preferred-lifetime":        orDefault(opts.PreferredLifetime, 30),
		"valid-lifetime":            orDefault(opts.ValidLifetime, 40),
		"expired-leases-processing": reclaim,
		"subnet6":                   sub,
		"loggers":                   []any{logger},
	}
	if opts.Preference >= 0 {
		pref := opts.Preference
		if pref == 0 {
			pref = 255
		}
		d6["option-data"] = []any{map[string]any{"name": "preference", "data": itoa(pref), "always-send": true}}
	}
	for k, v := range opts.Extra {
		d6[k] = v
	}
	return map[string]any{"Dhcp6": d6}, nil
}

// StartKea writes a kea-dhcp6 configuration into the Lab's directory and
// runs Kea in the server namespace, listening on eth0 (multicast and
// ServerAddr). It returns once the control socket answers and UDP 547 is
// bound.
func (l *Lab) StartKea(opts KeaOptions) (*Kea, error) {
	bin, err := lookBin("kea-dhcp6")
	if err != nil {
		return nil, err
	}
	cfg, err := l.KeaConfig(opts)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(l.Dir, "kea6.sock")
	if len(sock) > 100 {
		return nil, fmt.Errorf("lab: control socket path too long for a unix socket: %s", sock)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(l.Dir, "kea-dhcp6.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	// Pid and logger lock files in the lab directory, not /run/kea, so
	// several Keas can run at once.
	env := []string{"KEA_PIDFILE_DIR=" + l.Dir, "KEA_LOCKFILE_DIR=" + l.Dir}
	p, err := l.start(l.ServerNS, "kea-dhcp6", env, bin, "-c", path)
	if err != nil {
		return nil, err
	}
	k := &Kea{Proc: p, ConfigPath: path, Socket: sock, Config: cfg, lab: l}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := k.Command("version-get", nil); err == nil {
			break
		} else if p.Exited() || time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("lab: kea control socket: %v; log:\n%s", err, tail(p.Log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.WaitUDP(l.ServerNS, 547, 5*time.Second, p); err != nil {
		p.Stop()
		return nil, err
	}
	return k, nil
}

// KeaResponse is one answer on Kea's control socket.
type KeaResponse struct {
	Result    int             `json:"result"` // 0 success, 1 error, 2 unsupported, 3 empty
	Text      string          `json:"text"`
	Arguments json.RawMessage `json:"arguments"`
}

// Command sends one command over the control socket. A result of 0 or 3
// (empty) is not an error.
func (k *Kea) Command(command string, args any) (*KeaResponse, error) {
	req := map[string]any{"command": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("unix", k.Socket, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("lab: kea socket: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		return nil, fmt.Errorf("lab: kea socket: %w", err)
	}
	var resp KeaResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("lab: kea %s: %w", command, err)
	}
	if resp.Result != 0 && resp.Result != 3 {
		return &resp, fmt.Errorf("lab: kea %s: result %d: %s", command, resp.Result, resp.Text)
	}
	return &resp, nil
}

// Lease6 is one lease as lease6-get-all reports it.
type Lease6 struct {
	Type         string       // "IA_PD" or "IA_NA"
	Prefix       netip.Prefix // ip-address/prefix-len (/128 for IA_NA)
	DUID         []byte
	IAID         uint32
	SubnetID     int
	ValidLft     uint32
	PreferredLft uint32
	CLTT         int64  // client last transmission time, unix seconds
	State        int    // 0 default, 1 declined, 2 expired-reclaimed
	HWAddress    string // as Kea prints it, may be empty
	Hostname     string
}

// DUIDHex is the DUID as lower-case hex without separators.
func (l Lease6) DUIDHex() string { return fmt.Sprintf("%x", l.DUID) }

type keaLease struct {
	Type         string `json:"type"`
	IPAddress    string `json:"ip-address"`
	PrefixLen    int    `json:"prefix-len"`
	DUID         string `json:"duid"`
	IAID         uint32 `json:"iaid"`
	SubnetID     int    `json:"subnet-id"`
	ValidLft     uint32 `json:"valid-lft"`
	PreferredLft uint32 `json:"preferred-lft"`
	CLTT         int64  `json:"cltt"`
	State        int    `json:"state"`
	HWAddress    string `json:"hw-address"`
	Hostname     string `json:"hostname"`
}

// ParseHexBytes parses "00:01:0a" (or "00010a") into bytes.
func ParseHexBytes(s string) ([]byte, error) {
	s = strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	var b []byte
	for i := 0; i+1 < len(s); i += 2 {
		var v byte
		if _, err := fmt.Sscanf(s[i:i+2], "%02x", &v); err != nil {
			return nil, fmt.Errorf("lab: bad hex %q", s)
		}
		b = append(b, v)
	}
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("lab: odd hex %q", s)
	}
	return b, nil
}

// AllLeases6 returns every IPv6 lease Kea holds (lease6-get-all).
func (k *Kea) AllLeases6() ([]Lease6, error) {
	resp, err := k.Command("lease6-get-all", nil)
	if err != nil {
		return nil, err
	}
	if resp.Result == 3 || len(resp.Arguments) == 0 {
		return nil, nil
	}
	var a struct {
		Leases []keaLease `json:"leases"`
	}
	if err := json.Unmarshal(resp.Arguments, &a); err != nil {
		return nil, fmt.Errorf("lab: lease6-get-all: %w", err)
	}
	var out []Lease6
	for _, kl := range a.Leases {
		addr, err := netip.ParseAddr(kl.IPAddress)
		if err != nil {
			return nil, fmt.Errorf("lab: lease6-get-all: %w", err)
		}
		bits := kl.PrefixLen
		if kl.Type != "IA_PD" || bits == 0 {
			bits = 128
		}
		duid, err := ParseHexBytes(kl.DUID)
		if err != nil {
			return nil, err
		}
		out = append(out, Lease6{
			Type: kl.Type, Prefix: netip.PrefixFrom(addr, bits), DUID: duid, IAID: kl.IAID,
			SubnetID: kl.SubnetID, ValidLft: kl.ValidLft, PreferredLft: kl.PreferredLft,
			CLTT: kl.CLTT, State: kl.State, HWAddress: kl.HWAddress, Hostname: kl.Hostname,
		})
	}
	return out, nil
}

// Leases6 returns the IA_PD leases Kea holds, in any state.
func (k *Kea) Leases6() ([]Lease6, error) {
	all, err := k.AllLeases6()
	if err != nil {
		return nil, err
	}
	var pd []Lease6
	for _, l := range all {
		if l.Type == "IA_PD" {
			pd = append(pd, l)
		}
	}
	return pd, nil
}

// WaitLeases polls Leases6 until ok returns true or timeout passes; it
// returns the last leases seen.
func (k *Kea) WaitLeases(timeout time.Duration, ok func([]Lease6) bool) ([]Lease6, error) {
	deadline := time.Now().Add(timeout)
	for {
		ls, err := k.Leases6()
		if err == nil && ok(ls) {
			return ls, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("lab: kea leases not as expected after %v: %v", timeout, ls)
			}
			return ls, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ServerDUID is the DUID-LL Kea derives for itself ("server-id" type LL)
// from the only interface with a MAC in the server namespace, eth0.
func (k *Kea) ServerDUID() []byte {
	return append([]byte{0, 3, 0, 1}, k.lab.Uplink.PeerMAC...)
}

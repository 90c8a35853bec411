// Package keatest is a fake Kea DHCPv6 control socket for tests and
// benchmarks: a unix socket that answers the lease_cmds commands
// lqserver sends (lease6-get-page, lease6-get, lease6-get-by-duid,
// lease6-del) and config-get and version-get, with the JSON shapes Kea
// 2.2 uses (checked against the real Kea: see the lqserver tests).
//
// It holds its leases either as a slice (Options.Leases) or as a
// generator (Options.N and Options.Gen): lease i is computed when a page
// needs it, so a fake with a million leases costs no memory and starts at
// once, and each page's JSON is built on demand. Deleted generated leases
// are remembered in a set.
//
// Faults for tests: FailPagesAfter makes Kea "die" in the middle of a
// walk (the connection closes unanswered), SetPageDelay slows every page.
//
// A Kea is safe for concurrent use; it answers each connection in its own
// goroutine, as the real one answers one command per connection.
package keatest

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Lease is one lease of the fake. Type "" is IA_PD.
type Lease struct {
	Type             string
	Prefix           netip.Prefix
	DUID             []byte
	IAID             uint32
	SubnetID         uint32
	CLTT             int64
	Valid, Preferred uint32
	State            int
	// Relays is rendered as Kea 2.2's user-context
	// {"ISC": {"relays": [...]}}, outermost relay first.
	Relays []Relay
}

// Relay is one stored relay level.
type Relay struct {
	Hop        uint8
	Link, Peer netip.Addr
	Options    []byte // the Relay-Forward's options except the relay-message
}

// Subnet is one subnet6 of config-get.
type Subnet struct {
	ID         uint32
	Prefix     netip.Prefix
	RelayAddrs []netip.Addr
}

// Options configure Start.
type Options struct {
	// Leases, in any order (Start sorts them by address).
	Leases []Lease
	// N and Gen generate leases instead: Gen(i) for i in [0, N), with
	// addresses strictly increasing in i.
	N   int
	Gen func(i int) Lease
	// Subnets, DataDirectory and ServerID (Kea's "server-id" map) are
	// what config-get reports.
	Subnets       []Subnet
	DataDirectory string
	ServerID      map[string]any
}

// Kea is a running fake.
type Kea struct {
	Socket string
	ln     net.Listener
	wg     sync.WaitGroup

	mu        sync.Mutex
	opt       Options
	leases    []Lease
	deleted   map[netip.Addr]bool // generated leases deleted
	failAfter int                 // pages answered before failing; -1 never
	delay     time.Duration
	pages     int
	commands  map[string]int
}

// Start listens on dir/kea.sock.
func Start(dir string, opt Options) (*Kea, error) {
	sock := filepath.Join(dir, "kea.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	k := &Kea{Socket: sock, ln: ln, opt: opt, deleted: map[netip.Addr]bool{}, failAfter: -1, commands: map[string]int{}}
	if opt.Gen == nil {
		k.leases = slices.Clone(opt.Leases)
		sort.Slice(k.leases, func(i, j int) bool { return k.leases[i].Prefix.Addr().Less(k.leases[j].Prefix.Addr()) })
	}
	k.wg.Add(1)
	go k.serve()
	return k, nil
}

// Close stops answering and waits for the connections being answered.
func (k *Kea) Close() error {
	err := k.ln.Close()
	k.wg.Wait()
	return err
}

// FailPagesAfter makes every lease6-get-page after the next n go
// unanswered (the connection is closed), as when Kea dies mid-walk. A
// negative n undoes it.
func (k *Kea) FailPagesAfter(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if n < 0 {
		k.failAfter = -1
		return
	}
	k.failAfter = k.pages + n
}

// SetPageDelay delays every lease6-get-page answer by d.
func (k *Kea) SetPageDelay(d time.Duration) {
	k.mu.Lock()
	k.delay = d
	k.mu.Unlock()
}

// Commands returns how many times each command was received.
func (k *Kea) Commands() map[string]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.commands)
}

// Has reports whether the fake holds a lease at the prefix's address.
func (k *Kea) Has(addr netip.Addr) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.find(addr)
	return ok
}

// Len returns the number of leases held.
func (k *Kea) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.opt.Gen != nil {
		return k.opt.N - len(k.deleted)
	}
	return len(k.leases)
}

func (k *Kea) count() int {
	if k.opt.Gen != nil {
		return k.opt.N
	}
	return len(k.leases)
}

func (k *Kea) at(i int) Lease {
	if k.opt.Gen != nil {
		return k.opt.Gen(i)
	}
	return k.leases[i]
}

// after returns the index of the first lease whose address is above a.
func (k *Kea) after(a netip.Addr) int {
	return sort.Search(k.count(), func(i int) bool { return a.Less(k.at(i).Prefix.Addr()) })
}

func (k *Kea) find(a netip.Addr) (int, bool) {
	i := sort.Search(k.count(), func(i int) bool { return !k.at(i).Prefix.Addr().Less(a) })
	if i < k.count() && k.at(i).Prefix.Addr() == a && !k.deleted[a] {
		return i, true
	}
	return i, false
}

func (k *Kea) serve() {
	defer k.wg.Done()
	for {
		c, err := k.ln.Accept()
		if err != nil {
			return
		}
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			k.answer(c)
		}()
	}
}

type request struct {
	Command   string          `json:"command"`
	Arguments json.RawMessage `json:"arguments"`
}

func (k *Kea) answer(c net.Conn) {
	var req request
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		c.Write(result(nil, 1, "invalid command: "+err.Error()))
		return
	}
	k.mu.Lock()
	k.commands[req.Command]++
	k.mu.Unlock()
	var out []byte
	switch req.Command {
	case "lease6-get-page":
		var ok bool
		if out, ok = k.page(req.Arguments); !ok {
			return // fault: no answer
		}
		defer putBuf(out)
	case "lease6-get":
		out = k.get(req.Arguments)
	case "lease6-get-by-duid":
		out = k.byDUID(req.Arguments)
	case "lease6-del":
		out = k.del(req.Arguments)
	case "config-get":
		out = k.config()
	case "version-get":
		out = result(nil, 0, "2.2.0-keatest")
	default:
		out = result(nil, 2, "'"+req.Command+"' command not supported.")
	}
	c.Write(out)
}

// result renders {"arguments": args, "result": code, "text": text};
// nil args is rendered as null, as Kea does.
func result(args []byte, code int, text string) []byte {
	b := []byte(`{"arguments":`)
	if args == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, args...)
	}
	b = append(b, `,"result":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"text":`...)
	b = strconv.AppendQuote(b, text)
	return append(b, '}')
}

func (k *Kea) page(raw json.RawMessage) ([]byte, bool) {
	var a struct {
		From  string `json:"from"`
		Limit *int   `json:"limit"`
	}
	if err := json.Unmarshal(raw, &a); err != nil || a.Limit == nil {
		return result(nil, 1, "missing parameter 'limit'"), true
	}
	if *a.Limit <= 0 {
		return result(nil, 1, "page size of retrieved leases must not be 0"), true
	}
	var from netip.Addr
	if a.From != "start" {
		var err error
		if from, err = netip.ParseAddr(a.From); err != nil || !from.Is6() {
			return result(nil, 1, "'from' parameter value is neither 'start' keyword nor a valid IPv6 address"), true
		}
	}
	k.mu.Lock()
	fail := k.failAfter >= 0 && k.pages >= k.failAfter
	k.pages++
	delay := k.delay
	k.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if fail {
		return nil, false
	}
	k.mu.Lock()
	i := 0
	if from.IsValid() {
		i = k.after(from)
	}
	// The whole answer is built in one reused buffer: {"arguments":
	// {"count": N, "leases": [...]}, "result": R, "text": T}.
	buf := getBuf()
	buf = append(buf, `{"arguments":{"count":`...)
	countAt := len(buf)
	buf = append(buf, `0000000000,"leases":[`...)
	n := 0
	for ; i < k.count() && n < *a.Limit; i++ {
		l := k.at(i)
		if len(k.deleted) > 0 && k.deleted[l.Prefix.Addr()] {
			continue
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = appendLease(buf, &l)
		n++
	}
	k.mu.Unlock()
	// Patch the count in place, padded with spaces (valid JSON).
	cnt := strconv.Itoa(n)
	copy(buf[countAt:], cnt+"          "[:10-len(cnt)])
	code := 0
	if n == 0 {
		code = 3
	}
	buf = append(buf, `]},"result":`...)
	buf = strconv.AppendInt(buf, int64(code), 10)
	buf = append(buf, `,"text":"`...)
	buf = append(buf, cnt...)
	return append(buf, ` IPv6 lease(s) found."}`...), true
}

// pageBufs keeps page answers' buffers: a page of 1000 leases is about
// 450 kB, built for every lease6-get-page.
var pageBufs sync.Pool

func getBuf() []byte {
	if b, ok := pageBufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, 64<<10)
}

func putBuf(b []byte) { pageBufs.Put(&b) }

type addrArgs struct {
	IPAddress string `json:"ip-address"`
	Type      string `json:"type"`
}

func (k *Kea) lookup(raw json.RawMessage) (int, bool, []byte) {
	var a addrArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return 0, false, result(nil, 1, err.Error())
	}
	addr, err := netip.ParseAddr(a.IPAddress)
	if err != nil {
		return 0, false, result(nil, 1, "Failed to convert string to address '"+a.IPAddress+"'")
	}
	i, ok := k.find(addr)
	if ok && typeOf(k.at(i)) != orNA(a.Type) {
		ok = false
	}
	return i, ok, nil
}

func orNA(t string) string {
	if t == "" {
		return "IA_NA" // Kea's default type for lease6-get and lease6-del
	}
	return t
}

func typeOf(l Lease) string {
	if l.Type == "" {
		return "IA_PD"
	}
	return l.Type
}

func (k *Kea) get(raw json.RawMessage) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	i, ok, errOut := k.lookup(raw)
	if errOut != nil {
		return errOut
	}
	if !ok {
		return result(nil, 3, "Lease not found.")
	}
	l := k.at(i)
	return result(appendLease(nil, &l), 0, "IPv6 lease found.")
}

func (k *Kea) del(raw json.RawMessage) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	i, ok, errOut := k.lookup(raw)
	if errOut != nil {
		return errOut
	}
	if !ok {
		return result(nil, 3, "IPv6 lease not found.")
	}
	if k.opt.Gen != nil {
		k.deleted[k.at(i).Prefix.Addr()] = true
	} else {
		k.leases = slices.Delete(k.leases, i, i+1)
	}
	return result(nil, 0, "IPv6 lease deleted.")
}

func (k *Kea) byDUID(raw json.RawMessage) []byte {
	var a struct {
		DUID string `json:"duid"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return result(nil, 1, err.Error())
	}
	want, err := parseHex(a.DUID)
	if err != nil {
		return result(nil, 1, "invalid duid")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	buf := []byte(`{"leases":[`)
	n := 0
	for i := 0; i < k.count(); i++ {
		l := k.at(i)
		if k.deleted[l.Prefix.Addr()] || !bytes.Equal(l.DUID, want) {
			continue
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = appendLease(buf, &l)
		n++
	}
	buf = append(buf, "]}"...)
	code := 0
	if n == 0 {
		code = 3
	}
	return result(buf, code, strconv.Itoa(n)+" IPv6 lease(s) found.")
}

func (k *Kea) config() []byte {
	type relay struct {
		IPAddresses []string `json:"ip-addresses"`
	}
	type subnet struct {
		ID     uint32 `json:"id"`
		Subnet string `json:"subnet"`
		Relay  relay  `json:"relay"`
	}
	d6 := map[string]any{"shared-networks": []any{}}
	subnets := []subnet{}
	for _, s := range k.opt.Subnets {
		sn := subnet{ID: s.ID, Subnet: s.Prefix.String(), Relay: relay{IPAddresses: []string{}}}
		for _, a := range s.RelayAddrs {
			sn.Relay.IPAddresses = append(sn.Relay.IPAddresses, a.String())
		}
		subnets = append(subnets, sn)
	}
	d6["subnet6"] = subnets
	if k.opt.DataDirectory != "" {
		d6["data-directory"] = k.opt.DataDirectory
	}
	if k.opt.ServerID != nil {
		d6["server-id"] = k.opt.ServerID
	}
	b, err := json.Marshal(map[string]any{"Dhcp6": d6})
	if err != nil {
		return result(nil, 1, err.Error())
	}
	return result(b, 0, "Configuration returned.")
}

const hexLower = "0123456789abcdef"
const hexUpper = "0123456789ABCDEF"

// appendLease renders a lease as Kea 2.2 does, keys in Kea's order.
func appendLease(b []byte, l *Lease) []byte {
	b = append(b, `{"cltt":`...)
	b = strconv.AppendInt(b, l.CLTT, 10)
	b = append(b, `,"duid":"`...)
	for i, c := range l.DUID {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexLower[c>>4], hexLower[c&15])
	}
	b = append(b, `","fqdn-fwd":false,"fqdn-rev":false,"hostname":"","iaid":`...)
	b = strconv.AppendUint(b, uint64(l.IAID), 10)
	b = append(b, `,"ip-address":"`...)
	b = l.Prefix.Addr().AppendTo(b)
	b = append(b, `","preferred-lft":`...)
	b = strconv.AppendUint(b, uint64(l.Preferred), 10)
	b = append(b, `,"prefix-len":`...)
	b = strconv.AppendInt(b, int64(l.Prefix.Bits()), 10)
	b = append(b, `,"state":`...)
	b = strconv.AppendInt(b, int64(l.State), 10)
	b = append(b, `,"subnet-id":`...)
	b = strconv.AppendUint(b, uint64(l.SubnetID), 10)
	b = append(b, `,"type":"`...)
	b = append(b, typeOf(*l)...)
	b = append(b, '"')
	if len(l.Relays) > 0 {
		b = append(b, `,"user-context":{"ISC":{"relays":[`...)
		for i, r := range l.Relays {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"hop":`...)
			b = strconv.AppendUint(b, uint64(r.Hop), 10)
			b = append(b, `,"link":"`...)
			b = r.Link.AppendTo(b)
			b = append(b, `","options":"0x`...)
			for _, c := range r.Options {
				b = append(b, hexUpper[c>>4], hexUpper[c&15])
			}
			b = append(b, `","peer":"`...)
			b = r.Peer.AppendTo(b)
			b = append(b, `"}`...)
		}
		b = append(b, `]}}`...)
	}
	b = append(b, `,"valid-lft":`...)
	b = strconv.AppendUint(b, uint64(l.Valid), 10)
	return append(b, '}')
}

func parseHex(s string) ([]byte, error) {
	s = string(bytes.ReplaceAll([]byte(s), []byte(":"), nil))
	if len(s)%2 != 0 {
		return nil, errors.New("odd hex")
	}
	out := make([]byte, len(s)/2)
	for i := range out {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		out[i] = byte(v)
	}
	return out, nil
}

package lqserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Kea result codes (control channel).
const (
	keaSuccess     = 0
	keaError       = 1
	keaUnsupported = 2
	keaEmpty       = 3
)

// Defaults of a Kea client.
const (
	DefaultPageSize   = 1000
	DefaultKeaTimeout = 30 * time.Second
)

// KeaError is a command Kea answered with a failure result.
type KeaError struct {
	Command string
	Result  int
	Text    string
}

func (e *KeaError) Error() string {
	return fmt.Sprintf("kea %s: result %d: %s", e.Command, e.Result, e.Text)
}

// Kea is a client of Kea's control socket (a unix socket; Kea answers one
// command per connection and closes it). The lease_cmds hook must be
// loaded. A Kea is safe for concurrent use: every command opens its own
// connection.
type Kea struct {
	Socket string
	// PageSize is the limit of each lease6-get-page; 0 means
	// DefaultPageSize.
	PageSize int
	// Timeout bounds one command (connect, send, read the answer); 0
	// means DefaultKeaTimeout.
	Timeout time.Duration
}

func (k *Kea) pageSize() int {
	if k.PageSize <= 0 {
		return DefaultPageSize
	}
	return k.PageSize
}

type keaRequest struct {
	Command   string `json:"command"`
	Arguments any    `json:"arguments,omitempty"`
}

// command sends one command and decodes the whole answer into out, which
// must have a "result" and a "text" field (see the answer types below).
func (k *Kea) command(ctx context.Context, cmd string, args any, out any) error {
	c, done, err := k.send(ctx, cmd, args)
	if err != nil {
		return err
	}
	defer done()
	if err := json.NewDecoder(bufio.NewReaderSize(c, 64<<10)).Decode(out); err != nil {
		return fmt.Errorf("kea %s: read answer: %w", cmd, ctxErr(ctx, err))
	}
	return nil
}

// send dials Kea's control socket and sends cmd with args. The caller
// reads the answer from the connection, then calls done, which closes
// it. The exchange must end within Kea.Timeout; ctx ending cuts it short.
func (k *Kea) send(ctx context.Context, cmd string, args any) (c net.Conn, done func(), err error) {
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = DefaultKeaTimeout
	}
	d := net.Dialer{Timeout: timeout}
	if c, err = d.DialContext(ctx, "unix", k.Socket); err != nil {
		return nil, nil, fmt.Errorf("kea %s: %w", cmd, err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	done = func() { stop(); c.Close() }
	_ = c.SetDeadline(time.Now().Add(timeout))
	req, err := json.Marshal(keaRequest{Command: cmd, Arguments: args})
	if err != nil {
		done()
		return nil, nil, fmt.Errorf("kea %s: %w", cmd, err)
	}
	if _, err := c.Write(req); err != nil {
		done()
		return nil, nil, fmt.Errorf("kea %s: send: %w", cmd, ctxErr(ctx, err))
	}
	return c, done, nil
}

// ctxErr prefers the context's error to the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

type answerHead struct {
	Result int    `json:"result"`
	Text   string `json:"text"`
}

func (a *answerHead) check(cmd string) error {
	if a.Result != keaSuccess && a.Result != keaEmpty {
		return &KeaError{Command: cmd, Result: a.Result, Text: a.Text}
	}
	return nil
}

type pageAnswer struct {
	answerHead
	Arguments *struct {
		Count  int        `json:"count"`
		Leases []keaLease `json:"leases"`
	} `json:"arguments"`
}

// Leases calls fn with every IPv6 lease Kea holds, in Kea's order (by
// address), paging with lease6-get-page so that at most two pages are in
// memory: the one fn is walking and the next, fetched and decoded
// meanwhile (decodePage). The *Lease passed to fn is valid only during
// the call. A lease Kea reports that does not decode is skipped and
// counted in skipped. Leases stops at fn's first error and returns it; an
// error from Kea (a failed command, a broken socket) ends the walk with
// that error, after fn has seen every lease before it.
func (k *Kea) Leases(ctx context.Context, fn func(*Lease) error) (skipped int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	type page struct {
		leases []Lease
		err    error
	}
	ch := make(chan page, 1)
	defer func() {
		cancel()
		for range ch { // let the fetcher finish
		}
	}()
	limit := k.pageSize()
	go func() {
		defer close(ch)
		from := "start"
		buf := make([]byte, 0, 64<<10) // one answer at a time; grows to a page's size
		for {
			var p keaPage
			fast := false
			var err error
			buf, err = k.getPage(ctx, from, limit, buf, func(b []byte) bool {
				p, fast = decodePageFast(b)
				return fast
			})
			if err == nil && !fast {
				if p, err = decodePage(buf); err != nil {
					err = fmt.Errorf("kea lease6-get-page: read answer: %w", err)
				}
			}
			if err == nil {
				err = p.check("lease6-get-page")
			}
			if err != nil {
				select {
				case ch <- page{err: err}:
				case <-ctx.Done():
				}
				return
			}
			if p.Result == keaEmpty || !p.hasArgs || len(p.leases) == 0 {
				return
			}
			select {
			case ch <- page{leases: p.leases}:
			case <-ctx.Done():
				return
			}
			if len(p.leases) < limit {
				return // a short page is the last
			}
			from = p.from
		}
	}()
	for p := range ch {
		if p.err != nil {
			return skipped, p.err
		}
		for i := range p.leases {
			l := &p.leases[i]
			if !l.Prefix.IsValid() { // did not decode
				skipped++
				continue
			}
			if err := fn(l); err != nil {
				return skipped, err
			}
		}
	}
	return skipped, ctx.Err()
}

type leaseAnswer struct {
	answerHead
	Arguments *keaLease `json:"arguments"`
}

// GetLease returns the lease of the given type at addr (for IA_PD the
// prefix's address), nil when Kea holds none (lease6-get).
func (k *Kea) GetLease(ctx context.Context, typ string, addr netip.Addr) (*Lease, error) {
	var a leaseAnswer
	if err := k.command(ctx, "lease6-get", map[string]any{"ip-address": addr.String(), "type": typ}, &a); err != nil {
		return nil, err
	}
	if err := a.check("lease6-get"); err != nil {
		return nil, err
	}
	if a.Result == keaEmpty || a.Arguments == nil {
		return nil, nil
	}
	l, err := a.Arguments.lease()
	if err != nil {
		return nil, fmt.Errorf("kea lease6-get %s: %w", addr, err)
	}
	return &l, nil
}

type leasesAnswer struct {
	answerHead
	Arguments *struct {
		Leases []keaLease `json:"leases"`
	} `json:"arguments"`
}

// LeasesByDUID returns every IPv6 lease of the client (lease6-get-by-duid).
func (k *Kea) LeasesByDUID(ctx context.Context, duid []byte) ([]Lease, error) {
	var a leasesAnswer
	if err := k.command(ctx, "lease6-get-by-duid", map[string]any{"duid": colonHex(duid)}, &a); err != nil {
		return nil, err
	}
	if err := a.check("lease6-get-by-duid"); err != nil {
		return nil, err
	}
	if a.Arguments == nil {
		return nil, nil
	}
	out := make([]Lease, 0, len(a.Arguments.Leases))
	for i := range a.Arguments.Leases {
		l, err := a.Arguments.Leases[i].lease()
		if err != nil {
			return nil, fmt.Errorf("kea lease6-get-by-duid: %w", err)
		}
		out = append(out, l)
	}
	return out, nil
}

// DeleteLease deletes the lease of the given type at addr (lease6-del by
// address). It reports false when Kea held no such lease (Kea 2.2
// answers result 3, "IPv6 lease not found.").
func (k *Kea) DeleteLease(ctx context.Context, typ string, addr netip.Addr) (bool, error) {
	var a answerHead
	if err := k.command(ctx, "lease6-del", map[string]any{"ip-address": addr.String(), "type": typ}, &a); err != nil {
		return false, err
	}
	if err := a.check("lease6-del"); err != nil {
		return false, err
	}
	return a.Result == keaSuccess, nil
}

// ErrNoConfig is Kea refusing config-get.
var ErrNoConfig = errors.New("kea config-get gave no Dhcp6 configuration")

// KeaConfig is the part of Kea's running configuration lqserver uses.
type KeaConfig struct {
	DataDirectory string
	ServerID      *KeaServerID // nil when the configuration has none
	Links         Links
}

// KeaServerID is Kea's "server-id" configuration map.
type KeaServerID struct {
	Type         string `json:"type"`
	Identifier   string `json:"identifier"`
	HType        uint16 `json:"htype"`
	Time         uint32 `json:"time"`
	EnterpriseID uint32 `json:"enterprise-id"`
	Persist      *bool  `json:"persist"`
}

type keaRelayCfg struct {
	IPAddresses []string `json:"ip-addresses"`
	IPAddress   string   `json:"ip-address"` // Kea before 1.4
}

type keaSubnetCfg struct {
	ID     uint32       `json:"id"`
	Subnet string       `json:"subnet"`
	Relay  *keaRelayCfg `json:"relay"`
}

type configAnswer struct {
	answerHead
	Arguments *struct {
		Dhcp6 *struct {
			DataDirectory  string         `json:"data-directory"`
			ServerID       *KeaServerID   `json:"server-id"`
			Subnet6        []keaSubnetCfg `json:"subnet6"`
			SharedNetworks []struct {
				Name    string         `json:"name"`
				Relay   *keaRelayCfg   `json:"relay"`
				Subnet6 []keaSubnetCfg `json:"subnet6"`
			} `json:"shared-networks"`
		} `json:"Dhcp6"`
	} `json:"arguments"`
}

// Config reads the running configuration (config-get).
func (k *Kea) Config(ctx context.Context) (*KeaConfig, error) {
	var a configAnswer
	if err := k.command(ctx, "config-get", nil, &a); err != nil {
		return nil, err
	}
	if err := a.check("config-get"); err != nil {
		return nil, err
	}
	if a.Arguments == nil || a.Arguments.Dhcp6 == nil {
		return nil, ErrNoConfig
	}
	d := a.Arguments.Dhcp6
	cfg := &KeaConfig{DataDirectory: d.DataDirectory, ServerID: d.ServerID}
	for _, s := range d.Subnet6 {
		cfg.Links.add(s)
	}
	for _, sn := range d.SharedNetworks {
		// A shared network is one link: a link-address matching any of
		// its subnets or its relay addresses names all of them.
		var e linkEntry
		e.addRelay(sn.Relay)
		for _, s := range sn.Subnet6 {
			e.addSubnet(s)
		}
		cfg.Links.entries = append(cfg.Links.entries, e)
	}
	return cfg, nil
}

// Links maps a link-address to the Kea subnets on that link: a subnet
// whose prefix contains the address, or whose relay ip-addresses list it
// (for a shared network, all of its subnets). The zero Links has none.
type Links struct {
	entries []linkEntry
}

type linkEntry struct {
	match   []netip.Prefix
	subnets []uint32
}

func (e *linkEntry) addRelay(r *keaRelayCfg) {
	if r == nil {
		return
	}
	for _, s := range append(r.IPAddresses, r.IPAddress) {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			e.match = append(e.match, netip.PrefixFrom(a, 128))
		}
	}
}

func (e *linkEntry) addSubnet(s keaSubnetCfg) {
	if p, err := netip.ParsePrefix(s.Subnet); err == nil && p.Addr().Is6() {
		e.match = append(e.match, p.Masked())
	}
	e.addRelay(s.Relay)
	e.subnets = append(e.subnets, s.ID)
}

func (ls *Links) add(s keaSubnetCfg) {
	var e linkEntry
	e.addSubnet(s)
	ls.entries = append(ls.entries, e)
}

// Subnets returns the ids of the subnets on the link of a, nil when no
// subnet is.
func (ls *Links) Subnets(a netip.Addr) []uint32 {
	var ids []uint32
	for _, e := range ls.entries {
		for _, p := range e.match {
			if p.Contains(a) {
				ids = append(ids, e.subnets...)
				break
			}
		}
	}
	return ids
}

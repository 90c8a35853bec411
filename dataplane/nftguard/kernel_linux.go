package nftguard

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// elemsPerMsg is the most set elements in one netlink message. The
// element list is one netlink attribute, whose length field has 16 bits
// (at most 65,535 bytes); an IPv6 element takes 28 bytes (the element's
// nest, the key's nest, the 16-byte value with its header), so 2,048 fill
// 57,344 of them.
const elemsPerMsg = 2048

// sockBuf is the send and receive buffer the guard asks for its netlink
// socket. netlink_sendmsg refuses a batch larger than the send buffer
// (EMSGSIZE), and the default (net.core.wmem_default, 208 KiB) holds only
// some 7,000 elements; the kernel's acks of a batch (one per message) all
// wait in the receive buffer until the batch ends. CAP_NET_ADMIN, which
// nf_tables needs anyway, may exceed net.core.{w,r}mem_max
// (SO_SNDBUFFORCE); without it the limits apply and a batch near the
// default size still fits.
const sockBuf = 8 << 20

// nlKernel is the kernel side: one table of family ip6 through
// github.com/google/nftables, over one netlink socket kept open (closing
// a NETLINK_NETFILTER socket costs the kernel some 7 ms, more than a
// transaction of 8,192 elements). mu serializes its users (the binding
// sink's Flush, Run, a metrics scrape), whose requests and replies would
// otherwise interleave on the socket. After any error the socket is
// closed and the next call dials a new one, so no reply left over from
// a failed batch can be taken for the next one's.
type nlKernel struct {
	mu    sync.Mutex
	c     *nftables.Conn // nil: dial at the next call
	opts  []nftables.ConnOption
	table *nftables.Table
	elems []nftables.SetElement // write's scratch: the library marshals them at once
}

func openKernel(table string, netns int) (kernel, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	k := &nlKernel{opts: opts, table: &nftables.Table{Name: table, Family: nftables.TableFamilyIPv6}}
	if _, err := k.conn(); err != nil {
		return nil, err
	}
	return k, nil
}

// conn returns the open connection, dialling one if there is none.
func (k *nlKernel) conn() (*nftables.Conn, error) {
	if k.c == nil {
		c, err := nftables.New(k.opts...)
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", hint(err))
		}
		k.c = c
	}
	return k.c, nil
}

// reset closes the connection after an error.
func (k *nlKernel) reset() {
	if k.c != nil {
		_ = k.c.CloseLasting()
		k.c = nil
	}
}

// do runs f on the connection under the lock, resetting it if f fails.
func (k *nlKernel) do(f func(c *nftables.Conn) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, err := k.conn()
	if err != nil {
		return err
	}
	if err := f(c); err != nil {
		k.reset()
		return err
	}
	return nil
}

// bigBuffers raises the socket's buffers to sockBuf, past the system's
// maximum when the process may (see sockBuf).
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], sockBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], sockBuf)
			}
		}
	})
}

// hint adds what an operator can do to the errors nf_tables gives when
// it cannot be used.
func hint(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w (nf_tables needs CAP_NET_ADMIN)", err)
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("%w (the kernel has no nfnetlink: CONFIG_NETFILTER_NETLINK)", err)
	case errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("%w (the kernel has no nf_tables, or not for ip6: CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV6; or modprobe nf_tables)", err)
	}
	return err
}

func (k *nlKernel) apply(t *tx) error {
	return k.do(func(c *nftables.Conn) error { return k.write(c, t) })
}

// current is what a table holds besides its rules and elements, read
// before a rewrite.
type current struct {
	chains []string
	sets   map[string]*nftables.Set
	objs   []string
}

// list reads the table's chains, sets and counters; nil if it does not
// exist.
func (k *nlKernel) list(c *nftables.Conn) (*current, error) {
	found, err := k.exists(c)
	if err != nil || !found {
		return nil, err
	}
	cur := &current{sets: map[string]*nftables.Set{}}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv6)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == k.table.Name {
			cur.chains = append(cur.chains, ch.Name)
		}
	}
	sets, err := c.GetSets(k.table)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		s.Table = k.table
		cur.sets[s.Name] = s
	}
	objs, err := c.GetObjects(k.table)
	if err != nil {
		return nil, fmt.Errorf("list counters: %w", err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			cur.objs = append(cur.objs, co.Name)
		}
	}
	return cur, nil
}

func (k *nlKernel) exists(c *nftables.Conn) (bool, error) {
	tabs, err := c.ListTablesOfFamily(nftables.TableFamilyIPv6)
	if err != nil {
		return false, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tabs {
		if t.Name == k.table.Name {
			return true, nil
		}
	}
	return false, nil
}

// elemSet is the nftables.Set of an element set.
func (k *nlKernel) elemSet(l *layout, names map[uint16]string, sk setKey) *nftables.Set {
	s := &nftables.Set{Table: k.table, Name: setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen), KeyType: nftables.TypeIP6Addr}
	if sk.kind == kindDstMAC {
		s.KeyType, s.Concatenation = etherIP6, true
	}
	return s
}

var etherIP6 = nftables.MustConcatSetType(nftables.TypeEtherAddr, nftables.TypeIP6Addr)

// vmap returns a verdict map of the table keyed by kt; the key's byte
// order only tells nft(8) how to print it (host order is what nft itself
// records for ifname, and makes it print "dl0" rather than "").
func (k *nlKernel) vmap(name string, kt nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: k.table, Name: name, IsMap: true, KeyType: kt,
		DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

// write queues t's messages on c and sends them as one batch. On an
// error before the send, the queued messages go with the connection
// (do resets it).
func (k *nlKernel) write(c *nftables.Conn, t *tx) error {
	l := t.layout
	names := map[uint16]string{}
	for _, p := range l.ports {
		names[p.index] = p.name
	}
	var cur *current
	if t.rewrite {
		var err error
		if cur, err = k.list(c); err != nil {
			return err
		}
	}
	switch {
	case t.install:
		// add, delete, add: replaces a table of the name, or creates
		// one, in the same transaction, so there is no moment without.
		c.AddTable(k.table)
		c.DelTable(k.table)
		c.AddTable(k.table)
		if err := k.skeleton(c, l, names, nil); err != nil {
			return err
		}
	case t.rewrite:
		if t.strict {
			if err := k.strict(l, names, cur, t.newSets); err != nil {
				return err
			}
		}
		if cur == nil {
			c.AddTable(k.table)
		}
		if err := k.skeleton(c, l, names, cur); err != nil {
			return err
		}
	}
	if err := k.ensure(c, t.ensure); err != nil {
		return err
	}
	sets := map[setKey]*nftables.Set{}
	for _, sk := range t.newSets {
		if t.install || t.rewrite {
			continue // the skeleton made them, with their rules
		}
		s := k.elemSet(l, names, sk)
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		sets[sk] = s
		if t.norule {
			continue
		}
		chain, insert, exprs := newSetRule(l, sk, s)
		r := &nftables.Rule{Table: k.table, Chain: &nftables.Chain{Name: chain, Table: k.table}, Exprs: exprs}
		if insert {
			// Before the chain's drop rule: an insert without a position
			// goes to the head of the chain.
			c.InsertRule(r)
		} else {
			c.AddRule(r)
		}
	}
	for _, sk := range t.setKeys() {
		s := sets[sk]
		if s == nil {
			s = k.elemSet(l, names, sk)
		}
		o := t.elems[sk]
		per := elemsPerMsg
		if sk.kind == kindDstMAC {
			per = elemsPerMsg * 2 / 3 // 24-byte keys
		}
		for _, x := range []struct {
			es    []elem
			write func(*nftables.Set, []nftables.SetElement) error
		}{{o.del, c.SetDeleteElements}, {o.add, c.SetAddElements}} {
			for a := x.es; len(a) > 0; {
				n := min(len(a), per)
				elems := slices.Grow(k.elems[:0], n)[:n]
				for i := range elems {
					elems[i] = setElement(sk.kind, &a[i])
				}
				err := x.write(s, elems)
				clear(elems) // hold no keys of this transaction
				k.elems = elems
				if err != nil {
					return fmt.Errorf("set %s: %w", s.Name, err)
				}
				a = a[n:]
			}
		}
	}
	if err := c.Flush(); err != nil {
		return hint(err)
	}
	return nil
}

// strict checks that the table and every element set of l exist.
func (k *nlKernel) strict(l *layout, names map[uint16]string, cur *current, newSets []setKey) error {
	if cur == nil {
		return fmt.Errorf("table %s: %w", k.table.Name, errTableChanged)
	}
	for _, sk := range l.sets {
		if n := setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen); cur.sets[n] == nil && !slices.Contains(newSets, sk) {
			return fmt.Errorf("set %s: %w", n, errTableChanged)
		}
	}
	return nil
}

// setElement is e as an element of a set of kind.
func setElement(kind uint8, e *elem) nftables.SetElement {
	if kind == kindDstMAC {
		return nftables.SetElement{Key: dstMACKey(e.mac, e.addr)}
	}
	return nftables.SetElement{Key: e.addr[:]}
}

// skeleton queues l's skeleton. Over an existing table (cur) it first
// flushes every chain (the rules go, and with them their hold on sets,
// maps, counters and chains), flushes the verdict maps l keeps and
// deletes every set, map, chain and counter l does not have; the element
// sets l has keep their elements. Counters l keeps keep their counts.
func (k *nlKernel) skeleton(c *nftables.Conn, l *layout, names map[uint16]string, cur *current) error {
	wantChains := map[string]bool{}
	for _, ch := range l.chains() {
		wantChains[ch] = true
	}
	wantMaps := map[string]bool{}
	for _, m := range l.maps() {
		wantMaps[m] = true
	}
	wantSets := map[string]bool{}
	for _, sk := range l.sets {
		wantSets[setName(names[sk.port], sk.bits, sk.kind, sk.code, l.gen)] = true
	}
	wantObjs := map[string]bool{}
	for _, o := range l.counters() {
		wantObjs[o] = true
	}
	if cur != nil {
		for _, ch := range cur.chains {
			c.FlushChain(&nftables.Chain{Name: ch, Table: k.table})
		}
		for name, s := range cur.sets {
			switch {
			case wantMaps[name]:
				c.FlushSet(s)
			case !wantSets[name]:
				c.DelSet(s)
			}
		}
		for _, ch := range cur.chains {
			if !wantChains[ch] {
				c.DelChain(&nftables.Chain{Name: ch, Table: k.table})
			}
		}
		for _, o := range cur.objs {
			if !wantObjs[o] {
				c.DeleteObject(&nftables.CounterObj{Table: k.table, Name: o})
			}
		}
	}
	for _, o := range l.counters() {
		// An existing counter stays as it is, count included.
		c.AddObj(&nftables.CounterObj{Table: k.table, Name: o})
	}
	ts := &tableSets{elems: map[setKey]*nftables.Set{}}
	addSet := func(s *nftables.Set, elems []nftables.SetElement) error {
		if cur != nil && cur.sets[s.Name] != nil {
			// It exists (flushed above, or an element set that keeps its
			// elements).
			if len(elems) == 0 {
				return nil
			}
			return c.SetAddElements(s, elems)
		}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		if len(elems) == 0 {
			return nil
		}
		return c.SetAddElements(s, elems)
	}
	accept := nftables.ChainPolicyAccept
	for _, ch := range l.chains() {
		if ch == baseChain {
			c.AddChain(&nftables.Chain{
				Name: baseChain, Table: k.table, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
			})
			continue
		}
		c.AddChain(&nftables.Chain{Name: ch, Table: k.table})
	}
	jump := func(key []byte, kind expr.VerdictKind, chain string) nftables.SetElement {
		return nftables.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: kind, Chain: chain}}
	}
	ts.ports = k.vmap(portsMap, nftables.TypeIFName)
	var elems []nftables.SetElement
	for _, p := range l.ports {
		elems = append(elems, jump(ifnameKey(p.name), expr.VerdictJump, portChain(p.name)))
	}
	if err := addVmap(addSet, ts.ports, elems); err != nil {
		return err
	}
	if l.kernel {
		ts.outs = k.vmap(outsMap, nftables.TypeIFName)
		elems = elems[:0]
		for _, p := range l.ports {
			elems = append(elems, jump(ifnameKey(p.name), expr.VerdictJump, fwdChain(p.name)))
		}
		if l.uplink != "" && !l.hasPort(l.uplink) {
			elems = append(elems, jump(ifnameKey(l.uplink), expr.VerdictJump, fwdChain(l.uplink)))
		}
		if err := addVmap(addSet, ts.outs, elems); err != nil {
			return err
		}
	}
	for _, sk := range l.sets {
		s := k.elemSet(l, names, sk)
		if cur != nil && cur.sets[s.Name] != nil {
			s = cur.sets[s.Name]
		} else if err := addSet(s, nil); err != nil {
			return err
		}
		ts.elems[sk] = s
	}
	for _, ch := range chainRules(l, ts) {
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: k.table, Chain: &nftables.Chain{Name: ch.name, Table: k.table}, Exprs: r})
		}
	}
	return nil
}

// addVmap creates a verdict map with its elements, a message at most per
// elemsPerMsg/2 (a verdict element is larger than an address).
func addVmap(addSet func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, elems []nftables.SetElement) error {
	if err := addSet(s, nil); err != nil {
		return fmt.Errorf("map %s: %w", s.Name, err)
	}
	for len(elems) > 0 {
		n := min(len(elems), elemsPerMsg/2)
		if err := addSet(s, elems[:n]); err != nil {
			return fmt.Errorf("map %s: %w", s.Name, err)
		}
		elems = elems[n:]
	}
	return nil
}

// ensure gives each of ports a chain that counts and drops everything,
// with its counter and its element in the ports map, in an adopted table
// that has no chain for it.
func (k *nlKernel) ensure(c *nftables.Conn, ports []portLayout) error {
	if len(ports) == 0 {
		return nil
	}
	vm := k.vmap(portsMap, nftables.TypeIFName)
	var elems []nftables.SetElement
	for _, p := range ports {
		c.AddObj(&nftables.CounterObj{Table: k.table, Name: counterName(p.name)})
		ch := c.AddChain(&nftables.Chain{Name: portChain(p.name), Table: k.table})
		c.AddRule(&nftables.Rule{Table: k.table, Chain: ch, Exprs: dropExprs(p.name)})
		elems = append(elems, nftables.SetElement{Key: ifnameKey(p.name), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}})
	}
	if err := c.SetAddElements(vm, elems); err != nil {
		return fmt.Errorf("ports map: %w", err)
	}
	return nil
}

// remove deletes the table and closes the connection.
func (k *nlKernel) remove() error {
	err := k.do(func(c *nftables.Conn) error {
		c.AddTable(k.table)
		c.DelTable(k.table)
		return c.Flush()
	})
	k.close()
	return err
}

func (k *nlKernel) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reset()
}

func (k *nlKernel) counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := k.do(func(c *nftables.Conn) error {
		objs, err := c.GetObjects(k.table)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if c, ok := o.(*nftables.CounterObj); ok {
				out[c.Name] = c.Packets
			}
		}
		return nil
	})
	return out, err
}

func (k *nlKernel) check(l *layout) (found bool, diff string, err error) {
	err = k.do(func(c *nftables.Conn) error {
		cur, err := k.list(c)
		if err != nil || cur == nil {
			return err
		}
		found = true
		have := map[string]bool{}
		for _, ch := range cur.chains {
			have[ch] = true
		}
		want := l.ruleCounts()
		for _, ch := range l.chains() {
			if !have[ch] {
				diff = fmt.Sprintf("chain %s: missing", ch)
				return nil
			}
			rs, err := c.GetRules(k.table, &nftables.Chain{Name: ch, Table: k.table})
			if err != nil {
				return fmt.Errorf("chain %s: %w", ch, err)
			}
			if len(rs) != want[ch] {
				diff = fmt.Sprintf("chain %s: %d rules, want %d", ch, len(rs), want[ch])
				return nil
			}
		}
		return nil
	})
	return found, diff, err
}

func (k *nlKernel) probe() (pr probe, err error) {
	err = k.do(func(c *nftables.Conn) error {
		cur, err := k.list(c)
		if err != nil || cur == nil {
			return err
		}
		pr.exists = true
		pr.chains = map[string]bool{}
		for _, ch := range cur.chains {
			pr.chains[ch] = true
		}
		for name := range cur.sets {
			if g, ok := setGen(name); ok {
				pr.maxGen = max(pr.maxGen, g)
			}
		}
		pr.usable = pr.chains[baseChain] && cur.sets[portsMap] != nil
		return nil
	})
	return pr, err
}

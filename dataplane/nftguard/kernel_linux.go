package nftguard

import (
	"errors"
	"fmt"
	"strings"
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

// write queues t's messages on c and sends them as one batch. On an
// error before the send, the queued messages go with the connection
// (do resets it).
func (k *nlKernel) write(c *nftables.Conn, t *tx) error {
	tab := k.table
	if t.install {
		// add, delete, add: replaces a table of the name, or creates
		// one, in the same transaction, so there is no moment without.
		c.AddTable(tab)
		c.DelTable(tab)
		c.AddTable(tab)
		for _, p := range t.names {
			c.AddObj(&nftables.CounterObj{Table: tab, Name: counterName(p)})
		}
		accept := nftables.ChainPolicyAccept
		base := c.AddChain(&nftables.Chain{
			Name: baseChain, Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		})
		// The key's byte order only tells nft(8) how to print it; host
		// order is what nft itself records for ifname, and makes it
		// print "dl0" rather than "".
		vmap := &nftables.Set{Table: tab, Name: portsMap, IsMap: true, KeyType: nftables.TypeIFName,
			DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
		var elems []nftables.SetElement
		for _, p := range t.names {
			ch := c.AddChain(&nftables.Chain{Name: portChain(p), Table: tab})
			c.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: dropExprs(p)})
			elems = append(elems, nftables.SetElement{Key: ifnameKey(p), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}})
		}
		if err := c.AddSet(vmap, nil); err != nil {
			return fmt.Errorf("ports map: %w", err)
		}
		for len(elems) > 0 {
			n := min(len(elems), elemsPerMsg/2) // a verdict element is larger
			if err := c.SetAddElements(vmap, elems[:n]); err != nil {
				return fmt.Errorf("ports map: %w", err)
			}
			elems = elems[n:]
		}
		c.AddRule(&nftables.Rule{Table: tab, Chain: base, Exprs: dispatchExprs(vmap)})
	}
	sets := map[setKey]*nftables.Set{}
	for _, sk := range t.newSets {
		port := t.names[sk.port]
		s := &nftables.Set{Table: tab, Name: setName(port, sk.bits), KeyType: nftables.TypeIP6Addr}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		sets[sk] = s
		// Before the chain's drop rule: an insert without a position
		// goes to the head of the chain.
		c.InsertRule(&nftables.Rule{Table: tab, Chain: &nftables.Chain{Name: portChain(port), Table: tab}, Exprs: sourceExprs(s, sk.bits)})
	}
	for _, sk := range t.setKeys() {
		s := sets[sk]
		if s == nil {
			s = &nftables.Set{Table: tab, Name: setName(t.names[sk.port], sk.bits), KeyType: nftables.TypeIP6Addr}
		}
		o := t.elems[sk]
		for _, x := range []struct {
			addrs [][16]byte
			write func(*nftables.Set, []nftables.SetElement) error
		}{{o.del, c.SetDeleteElements}, {o.add, c.SetAddElements}} {
			for a := x.addrs; len(a) > 0; {
				n := min(len(a), elemsPerMsg)
				elems := make([]nftables.SetElement, n)
				for i := range elems {
					elems[i].Key = a[i][:]
				}
				if err := x.write(s, elems); err != nil {
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
				if port, ok := strings.CutPrefix(c.Name, "drops_"); ok {
					out[port] = c.Packets
				}
			}
		}
		return nil
	})
	return out, err
}

func (k *nlKernel) rules(chains []string) (out map[string]int, found bool, err error) {
	err = k.do(func(c *nftables.Conn) error {
		tabs, err := c.ListTablesOfFamily(nftables.TableFamilyIPv6)
		if err != nil {
			return err
		}
		for _, t := range tabs {
			found = found || t.Name == k.table.Name
		}
		if !found {
			return nil
		}
		out = make(map[string]int, len(chains))
		for _, ch := range chains {
			rs, err := c.GetRules(k.table, &nftables.Chain{Name: ch, Table: k.table})
			if err != nil {
				return fmt.Errorf("chain %s: %w", ch, err)
			}
			out[ch] = len(rs)
		}
		return nil
	})
	return out, found, err
}

package nftguard

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/fib"
)

// Registers. nf_tables has a verdict register (0) and four 16-byte data
// registers (1-4), which it also addresses as sixteen 4-byte ones (8-23,
// NFT_REG32_00 on: 8 to 11 share their bytes with 1). A concatenated key
// is laid out in the 4-byte ones, each field padded to a multiple of 4:
// nft(8) itself loads "ether saddr . ip6 daddr" into register 1 (the 6
// bytes of the MAC, padded to 8) and register 10 (the address).
const (
	regVerdict = 0
	reg1       = 1
	reg32_02   = 10
)

// dispatchExprs is the base chain's first rule:
//
//	iifname vmap @ports
//
// meta loads the input interface's name (16 bytes, zero padded) into
// register 1; the lookup's result goes to the verdict register (0). An
// interface that is not a downlink finds nothing and falls through to the
// chain's next rule and then its policy, accept.
func dispatchExprs(ports *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: ports.Name, SetID: ports.ID},
	}
}

// outsExprs is kernel mode's second base-chain rule, which every packet
// that no port chain dropped reaches:
//
//	oifname vmap @outs
//
// where outs jumps to the output port's chain fwd_<port>, which counts
// the packet as forwarded and returns.
func outsExprs(outs *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: outs.Name, SetID: outs.ID},
	}
}

// maskExprs masks the 16 bytes in register reg to bits (nothing for /128,
// whose mask changes nothing).
func maskExprs(reg uint32, bits uint8) []expr.Any {
	if bits >= 128 {
		return nil
	}
	return []expr.Any{&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 16, Mask: mask(bits), Xor: make([]byte, 16)}}
}

// sourceExprs is one rule of a port chain, for the prefixes of one length:
//
//	ip6 saddr & <mask of bits> @set accept          (xdp modes)
//	ip6 saddr & <mask of bits> @set goto dst_<port>  (kernel mode)
//
// The source address (16 bytes at offset 8 of the network header) goes to
// register 1, is masked to the prefix length in place and looked up in
// the set of masked prefixes.
func sourceExprs(set *nftables.Set, bits uint8, then *expr.Verdict) []expr.Any {
	e := []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv6SrcOffset, Len: 16},
	}
	e = append(e, maskExprs(reg1, bits)...)
	return append(e,
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		then,
	)
}

// dropExprs is the last rule of a port chain:
//
//	counter name "drops_<port>" drop
func dropExprs(port string) []expr.Any {
	return []expr.Any{
		&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: counterName(port)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// notBackExprs is a dst chain's first rule: a packet that does not go
// back out of the port it came in on is no loop.
//
//	oifname != "<port>" return
func notBackExprs(port string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ifnameKey(port)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
}

// dstExprs is one rule of a dst chain, for the delegated prefixes of one
// length whose clients have one loop code:
//
//	ip6 daddr & <mask> @dst_<port>_<bits>_c<code> goto lp<code>_<port>                                (point-to-point)
//	meta iiftype ether ether saddr . ip6 daddr & <mask> @dstm_<port>_<bits>_c<code> goto lp<code>_<port>  (multi-access)
//
// The lookup finds the destination's delegated prefix on the port (on a
// multi-access port, only if the packet comes from the client it is
// delegated to: the MAC is part of the key) and the rule goes to the
// chain of the client's loop policy. No element: no loop, and the packet
// goes on to the next rule. (One set per code, not one map from prefix
// to verdict: a verdict map that jumps is walked whole by the kernel's
// loop check at every commit, 85 ms at 200k elements.)
func dstExprs(set *nftables.Set, port string, bits, code uint8, multi bool) []expr.Any {
	var e []expr.Any
	reg := uint32(reg1)
	if multi {
		reg = reg32_02
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseLLHeader, Offset: etherSrcOffset, Len: 6},
		)
	}
	e = append(e, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: ipv6DstOffset, Len: 16})
	e = append(e, maskExprs(reg, bits)...)
	return append(e,
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictGoto, Chain: loopChain(port, code)},
	)
}

// policyVerdict is what a loop policy does once decided: LoopDrop goes to
// the port's loop chain (count, maybe reject); LoopForward returns to the
// base chain, which counts the packet as forwarded and accepts it.
func policyVerdict(port string, p fib.LoopPolicy) *expr.Verdict {
	if p == fib.LoopForward {
		return &expr.Verdict{Kind: expr.VerdictReturn}
	}
	return &expr.Verdict{Kind: expr.VerdictGoto, Chain: actChain(port)}
}

// overrideExprs is a per-destination loop policy:
//
//	ip6 daddr & <mask> == <prefix> goto loop_<port> | return
func overrideExprs(port string, o LoopOverride) []expr.Any {
	a := o.Prefix.Addr().As16()
	e := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv6DstOffset, Len: 16}}
	e = append(e, maskExprs(reg1, uint8(o.Prefix.Bits()))...)
	return append(e,
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: a[:]},
		policyVerdict(port, o.Policy),
	)
}

// actRules are the rules of a port's loop chain, which a looping packet
// whose policy is drop reaches:
//
//	counter name "loop_<port>" drop                                  (no loop_icmp)
//
//	counter name "loop_<port>"                                       (loop_icmp)
//	limit rate over <rate>/second burst <burst> packets counter name "icmprl_<port>" drop
//	counter name "icmp_<port>" reject with icmpv6 type reject-route  (ICMPv6 1/6)
//
// With a rate of 0 the second rule has no limit: every error is held
// back. The limit is the rule's own, so one per port.
func actRules(l *layout, p *portLayout) [][]expr.Any {
	count := func(name string) expr.Any { return &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: name} }
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	if !p.icmp {
		return [][]expr.Any{{count(loopCounter(p.name)), drop}}
	}
	held := []expr.Any{count(icmpRLCounter(p.name)), drop}
	if l.icmpRate == 0 {
		return [][]expr.Any{{count(loopCounter(p.name))}, held}
	}
	limit := &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(l.icmpRate), Over: true, Unit: expr.LimitTimeSecond, Burst: uint32(l.icmpBurst)}
	return [][]expr.Any{
		{count(loopCounter(p.name))},
		append([]expr.Any{limit}, held...),
		{count(icmpCounter(p.name)), &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 6}}, // ICMPV6_REJECT_ROUTE
	}
}

// chainSpec is one chain of a layout with its rules in order.
type chainSpec struct {
	name  string
	base  bool
	rules [][]expr.Any
}

// tableSets are the named sets and maps a layout's rules refer to.
type tableSets struct {
	ports, outs *nftables.Set
	elems       map[setKey]*nftables.Set
}

// chainRules returns every chain of l with its rules, the base chain
// first; layout.ruleCounts says how many each holds.
func chainRules(l *layout, s *tableSets) []chainSpec {
	base := chainSpec{name: baseChain, base: true, rules: [][]expr.Any{dispatchExprs(s.ports)}}
	if l.kernel {
		base.rules = append(base.rules, outsExprs(s.outs))
	}
	out := []chainSpec{base}
	for i := range l.ports {
		p := &l.ports[i]
		port := chainSpec{name: portChain(p.name)}
		for _, sk := range l.sets {
			if sk.port == p.index && sk.kind == kindSrc {
				port.rules = append(port.rules, sourceExprs(s.elems[sk], sk.bits, sourceVerdict(l, p.name)))
			}
		}
		port.rules = append(port.rules, dropExprs(p.name))
		out = append(out, port)
		if !l.kernel {
			continue
		}
		dst := chainSpec{name: dstChain(p.name), rules: [][]expr.Any{notBackExprs(p.name)}}
		for _, sk := range l.sets {
			if sk.port == p.index && sk.kind != kindSrc {
				dst.rules = append(dst.rules, dstExprs(s.elems[sk], p.name, sk.bits, sk.code, sk.kind == kindDstMAC))
			}
		}
		out = append(out, dst,
			chainSpec{name: actChain(p.name), rules: actRules(l, p)},
			chainSpec{name: fwdChain(p.name), rules: [][]expr.Any{{&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: forwardCounter(p.name)}}}},
		)
		for _, code := range []uint8{codeDefault, codeDrop, codeForward} {
			ch := chainSpec{name: loopChain(p.name, code)}
			for _, o := range p.overrides {
				ch.rules = append(ch.rules, overrideExprs(p.name, o))
			}
			ch.rules = append(ch.rules, []expr.Any{policyVerdict(p.name, p.policy(code))})
			out = append(out, ch)
		}
	}
	if l.kernel && l.uplink != "" && !l.hasPort(l.uplink) {
		out = append(out, chainSpec{name: fwdChain(l.uplink), rules: [][]expr.Any{{&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: forwardCounter(l.uplink)}}}})
	}
	return out
}

// sourceVerdict is what an allowed source leads to: accept in the xdp
// modes, the loop check in kernel mode.
func sourceVerdict(l *layout, port string) *expr.Verdict {
	if l.kernel {
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: dstChain(port)}
	}
	return &expr.Verdict{Kind: expr.VerdictAccept}
}

// newSetRule is the rule of an element set created after the skeleton:
// inserted at the head of its port chain (a source set: before the drop)
// or appended to its dst chain (a destination set).
func newSetRule(l *layout, sk setKey, set *nftables.Set) (chain string, insert bool, exprs []expr.Any) {
	p := l.port(sk.port)
	if sk.kind == kindSrc {
		return portChain(p.name), true, sourceExprs(set, sk.bits, sourceVerdict(l, p.name))
	}
	return dstChain(p.name), false, dstExprs(set, p.name, sk.bits, sk.code, sk.kind == kindDstMAC)
}

// ifnameKey is an interface name as the ifname type holds it: IFNAMSIZ
// (16) bytes, zero padded.
func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// dstMACKey is the key of a multi-access destination element: the MAC,
// padded to 8 bytes, then the masked prefix.
func dstMACKey(mac [6]byte, addr [16]byte) []byte {
	b := make([]byte, 24)
	copy(b, mac[:])
	copy(b[8:], addr[:])
	return b
}

package nftguard

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/fib"
)

func TestMask(t *testing.T) {
	for _, c := range []struct {
		bits uint8
		want []byte
	}{
		{0, make([]byte, 16)},
		{1, []byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{48, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{56, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{60, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{127, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}},
		{128, bytes.Repeat([]byte{0xff}, 16)},
	} {
		if got := mask(c.bits); !bytes.Equal(got, c.want) {
			t.Errorf("mask(%d) = % x, want % x", c.bits, got, c.want)
		}
	}
}

// TestSourceExprs: ip6 saddr & mask @set accept, and no mask for /128.
func TestSourceExprs(t *testing.T) {
	set := &nftables.Set{Name: "src_dl0_56", ID: 7}
	want := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}, // ip6 saddr
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask(56), Xor: make([]byte, 16)},
		&expr.Lookup{SourceRegister: 1, SetName: "src_dl0_56", SetID: 7},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	if got := sourceExprs(set, 56, &expr.Verdict{Kind: expr.VerdictAccept}); !reflect.DeepEqual(got, want) {
		t.Errorf("/56: %#v", got)
	}
	want = append(want[:1], want[2:]...)
	if got := sourceExprs(set, 128, &expr.Verdict{Kind: expr.VerdictAccept}); !reflect.DeepEqual(got, want) {
		t.Errorf("/128: %#v", got)
	}
}

func TestDispatchAndDrop(t *testing.T) {
	ports := &nftables.Set{Name: portsMap, ID: 3}
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: "ports", SetID: 3}, // result: a verdict
	}
	if got := dispatchExprs(ports); !reflect.DeepEqual(got, want) {
		t.Errorf("dispatch: %#v", got)
	}
	want = []expr.Any{
		&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: "drops_dl0"},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
	if got := dropExprs("dl0"); !reflect.DeepEqual(got, want) {
		t.Errorf("drop: %#v", got)
	}
	if got := ifnameKey("dl0"); !bytes.Equal(got, []byte{'d', 'l', '0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("ifname key % x", got)
	}
}

func TestNames(t *testing.T) {
	if portChain("dl0") != "port_dl0" || counterName("dl0") != "drops_dl0" || setName("dl0", 56, kindSrc, 0, 0) != "src_dl0_56" {
		t.Error(portChain("dl0"), counterName("dl0"), setName("dl0", 56, kindSrc, 0, 0))
	}
	for _, c := range []struct {
		name string
		gen  uint32
		ok   bool
	}{
		{setName("dl0", 56, kindSrc, 0, 7), 7, true},
		{setName("dl0", 56, kindDst, 2, 1), 1, true},
		{setName("a_g1", 64, kindDstMAC, 3, 12), 12, true},
		{setName("a_g1", 64, kindSrc, 0, 0), 0, false}, // xdp: no generation
		{"ports", 0, false},
		{"other_g3", 0, false},
	} {
		if gen, ok := setGen(c.name); gen != c.gen || ok != c.ok {
			t.Errorf("setGen(%q) = %d, %v; want %d, %v", c.name, gen, ok, c.gen, c.ok)
		}
	}
	if got := setName("dl1", 48, kindDstMAC, 3, 2); got != "dstm_dl1_48_c3_g2" {
		t.Errorf("setName: %s", got)
	}
}

// TestDstExprs: the loop lookup of a point-to-point port, and of a
// multi-access port with the MAC in the key, laid out as nft(8) lays out
// "ether saddr . ip6 daddr & mask @set" (which it then prints back).
func TestDstExprs(t *testing.T) {
	set := &nftables.Set{Name: "dst_dl0_56_c1", ID: 9}
	want := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}, // ip6 daddr
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask(56), Xor: make([]byte, 16)},
		&expr.Lookup{SourceRegister: 1, SetName: "dst_dl0_56_c1", SetID: 9},
		&expr.Verdict{Kind: expr.VerdictGoto, Chain: "lp1_dl0"},
	}
	if got := dstExprs(set, "dl0", 56, codeDefault, false); !reflect.DeepEqual(got, want) {
		t.Errorf("point-to-point: %#v", got)
	}
	want = []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(1)},      // meta iiftype ether
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},         // ether saddr: reg32 8-9
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}, // ip6 daddr: reg32 10-13
		&expr.Bitwise{SourceRegister: 10, DestRegister: 10, Len: 16, Mask: mask(60), Xor: make([]byte, 16)},
		&expr.Lookup{SourceRegister: 1, SetName: "dst_dl0_56_c1", SetID: 9}, // 24-byte key from reg 1
		&expr.Verdict{Kind: expr.VerdictGoto, Chain: "lp3_dl1"},
	}
	if got := dstExprs(set, "dl1", 60, codeForward, true); !reflect.DeepEqual(got, want) {
		t.Errorf("multi-access: %#v", got)
	}
	if got := dstMACKey([6]byte{2, 0, 0, 0, 0, 1}, [16]byte{0x20, 0x01}); !bytes.Equal(got, []byte{
		2, 0, 0, 0, 0, 1, 0, 0, // MAC, padded to 8
		0x20, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
	}) {
		t.Errorf("dstm key % x", got)
	}
}

// TestLoopRules: the first dst rule, an override, and the loop chain
// with and without ICMPv6.
func TestLoopRules(t *testing.T) {
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifnameKey("dl0")}, // oifname != "dl0"
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
	if got := notBackExprs("dl0"); !reflect.DeepEqual(got, want) {
		t.Errorf("not back: %#v", got)
	}
	o := LoopOverride{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Policy: fib.LoopForward}
	want = []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask(48), Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictReturn}, // forward: back to the base chain
	}
	if got := overrideExprs("dl0", o); !reflect.DeepEqual(got, want) {
		t.Errorf("override: %#v", got)
	}
	o.Policy = fib.LoopDrop
	if got := overrideExprs("dl0", o); !reflect.DeepEqual(got[3], &expr.Verdict{Kind: expr.VerdictGoto, Chain: "loop_dl0"}) {
		t.Errorf("drop override: %#v", got[3])
	}
	count := func(n string) expr.Any { return &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: n} }
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	l := &layout{kernel: true, icmpRate: 100, icmpBurst: 10}
	p := &portLayout{name: "dl0"}
	if got := actRules(l, p); !reflect.DeepEqual(got, [][]expr.Any{{count("loop_dl0"), drop}}) {
		t.Errorf("no loop_icmp: %#v", got)
	}
	p.icmp = true
	if got := actRules(l, p); !reflect.DeepEqual(got, [][]expr.Any{
		{count("loop_dl0")},
		{&expr.Limit{Type: expr.LimitTypePkts, Rate: 100, Over: true, Unit: expr.LimitTimeSecond, Burst: 10}, count("icmprl_dl0"), drop},
		{count("icmp_dl0"), &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 6}},
	}) {
		t.Errorf("loop_icmp: %#v", got)
	}
	l.icmpRate = 0
	if got := actRules(l, p); !reflect.DeepEqual(got, [][]expr.Any{{count("loop_dl0")}, {count("icmprl_dl0"), drop}}) {
		t.Errorf("icmp_rate 0: %#v", got)
	}
}

// TestRuleCounts: layout.ruleCounts, which the check uses, agrees with
// the rules chainRules writes, chain by chain, for layouts of both modes.
func TestRuleCounts(t *testing.T) {
	over := []LoopOverride{{Prefix: netip.MustParsePrefix("2001:db8::/32"), Policy: fib.LoopDrop}, {Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Policy: fib.LoopForward}}
	sets := []setKey{{port: 0, bits: 56}, {port: 0, bits: 64}, {port: 0, bits: 56, kind: kindDst, code: 1}, {port: 2, bits: 48, kind: kindDstMAC, code: 3}, {port: 2, bits: 48}}
	ports := []portLayout{{index: 0, name: "dl0", icmp: true}, {index: 2, name: "dl2", multi: true, loop: fib.LoopForward, overrides: over}}
	for _, l := range []*layout{
		{ports: ports, sets: []setKey{{port: 0, bits: 56}}},
		{kernel: true, ports: ports, sets: sets, icmpRate: 10, uplink: "up0"},
		{kernel: true, ports: ports, sets: sets, icmpRate: 0},
		{kernel: true, ports: ports[:1], uplink: "dl0"},
	} {
		ts := &tableSets{ports: &nftables.Set{Name: portsMap}, outs: &nftables.Set{Name: outsMap}, elems: map[setKey]*nftables.Set{}}
		for _, sk := range l.sets {
			ts.elems[sk] = &nftables.Set{Name: fmt.Sprint(sk)}
		}
		specs := chainRules(l, ts)
		var names []string
		got := map[string]int{}
		for _, c := range specs {
			names = append(names, c.name)
			got[c.name] = len(c.rules)
		}
		if !slices.Equal(names, l.chains()) {
			t.Errorf("chains %v, layout says %v", names, l.chains())
		}
		if want := l.ruleCounts(); !maps.Equal(got, want) {
			t.Errorf("kernel %v: rules %v, ruleCounts %v", l.kernel, got, want)
		}
	}
}

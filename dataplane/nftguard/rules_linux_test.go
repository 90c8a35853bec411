package nftguard

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
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
}

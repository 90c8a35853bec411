package nftguard

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// dispatchExprs is the base chain's one rule:
//
//	iifname vmap @ports
//
// meta loads the input interface's name (16 bytes, zero padded) into
// register 1; the lookup's result goes to the verdict register (0). An
// interface that is not a downlink finds nothing and falls through to the
// chain's policy, accept.
func dispatchExprs(ports *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: ports.Name, SetID: ports.ID},
	}
}

// sourceExprs is one rule of a port chain, for the prefixes of one length:
//
//	ip6 saddr & <mask of bits> @set accept
//
// The source address (16 bytes at offset 8 of the network header) goes to
// register 1, is masked to the prefix length in place (not for /128, whose
// mask changes nothing) and looked up in the set of masked prefixes.
func sourceExprs(set *nftables.Set, bits uint8) []expr.Any {
	e := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv6SrcOffset, Len: 16},
	}
	if bits < 128 {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask(bits), Xor: make([]byte, 16)})
	}
	return append(e,
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictAccept},
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

// ifnameKey is an interface name as the ifname type holds it: IFNAMSIZ
// (16) bytes, zero padded.
func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

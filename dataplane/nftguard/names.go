package nftguard

import (
	"strconv"
	"strings"
)

// Names inside the guard's table. Port names are interface names (at most
// 15 bytes), so every name stays far below the kernel's 256.
const (
	baseChain = "forward" // the base chain on the forward hook
	portsMap  = "ports"   // verdict map: input interface -> jump to its port chain
	outsMap   = "outs"    // kernel mode: output interface -> jump to its forwarded counter
)

// portChain is the chain of one downlink: its source rules, then the
// counted drop.
func portChain(port string) string { return "port_" + port }

// counterName is the named counter of a port's drops.
func counterName(port string) string { return "drops_" + port }

// Kernel mode's chains of one downlink (see the package documentation).
func dstChain(port string) string { return "dst_" + port }  // is a forwarded packet looping?
func actChain(port string) string { return "loop_" + port } // a dropped loop: count, maybe reject
func fwdChain(port string) string { return "fwd_" + port }  // forwarded out of the port: count

// loopChain is the chain that decides a loop of a client whose own policy
// is code: the port's per-destination overrides, then code's policy.
func loopChain(port string, code uint8) string {
	return "lp" + strconv.Itoa(int(code)) + "_" + port
}

// Kernel mode's counters of one port, by reason; the drops are
// counterName's.
func loopCounter(port string) string    { return "loop_" + port }
func icmpCounter(port string) string    { return "icmp_" + port }
func icmpRLCounter(port string) string  { return "icmprl_" + port }
func forwardCounter(port string) string { return "fwd_" + port }

// Element set kinds.
const (
	kindSrc    uint8 = iota // allowed sources: ipv6_addr
	kindDst                 // delegated prefixes of a point-to-point port: ipv6_addr
	kindDstMAC              // of a multi-access port: ether_addr . ipv6_addr
)

// setName is the set of a port's elements of one kind, prefix length and
// (destinations) loop code. Kernel mode's sets carry their generation
// (gen > 0) as a suffix, so that a new generation can be written beside
// the live one.
func setName(port string, bits uint8, kind uint8, code uint8, gen uint32) string {
	var b strings.Builder
	b.WriteString([...]string{"src_", "dst_", "dstm_"}[kind])
	b.WriteString(port)
	b.WriteByte('_')
	b.WriteString(strconv.Itoa(int(bits)))
	if kind != kindSrc {
		b.WriteString("_c")
		b.WriteString(strconv.Itoa(int(code)))
	}
	if gen > 0 {
		b.WriteString("_g")
		b.WriteString(strconv.FormatUint(uint64(gen), 10))
	}
	return b.String()
}

// setGen returns the generation in a set's name, or false for a name
// without one.
func setGen(name string) (uint32, bool) {
	i := strings.LastIndex(name, "_g")
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(name[i+2:], 10, 32)
	if err != nil || !strings.HasPrefix(name, "src_") && !strings.HasPrefix(name, "dst_") && !strings.HasPrefix(name, "dstm_") {
		return 0, false
	}
	return uint32(n), true
}

// Offsets in the IPv6 header.
const (
	ipv6SrcOffset = 8
	ipv6DstOffset = 24
)

// etherSrcOffset is the source MAC's offset in the Ethernet header.
const etherSrcOffset = 6

// mask returns the netmask of a prefix length: bits leading ones.
func mask(bits uint8) []byte {
	m := make([]byte, 16)
	for i := range m {
		switch {
		case int(bits) >= 8*(i+1):
			m[i] = 0xff
		case int(bits) > 8*i:
			m[i] = 0xff << (8 - (int(bits) - 8*i))
		}
	}
	return m
}

package nftguard

import "strconv"

// Names inside the guard's table. Port names are interface names (at most
// 15 bytes), so every name stays far below the kernel's 256.
const (
	baseChain = "forward" // the base chain on the forward hook
	portsMap  = "ports"   // verdict map: input interface -> jump to its port chain
)

// portChain is the chain of one downlink: its source rules, then the
// counted drop.
func portChain(port string) string { return "port_" + port }

// counterName is the named counter of a port's drops.
func counterName(port string) string { return "drops_" + port }

// setName is the set of a port's allowed sources of one prefix length.
func setName(port string, bits uint8) string {
	return "src_" + port + "_" + strconv.Itoa(int(bits))
}

// ipv6SrcOffset is the source address's offset in the IPv6 header.
const ipv6SrcOffset = 8

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

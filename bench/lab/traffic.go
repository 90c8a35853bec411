package lab

import (
	"fmt"
	"net/netip"
)

// PrepareTraffic readies the Lab for traffic forwarded in user space: the
// hosts' veths (every client's eth0 and the server's) stop leaving UDP and
// TCP checksums for the "hardware" to finish. A veth never finishes them,
// and a frame an AF_XDP forwarder copies to another veth would reach its
// host with the checksum still partial and be dropped. Real NICs send
// finished checksums. Needs ethtool.
func (l *Lab) PrepareTraffic() error {
	for _, ns := range append([]string{l.ServerNS}, l.ClientNS...) {
		if out, err := l.Run(ns, "ethtool", "-K", "eth0", "tx", "off"); err != nil {
			return fmt.Errorf("lab: ethtool -K eth0 tx off in %s: %v: %s", ns, err, out)
		}
	}
	return nil
}

// AddClientAddr gives client i an address (for example one from its
// delegated prefix) on its eth0, so it becomes the source of the client's
// traffic to global destinations.
func (l *Lab) AddClientAddr(i int, a netip.Addr) error {
	if out, err := l.Run(l.ClientNS[i], "ip", "-6", "addr", "add", a.String()+"/128", "dev", "eth0", "nodad"); err != nil {
		return fmt.Errorf("lab: add %s in %s: %v: %s", a, l.ClientNS[i], err, out)
	}
	return nil
}

// RelayAddrs returns the relay namespace's own global and link-local
// addresses (uplink and downlinks), the ones its kernel must keep
// receiving.
func (l *Lab) RelayAddrs() []netip.Addr {
	as := []netip.Addr{RelayUplinkAddr, l.Uplink.LinkLocal, DownlinkGateway}
	for _, d := range l.Downlinks {
		as = append(as, d.LinkLocal)
		if d.Addr.IsValid() {
			as = append(as, d.Addr.Addr())
		}
	}
	return as
}

package lab

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// DhcrelayOptions configures ISC dhcrelay -6, the stand-in relay used to
// validate the lab itself.
type DhcrelayOptions struct {
	// Ports are the downlink indexes to relay for; nil means all.
	Ports []int
	// InterfaceIDs maps a port to the Interface-ID (option 18) to send.
	// dhcrelay sends a C int in host byte order (its "#index"), so each
	// value must be exactly 4 bytes; they become "-l dlN#<int>". Ports
	// without an entry get dhcrelay's own number, which matches nothing.
	InterfaceIDs map[int]string
	// ForceInterfaceID passes -I (send Interface-ID even with one port;
	// with two or more ports dhcrelay always sends it).
	ForceInterfaceID bool
	// Server is where Relay-Forwards go (via up0); zero means ServerAddr.
	Server netip.Addr
	// CPUs, when set, is the taskset list dhcrelay runs on.
	CPUs string
}

// DhcrelayIndex is the "#index" that makes dhcrelay send the 4-byte
// Interface-ID id.
func DhcrelayIndex(id string) (int32, error) {
	if len(id) != 4 {
		return 0, fmt.Errorf("lab: dhcrelay Interface-ID must be 4 bytes, got %q", id)
	}
	return int32(binary.NativeEndian.Uint32([]byte(id))), nil
}

// StartDhcrelay runs `dhcrelay -6 -d` in the relay namespace. dhcrelay
// needs a global address on each downlink port (it is the link-address),
// so the Lab must not have NoDownlinkAddrs.
func (l *Lab) StartDhcrelay(opts DhcrelayOptions) (*Proc, error) {
	bin, err := lookBin("dhcrelay")
	if err != nil {
		return nil, err
	}
	ports := opts.Ports
	if ports == nil {
		for i := range l.Downlinks {
			ports = append(ports, i)
		}
	}
	server := opts.Server
	if !server.IsValid() {
		server = ServerAddr
	}
	args := []string{bin, "-6", "-d", "--no-pid"}
	if opts.ForceInterfaceID {
		args = append(args, "-I")
	}
	for _, p := range ports {
		if p < 0 || p >= len(l.Downlinks) {
			return nil, fmt.Errorf("lab: no downlink %d", p)
		}
		arg := l.Downlinks[p].Name
		if id, ok := opts.InterfaceIDs[p]; ok {
			idx, err := DhcrelayIndex(id)
			if err != nil {
				return nil, err
			}
			arg += "#" + itoa(int(idx))
		}
		args = append(args, "-l", arg)
	}
	args = append(args, "-u", server.String()+"%"+l.Uplink.Name)
	p, err := l.Start(l.RelayNS, "dhcrelay", onCPUs(opts.CPUs, args...)...)
	if err != nil {
		return nil, err
	}
	if err := l.WaitUDP(l.RelayNS, 547, 5*time.Second, p); err != nil {
		p.Stop()
		return nil, err
	}
	// dhcrelay binds first and checks the ports afterwards (it exits if a
	// port has no global address): give it a moment to fail.
	select {
	case <-p.Done():
		return nil, fmt.Errorf("lab: dhcrelay exited; log:\n%s", tail(p.Log(), 10))
	case <-time.After(200 * time.Millisecond):
	}
	return p, nil
}

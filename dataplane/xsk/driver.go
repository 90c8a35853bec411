package xsk

// partialDrivers are the drivers whose devices can hand a received frame
// over with its UDP or TCP checksum still partial (CHECKSUM_PARTIAL: the
// sender left it for hardware that never comes), keyed by the name
// `ethtool -i` shows. XDP and AF_XDP drop the mark that says so, so a
// dataplane forwarding from such a port completes the checksums itself
// (dataplane.PortConfig.CompleteChecksums). Physical NICs are not here:
// what they receive crossed a wire, with the checksum finished by the
// sender's hardware.
var partialDrivers = map[string]bool{
	// A veth hands its peer the sender's skb as it is: every UDP and
	// TCP packet a local stack sends through it with default offloads
	// (containers, labs).
	"veth": true,
	// netkit (Linux 6.7+), the veth of BPF-programmed containers: the
	// same.
	"netkit": true,
	// tun and tap: frames written with a virtio-net header flagged
	// NEEDS_CSUM (VMs through vhost-net or QEMU, passt, gVisor) become
	// partial skbs.
	"tun": true,
	// virtio-net in a guest: the host passes partial checksums
	// (VIRTIO_NET_HDR_F_NEEDS_CSUM) from other guests or itself when the
	// guest offers GUEST_CSUM; generic XDP sees them as they are.
	"virtio_net": true,
	// Xen netfront (it reports its xenbus driver, "vif"): netback marks
	// frames from other domains with a blank checksum the same way.
	"vif": true,
	// macvlan (and macvtap) and ipvlan in bridge mode pass frames between
	// sibling devices on one host as they are.
	"macvlan": true,
	"ipvlan":  true,
}

// PartialChecksums reports whether the devices of driver (a name that
// Driver returns) can hand over frames with partial UDP or TCP
// checksums, which a dataplane forwarding from them must complete.
func PartialChecksums(driver string) bool { return partialDrivers[driver] }

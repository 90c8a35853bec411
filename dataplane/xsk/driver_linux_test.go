package xsk

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDriver reads the drivers of a veth and a tap device in a namespace
// (both hand over partial checksums), and fails with the name for a
// device with no driver information (lo) and for one that does not
// exist.
func TestDriver(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "drv")
	veth(t, ns, "d0", "02:00:00:00:0d:00", ns, "d1", "02:00:00:00:0d:01")
	run(t, "ip", "-n", ns, "tuntap", "add", "mode", "tap", "name", "t0")
	t.Cleanup(func() { _ = exec.Command("ip", "-n", ns, "tuntap", "del", "mode", "tap", "name", "t0").Run() })
	mustInNS(t, ns, func() error {
		for dev, want := range map[string]string{"d0": "veth", "t0": "tun"} {
			got, err := Driver(dev)
			if err != nil || got != want {
				t.Errorf("Driver(%s) = %q, %v; want %q", dev, got, err, want)
			}
			if !PartialChecksums(got) {
				t.Errorf("PartialChecksums(%q) = false", got)
			}
		}
		if got, err := Driver("lo"); !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "lo") {
			t.Errorf("Driver(lo) = %q, %v; want an error naming lo and wrapping EOPNOTSUPP", got, err)
		}
		if got, err := Driver("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Driver(nosuch0) = %q, %v; want an error naming it", got, err)
		}
		return nil
	})
}

// TestPartialChecksums: the virtual drivers complete, physical NIC drivers
// and unknown names do not.
func TestPartialChecksums(t *testing.T) {
	for drv, want := range map[string]bool{
		"veth": true, "tun": true, "virtio_net": true, "netkit": true, "vif": true, "macvlan": true, "ipvlan": true,
		"ixgbe": false, "i40e": false, "ice": false, "mlx5_core": false, "e1000e": false, "": false, "VETH": false,
	} {
		if got := PartialChecksums(drv); got != want {
			t.Errorf("PartialChecksums(%q) = %v, want %v", drv, got, want)
		}
	}
}

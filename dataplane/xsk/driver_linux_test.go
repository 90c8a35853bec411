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

// TestQueues reads the queue count of veths created with 1 and 3 queues,
// the count a socket can bind to (queue 2 of the 3-queue veth binds, 1
// of the 1-queue veth does not); a missing device is an error naming it.
func TestQueues(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "queues")
	veth(t, ns, "q0", "02:00:00:00:0e:00", ns, "q1", "02:00:00:00:0e:01")
	run(t, "ip", "-n", ns, "link", "add", "m0", "numtxqueues", "3", "numrxqueues", "3", "type", "veth",
		"peer", "name", "m1", "numtxqueues", "3", "numrxqueues", "3")
	mustInNS(t, ns, func() error {
		for dev, want := range map[string]int{"q0": 1, "m0": 3} {
			if got, err := Queues(dev); err != nil || got != want {
				t.Errorf("Queues(%s) = %d, %v; want %d", dev, got, err, want)
			}
		}
		if got, err := Queues("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Queues(nosuch0) = %d, %v; want an error naming it", got, err)
		}
		return nil
	})
	for _, c := range []struct {
		dev   string
		queue int
		ok    bool
	}{{"m0", 2, true}, {"q0", 1, false}} {
		idx := ifindex(t, ns, c.dev)
		u, err := NewUMEM(UMEMConfig{Frames: 64})
		if err != nil {
			t.Fatal(err)
		}
		mustInNS(t, ns, func() error {
			s, err := NewSocket(u, SocketConfig{Ifindex: idx, Queue: c.queue, RxSize: 64, TxSize: 64, FillSize: 64, CompletionSize: 64})
			if (err == nil) != c.ok {
				t.Errorf("socket on %s queue %d: %v; want ok=%v", c.dev, c.queue, err, c.ok)
			}
			if s != nil {
				s.Close()
			}
			return nil
		})
		u.Close()
	}
}

package lqserver

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

// oneRelayLeases: n leases, one client each, all through relay A. The
// fake Kea calls it for every lease of every page, so it builds each
// lease in two allocations (TestOneRelayLeases checks it against
// relayOpts).
func oneRelayLeases(n int) func(int) keatest.Lease {
	base := netip.MustParseAddr("2001:db8:1000::").As16()
	return func(i int) keatest.Lease {
		a := base
		binary.BigEndian.PutUint32(a[4:8], binary.BigEndian.Uint32(a[4:8])+uint32(i)<<8)
		mac := [6]byte{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		var ifname, remote [24]byte
		buf := make([]byte, 0, 96) // the DUID, then the relay options
		buf = append(buf, 0, 3, 0, 1, 2, 0, 0, byte(i>>16), byte(i>>8), byte(i))
		opts := dhcp6.AppendOption(buf[10:], dhcp6.OptInterfaceID, strconv.AppendInt(append(ifname[:0], "dl"...), int64(i%48), 10))
		opts = dhcp6.AppendOption(opts, dhcp6.OptRemoteID, strconv.AppendInt(append(remote[:0], 0, 0, 0, 9, 'r', 'i'), int64(i), 10))
		opts = dhcp6.AppendOption(opts, dhcp6.OptRelayID, relayA)
		opts = dhcp6.AppendClientLinkLayer(opts, mac)
		return keatest.Lease{
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 56), DUID: buf[:10:10],
			SubnetID: 1, CLTT: 1_800_000_000 - 10, Valid: 3600, Preferred: 1800,
			Relays: []keatest.Relay{{Link: linkA, Peer: netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
				Options: opts}},
		}
	}
}

func TestOneRelayLeases(t *testing.T) {
	gen := oneRelayLeases(1 << 20)
	for _, i := range []int{0, 1, 47, 48, 999, 65535, 1<<20 - 1} {
		l := gen(i)
		mac := [6]byte{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		want := relayOpts("dl"+strconv.Itoa(i%48), "ri"+strconv.Itoa(i), relayA, mac)
		if !bytes.Equal(l.Relays[0].Options, want) || !bytes.Equal(l.DUID, []byte{0, 3, 0, 1, 2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}) {
			t.Errorf("lease %d: options %x duid %x, want %x", i, l.Relays[0].Options, l.DUID, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { gen(12345) }); a > 2 {
		t.Errorf("%.0f allocations per lease", a)
	}
}

// BenchmarkBulkQuery: one QUERY_BY_RELAY_ID answering n clients, over
// loopback TCP from the fake Kea (page size 1000), the requestor only
// reading frames.
func BenchmarkBulkQuery(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			f := start(b, keatest.Options{N: n, Gen: oneRelayLeases(n)}, Options{}, 1000)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := f.dial()
				r.send(lqMessage(uint32(i+1), dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)))
				msgs := 0
				for {
					m, err := r.next()
					if err != nil {
						b.Fatal(err)
					}
					msgs++
					if m.Type == dhcp6.MsgLeasequeryDone {
						break
					}
				}
				r.c.Close()
				if msgs != n+1 {
					b.Fatalf("%d messages for %d clients", msgs, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "clients/s")
		})
	}
}

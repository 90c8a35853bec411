package dataplane_test

import (
	"fmt"
	"net/netip"

	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/fib"
)

// A worker's batch: load the snapshot once, decide every frame, act on the
// verdicts, flush the counts.
func Example() {
	const uplink, downlink fib.PortID = 1, 2
	tb := fib.NewTable()
	client := netip.MustParsePrefix("2001:db8:1:100::/56")
	tb.AddRoute(fib.Route{Prefix: client, Port: downlink, MAC: [6]byte{0x0c, 0, 0, 0, 0, 1}})
	tb.AddSource(downlink, client)
	tb.SetDefault(&fib.Route{Port: uplink, MAC: [6]byte{0x0a, 0, 0, 0, 0, 1}})
	tb.Publish()

	f, err := dataplane.New(dataplane.Config{Ports: []dataplane.PortConfig{
		{ID: uplink, Uplink: true, MAC: [6]byte{2, 0, 0, 0, 0, 1}},
		{ID: downlink, MAC: [6]byte{2, 0, 0, 0, 0, 2}},
	}})
	if err != nil {
		panic(err)
	}

	// One frame from the uplink to the client: Ethernet, then IPv6 with an
	// empty payload (next header 59), hop limit 64.
	frame := make([]byte, 54, 2048)
	frame[12], frame[13] = 0x86, 0xdd
	frame[14], frame[20], frame[21] = 0x60, 59, 64
	src, dst := netip.MustParseAddr("2001:db8:ffff::1").As16(), netip.MustParseAddr("2001:db8:1:100::1").As16()
	copy(frame[22:], src[:])
	copy(frame[38:], dst[:])
	batch := []struct {
		in    fib.PortID
		frame []byte
	}{{uplink, frame}}

	snap := tb.FIB().Load() // once per batch
	var now int64           // a monotonic clock, read once per batch
	for _, fr := range batch {
		v, r, out, n := f.Forward(snap, fr.in, fr.frame, now)
		switch v {
		case dataplane.Forward, dataplane.ICMPReply:
			fmt.Printf("%v (%v): send %d bytes on port %d, hop limit %d\n", v, r, n, out, fr.frame[21])
		case dataplane.ToKernel:
			fmt.Printf("to the kernel of port %d\n", out)
		default:
			fmt.Printf("drop: %v\n", r)
		}
	}
	f.Flush()
	st, _ := f.Counters(downlink)
	fmt.Println("forwarded out of the downlink:", st.ByReason[dataplane.Forwarded], "frames,", st.ForwardedBytes, "bytes")
	// Output:
	// forward (forwarded): send 54 bytes on port 2, hop limit 63
	// forwarded out of the downlink: 1 frames, 54 bytes
}

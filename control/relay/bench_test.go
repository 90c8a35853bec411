package relay_test

import (
	"fmt"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/relay"
)

const (
	benchClients = 10000
	benchPorts   = 16
)

// benchClient is one CPE's pre-built Request and the server's Relay-Reply
// to the relay's Relay-Forward of it (Reply with one IA_PD, one IAPREFIX).
type benchClient struct {
	port int
	mac  [6]byte
	ll   netip.Addr
	req  []byte
	rr   []byte
}

func benchSetup(b *testing.B) (*relay.Engine, []benchClient) {
	b.Helper()
	cfg := relay.Config{Servers: []netip.Addr{serverAddr}, RelayID: relayDUID, ReleaseRequestType: rrType}
	for p := range benchPorts {
		cfg.Ports = append(cfg.Ports, relay.Port{Name: fmt.Sprintf("ge-0/0/%d", p), Index: p + 2})
	}
	e, err := relay.NewEngine(cfg)
	if err != nil {
		b.Fatal(err)
	}
	clients := make([]benchClient, benchClients)
	for i := range clients {
		c := &clients[i]
		c.port = i % benchPorts
		c.mac = [6]byte{0x02, 0x00, 0x5e, byte(i >> 16), byte(i >> 8), byte(i)}
		c.ll = netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: 0x02, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		// A 14-byte DUID-LLT, as CPEs send.
		duid := &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 0x2e000000 + uint32(i), LinkLayerAddr: net.HardwareAddr(c.mac[:])}
		req := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRequest, TransactionID: dhcpv6.TransactionID{byte(i >> 16), byte(i >> 8), byte(i)}}
		req.AddOption(dhcpv6.OptClientID(duid))
		req.AddOption(dhcpv6.OptServerID(serverDUID))
		req.AddOption(dhcpv6.OptElapsedTime(0))
		req.AddOption(iapd(1, 0, 0))
		req.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer))
		c.req = req.ToBytes()
		p := fmt.Sprintf("2001:db8:%x:%x00::/56", i>>8, i&0xff)
		rep := replyTo(req, iapd(1, 1800, 2880, iaprefix(p, 3600, 7200)), dhcpv6.OptDNS(net.ParseIP("2001:db8::53")))
		// The server answers the relay's actual Relay-Forward.
		fw, _, err := e.HandleClient(t0, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: c.port, SrcMAC: c.mac, Src: c.ll, Payload: c.req})
		if err != nil {
			b.Fatal(err)
		}
		rf, err := dhcpv6.RelayMessageFromBytes(fw)
		if err != nil {
			b.Fatal(err)
		}
		rr, err := dhcpv6.NewRelayReplFromRelayForw(rf, rep)
		if err != nil {
			b.Fatal(err)
		}
		c.rr = rr.ToBytes()
		if _, _, err := e.HandleServer(t0, relay.ServerPacket{Uplink: true, Src: serverAddr, Payload: c.rr}); err != nil {
			b.Fatal(err)
		}
	}
	return e, clients
}

// BenchmarkRelayPair is one request/reply pair through the relay in
// memory: client Request -> Relay-Forward, server Relay-Reply -> Reply
// with snooping, and the learned binding applied to the table. 10k
// clients on 16 ports, cycled, so the pending and binding tables hold
// real state. Run with -cpu 1: the requirement is 100k pairs/s per core.
func BenchmarkRelayPair(b *testing.B) {
	e, clients := benchSetup(b)
	tbl := binding.NewTable(binding.PortLimits{MaxPerClient: 8}, nil)
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	relayPairs(b, e, tbl, clients, now)
	if tbl.Len() != min(b.N, len(clients)) {
		b.Fatalf("%d bindings", tbl.Len())
	}
}

// relayPairs runs b.N request/reply pairs through e, cycling over clients,
// learning into tbl as the Manager would, and reports pairs/s.
func relayPairs(b *testing.B, e *relay.Engine, tbl *binding.Table, clients []benchClient, now time.Time) {
	for i := range b.N {
		c := &clients[i%len(clients)]
		if _, _, err := e.HandleClient(now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: c.port, SrcMAC: c.mac, Src: c.ll, Payload: c.req}); err != nil {
			b.Fatal(err)
		}
		_, upd, err := e.HandleServer(now, relay.ServerPacket{Uplink: true, Src: serverAddr, Payload: c.rr})
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range upd.Learn {
			if _, err := tbl.Learn(now, l); err != nil {
				b.Fatal(err)
			}
		}
		tbl.TakeChanges() // what the Manager hands its sinks, per batch
		now = now.Add(time.Microsecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkRelayPairTable1M is BenchmarkRelayPair with 1M other bindings
// already in the table (the scale the binding table is sized for), so the
// table's maps and expiry heap are large and the GC has a big heap to mark.
func BenchmarkRelayPairTable1M(b *testing.B) {
	e, clients := benchSetup(b)
	tbl := binding.NewTable(binding.PortLimits{MaxPerClient: 8}, nil)
	now := t0
	for i := range 1_000_000 {
		var a [16]byte // 2001:db9::/32 + i as /56: apart from the clients' prefixes
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb9
		a[4], a[5], a[6] = byte(i>>16), byte(i>>8), byte(i)
		duid := []byte{0, 1, 0, 1, 0x2f, 0, 0, 0, 0x02, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		l := binding.Learned{
			Key:     binding.Key{Port: "ge-1/0/0", DUID: string(duid), IAID: 1, Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 56)},
			NextHop: netip.MustParseAddr("fe80::1"), MACKnown: true,
			Preferred: time.Duration(3600+i%600) * time.Second, Valid: time.Duration(7200+i%600) * time.Second,
			ServerDUID: string(serverDUID.ToBytes()),
		}
		if _, err := tbl.Learn(now, l); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 0 {
			tbl.TakeChanges()
		}
	}
	tbl.TakeChanges()
	b.Run("pairs", func(b *testing.B) {
		runtime.GC()
		b.ReportAllocs()
		b.ResetTimer()
		relayPairs(b, e, tbl, clients, now)
	})
}

// BenchmarkHandleClient and BenchmarkHandleServer split the pair.
func BenchmarkHandleClient(b *testing.B) {
	e, clients := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c := &clients[i%len(clients)]
		if _, _, err := e.HandleClient(t0, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: c.port, SrcMAC: c.mac, Src: c.ll, Payload: c.req}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandleServer(b *testing.B) {
	e, clients := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c := &clients[i%len(clients)]
		if _, _, err := e.HandleServer(t0, relay.ServerPacket{Uplink: true, Src: serverAddr, Payload: c.rr}); err != nil {
			b.Fatal(err)
		}
	}
}

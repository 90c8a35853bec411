// Command fakekea serves a fake Kea DHCPv6 control socket
// (control/lqserver/keatest) holding n generated IA_PD leases, for the
// Bulk Leasequery benchmarks: `pdrelay lqserver` reads it as it would a
// real Kea, in a process of its own, so each side's CPU time is its own.
//
// Lease i is a /56 in 2001:db8::/32 for client DUID-LL 02:00:xx:xx:xx:xx,
// stored as relayed by the relay whose DUID is -relay-id on port "dl<i mod
// ports>" (Interface-ID), peer fe80::i, with the client's link-layer
// address (option 79). -peer and -mac replace the peer and the link-layer
// address of every lease with one next hop (the forwarding harness,
// bench/fwd, points all leases at one real host so frames reach it). It
// prints "ready <socket>" once it listens, and
// runs until killed.
package main

import (
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

func main() {
	n := flag.Int("n", 100_000, "leases")
	dir := flag.String("dir", "", "directory for kea.sock (required)")
	relayHex := flag.String("relay-id", "0002000000090102", "DUID of the relay the leases were relayed by, hex")
	ports := flag.Int("ports", 8, "downlink ports the clients are spread over (Interface-ID dl0, dl1, ...)")
	valid := flag.Int("valid", 3600, "valid lifetime, seconds")
	peerFlag := flag.String("peer", "", "peer-address (next hop) of every lease; default fe80::<i+1>")
	macFlag := flag.String("mac", "", "client link-layer address of every lease; default 02:00:<i>")
	flag.Parse()
	relayID, err := hex.DecodeString(*relayHex)
	var onePeer netip.Addr
	var oneMAC net.HardwareAddr
	if err == nil && *peerFlag != "" {
		onePeer, err = netip.ParseAddr(*peerFlag)
	}
	if err == nil && *macFlag != "" {
		oneMAC, err = net.ParseMAC(*macFlag)
		if err == nil && len(oneMAC) != 6 {
			err = fmt.Errorf("-mac %s: not a 48-bit MAC", *macFlag)
		}
	}
	if *dir == "" || err != nil || *n < 0 || *n >= 1<<24 || *ports < 1 {
		if err != nil {
			fmt.Fprintln(os.Stderr, "fakekea:", err)
		}
		fmt.Fprintln(os.Stderr, "usage: fakekea -dir DIR [-n N (< 16777216)] [-relay-id HEX] [-ports P] [-valid S] [-peer LL] [-mac MAC]")
		os.Exit(2)
	}
	now := time.Now().Unix()
	link := netip.MustParseAddr("fd00:0:0:1::1")
	gen := func(i int) keatest.Lease {
		var a [16]byte
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
		binary.BigEndian.PutUint32(a[4:8], uint32(i)<<8) // /56 number i
		mac := []byte{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		var peer [16]byte
		peer[0], peer[1] = 0xfe, 0x80
		binary.BigEndian.PutUint32(peer[12:], uint32(i)+1)
		if onePeer.IsValid() {
			peer = onePeer.As16()
		}
		lladdr := [6]byte(mac)
		if oneMAC != nil {
			lladdr = [6]byte(oneMAC)
		}
		opts := dhcp6.AppendOption(nil, dhcp6.OptInterfaceID, []byte("dl"+strconv.Itoa(i%*ports)))
		opts = dhcp6.AppendOption(opts, dhcp6.OptRelayID, relayID)
		opts = dhcp6.AppendClientLinkLayer(opts, lladdr)
		return keatest.Lease{
			Prefix:   netip.PrefixFrom(netip.AddrFrom16(a), 56),
			DUID:     append([]byte{0, 3, 0, 1}, mac...),
			IAID:     1,
			SubnetID: 1,
			CLTT:     now - 10,
			Valid:    uint32(*valid), Preferred: uint32(*valid / 2),
			Relays: []keatest.Relay{{Link: link, Peer: netip.AddrFrom16(peer), Options: opts}},
		}
	}
	k, err := keatest.Start(*dir, keatest.Options{N: *n, Gen: gen,
		Subnets: []keatest.Subnet{{ID: 1, Prefix: netip.MustParsePrefix("fd00:0:0:1::/64"), RelayAddrs: []netip.Addr{link}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakekea:", err)
		os.Exit(1)
	}
	fmt.Println("ready", k.Socket)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	k.Close()
}

// Command demo runs pdrelay on its built-in lab: network namespaces with
// Kea as the server and ISC dhclient as a prefix-delegation client, pdrelay
// relaying between them and forwarding (kernel forwarding off). It prints
// what the client was delegated and `pdrelay bindings`, pings through the
// relay both ways and from a spoofed source, echoes UDP and TCP through
// it (every host at its default offloads), prints `pdrelay stats`, then
// tears everything down (at once, or on Ctrl-C with -wait). `make demo`
// runs it as root.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
)

func main() {
	bin := flag.String("pdrelay", "bin/pdrelay", "pdrelay binary")
	wait := flag.Bool("wait", false, "keep the lab up until Ctrl-C")
	flag.Parse()
	if err := run(*bin, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(bin string, wait bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	if err := lab.Available("kea-dhcp6", "dhclient"); err != nil {
		return err
	}
	bin, err := filepath.Abs(bin) // the lab runs processes in its own directory
	if err != nil {
		return err
	}
	l, err := lab.New(lab.Config{Clients: 1, Logf: func(f string, a ...any) { fmt.Printf("# "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer l.Close()
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)

	if _, err := l.StartKea(lab.KeaOptions{}); err != nil {
		return err
	}
	// Kernel forwarding is off in the relay namespace: only pdrelay's
	// AF_XDP plane can carry the client's traffic.
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("dataplane:\n  mode: xdp\n", "    loop_icmp: true\n"))
	if err != nil {
		return err
	}
	c, err := l.StartDhclient(0, lab.ClientOptions{IAPDs: 2})
	if err != nil {
		return err
	}
	ps, err := c.WaitPrefix(20 * time.Second)
	if err != nil {
		return fmt.Errorf("client got no prefix: %w\n%s", err, r.Proc.Log())
	}
	fmt.Printf("\nclient %s (MAC %s, %s) was delegated %v through pdrelay\n\n",
		l.ClientNS[0], l.Downlinks[0].PeerMAC, l.Downlinks[0].PeerLinkLocal, ps)
	// The binding is learned from the Reply pdrelay relays: wait for it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if bs, err := r.Bindings(); err == nil && len(bs) >= len(ps) {
			break
		}
	}
	out, err := r.CLI("bindings")
	fmt.Printf("$ pdrelay bindings\n%s\n", out)
	if err != nil {
		return err
	}
	// The client uses an address of its first prefix and pings the
	// upstream host through pdrelay, then a spoofed source tries.
	host := ps[0].Addr().Next()
	if err := l.AddClientAddr(0, host); err != nil {
		return err
	}
	if err := l.Ping(l.ClientNS[0], host, lab.UpstreamAddr, 5*time.Second); err != nil {
		return fmt.Errorf("ping through pdrelay: %w", err)
	}
	fmt.Printf("$ ping -I %s %s   (from the client, through pdrelay): answered\n", host, lab.UpstreamAddr)
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		return fmt.Errorf("ping through pdrelay: %w", err)
	}
	fmt.Printf("$ ping -I %s %s   (from upstream, through pdrelay): answered\n", lab.UpstreamAddr, host)
	// UDP and TCP too, with every host at its default offloads.
	srv := netip.AddrPortFrom(lab.UpstreamAddr, 7)
	if err := l.EchoUDP(l.ClientNS[0], host, l.ServerNS, srv, 1200); err != nil {
		return fmt.Errorf("udp through pdrelay: %w", err)
	}
	if err := l.EchoTCP(l.ClientNS[0], host, l.ServerNS, srv, 64<<10, 5*time.Second); err != nil {
		return fmt.Errorf("tcp through pdrelay: %w", err)
	}
	fmt.Printf("$ udp and tcp echo from %s to [%s]:7   (through pdrelay): answered\n", host, lab.UpstreamAddr)
	spoof := netip.MustParseAddr("2001:db8:ff00::66")
	if err := l.AddClientAddr(0, spoof); err != nil {
		return err
	}
	if l.Ping(l.ClientNS[0], spoof, lab.UpstreamAddr, time.Second) == nil {
		return fmt.Errorf("a spoofed source got through")
	}
	fmt.Printf("$ ping -I %s %s   (spoofed source): no answer\n\n", spoof, lab.UpstreamAddr)
	out, err = r.CLI("stats")
	fmt.Printf("$ pdrelay stats\n%s\n", out)
	if err != nil {
		return err
	}
	if wait {
		fmt.Printf("lab up; relay namespace %s, socket %s. Ctrl-C tears it down.\n", l.RelayNS, r.Socket)
		<-interrupted
	}
	return nil
}

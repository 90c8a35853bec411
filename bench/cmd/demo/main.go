// Command demo runs pdrelay on its built-in lab: network namespaces with
// Kea as the server and ISC dhclient as a prefix-delegation client, pdrelay
// relaying between them in its default dataplane mode, kernel: IPv6
// forwarding is on in the relay namespace (it models the router) and the
// kernel forwards along the routes pdrelay writes, through pdrelay's
// nftables table. It names pdrelay's route protocol (157) for iproute2 in
// /etc/iproute2/rt_protos.d/pdrelay.conf if no file of that name is
// there, prints what the client was delegated, `pdrelay bindings`,
// pdrelay's routes (`ip -6 route show proto pdrelay`), pings through the
// relay both ways and from a spoofed source, echoes UDP and TCP through
// it (every host at its default offloads), prints pdrelay's table (`nft
// list table ip6 pdrelay`) and `pdrelay stats`, then tears everything
// down (at once, or on Ctrl-C with -wait). `make demo` runs it as root.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
)

// protosFile names pdrelay's route protocol for iproute2, so that `ip -6
// route show proto pdrelay` works.
const protosFile = "/etc/iproute2/rt_protos.d/pdrelay.conf"

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
	if err := nameProtocol(); err != nil {
		return err
	}
	l, err := lab.New(lab.Config{Clients: 1, Forwarding: true, Logf: func(f string, a ...any) { fmt.Printf("# "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer l.Close()
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)

	if _, err := l.StartKea(lab.KeaOptions{}); err != nil {
		return err
	}
	// No dataplane key: the default mode, kernel.
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("", "    loop_icmp: true\n"))
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
	// The routes are written in the same batch as the binding.
	out, err = l.Run(l.RelayNS, "ip", "-6", "route", "show", "proto", "pdrelay")
	fmt.Printf("$ ip -6 route show proto pdrelay   (in the relay namespace)\n%s\n", out)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if !strings.Contains(out, p.String()+" via "+l.Downlinks[0].PeerLinkLocal.String()) {
			return fmt.Errorf("no route of pdrelay's for %s via %s", p, l.Downlinks[0].PeerLinkLocal)
		}
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
	if _, err := exec.LookPath("nft"); err != nil {
		fmt.Printf("$ nft list table ip6 pdrelay\n(nft is not installed: Debian package nftables)\n\n")
	} else {
		out, err = l.Run(l.RelayNS, "nft", "list", "table", "ip6", "pdrelay")
		fmt.Printf("$ nft list table ip6 pdrelay   (in the relay namespace)\n%s\n", out)
		if err != nil {
			return err
		}
	}
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

// nameProtocol writes protosFile with pdrelay's protocol number unless a
// file of that name is there, and says which.
func nameProtocol() error {
	line := fmt.Sprintf("%d pdrelay", kroute.Protocol)
	if b, err := os.ReadFile(protosFile); err == nil {
		fmt.Printf("# %s is there, left as it is: %q\n", protosFile, strings.TrimSpace(string(b)))
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(protosFile), 0o755); err != nil {
		return fmt.Errorf("naming pdrelay's route protocol: %w", err)
	}
	if err := os.WriteFile(protosFile, []byte(line+"\n"), 0o644); err != nil {
		return fmt.Errorf("naming pdrelay's route protocol: %w", err)
	}
	fmt.Printf("# wrote %s: %q (iproute2 names pdrelay's routes)\n", protosFile, line)
	return nil
}

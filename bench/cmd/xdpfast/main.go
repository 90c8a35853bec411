// Command xdpfast runs the prototype XDP fast path (bench/xdpfast) on
// two ports of the current network namespace, for the forwarding
// harness: the prefixes read from -prefixes (one per line, "-" for
// stdin) are delegated on -down, whose frames must come from them; every
// other destination goes out of -up. Frames leaving -down get
// destination MAC -down-mac, those leaving -up -up-mac; the source MAC is
// the port's own.
//
// It prints "ready" once the program is attached to both ports, and on
// SIGTERM or SIGINT one JSON line of its counters, then exits 0.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pdrelay/pdrelay/bench/xdpfast"
)

func main() {
	down := flag.String("down", "", "downlink interface (required)")
	up := flag.String("up", "", "uplink interface (required)")
	downMAC := flag.String("down-mac", "", "destination MAC of frames sent out of -down (required)")
	upMAC := flag.String("up-mac", "", "destination MAC of frames sent out of -up (required)")
	prefixes := flag.String("prefixes", "", "file of delegated prefixes, one per line, - for stdin (required)")
	flag.Parse()
	if err := run(*down, *up, *downMAC, *upMAC, *prefixes); err != nil {
		fmt.Fprintln(os.Stderr, "xdpfast:", err)
		os.Exit(1)
	}
}

func run(down, up, downMAC, upMAC, file string) error {
	if down == "" || up == "" || downMAC == "" || upMAC == "" || file == "" {
		return fmt.Errorf("usage: xdpfast -down IF -up IF -down-mac MAC -up-mac MAC -prefixes FILE")
	}
	dl, err := net.InterfaceByName(down)
	if err != nil {
		return fmt.Errorf("-down: %w", err)
	}
	ul, err := net.InterfaceByName(up)
	if err != nil {
		return fmt.Errorf("-up: %w", err)
	}
	dmac, err := net.ParseMAC(downMAC)
	if err != nil {
		return fmt.Errorf("-down-mac: %w", err)
	}
	umac, err := net.ParseMAC(upMAC)
	if err != nil {
		return fmt.Errorf("-up-mac: %w", err)
	}
	ps, err := readPrefixes(file)
	if err != nil {
		return fmt.Errorf("-prefixes: %w", err)
	}
	f, err := xdpfast.New(len(ps) + 1)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.AddPort(dl.Index, true); err != nil {
		return err
	}
	if err := f.AddPort(ul.Index, false); err != nil {
		return err
	}
	for _, p := range ps {
		if err := f.Route(p, dl.Index, dmac, dl.HardwareAddr); err != nil {
			return err
		}
		if err := f.Source(p, dl.Index); err != nil {
			return err
		}
	}
	if err := f.Route(netip.MustParsePrefix("::/0"), ul.Index, umac, ul.HardwareAddr); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	for _, ifi := range []*net.Interface{dl, ul} {
		if err := f.Attach(ifi.Index); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	<-sig
	c, err := f.Counters()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(c)
}

func readPrefixes(file string) ([]netip.Prefix, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		fh, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		r = fh
	}
	var out []netip.Prefix
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

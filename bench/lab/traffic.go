package lab

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// EchoUDP checks UDP both ways between two namespaces: an echo server on
// srv in srvNS sends back every datagram it gets, and a client on cli
// (port chosen by the kernel) in cliNS sends size bytes to it and waits
// for the same bytes from srv. It tries 10 times, 300 ms each (the first
// datagram may wait for neighbour discovery on the way). The hosts keep
// their offloads: through veths their checksums leave partial, and a
// forwarder in between must complete them.
func (l *Lab) EchoUDP(cliNS string, cli netip.Addr, srvNS string, srv netip.AddrPort, size int) error {
	sc, err := l.ListenUDP(srvNS, srv)
	if err != nil {
		return fmt.Errorf("lab: udp echo server in %s: %w", srvNS, err)
	}
	defer sc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := sc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			_, _ = sc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	cc, err := l.ListenUDP(cliNS, netip.AddrPortFrom(cli, 0))
	if err != nil {
		return fmt.Errorf("lab: udp echo client in %s: %w", cliNS, err)
	}
	defer cc.Close()
	msg := pattern(size)
	buf := make([]byte, size+1)
	for range 10 {
		if _, err := cc.WriteToUDPAddrPort(msg, srv); err != nil {
			return fmt.Errorf("lab: udp echo %s -> %s: %w", cli, srv, err)
		}
		_ = cc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := cc.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // next try
			}
			if from == srv && bytes.Equal(buf[:n], msg) {
				return nil
			}
		}
	}
	return fmt.Errorf("lab: no udp echo of %d bytes from %s to %s in %s", size, srv, cli, cliNS)
}

// EchoTCP checks TCP both ways between two namespaces: an echo server on
// srv in srvNS, and a client from cli in cliNS that connects, sends size
// bytes, and reads them back, all within timeout. Like EchoUDP, the
// hosts keep their offloads.
func (l *Lab) EchoTCP(cliNS string, cli netip.Addr, srvNS string, srv netip.AddrPort, size int, timeout time.Duration) error {
	var ln *net.TCPListener
	if err := l.InNS(srvNS, func() (err error) {
		ln, err = net.ListenTCP("tcp6", net.TCPAddrFromAddrPort(srv))
		return err
	}); err != nil {
		return fmt.Errorf("lab: tcp echo server in %s: %w", srvNS, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		_, _ = io.Copy(c, c)
	}()
	deadline := time.Now().Add(timeout)
	var c net.Conn
	if err := l.InNS(cliNS, func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: cli.AsSlice()}, Deadline: deadline}
		c, err = d.Dial("tcp6", srv.String())
		return err
	}); err != nil {
		return fmt.Errorf("lab: tcp connect %s -> %s from %s: %w", cli, srv, cliNS, err)
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	msg := pattern(size)
	werr := make(chan error, 1)
	go func() { // write while reading: the echo fills the buffers both ways
		_, err := c.Write(msg)
		werr <- err
	}()
	got := make([]byte, size)
	if n, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("lab: tcp echo %s -> %s: %d of %d bytes back: %w", cli, srv, n, size, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("lab: tcp echo %s -> %s: write: %w", cli, srv, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("lab: tcp echo %s -> %s: %d bytes came back changed", cli, srv, size)
	}
	return nil
}

// pattern is n bytes that are not all alike, so that a checksum over them
// is not trivially right.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// AddClientAddr gives client i an address (for example one from its
// delegated prefix) on its eth0, so it becomes the source of the client's
// traffic to global destinations.
func (l *Lab) AddClientAddr(i int, a netip.Addr) error {
	if out, err := l.Run(l.ClientNS[i], "ip", "-6", "addr", "add", a.String()+"/128", "dev", "eth0", "nodad"); err != nil {
		return fmt.Errorf("lab: add %s in %s: %v: %s", a, l.ClientNS[i], err, out)
	}
	return nil
}

// RelayAddrs returns the relay namespace's own global and link-local
// addresses (uplink and downlinks), the ones its kernel must keep
// receiving.
func (l *Lab) RelayAddrs() []netip.Addr {
	as := []netip.Addr{RelayUplinkAddr, l.Uplink.LinkLocal, DownlinkGateway}
	for _, d := range l.Downlinks {
		as = append(as, d.LinkLocal)
		if d.Addr.IsValid() {
			as = append(as, d.Addr.Addr())
		}
	}
	return as
}

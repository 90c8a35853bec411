package lqserver

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

// FuzzDecodeLease: Kea's JSON, user-context included, never crashes the
// decoder, and a decoded lease is consistent.
func FuzzDecodeLease(f *testing.F) {
	f.Add([]byte(keaLeaseJSON))
	f.Add([]byte(`{"ip-address":"2001:db8::5","type":"IA_NA","duid":"01","user-context":{"ISC":{"relay-info":[{"hop":3,"link":"::","peer":"fe80::1","options":"0x0012000161"}]}}}`))
	f.Add([]byte(`{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":64,"user-context":{"ISC":{"relays":[{},{}]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLease(b)
		if err != nil {
			return
		}
		if !l.Prefix.IsValid() || !l.Prefix.Addr().Is6() || len(l.Relays) > maxRelays {
			t.Fatalf("decoded lease %+v", l)
		}
		for _, r := range l.Relays {
			if dhcp6.ValidateOptions(r.Options) != nil {
				t.Fatalf("relay options not validated: %x", r.Options)
			}
		}
		// What is decoded can be sent.
		for _, bare := range []bool{true, false} {
			cd := appendClientData(nil, &l, []prefixGrant{{l.Prefix, l.IAID, l.Preferred, l.Valid}}, 1, bare)
			if len(cd) <= dhcp6.MaxFrame {
				if _, err := dhcp6.ParseClientData(cd[4:]); err != nil {
					t.Fatalf("client data from %s does not parse: %v", b, err)
				}
			}
		}
	})
}

// FuzzParseReleaseRequest: any datagram is either discarded with a
// reason or yields a request that satisfies the draft's validation.
func FuzzParseReleaseRequest(f *testing.F) {
	f.Add(releaseRequest(1, testServerID, cdata(duid(1), iaprefix(relP1), dhcp6.AppendIAPD(nil, 7, 0, 0, iaprefix(relOther)))))
	f.Add(releaseRequest(2, testServerID, cdata(duid(1))))
	f.Add(releaseRequest(3, nil, cdata(duid(1))))
	f.Add([]byte{250, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseReleaseRequest(b, 250, testServerID)
		if err != nil {
			if _, ok := err.(*errDiscard); !ok {
				t.Fatalf("error without a discard reason: %v", err)
			}
			return
		}
		if len(req.RelayID) == 0 || len(req.Clients) == 0 {
			t.Fatalf("accepted %+v", req)
		}
		for _, c := range req.Clients {
			if len(c.DUID) == 0 {
				t.Fatalf("client without DUID accepted")
			}
		}
	})
}

// FuzzQuery: any frame content is refused with a status or answered.
func FuzzQuery(f *testing.F) {
	f.Add(lqMessage(1, dhcp6.QueryByRelayID, netip.IPv6Unspecified(), relayIDOpt(relayA)))
	f.Add(lqMessage(2, dhcp6.QueryByLinkAddress, linkA, nil))
	f.Add(lqMessage(3, dhcp6.QueryByAddress, netip.IPv6Unspecified(), dhcp6.AppendOption(nil, dhcp6.OptIAAddr, make([]byte, 24))))
	f.Add(lqMessage(4, 9, netip.IPv6Unspecified(), nil))
	lease := Lease{Type: TypePD, Prefix: relP1, DUID: duid(1), Valid: 600, CLTT: 100, Relays: []Relay{{Link: linkA, Options: relayOpts("dl0", "r1", relayA, [6]byte{})}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcp6.ParseMessage(b)
		if err != nil {
			return
		}
		q, status, _ := parseQuery(&m, nil)
		if status != dhcp6.StatusSuccess {
			return
		}
		if q.typ < dhcp6.QueryByAddress || q.typ > dhcp6.QueryByRemoteID {
			t.Fatalf("query type %d accepted", q.typ)
		}
		mt := &matcher{q: &q, now: 200}
		mt.match(&lease)
	})
}

// FuzzConnection: a byte stream from a requestor never crashes the
// connection handler, and everything it answers is framed DHCPv6.
func FuzzConnection(f *testing.F) {
	frame := func(msgs ...[]byte) []byte {
		var out []byte
		for _, m := range msgs {
			out, _ = dhcp6.AppendFramed(out, m)
		}
		return out
	}
	f.Add(frame(lqMessage(1, dhcp6.QueryByRelayID, netip.IPv6Unspecified(), relayIDOpt(relayA))))
	f.Add(frame(lqMessage(1, dhcp6.QueryByLinkAddress, linkA, nil), lqMessage(2, dhcp6.QueryByRemoteID, netip.IPv6Unspecified(), nil)))
	f.Add(frame(lqMessage(1, 3, netip.IPv6Unspecified(), relayIDOpt(relayA)), lqMessage(1, 3, netip.IPv6Unspecified(), relayIDOpt(relayA))))
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 3, 14, 0})
	kea, err := keatest.Start(f.TempDir(), typesKea())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { kea.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	srv, err := NewServer(Options{Kea: &Kea{Socket: kea.Socket, PageSize: 3}, ServerID: testServerID,
		DataTimeout: time.Second, Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.serveConn(context.Background(), a, netip.MustParseAddrPort("127.0.0.1:1"))
		}()
		go func() {
			b.Write(in)
			b.(*net.TCPConn).CloseWrite() // the requestor is done: the server finishes and closes
		}()
		fr := dhcp6.NewFrameReader(bufio.NewReader(b))
		b.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			msg, err := fr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading the answers: %v", err)
			}
			if _, err := dhcp6.ParseMessage(msg); err != nil {
				t.Fatalf("server sent %x: %v", msg, err)
			}
		}
		<-done
	})
}

package lqserver

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

var (
	relSrc   = netip.MustParseAddrPort("[2001:db8:ffff::2]:547")
	relP1    = netip.MustParsePrefix("2001:db8:1::/56")
	relP2    = netip.MustParsePrefix("2001:db8:1:100::/56")
	relP3    = netip.MustParsePrefix("2001:db8:1:200::/56")
	relOther = netip.MustParsePrefix("2001:db8:2::/56")
)

// releaseKea: client 1 holds P1 (IAID 1), P2 and P3 (IAID 2); client 2
// holds relOther.
func releaseKea(t *testing.T) (*keatest.Kea, *ReleaseServer) {
	t.Helper()
	l := func(p netip.Prefix, d []byte, iaid uint32) keatest.Lease {
		return keatest.Lease{Prefix: p, DUID: d, IAID: iaid, SubnetID: 1, CLTT: time.Now().Unix(), Valid: 600, Preferred: 300}
	}
	kea, err := keatest.Start(t.TempDir(), keatest.Options{Leases: []keatest.Lease{
		l(relP1, duid(1), 1), l(relP2, duid(1), 2), l(relP3, duid(1), 2), l(relOther, duid(2), 1),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kea.Close() })
	rs, err := NewReleaseServer(ReleaseOptions{Kea: &Kea{Socket: kea.Socket}, ServerID: testServerID})
	if err != nil {
		t.Fatal(err)
	}
	return kea, rs
}

// releaseRequest builds a RELEASE-REQUEST (type 250) with Relay-ID,
// Server-ID, Interface-ID and the given client data options.
func releaseRequest(xid byte, sid []byte, clientData ...[]byte) []byte {
	m := dhcp6.AppendHeader(nil, 250, [3]byte{0, 0, xid})
	m = dhcp6.AppendOption(m, dhcp6.OptRelayID, relayA)
	if sid != nil {
		m = dhcp6.AppendOption(m, dhcp6.OptServerID, sid)
	}
	m = dhcp6.AppendOption(m, dhcp6.OptInterfaceID, []byte("dl0"))
	for _, cd := range clientData {
		m = dhcp6.AppendOption(m, dhcp6.OptClientData, cd)
	}
	return m
}

func cdata(d []byte, ias ...[]byte) []byte {
	b := dhcp6.AppendOption(nil, dhcp6.OptClientID, d)
	for _, ia := range ias {
		b = append(b, ia...)
	}
	return b
}

func iaprefix(p netip.Prefix) []byte { return dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Prefix: p}) }

// TestReleaseReplyBytes: P1 named directly is released; relOther named
// inside an IA_PD belongs to client 2, so client 1 gets NoBinding for it,
// inside its IA_PD.
func TestReleaseReplyBytes(t *testing.T) {
	kea, rs := releaseKea(t)
	req := releaseRequest(0x42, testServerID,
		cdata(duid(1), iaprefix(relP1), dhcp6.AppendIAPD(nil, 7, 0, 0, iaprefix(relOther))))
	got := rs.Handle(context.Background(), relSrc, req)
	want := []byte{
		251, 0, 0, 0x42, // RELEASE-REQUEST-REPLY, xid
		0, 13, 0, 2, 0, 0, // Status Code: Success, no text
		0, 2, 0, 9, 0, 2, 0, 0, 0x09, 0xbf, 's', 'r', 'v', // Server-ID
		0, 18, 0, 3, 'd', 'l', '0', // Interface-ID echoed
		0, 45, 0, 80, // Client Data, 80 bytes
		0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1, // Client-ID of client 1
		0, 25, 0, 62, // IA_PD, 62 bytes
		0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, // IAID 7, T1 0, T2 0
		0, 26, 0, 46, // IAPREFIX, 46 bytes
		0, 0, 0, 0, 0, 0, 0, 0, // preferred 0, valid 0
		56, 0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:2::/56
		0, 13, 0, 17, 0, 3, 'n', 'o', ' ', 's', 'u', 'c', 'h', ' ', 'b', 'i', 'n', 'd', 'i', 'n', 'g', // NoBinding
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("reply\n got %x\nwant %x", got, want)
	}
	if kea.Has(relP1.Addr()) || !kea.Has(relOther.Addr()) {
		t.Errorf("after release: P1 held %v, other client's held %v", kea.Has(relP1.Addr()), kea.Has(relOther.Addr()))
	}
	// Retransmission: P1 is gone, so it is NoBinding now; nothing else
	// changes.
	again := rs.Handle(context.Background(), relSrc, req)
	m, err := dhcp6.ParseMessage(again)
	if err != nil || m.XID != [3]byte{0, 0, 0x42} || m.Status() != dhcp6.StatusSuccess {
		t.Fatalf("retransmission reply %x: %v", again, err)
	}
	cd := clientDataOf(t, m)
	if len(cd) != 1 || len(cd[0].Prefixes) != 1 || cd[0].Prefixes[0].Prefix != relP1 ||
		statusOf(cd[0].Prefixes[0].Options) != dhcp6.StatusNoBinding {
		t.Errorf("retransmission: client data %+v", cd)
	}
	if !kea.Has(relOther.Addr()) || kea.Len() != 3 {
		t.Errorf("retransmission changed Kea: %d leases", kea.Len())
	}
	if st := rs.Stats(); st.Requests != 2 || st.Released != 1 || st.Failed != 3 { // 1 + 2 failed prefixes
		t.Errorf("stats %+v", st)
	}
}

func clientDataOf(t *testing.T, m dhcp6.Message) []dhcp6.ClientData {
	t.Helper()
	var out []dhcp6.ClientData
	for d := range m.Options.Each(dhcp6.OptClientData) {
		cd, err := dhcp6.ParseClientData(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cd)
	}
	return out
}

func statusOf(o dhcp6.Options) uint16 {
	d, ok := o.Get(dhcp6.OptStatusCode)
	if !ok {
		return dhcp6.StatusSuccess
	}
	c, _, _ := dhcp6.StatusCode(d)
	return c
}

// TestReleaseAllSucceed: a reply for a request that fully succeeded has
// no Client Data.
func TestReleaseAllSucceed(t *testing.T) {
	kea, rs := releaseKea(t)
	r := rs.Handle(context.Background(), relSrc, releaseRequest(1, testServerID,
		cdata(duid(1), iaprefix(relP1), iaprefix(relP2)), cdata(duid(2), iaprefix(relOther))))
	m, err := dhcp6.ParseMessage(r)
	if err != nil || m.Type != 251 || m.Status() != 0 || len(clientDataOf(t, m)) != 0 {
		t.Fatalf("reply %x %v", r, err)
	}
	if kea.Len() != 1 || !kea.Has(relP3.Addr()) {
		t.Errorf("%d leases left, P3 held %v", kea.Len(), kea.Has(relP3.Addr()))
	}
}

// TestReleaseWholeClientAndIA: an IA_PD without prefixes releases that
// IA; a Client Data without IA releases the whole client; a client that
// holds nothing gets a client-level NoBinding.
func TestReleaseWholeClientAndIA(t *testing.T) {
	kea, rs := releaseKea(t)
	rs.Handle(context.Background(), relSrc, releaseRequest(1, testServerID, cdata(duid(1), dhcp6.AppendIAPD(nil, 2, 0, 0, nil))))
	if !kea.Has(relP1.Addr()) || kea.Has(relP2.Addr()) || kea.Has(relP3.Addr()) {
		t.Fatalf("IA_PD 2 release: P1 %v P2 %v P3 %v", kea.Has(relP1.Addr()), kea.Has(relP2.Addr()), kea.Has(relP3.Addr()))
	}
	rs.Handle(context.Background(), relSrc, releaseRequest(2, testServerID, cdata(duid(1))))
	if kea.Has(relP1.Addr()) || !kea.Has(relOther.Addr()) {
		t.Fatal("whole-client release")
	}
	r := rs.Handle(context.Background(), relSrc, releaseRequest(3, testServerID, cdata(duid(1))))
	m, _ := dhcp6.ParseMessage(r)
	cd := clientDataOf(t, m)
	if len(cd) != 1 || cd[0].Status() != dhcp6.StatusNoBinding || !bytes.Equal(cd[0].ClientID, duid(1)) {
		t.Errorf("client with nothing: %+v", cd)
	}
}

func TestReleaseDiscards(t *testing.T) {
	_, rs := releaseKea(t)
	noCID := dhcp6.AppendOption(nil, dhcp6.OptClientData, iaprefix(relP1))
	cases := []struct {
		reason string
		msg    []byte
		src    netip.AddrPort
	}{
		{DiscardNoServerID, releaseRequest(1, nil, cdata(duid(1), iaprefix(relP1))), relSrc},
		{DiscardServerIDMismatch, releaseRequest(1, []byte{0, 2, 0, 0, 0, 1, 'x'}, cdata(duid(1), iaprefix(relP1))), relSrc},
		{DiscardNoClientData, releaseRequest(1, testServerID), relSrc},
		{DiscardNoClientID, append(releaseRequest(1, testServerID), noCID...), relSrc},
		{DiscardNoRelayID, func() []byte {
			m := dhcp6.AppendHeader(nil, 250, [3]byte{0, 0, 1})
			m = dhcp6.AppendOption(m, dhcp6.OptServerID, testServerID)
			return dhcp6.AppendOption(m, dhcp6.OptClientData, cdata(duid(1), iaprefix(relP1)))
		}(), relSrc},
		{DiscardMalformed, []byte{250, 0, 0}, relSrc},
		{DiscardMalformed, append(releaseRequest(1, testServerID), 0, 45, 0, 9), relSrc},
		{DiscardNotRequest, append([]byte{251}, releaseRequest(1, testServerID, cdata(duid(1)))[1:]...), relSrc},
	}
	for _, c := range cases {
		if r := rs.Handle(context.Background(), c.src, c.msg); r != nil {
			t.Errorf("%s: answered %x", c.reason, r)
		}
	}
	st := rs.Stats()
	want := map[string]uint64{DiscardNoServerID: 1, DiscardServerIDMismatch: 1, DiscardNoClientData: 1,
		DiscardNoClientID: 1, DiscardNoRelayID: 1, DiscardMalformed: 2, DiscardNotRequest: 1, DiscardNotAllowed: 0}
	for k, v := range want {
		if st.Discarded[k] != v {
			t.Errorf("discarded %s: %d, want %d", k, st.Discarded[k], v)
		}
	}
	if st.Requests != 0 || st.Released != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestReleaseAllowAndServerID(t *testing.T) {
	kea, err := keatest.Start(t.TempDir(), keatest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kea.Close()
	if _, err := NewReleaseServer(ReleaseOptions{Kea: &Kea{Socket: kea.Socket}}); !errors.Is(err, ErrServerIDUnknown) {
		t.Errorf("release server without a server id: %v", err)
	}
	rs, err := NewReleaseServer(ReleaseOptions{Kea: &Kea{Socket: kea.Socket}, ServerID: testServerID,
		Allow: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}})
	if err != nil {
		t.Fatal(err)
	}
	if r := rs.Handle(context.Background(), relSrc, releaseRequest(1, testServerID, cdata(duid(1)))); r != nil ||
		rs.Stats().Discarded[DiscardNotAllowed] != 1 {
		t.Errorf("request from outside --release-allow answered: %x", r)
	}
	if r := rs.Handle(context.Background(), netip.MustParseAddrPort("[fd00::1]:547"), releaseRequest(1, testServerID, cdata(duid(1)))); r == nil {
		t.Error("request from inside --release-allow not answered")
	}
}

// TestReleaseUDP: the same over a UDP socket.
func TestReleaseUDP(t *testing.T) {
	kea, rs := releaseKea(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rs.Serve(ctx, pc) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		pc.Close()
	}()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(releaseRequest(9, testServerID, cdata(duid(2), iaprefix(relOther))))
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dhcp6.ParseMessage(buf[:n])
	if err != nil || m.Type != 251 || m.XID != [3]byte{0, 0, 9} || m.Status() != 0 {
		t.Fatalf("reply %x %v", buf[:n], err)
	}
	if kea.Has(relOther.Addr()) {
		t.Error("lease not deleted")
	}
}

package dhcp6_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Seeds: a PD exchange as a CPE and a server send it, built with
// insomniacslk's dhcpv6 package with fixed transaction ids and DUIDs so
// the corpus is the same on every run.

var (
	seedClientMAC  = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01}
	seedClientDUID = &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 0x2a2a2a2a, LinkLayerAddr: seedClientMAC}
	seedServerDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}}
	seedIAID       = [4]byte{0, 0, 0, 1}
)

func seedIAPD(prefixes ...*dhcpv6.OptIAPrefix) *dhcpv6.OptIAPD {
	ia := &dhcpv6.OptIAPD{IaId: seedIAID, T1: time.Hour, T2: 90 * time.Minute}
	for _, p := range prefixes {
		ia.Options.Add(p)
	}
	return ia
}

func seedPrefix(s string, pref, valid time.Duration) *dhcpv6.OptIAPrefix {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return &dhcpv6.OptIAPrefix{PreferredLifetime: pref, ValidLifetime: valid, Prefix: n}
}

type seed struct {
	name string
	msg  dhcpv6.DHCPv6
}

// seedMessages returns a Solicit with IA_PD, the Advertise, Request and
// Reply (IA_PD with two prefixes), a Renew and its Reply, a Release, and
// Relay-Forward / Relay-Reply messages wrapping them, one and two deep.
func seedMessages(tb testing.TB) []seed {
	tb.Helper()
	must := func(m *dhcpv6.Message, err error) *dhcpv6.Message {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return m
	}
	sol := must(dhcpv6.NewSolicit(seedClientMAC,
		dhcpv6.WithClientID(seedClientDUID),
		dhcpv6.WithIAPD(seedIAID),
		dhcpv6.WithOption(&dhcpv6.OptionGeneric{OptionCode: 0xfe01, OptionData: []byte("unknown")}),
	))
	sol.TransactionID = dhcpv6.TransactionID{0x12, 0x34, 0x56}
	solRC := must(dhcpv6.NewSolicit(seedClientMAC, dhcpv6.WithClientID(seedClientDUID), dhcpv6.WithIAPD(seedIAID), dhcpv6.WithRapidCommit))
	solRC.TransactionID = dhcpv6.TransactionID{0x12, 0x34, 0x57}

	p1 := seedPrefix("2001:db8:1:100::/56", time.Hour, 2*time.Hour)
	p2 := seedPrefix("2001:db8:ffff::/48", 30*time.Minute, 45*time.Minute)
	adv := must(dhcpv6.NewAdvertiseFromSolicit(sol,
		dhcpv6.WithServerID(seedServerDUID),
		dhcpv6.WithIANA(dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP("2001:db8::100"), PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour}),
		dhcpv6.WithOption(seedIAPD(p1)),
	))
	req := must(dhcpv6.NewRequestFromAdvertise(adv))
	req.TransactionID = dhcpv6.TransactionID{0xab, 0xcd, 0xef}
	reply := must(dhcpv6.NewReplyFromMessage(req, dhcpv6.WithServerID(seedServerDUID), dhcpv6.WithOption(seedIAPD(p1, p2))))
	replyRC := must(dhcpv6.NewReplyFromMessage(solRC, dhcpv6.WithServerID(seedServerDUID), dhcpv6.WithOption(seedIAPD(p1))))
	renew := must(dhcpv6.NewMessage(dhcpv6.WithClientID(seedClientDUID), dhcpv6.WithServerID(seedServerDUID), dhcpv6.WithOption(seedIAPD(p1))))
	renew.MessageType = dhcpv6.MessageTypeRenew
	renew.TransactionID = dhcpv6.TransactionID{1, 1, 1}
	noBinding := &dhcpv6.OptIAPD{IaId: seedIAID}
	noBinding.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoBinding, StatusMessage: "gone"})
	renewReply := must(dhcpv6.NewReplyFromMessage(renew, dhcpv6.WithServerID(seedServerDUID), dhcpv6.WithOption(noBinding)))
	release := must(dhcpv6.NewMessage(dhcpv6.WithClientID(seedClientDUID), dhcpv6.WithServerID(seedServerDUID), dhcpv6.WithOption(seedIAPD(p1))))
	release.MessageType = dhcpv6.MessageTypeRelease
	release.TransactionID = dhcpv6.TransactionID{2, 2, 2}

	relay := func(m dhcpv6.DHCPv6, t dhcpv6.MessageType, link, peer string, ifid string, lla bool) *dhcpv6.RelayMessage {
		r, err := dhcpv6.EncapsulateRelay(m, t, net.ParseIP(link), net.ParseIP(peer))
		if err != nil {
			tb.Fatal(err)
		}
		r.AddOption(dhcpv6.OptInterfaceID([]byte(ifid)))
		if lla {
			r.AddOption(dhcpv6.OptClientLinkLayerAddress(iana.HWTypeEthernet, seedClientMAC))
		}
		return r
	}
	fw := relay(sol, dhcpv6.MessageTypeRelayForward, "::", "fe80::1", "eth1", true)
	fw2 := relay(fw, dhcpv6.MessageTypeRelayForward, "2001:db8::1", "fe80::aa", "uplink-a", false)
	rr := relay(reply, dhcpv6.MessageTypeRelayReply, "::", "fe80::1", "eth1", false)
	rr2 := relay(rr, dhcpv6.MessageTypeRelayReply, "2001:db8::1", "fe80::aa", "uplink-a", false)
	return []seed{
		{"solicit", sol}, {"solicit-rapid-commit", solRC}, {"advertise", adv}, {"request", req},
		{"reply-2-prefixes", reply}, {"reply-rapid-commit", replyRC}, {"renew", renew},
		{"reply-nobinding", renewReply}, {"release", release},
		{"relay-forward", fw}, {"relay-forward-2", fw2}, {"relay-reply", rr}, {"relay-reply-2", rr2},
	}
}

// TestSeedsParse checks the seeds themselves: every one parses with our
// decoders, and the nested relay messages unwrap to the expected message.
func TestSeedsParse(t *testing.T) {
	for _, s := range seedMessages(t) {
		b := s.msg.ToBytes()
		inner, depth, err := dhcp6.Innermost(b)
		if err != nil {
			t.Errorf("%s: Innermost: %v", s.name, err)
			continue
		}
		if s.msg.IsRelay() {
			if _, err := dhcp6.ParseRelay(b); err != nil {
				t.Errorf("%s: ParseRelay: %v", s.name, err)
			}
			want, err := s.msg.GetInnerMessage()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(inner, want.ToBytes()) || depth == 0 {
				t.Errorf("%s: Innermost = %x (depth %d), want %x", s.name, inner, depth, want.ToBytes())
			}
			continue
		}
		m, err := dhcp6.ParseMessage(b)
		if err != nil {
			t.Errorf("%s: ParseMessage: %v", s.name, err)
			continue
		}
		if m.Type != dhcp6.MessageType(s.msg.Type()) {
			t.Errorf("%s: type %v", s.name, m.Type)
		}
		// Every IA_PD agrees with insomniacslk's view of it.
		for o := m.Options; ; {
			code, data, rest, ok := o.Next()
			if !ok {
				break
			}
			o = rest
			if code == dhcp6.OptIAPD {
				if err := compareIAPD(data); err != nil {
					t.Errorf("%s: %v", s.name, err)
				}
			}
		}
	}
}

func FuzzParseRelay(f *testing.F) {
	for _, s := range seedMessages(f) {
		f.Add(s.msg.ToBytes())
	}
	f.Add(nest(solicitBytes, dhcp6.HopCountLimit+2))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = dhcp6.Innermost(data)
		r, err := dhcp6.ParseRelay(data)

		// One-way differential: whatever insomniacslk accepts as a relay
		// message with a relay-message option, we accept with the same
		// header. (We accept more: insomniacslk also decodes every option
		// and the inner message, we do not.)
		if their, terr := theirRelay(data); terr == nil && their.Options.RelayMessage() != nil {
			if err != nil {
				t.Fatalf("insomniacslk parses %x, ParseRelay: %v", data, err)
			}
			if uint8(r.Type) != uint8(their.MessageType) || r.HopCount != their.HopCount ||
				r.LinkAddr != addrOf(their.LinkAddr) || r.PeerAddr != addrOf(their.PeerAddr) {
				t.Fatalf("header %v %d %v %v, insomniacslk %v %d %v %v", r.Type, r.HopCount, r.LinkAddr, r.PeerAddr,
					their.MessageType, their.HopCount, their.LinkAddr, their.PeerAddr)
			}
		}
		if err != nil {
			return
		}
		if r.Type != dhcp6.MsgRelayForw && r.Type != dhcp6.MsgRelayRepl {
			t.Fatalf("ParseRelay accepted type %v", r.Type)
		}
		// The header and options re-encode to exactly the input.
		re := dhcp6.AppendRelayHeader(nil, r.Type, r.HopCount, r.LinkAddr, r.PeerAddr)
		re = append(re, r.Options...)
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoded %x, input %x", re, data)
		}
		got, ok := r.Options.Get(dhcp6.OptRelayMsg)
		if !ok || !bytes.Equal(got, r.Inner) {
			t.Fatalf("Inner %x is not the relay-message option %x", r.Inner, got)
		}
		walkAll(t, r.Options)
	})
}

func FuzzParseMessage(f *testing.F) {
	for _, s := range seedMessages(f) {
		if !s.msg.IsRelay() {
			f.Add(s.msg.ToBytes())
		}
	}
	f.Add(solicitBytes)
	f.Add([]byte{200, 0, 0, 0, 0xfe, 0xed, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := dhcp6.ParseMessage(data)
		wantOK := len(data) >= dhcp6.HeaderLen && data[0] != 12 && data[0] != 13 &&
			dhcp6.ValidateOptions(data[dhcp6.HeaderLen:]) == nil
		if (err == nil) != wantOK {
			t.Fatalf("ParseMessage(%x) err = %v, want ok=%v", data, err, wantOK)
		}

		// One-way differential: insomniacslk decodes every option and so
		// refuses more; whatever it accepts, we accept, with the same
		// header and the same top-level options in the same order.
		their, terr := theirMessage(data)
		if terr == nil {
			if err != nil {
				t.Fatalf("insomniacslk parses %x, ParseMessage: %v", data, err)
			}
			if uint8(m.Type) != uint8(their.MessageType) || m.XID != their.TransactionID {
				t.Fatalf("header %v %x, insomniacslk %v %x", m.Type, m.XID, their.MessageType, their.TransactionID)
			}
			var codes []uint16
			for o := m.Options; ; {
				c, _, rest, ok := o.Next()
				if !ok {
					break
				}
				codes = append(codes, c)
				o = rest
			}
			if len(codes) != len(their.Options.Options) {
				t.Fatalf("%d options, insomniacslk %d", len(codes), len(their.Options.Options))
			}
			for i, o := range their.Options.Options {
				if uint16(o.Code()) != codes[i] {
					t.Fatalf("option %d code %d, insomniacslk %d", i, codes[i], o.Code())
				}
			}
		}
		if err != nil {
			return
		}
		_ = m.Status()
		walkAll(t, m.Options)
		for o := m.Options; ; {
			code, data, rest, ok := o.Next()
			if !ok {
				break
			}
			o = rest
			if code == dhcp6.OptIAPD {
				if ia, err := dhcp6.ParseIAPD(data); err == nil {
					_ = ia.Status()
				}
			}
		}
	})
}

// FuzzIAPD decodes the same IA_PD option data with ParseIAPD+ParseIAPrefix
// and with insomniacslk's OptIAPD.FromBytes and compares the results.
//
// Legitimate divergences, and how the comparison handles them:
//   - insomniacslk decodes every sub-option with its typed parser (a status
//     code shorter than 2 bytes, an IAADDR inside an IA_PD, ...) and fails the
//     whole IA_PD on any error; we only decode IAPREFIX and tolerate the
//     rest. So "we accept, it refuses" is fine.
//   - insomniacslk accepts an IAPREFIX prefix-length over 128 (it builds a
//     nil mask); we refuse it (RFC 8415 21.22: 0..128). "It accepts, we
//     refuse" is fine only for that reason, checked on the bytes.
//   - insomniacslk turns prefix-length 0 into a nil Prefix; we return ::/0.
//   - insomniacslk keeps the host bits of the prefix; we mask them. The
//     comparison masks theirs.
//
// Everything else must agree: IAID, T1, T2, the IAPREFIXes in order with
// their lifetimes and prefixes, and the IA_PD status code.
func FuzzIAPD(f *testing.F) {
	for _, s := range seedMessages(f) {
		m, ok := s.msg.(*dhcpv6.Message)
		if !ok {
			continue
		}
		for _, ia := range m.Options.IAPD() {
			f.Add(ia.ToBytes())
		}
	}
	ia := seedIAPD(
		seedPrefix("2001:db8:1:100::/56", 0xffffffff*time.Second, 0xffffffff*time.Second),
		seedPrefix("2001:db8:2::/64", 0, 0),
	)
	ia.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail})
	f.Add(ia.ToBytes())
	f.Add([]byte{
		0, 0, 0, 7, // IAID
		0, 0, 0, 1, // T1
		0, 0, 0, 2, // T2
		0, 26, // IAPrefix option code
		0, 25, // option length
		0, 0, 0, 3, // preferred-lifetime
		0, 0, 0, 4, // valid-lifetime
		129,                                                        // prefix-length 129
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := compareIAPD(data); err != nil {
			t.Fatal(err)
		}
	})
}

type ourPrefix struct {
	pref, valid uint32
	prefix      netip.Prefix
}

// compareIAPD is the FuzzIAPD oracle; it returns an error for a real
// disagreement.
func compareIAPD(data []byte) error {
	ia, ourErr := dhcp6.ParseIAPD(data)
	var ours []ourPrefix
	tooLong := false // an IAPREFIX with prefix-length > 128
	if ourErr == nil {
		for o := ia.Options; ; {
			code, pd, rest, ok := o.Next()
			if !ok {
				break
			}
			o = rest
			if code != dhcp6.OptIAPrefix {
				continue
			}
			if len(pd) >= 9 && pd[8] > 128 {
				tooLong = true
			}
			p, err := dhcp6.ParseIAPrefix(pd)
			if err != nil {
				ourErr = err
				break
			}
			if !p.Prefix.IsValid() || p.Prefix != p.Prefix.Masked() {
				return fmt.Errorf("ParseIAPrefix(%x) returned unmasked or invalid %v", pd, p.Prefix)
			}
			ours = append(ours, ourPrefix{p.Preferred, p.Valid, p.Prefix})
		}
	}

	var their dhcpv6.OptIAPD
	theirErr := theirIAPD(&their, data)
	switch {
	case theirErr != nil:
		return nil // insomniacslk is stricter about sub-options
	case ourErr != nil:
		if tooLong {
			return nil
		}
		return fmt.Errorf("insomniacslk decodes IA_PD %x, we do not: %v", data, ourErr)
	}

	if ia.IAID != uint32(their.IaId[0])<<24|uint32(their.IaId[1])<<16|uint32(their.IaId[2])<<8|uint32(their.IaId[3]) {
		return fmt.Errorf("IAID %d, insomniacslk %x", ia.IAID, their.IaId)
	}
	if seconds(ia.T1) != their.T1 || seconds(ia.T2) != their.T2 {
		return fmt.Errorf("T1/T2 %d/%d, insomniacslk %v/%v", ia.T1, ia.T2, their.T1, their.T2)
	}
	theirs := their.Options.Prefixes()
	if len(theirs) != len(ours) {
		return fmt.Errorf("%d prefixes, insomniacslk %d", len(ours), len(theirs))
	}
	for i, tp := range theirs {
		op := ours[i]
		if seconds(op.pref) != tp.PreferredLifetime || seconds(op.valid) != tp.ValidLifetime {
			return fmt.Errorf("prefix %d lifetimes %d/%d, insomniacslk %v/%v", i, op.pref, op.valid, tp.PreferredLifetime, tp.ValidLifetime)
		}
		want := netip.MustParsePrefix("::/0")
		if tp.Prefix != nil {
			ones, bits := tp.Prefix.Mask.Size()
			if bits != 128 {
				return fmt.Errorf("prefix %d: insomniacslk mask %v", i, tp.Prefix.Mask)
			}
			want = netip.PrefixFrom(addrOf(tp.Prefix.IP), ones).Masked()
		}
		if op.prefix != want {
			return fmt.Errorf("prefix %d = %v, insomniacslk %v", i, op.prefix, want)
		}
	}
	theirStatus := uint16(dhcp6.StatusSuccess)
	if s := their.Options.Status(); s != nil {
		theirStatus = uint16(s.StatusCode)
	}
	if ia.Status() != theirStatus {
		return fmt.Errorf("status %d, insomniacslk %d", ia.Status(), theirStatus)
	}
	return nil
}

func seconds(s uint32) time.Duration { return time.Duration(s) * time.Second }

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To16())
	if !ok {
		return netip.IPv6Unspecified()
	}
	return a
}

// The insomniacslk decoders are the reference, not the code under test: a
// panic in them counts as a refusal (and would be reported upstream).

func theirIAPD(ia *dhcpv6.OptIAPD, data []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("insomniacslk panic: %v", r)
		}
	}()
	return ia.FromBytes(data)
}

func theirRelay(data []byte) (r *dhcpv6.RelayMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("insomniacslk panic: %v", p)
		}
	}()
	return dhcpv6.RelayMessageFromBytes(data)
}

func theirMessage(data []byte) (m *dhcpv6.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("insomniacslk panic: %v", p)
		}
	}()
	return dhcpv6.MessageFromBytes(data)
}

// walkAll checks that Next walks validated options to their exact end.
func walkAll(t *testing.T, o dhcp6.Options) {
	t.Helper()
	for {
		_, _, rest, ok := o.Next()
		if !ok {
			break
		}
		o = rest
	}
	if len(o) != 0 {
		t.Fatalf("walk stopped with %d bytes left", len(o))
	}
}

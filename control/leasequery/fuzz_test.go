package leasequery

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// FuzzReplyStream feeds a byte stream, as a server would send it on the
// TCP connection, through the frame reader and the reply stream of two
// outstanding queries: any input gives events or an error, never a
// panic, and a stream never reports more ends than queries.
func FuzzReplyStream(f *testing.F) {
	x1, x2 := [3]byte{0, 0, 1}, [3]byte{0, 0, 2}
	sid := opt(dhcp6.OptServerID, testServerID)
	frames := func(msgs ...[]byte) []byte {
		var out []byte
		for _, m := range msgs {
			out, _ = dhcp6.AppendFramed(out, m)
		}
		return out
	}
	f.Add(frames(
		msg(dhcp6.MsgLeasequeryReply, x2, sid, simpleClient(1, 0, 5)),
		msg(dhcp6.MsgLeasequeryReply, x1, sid),
		msg(dhcp6.MsgLeasequeryData, x2, simpleClient(2, 1, 5)),
		msg(dhcp6.MsgLeasequeryData, x2, opt(0xfe01, nil)),
		msg(dhcp6.MsgLeasequeryDone, x2)))
	f.Add(frames(msg(dhcp6.MsgLeasequeryReply, x1, statusOpt(dhcp6.StatusNotAllowed, "no"))))
	f.Add(frames(msg(dhcp6.MsgLeasequeryDone, [3]byte{9, 9, 9})))
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff, 15})
	conv := Converter{Ports: testPorts, RelayID: testRelayID}
	q := RelayIDQuery(testRelayID)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewStream()
		s.Add(x1, 0)
		s.Add(x2, 1)
		fr := dhcp6.NewFrameReader(bytes.NewReader(data))
		ends := 0
		for {
			b, err := fr.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, dhcp6.ErrEmptyFrame) {
					t.Fatalf("frame error %v", err)
				}
				return
			}
			ev, err := s.Handle(b)
			if err != nil {
				return // the connection is closed
			}
			switch ev.Kind {
			case EvEnd:
				if ends++; ends > 2 || s.Outstanding() != 2-ends {
					t.Fatalf("%d ends, %d outstanding", ends, s.Outstanding())
				}
			case EvReply, EvData:
				if s.ServerID(ev.Query) == nil {
					t.Fatal("data without the reply's server id")
				}
				for cd := range ev.Options.Each(dhcp6.OptClientData) {
					conv.Convert(cd, "s", &q, nil)
				}
			}
		}
	})
}

// FuzzConvert checks that any OPTION_CLIENT_DATA gives candidates that
// are placed on a configured port with a usable next hop and a valid
// lifetime, or a drop reason, never a panic.
func FuzzConvert(f *testing.F) {
	for _, cd := range [][]byte{
		simpleClient(1, 0, 60),
		clientData(duidN(2), dhcp6.AppendIAPD(nil, 4, 0, 0, iaprefix("2001:db8:8::/56", 10, 0xffffffff)),
			relayData("fe80::1", relayForw("2001:db8:ff:1::1", "fe80::2", "", nil))),
		clientData(duidN(3), iaprefix("2001:db8:7::/56", 1, 2), dhcp6.AppendCLTTime(nil, 5)),
	} {
		d, _ := dhcp6.Options(cd).Get(dhcp6.OptClientData)
		f.Add(d, false)
		f.Add(d, true)
	}
	conv := Converter{Ports: testPorts, RelayID: testRelayID}
	rel, link := RelayIDQuery(testRelayID), LinkAddressQuery("dl2", testPorts[2].LinkAddr)
	f.Fuzz(func(t *testing.T, data []byte, byLink bool) {
		q := &rel
		if byLink {
			q = &link
		}
		got, _, err := conv.Convert(data, "s", q, nil)
		if err != nil {
			var de *DropError
			if !errors.As(err, &de) || len(got) != 0 {
				t.Fatalf("error %v (%T) with %d candidates", err, err, len(got))
			}
			return
		}
		for _, c := range got {
			known := false
			for _, p := range testPorts {
				known = known || p.Name == c.Port
			}
			if !known || !usable(c.NextHop) || c.Valid <= 0 || c.Preferred > c.Valid || c.DUID == "" || !c.Prefix.IsValid() {
				t.Fatalf("bad candidate %+v", c)
			}
		}
	})
}

// FuzzParseRelayLayers checks the relay-data parser: layers or an error,
// never a panic, never more than the hop-count limit allows.
func FuzzParseRelayLayers(f *testing.F) {
	own := relayForw("2001:db8:ff:1::1", "fe80::42", "dl1", []byte{2, 0, 0, 0, 0, 0x42})
	f.Add(own)
	outer := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 1, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"))
	f.Add(dhcp6.AppendOption(outer, dhcp6.OptRelayMsg, own))
	f.Add(dhcp6.AppendOption(own, dhcp6.OptRelayMsg, []byte{1, 0xaa, 0xbb, 0xcc}))
	f.Add([]byte{12})
	f.Fuzz(func(t *testing.T, data []byte) {
		layers, err := dhcp6.ParseRelayLayers(data, nil)
		if err == nil && (len(layers) == 0 || len(layers) > dhcp6.HopCountLimit+1) {
			t.Fatalf("%d layers", len(layers))
		}
		for i := range layers {
			layers[i].InterfaceID()
			layers[i].ClientLinkLayer()
		}
	})
}

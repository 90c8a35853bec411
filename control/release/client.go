package release

import (
	"encoding/binary"
	"slices"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// optElapsedTime is OPTION_ELAPSED_TIME (RFC 8415 section 21.9).
const optElapsedTime uint16 = 8

// clientRelease is one Release on a client's behalf: one client on one
// port, of one server.
type clientRelease struct {
	message
	port string
	duid string
}

// buildClientReleases builds the Releases (RFC 8415 section 18.2.7) that
// release bs on the clients' behalf, as Juniper and Nokia edges do: one
// per port, client DUID and server DUID, holding the Client ID, the stored
// Server ID, an Elapsed Time, and per IAID an IA_PD (T1 and T2 0) with one
// IAPREFIX (lifetimes 0) per prefix released. Bindings without a server
// DUID come back in unsendable: a server drops a Release without Server
// ID.
func buildClientReleases(bs []binding.Binding, xid func() [3]byte) (msgs []clientRelease, unsendable []Result) {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, byServerPortClient)
	for i := 0; i < len(bs); {
		b := bs[i]
		if b.ServerDUID == "" {
			unsendable = append(unsendable, Result{Binding: b, Err: ErrNoServerID})
			i++
			continue
		}
		j := i + 1
		for j < len(bs) && bs[j].ServerDUID == b.ServerDUID && bs[j].Port == b.Port && bs[j].DUID == b.DUID {
			j++
		}
		group := slices.Clone(bs[i:j])
		m := clientRelease{message: message{xid: xid(), bindings: group}, port: b.Port, duid: b.DUID}
		x := m.xid
		m.build = func(elapsed uint16) []byte { return appendClientRelease(nil, x, group, elapsed) }
		msgs = append(msgs, m)
		i = j
	}
	return msgs, unsendable
}

// appendClientRelease appends the Release for group: bindings of one
// client and server, sorted by IAID.
func appendClientRelease(b []byte, xid [3]byte, group []binding.Binding, elapsed uint16) []byte {
	b = dhcp6.AppendHeader(b, dhcp6.MsgRelease, xid)
	b = dhcp6.AppendOption(b, dhcp6.OptClientID, []byte(group[0].DUID))
	b = dhcp6.AppendOption(b, dhcp6.OptServerID, []byte(group[0].ServerDUID))
	b = dhcp6.AppendOption(b, optElapsedTime, binary.BigEndian.AppendUint16(nil, elapsed))
	for i := 0; i < len(group); {
		j := i + 1
		for j < len(group) && group[j].IAID == group[i].IAID {
			j++
		}
		var prefixes []byte
		for _, g := range group[i:j] {
			prefixes = dhcp6.AppendIAPrefix(prefixes, dhcp6.IAPrefix{Prefix: g.Prefix})
		}
		b = dhcp6.AppendIAPD(b, group[i].IAID, 0, 0, prefixes)
		i = j
	}
	return b
}

// clientResults reads the server's Reply to a Release for bs (RFC 8415
// section 18.3.7): a binding gets the status of its IAPREFIX, else of its
// IA_PD, else the Reply's top-level status, else Success. Kea answers a
// released IA with Success and an unknown one with NoBinding, and puts a
// summary status at the top.
func clientResults(bs []binding.Binding, reply dhcp6.Message) []Result {
	top, _ := statusIn(reply.Options)
	var ias []dhcp6.IAPD
	for data := range reply.Options.Each(dhcp6.OptIAPD) {
		if ia, err := dhcp6.ParseIAPD(data); err == nil {
			ias = append(ias, ia)
		}
	}
	out := make([]Result, len(bs))
	for i, b := range bs {
		out[i] = Result{Binding: b, Answered: true, Status: top}
		for j := range ias {
			if ias[j].IAID != b.IAID {
				continue
			}
			if st, ok := prefixStatus(b.Prefix, iaPrefixes(ias[j].Options)); ok {
				out[i].Status = st
				break
			}
			if st, ok := statusIn(ias[j].Options); ok {
				out[i].Status = st
				break
			}
		}
	}
	return out
}

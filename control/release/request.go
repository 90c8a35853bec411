package release

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// DefaultMaxMessage is the largest RELEASE-REQUEST sent: the IPv6
// minimum MTU (1280) less the IPv6 and UDP headers, so no message is
// fragmented on any path.
const DefaultMaxMessage = 1232

// message is one message of a release, with the bindings it carries.
type message struct {
	xid      [3]byte
	bindings []binding.Binding
	// build returns the bytes to send, elapsed after the first
	// transmission (client Releases carry an Elapsed Time option).
	build func(elapsed uint16) []byte
}

// byServerPortClient orders bindings so that a server's, then a port's,
// then a client's bindings are together, and the order of messages is
// stable.
func byServerPortClient(a, b binding.Binding) int {
	return cmp.Or(
		cmp.Compare(a.ServerDUID, b.ServerDUID),
		cmp.Compare(a.Port, b.Port),
		cmp.Compare(a.DUID, b.DUID),
		cmp.Compare(a.IAID, b.IAID),
		a.Prefix.Addr().Compare(b.Prefix.Addr()),
		cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
	)
}

// Sizes of the parts of a RELEASE-REQUEST.
const (
	optHeader      = 4
	iaPrefixOptLen = optHeader + 25
)

// buildRequests builds the RELEASE-REQUESTs (draft section 4.1.1) that
// release bs: one message per server DUID and port, with the Server-ID,
// the Relay-ID and the port's Interface-ID at top level, then one
// OPTION_CLIENT_DATA per client, holding its Client ID and one
// OPTION_IAPREFIX per prefix (RFC 5007's form, lifetimes 0). A message
// that would pass maxSize bytes is split; a client's prefixes may then
// spread over two messages, each with the Client ID. Bindings without a
// server DUID cannot name their server and come back in unsendable.
// ifid gives a port's Interface-ID; xid a fresh transaction id.
func buildRequests(bs []binding.Binding, typ dhcp6.MessageType, relayID []byte, ifid func(port string) []byte, maxSize int, xid func() [3]byte) (msgs []message, unsendable []Result) {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, byServerPortClient)
	var cur *message
	var hdr []byte  // the current message's header and top-level options
	var body []byte // its client data options, closed
	var cd []byte   // the client data being filled: client id, prefixes
	var cdDUID string
	flushCD := func() {
		if len(cd) > 0 {
			body = dhcp6.AppendOption(body, dhcp6.OptClientData, cd)
			cd = nil
		}
	}
	flush := func() {
		if cur == nil {
			return
		}
		flushCD()
		msg := append(slices.Clone(hdr), body...)
		cur.build = func(uint16) []byte { return msg }
		msgs = append(msgs, *cur)
		cur, hdr, body, cd = nil, nil, nil, nil
	}
	start := func(b *binding.Binding) {
		flush()
		cur = &message{xid: xid()}
		hdr = dhcp6.AppendHeader(nil, typ, cur.xid)
		hdr = dhcp6.AppendOption(hdr, dhcp6.OptServerID, []byte(b.ServerDUID))
		if len(relayID) > 0 {
			hdr = dhcp6.AppendOption(hdr, dhcp6.OptRelayID, relayID)
		}
		hdr = dhcp6.AppendOption(hdr, dhcp6.OptInterfaceID, ifid(b.Port))
	}
	for i := range bs {
		b := &bs[i]
		if b.ServerDUID == "" {
			unsendable = append(unsendable, Result{Binding: *b, Err: ErrNoServerID})
			continue
		}
		if cur == nil || b.ServerDUID != cur.bindings[0].ServerDUID || b.Port != cur.bindings[0].Port {
			start(b)
		}
		// What this prefix adds: the IAPREFIX, and a new client data with
		// the client id when it starts one.
		add := iaPrefixOptLen
		newCD := len(cd) == 0 || cdDUID != b.DUID
		if newCD {
			add += 2*optHeader + len(b.DUID)
		}
		size := len(hdr) + len(body) + add
		if len(cd) > 0 {
			size += optHeader + len(cd)
		}
		if size > maxSize && len(cur.bindings) > 0 {
			start(b)
			newCD = true
		}
		if newCD {
			flushCD()
			cd = dhcp6.AppendOption(nil, dhcp6.OptClientID, []byte(b.DUID))
			cdDUID = b.DUID
		}
		cd = dhcp6.AppendIAPrefix(cd, dhcp6.IAPrefix{Prefix: b.Prefix})
		cur.bindings = append(cur.bindings, *b)
	}
	flush()
	return msgs, unsendable
}

// Reasons a RELEASE-REQUEST-REPLY is discarded (draft section 3.2.2), the
// labels of pdrelay_release_replies_discarded_total.
var (
	ErrReplyType      = errors.New("not a RELEASE-REQUEST-REPLY")
	ErrReplyXID       = errors.New("transaction id matches no request")
	ErrReplyNoStatus  = errors.New("no status code option")
	ErrReplyMalformed = errors.New("malformed")
)

// requestReply is a valid RELEASE-REQUEST-REPLY.
type requestReply struct {
	xid     [3]byte
	status  uint16 // top level
	clients []dhcp6.ClientData
}

// parseRequestReply validates a RELEASE-REQUEST-REPLY (draft section
// 3.2.2): its type, a top-level Status Code option, and well-formed Client
// Data options. The transaction id is the caller's to match.
func parseRequestReply(b []byte, typ dhcp6.MessageType) (requestReply, error) {
	if len(b) < dhcp6.HeaderLen {
		return requestReply{}, fmt.Errorf("%w: %w", ErrReplyMalformed, dhcp6.ErrShort)
	}
	if dhcp6.MessageType(b[0]) != typ {
		return requestReply{}, fmt.Errorf("%w: type %d", ErrReplyType, b[0])
	}
	m, err := dhcp6.ParseMessage(b)
	if err != nil {
		return requestReply{}, fmt.Errorf("%w: %w", ErrReplyMalformed, err)
	}
	st, ok := m.Options.Get(dhcp6.OptStatusCode)
	if !ok {
		return requestReply{}, ErrReplyNoStatus
	}
	code, _, err := dhcp6.StatusCode(st)
	if err != nil {
		return requestReply{}, fmt.Errorf("%w: %w", ErrReplyMalformed, err)
	}
	r := requestReply{xid: m.XID, status: code}
	for data := range m.Options.Each(dhcp6.OptClientData) {
		cd, err := dhcp6.ParseClientData(data)
		if err != nil {
			return requestReply{}, fmt.Errorf("%w: %w", ErrReplyMalformed, err)
		}
		r.clients = append(r.clients, cd)
	}
	return r, nil
}

// statusIn returns the status code in opts, if there is one (a malformed
// one reads as UnspecFail).
func statusIn(opts dhcp6.Options) (uint16, bool) {
	code, _, ok := opts.Status()
	return code, ok
}

// requestResults reads a valid reply for the bindings of msg (draft
// sections 3.1.2 and 4.4): a top-level status other than Success is every
// binding's; otherwise a binding gets the status of its IAPREFIX, else of
// its IA_PD, else of its client's Client Data, else Success (the server
// names only what failed).
func requestResults(bs []binding.Binding, r requestReply) []Result {
	out := make([]Result, len(bs))
	for i, b := range bs {
		out[i] = Result{Binding: b, Answered: true, Status: r.status}
		if r.status != dhcp6.StatusSuccess {
			continue
		}
		out[i].Status = clientStatus(&b, r.clients)
	}
	return out
}

// clientStatus finds the most specific status the Client Data options
// hold for b: IAPREFIX (directly or in an IA_PD), IA_PD, Client Data.
func clientStatus(b *binding.Binding, clients []dhcp6.ClientData) uint16 {
	var iaSt, cdSt uint16
	var iaSet, cdSet bool
	for i := range clients {
		cd := &clients[i]
		if !bytes.Equal(cd.ClientID, []byte(b.DUID)) {
			continue
		}
		if st, ok := prefixStatus(b.Prefix, cd.Prefixes); ok {
			return st
		}
		for j := range cd.IAPDs {
			ia := &cd.IAPDs[j]
			if ia.IAID != b.IAID {
				continue
			}
			if st, ok := prefixStatus(b.Prefix, iaPrefixes(ia.Options)); ok {
				return st
			}
			if st, ok := statusIn(ia.Options); ok && !iaSet {
				iaSt, iaSet = st, true
			}
		}
		if st, ok := statusIn(cd.Options); ok && !cdSet {
			cdSt, cdSet = st, true
		}
	}
	switch {
	case iaSet:
		return iaSt
	case cdSet:
		return cdSt
	}
	return dhcp6.StatusSuccess
}

func prefixStatus(p netip.Prefix, ps []dhcp6.IAPrefix) (uint16, bool) {
	for _, ip := range ps {
		if ip.Prefix == p {
			if st, ok := statusIn(ip.Options); ok {
				return st, true
			}
		}
	}
	return 0, false
}

// iaPrefixes decodes the IAPREFIX options of an IA_PD, skipping bad ones.
func iaPrefixes(opts dhcp6.Options) []dhcp6.IAPrefix {
	var out []dhcp6.IAPrefix
	for data := range opts.Each(dhcp6.OptIAPrefix) {
		if p, err := dhcp6.ParseIAPrefix(data); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// xidOf returns a message's transaction id; b has at least a header.
func xidOf(b []byte) [3]byte { return [3]byte{b[1], b[2], b[3]} }

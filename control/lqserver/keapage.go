package lqserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// A lease6-get-page answer is decoded here without encoding/json when it
// has the plain shape Kea writes (decodePageFast), with encoding/json
// otherwise (decodePageRef, the reference). The fast decoder scans the
// whole answer once, in place, and gives up ("bails") on anything it is
// not sure to read exactly as encoding/json would:
//
//   - malformed JSON, or JSON nested deeper than maxSkipDepth;
//   - a key of an object it reads (the answer, "arguments", a lease,
//     "user-context", "ISC", a relay) that is escaped, not ASCII, equal to
//     a known key but for letter case, or given twice;
//   - a known key whose value is null or of another JSON type than the
//     field's, a number with a fraction or exponent or that does not fit;
//   - a string value it reads that holds an escape or a non-ASCII byte;
//   - a result other than success (0) or empty (3).
//
// Then the same bytes go through decodePageRef, so every answer decodes
// exactly as before, errors and their text included. Kea's own answers
// never bail (tested against Kea 2.2's and keatest's). Values of keys it
// does not read (hostname, hw-address, other user-context) are only
// checked for syntax.

// keaPage is one decoded lease6-get-page answer.
type keaPage struct {
	answerHead
	hasArgs bool
	// leases in Kea's order; a zero Lease (invalid Prefix) is one Kea
	// reported that does not decode (counted as skipped).
	leases []Lease
	// from is the "ip-address" of the last lease as Kea wrote it: the
	// next page starts after it.
	from string
}

// decodePage decodes a lease6-get-page answer (the first JSON value in
// b; what follows it is ignored, as encoding/json's Decoder does).
func decodePage(b []byte) (keaPage, error) {
	if p, ok := decodePageFast(b); ok {
		return p, nil
	}
	return decodePageRef(b)
}

// decodePageRef is the reference: encoding/json into pageAnswer, then
// keaLease.lease for each lease.
func decodePageRef(b []byte) (keaPage, error) {
	var a pageAnswer
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&a); err != nil {
		return keaPage{}, err
	}
	p := keaPage{answerHead: a.answerHead, hasArgs: a.Arguments != nil}
	if a.Arguments == nil {
		return p, nil
	}
	ls := a.Arguments.Leases
	if len(ls) > 0 {
		p.leases = make([]Lease, len(ls))
	}
	for i := range ls {
		if l, err := ls[i].lease(); err == nil {
			p.leases[i] = l
		}
	}
	if len(ls) > 0 {
		p.from = ls[len(ls)-1].IPAddress
	}
	return p, nil
}

// getPage sends lease6-get-page and reads the whole answer into buf,
// which it returns (grown if needed) for the next page. decoded, if not
// nil, is readAnswer's.
func (k *Kea) getPage(ctx context.Context, from string, limit int, buf []byte, decoded func([]byte) bool) ([]byte, error) {
	const cmd = "lease6-get-page"
	c, done, err := k.send(ctx, cmd, map[string]any{"from": from, "limit": limit})
	if err != nil {
		return buf, err
	}
	defer done()
	buf, err = readAnswer(c, buf[:0], decoded)
	if err != nil {
		return buf, fmt.Errorf("kea %s: read answer: %w", cmd, ctxErr(ctx, err))
	}
	return buf, nil
}

// readAnswer appends to buf what r sends until the first JSON value in
// it is complete, or until EOF. A value that is not JSON is for the
// decoder to refuse: readAnswer only frames.
//
// When what has come so far ends with '}', decoded (if not nil) is tried
// on it first: it reports whether that is a whole answer it decoded, and
// then the answer is not scanned twice. Once it says no (the answer is
// cut there, or not of its shape) it is not tried again, and brackets
// are counted instead (valueEnd), from the start, over what came and
// comes: at most one wasted try, never a quadratic walk.
func readAnswer(r io.Reader, buf []byte, decoded func([]byte) bool) ([]byte, error) {
	var e valueEnd
	scanned := len(buf)
	trying := decoded != nil
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 && trying && lastNonSpace(buf) == '}' {
			if decoded(buf) {
				return buf, nil
			}
			trying = false
		}
		if !trying {
			if end, ok := e.scan(buf[scanned:]); ok {
				return buf[:scanned+end], nil
			}
			scanned = len(buf)
		}
		if err == io.EOF {
			if len(buf) == 0 {
				return buf, io.EOF
			}
			return buf, nil // the decoder says what is wrong
		}
		if err != nil {
			return buf, err
		}
	}
}

func lastNonSpace(b []byte) byte {
	for i := len(b) - 1; i >= 0; i-- {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return b[i]
		}
	}
	return 0
}

// valueEnd finds the end of a JSON object or array in a byte stream by
// counting brackets outside strings. A scalar ends only at EOF.
type valueEnd struct {
	depth   int
	started bool
	scalar  bool
	inStr   bool
	esc     bool
}

// scan consumes the next bytes and reports whether the value has ended,
// and where in b. Strings are crossed with IndexByte, not byte by byte.
func (e *valueEnd) scan(b []byte) (int, bool) {
	for i := 0; i < len(b); {
		if e.scalar {
			return 0, false
		}
		if e.inStr {
			if e.esc { // the byte after a backslash
				e.esc = false
				i++
				continue
			}
			q := bytes.IndexByte(b[i:], '"')
			if q < 0 {
				q = len(b) - i
			}
			if bs := bytes.IndexByte(b[i:i+q], '\\'); bs >= 0 {
				e.esc = true
				i += bs + 1
				continue
			}
			i += q
			if i < len(b) {
				e.inStr = false
				i++
			}
			continue
		}
		c := b[i]
		i++
		switch {
		case !e.started:
			switch c {
			case ' ', '\t', '\n', '\r':
			case '{', '[':
				e.started, e.depth = true, 1
			default:
				e.started, e.scalar = true, true
			}
		case c == '"':
			e.inStr = true
		case c == '{' || c == '[':
			e.depth++
		case c == '}' || c == ']':
			e.depth--
			if e.depth == 0 {
				return i, true
			}
		}
	}
	return 0, false
}

// maxSkipDepth bounds the nesting of values the fast decoder skips;
// deeper input goes to encoding/json (which refuses beyond 10000).
const maxSkipDepth = 128

// arenaChunk is the size of the blocks DUIDs and relay options are
// decoded into: a page's leases share a few allocations.
const arenaChunk = 32 << 10

// pageScan is the state of one fast decode.
type pageScan struct {
	b      []byte
	i      int
	arena  []byte  // free space for DUIDs and relay options
	relays []Relay // free space for relay levels
	// relay levels of the lease being read, "relays" and "relay-info"
	rel, info []rawRelay
}

// rawRelay is one relay level as read, before conversion.
type rawRelay struct {
	hop                    int64
	link, peer, opts       []byte
	hasLink, hasPeer, hasO bool
}

// rawLease is one lease as read, before conversion (keaLease's fields,
// strings still raw bytes of b).
type rawLease struct {
	cltt, prefixLen, state           int64
	iaid, subnetID, valid, preferred uint32
	ip, duid, typ                    []byte
	uc, isc, hasRel, hasInfo         bool
	nrel, ninfo                      int // relay levels listed (may exceed what is kept)
}

// Keys of the objects read, as bits of a "seen" mask.
const (
	kResult = 1 << iota
	kText
	kArguments
)

const (
	kCount = 1 << iota
	kLeases
)

const (
	kCLTT = 1 << iota
	kDUID
	kIAID
	kIPAddress
	kPreferred
	kPrefixLen
	kState
	kSubnetID
	kType
	kUserContext
	kValid
)

const (
	kRelays = 1 << iota
	kRelayInfo
)

const (
	kHop = 1 << iota
	kLink
	kPeer
	kOptions
)

var (
	answerKeys   = []string{"result", "text", "arguments"}
	argumentKeys = []string{"count", "leases"}
	leaseKeys    = []string{"cltt", "duid", "iaid", "ip-address", "preferred-lft", "prefix-len", "state", "subnet-id", "type", "user-context", "valid-lft"}
	ucKeys       = []string{"ISC"}
	iscKeys      = []string{"relays", "relay-info"}
	relayKeys    = []string{"hop", "link", "peer", "options"}
)

// keyBit returns the bit of key among keys (exact match), 0 when key is
// none of them; ok=false when the key would need encoding/json's rules
// (escaped, not ASCII, or equal to a known key but for case).
func keyBit(key []byte, plain bool, keys []string) (bit int, ok bool) {
	for i, k := range keys {
		if string(key) == k {
			return 1 << i, plain
		}
	}
	return 0, plain && !foldsToKey(key, keys)
}

// foldsToKey reports whether key equals one of keys but for case.
func foldsToKey(key []byte, keys []string) bool {
	for _, k := range keys {
		if len(key) == len(k) && bytes.EqualFold(key, []byte(k)) {
			return true
		}
	}
	return false
}

// leaseKeyBit is keyBit for a lease's keys (the hot one).
func leaseKeyBit(key []byte, plain bool) (int, bool) {
	bit := 0
	switch string(key) {
	case "cltt":
		bit = kCLTT
	case "duid":
		bit = kDUID
	case "iaid":
		bit = kIAID
	case "ip-address":
		bit = kIPAddress
	case "preferred-lft":
		bit = kPreferred
	case "prefix-len":
		bit = kPrefixLen
	case "state":
		bit = kState
	case "subnet-id":
		bit = kSubnetID
	case "type":
		bit = kType
	case "user-context":
		bit = kUserContext
	case "valid-lft":
		bit = kValid
	default:
		return 0, plain && !foldsToKey(key, leaseKeys)
	}
	return bit, plain
}

// decodePageFast decodes b when it has the plain shape (see above);
// ok=false when it does not, or is not valid JSON.
func decodePageFast(b []byte) (p keaPage, ok bool) {
	s := &pageScan{b: b}
	ok = s.fields(answerKeys, func(bit int) bool {
		switch bit {
		case kResult:
			v, ok := s.int64()
			if !ok || (v != keaSuccess && v != keaEmpty) {
				return false // failures are rare: the reference reads their text
			}
			p.Result = int(v)
		case kText:
			text, ok := s.plainStr()
			if !ok {
				return false
			}
			p.Text = string(text)
		case kArguments:
			p.hasArgs = true
			return s.arguments(&p)
		}
		return true
	})
	return p, ok
}

// fields reads an object whose keys are in keys (an unknown key's value
// is checked and skipped; a known one may come only once) and calls
// value to read the value of each known key, by its bit.
func (s *pageScan) fields(keys []string, value func(bit int) bool) bool {
	return s.fieldsBy(func(key []byte, plain bool) (int, bool) { return keyBit(key, plain, keys) }, value)
}

// fieldsBy is fields with the keys looked up by bitOf.
func (s *pageScan) fieldsBy(bitOf func(key []byte, plain bool) (int, bool), value func(bit int) bool) bool {
	if !s.object() {
		return false
	}
	seen := 0
	for first := true; ; first = false {
		key, plain, more, ok := s.key(first)
		if !ok {
			return false
		}
		if !more {
			return true
		}
		bit, ok := bitOf(key, plain)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if bit == 0 {
			ok = s.skip()
		} else {
			ok = value(bit)
		}
		if !ok {
			return false
		}
	}
}

// arguments reads {"count": N, "leases": [...]}.
func (s *pageScan) arguments(p *keaPage) bool {
	count := int64(0)
	return s.fields(argumentKeys, func(bit int) (ok bool) {
		switch bit {
		case kCount:
			count, ok = s.int64()
			return ok
		case kLeases:
			return s.leases(p, count)
		}
		return true
	})
}

// leases reads the array of leases; count (when it came first) sizes it.
func (s *pageScan) leases(p *keaPage, count int64) bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return false
	}
	s.i++
	// Each lease takes at least 3 bytes ("{}," ): a count can not make
	// a big allocation from a small answer.
	if s.peek(']') {
		s.i++
		return true
	}
	p.leases = make([]Lease, 0, max(1, min(count, int64(len(s.b)-s.i)/3)))
	var last []byte
	for {
		var rl rawLease
		if !s.lease(&rl) {
			return false
		}
		p.leases = append(p.leases, Lease{})
		s.convert(&rl, &p.leases[len(p.leases)-1])
		last = rl.ip
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		c := s.b[s.i]
		s.i++
		if c == ']' {
			break
		}
		if c != ',' {
			return false
		}
	}
	p.from = string(last)
	return true
}

// lease reads one lease object into rl.
func (s *pageScan) lease(rl *rawLease) bool {
	return s.fieldsBy(leaseKeyBit, func(bit int) (ok bool) {
		switch bit {
		case kCLTT:
			rl.cltt, ok = s.int64()
		case kDUID:
			rl.duid, ok = s.plainStr()
		case kIAID:
			rl.iaid, ok = s.uint32()
		case kIPAddress:
			rl.ip, ok = s.plainStr()
		case kPreferred:
			rl.preferred, ok = s.uint32()
		case kPrefixLen:
			rl.prefixLen, ok = s.int()
		case kState:
			rl.state, ok = s.int()
		case kSubnetID:
			rl.subnetID, ok = s.uint32()
		case kType:
			rl.typ, ok = s.plainStr()
		case kUserContext:
			rl.uc = true
			ok = s.userContext(rl)
		case kValid:
			rl.valid, ok = s.uint32()
		}
		return ok
	})
}

// userContext reads {"ISC": {"relays": [...], "relay-info": [...]}},
// other keys skipped.
func (s *pageScan) userContext(rl *rawLease) bool {
	return s.fields(ucKeys, func(int) bool {
		rl.isc = true
		return s.isc(rl)
	})
}

func (s *pageScan) isc(rl *rawLease) bool {
	s.rel, s.info = s.rel[:0], s.info[:0]
	return s.fields(iscKeys, func(bit int) (ok bool) {
		switch bit {
		case kRelays:
			rl.hasRel = true
			s.rel, rl.nrel, ok = s.relayList(s.rel)
		case kRelayInfo:
			rl.hasInfo = true
			s.info, rl.ninfo, ok = s.relayList(s.info)
		}
		return ok
	})
}

// relayList reads an array of relay levels into dst, keeping at most
// maxRelays+1 (more make the lease fail anyway), and returns how many
// the array holds.
func (s *pageScan) relayList(dst []rawRelay) ([]rawRelay, int, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return dst, 0, false
	}
	s.i++
	if s.peek(']') {
		s.i++
		return dst, 0, true
	}
	n := 0
	for {
		var r rawRelay
		if !s.relay(&r) {
			return dst, n, false
		}
		if n <= maxRelays {
			dst = append(dst, r)
		}
		n++
		s.ws()
		if s.i >= len(s.b) {
			return dst, n, false
		}
		c := s.b[s.i]
		s.i++
		if c == ']' {
			return dst, n, true
		}
		if c != ',' {
			return dst, n, false
		}
	}
}

func (s *pageScan) relay(r *rawRelay) bool {
	return s.fields(relayKeys, func(bit int) (ok bool) {
		switch bit {
		case kHop:
			r.hop, ok = s.int()
		case kLink:
			r.link, ok = s.plainStr()
		case kPeer:
			r.peer, ok = s.plainStr()
		case kOptions:
			r.opts, ok = s.plainStr()
		}
		return ok
	})
}

// convert turns a lease as read into a Lease, as keaLease.lease does;
// out stays the zero Lease when that would fail.
func (s *pageScan) convert(rl *rawLease, out *Lease) {
	addr, ok := parseAddr6Bytes(rl.ip)
	if !ok {
		return
	}
	bits := 128
	isPD := string(rl.typ) == TypePD
	if isPD {
		if rl.prefixLen < 1 || rl.prefixLen > 128 {
			return
		}
		bits = int(rl.prefixLen)
	}
	duid, ok := s.hex(rl.duid)
	if !ok {
		return
	}
	var relays []Relay
	if rl.uc && rl.isc {
		kr, n := s.rel, rl.nrel
		if !rl.hasRel {
			kr, n = s.info, rl.ninfo
			if !rl.hasInfo {
				n = 0
			}
		}
		if relays, ok = s.convertRelays(kr, n); !ok {
			return
		}
	}
	var typ string
	switch {
	case isPD:
		typ = TypePD
	case string(rl.typ) == TypeNA:
		typ = TypeNA
	case string(rl.typ) == "IA_TA":
		typ = "IA_TA"
	default:
		typ = string(rl.typ)
	}
	*out = Lease{
		Type: typ, Prefix: netip.PrefixFrom(addr, bits).Masked(), DUID: duid,
		IAID: rl.iaid, SubnetID: rl.subnetID, CLTT: rl.cltt,
		Valid: rl.valid, Preferred: rl.preferred, State: int(rl.state), Relays: relays,
	}
}

// convertRelays is decodeRelays over relay levels as read.
func (s *pageScan) convertRelays(kr []rawRelay, n int) ([]Relay, bool) {
	if n == 0 {
		return nil, true
	}
	if n > maxRelays {
		return nil, false
	}
	if cap(s.relays)-len(s.relays) < n {
		s.relays = make([]Relay, 0, max(n, arenaChunk/64))
	}
	out := s.relays[len(s.relays) : len(s.relays)+n : len(s.relays)+n]
	for i := range kr {
		r := &kr[i]
		if r.hop < 0 || r.hop > 255 {
			return nil, false
		}
		link, ok := parseRelayAddr(r.link)
		if !ok {
			return nil, false
		}
		peer, ok := parseRelayAddr(r.peer)
		if !ok {
			return nil, false
		}
		opts, ok := s.hex(r.opts)
		if !ok || dhcp6.ValidateOptions(opts) != nil {
			return nil, false
		}
		out[i] = Relay{Hop: uint8(r.hop), Link: link, Peer: peer, Options: opts}
	}
	s.relays = s.relays[:len(s.relays)+n]
	return out, true
}

// parseRelayAddr is parseAddr6: the empty string is ::.
func parseRelayAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 {
		return netip.IPv6Unspecified(), true
	}
	return parseAddr6Bytes(b)
}

// hex decodes s as ParseHex does (for ASCII without escapes) into the
// arena.
func (s *pageScan) hex(b []byte) ([]byte, bool) {
	// strings.TrimSpace: in a JSON string without escapes only ' ' is
	// ASCII space (the others are control characters, which must be
	// escaped).
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	if len(b) >= 2 && b[0] == '0' && b[1] == 'x' {
		b = b[2:]
	}
	if len(b) >= 2 && b[0] == '0' && b[1] == 'X' {
		b = b[2:]
	}
	n := len(b) / 2 // at most
	if cap(s.arena)-len(s.arena) < n {
		s.arena = make([]byte, 0, max(n, arenaChunk))
	}
	dst := s.arena[len(s.arena) : len(s.arena)+n]
	j, hi, half := 0, byte(0), false
	for _, c := range b {
		if c == ':' {
			continue
		}
		v := unhexTab[c]
		if v > 15 {
			return nil, false
		}
		if half {
			dst[j] = hi<<4 | v
			j++
		} else {
			hi = v
		}
		half = !half
	}
	if half {
		return nil, false
	}
	if j == 0 {
		return noBytes, true // hex.DecodeString's empty result is not nil
	}
	s.arena = s.arena[:len(s.arena)+j]
	return dst[:j:j], true
}

var noBytes = []byte{}

// unhexTab maps a hex digit to its value, anything else to 255.
var unhexTab = func() (t [256]byte) {
	for i := range t {
		t[i] = 255
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c - 'a' + 10)
		t[c-'a'+'A'] = byte(c - 'a' + 10)
	}
	return t
}()

func unhex(c byte) byte { return unhexTab[c] }

// strTab marks the bytes a string scan must stop at: the closing quote,
// an escape, a control character (invalid) and non-ASCII (not plain).
var strTab = func() (t [256]bool) {
	for c := range t {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

// parseAddr6Bytes is netip.ParseAddr plus the checks of keaLease.lease
// and parseAddr6 (IPv6, no zone), on bytes: the plain hex-and-colons form
// is parsed here, without allocating, anything else (an embedded IPv4
// address, a zone, not an address) by netip itself.
func parseAddr6Bytes(b []byte) (netip.Addr, bool) {
	if a, ok := parseHexColons(b); ok {
		return a, true
	}
	a, err := netip.ParseAddr(string(b))
	return a, err == nil && a.Is6() && a.Zone() == ""
}

// parseHexColons is the loop of netip's parseIPv6 for an address of hex
// digits and colons only (which netip.ParseAddr hands to parseIPv6, with
// no zone). ok=false for anything else, valid or not.
func parseHexColons(b []byte) (netip.Addr, bool) {
	var ip [16]byte
	ellipsis := -1
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		ellipsis = 0
		b = b[2:]
		if len(b) == 0 {
			return netip.IPv6Unspecified(), true
		}
	}
	i := 0
	for i < 16 {
		off, acc := 0, uint32(0)
		for ; off < len(b); off++ {
			d := unhex(b[off])
			if d > 15 {
				break
			}
			if off > 3 {
				return netip.Addr{}, false
			}
			acc = acc<<4 | uint32(d)
		}
		if off == 0 {
			return netip.Addr{}, false
		}
		ip[i], ip[i+1] = byte(acc>>8), byte(acc)
		i += 2
		b = b[off:]
		if len(b) == 0 {
			break
		}
		if b[0] != ':' || len(b) == 1 {
			return netip.Addr{}, false
		}
		b = b[1:]
		if b[0] == ':' {
			if ellipsis >= 0 {
				return netip.Addr{}, false
			}
			ellipsis = i
			b = b[1:]
			if len(b) == 0 {
				break
			}
		}
	}
	if len(b) != 0 {
		return netip.Addr{}, false
	}
	if i < 16 {
		if ellipsis < 0 {
			return netip.Addr{}, false
		}
		n := 16 - i
		for j := i - 1; j >= ellipsis; j-- {
			ip[j+n] = ip[j]
		}
		clear(ip[ellipsis : ellipsis+n])
	} else if ellipsis >= 0 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16(ip), true
}

// ws skips JSON whitespace.
func (s *pageScan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *pageScan) peek(c byte) bool {
	s.ws()
	return s.i < len(s.b) && s.b[s.i] == c
}

// object consumes the '{' opening an object.
func (s *pageScan) object() bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	return true
}

// key reads the next key of an object and its ':'; more=false at the
// closing '}' (consumed). first says no member was read yet.
func (s *pageScan) key(first bool) (key []byte, plain, more, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, false, false, false
	}
	switch c := s.b[s.i]; {
	case c == '}':
		s.i++
		return nil, false, false, true
	case !first && c == ',':
		s.i++
		s.ws()
	case !first:
		return nil, false, false, false
	}
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false, false
	}
	key, plain, ok = s.str()
	if !ok || !s.peek(':') {
		return nil, false, false, false
	}
	s.i++
	return key, plain, true, true
}

// str reads a string at s.i (after whitespace): its raw content, and
// whether it is plain (no escape, ASCII only, so the raw bytes are the
// value).
func (s *pageScan) str() (raw []byte, plain, ok bool) {
	s.ws()
	b := s.b
	if s.i >= len(b) || b[s.i] != '"' {
		return nil, false, false
	}
	start := s.i + 1
	plain = true
	for i := start; i < len(b); {
		c := b[i]
		if !strTab[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			return b[start:i], plain, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			plain = false
			if i+1 >= len(b) {
				return nil, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return nil, false, false
				}
				for _, h := range b[i+2 : i+6] {
					if unhex(h) > 15 {
						return nil, false, false
					}
				}
				i += 6
			default:
				return nil, false, false
			}
		case c >= 0x80:
			plain = false
			i++
		default:
			i++
		}
	}
	return nil, false, false
}

// plainStr reads a string value that must be plain.
func (s *pageScan) plainStr() ([]byte, bool) {
	raw, plain, ok := s.str()
	return raw, ok && plain
}

// int64 reads an integer as encoding/json sets an int64 (or int) field:
// no fraction or exponent. Numbers near the limits bail.
func (s *pageScan) int64() (int64, bool) {
	s.ws()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	v, ok := s.digits()
	if !ok || v > math.MaxInt64 {
		return 0, false
	}
	if neg {
		return -int64(v), true
	}
	return int64(v), true
}

// int reads an integer as encoding/json sets an int field: an int64
// that also fits the platform's int.
func (s *pageScan) int() (int64, bool) {
	v, ok := s.int64()
	return v, ok && v >= math.MinInt && v <= math.MaxInt
}

// uint32 reads an integer as encoding/json sets a uint32 field.
func (s *pageScan) uint32() (uint32, bool) {
	s.ws()
	v, ok := s.digits()
	if !ok || v > math.MaxUint32 {
		return 0, false
	}
	return uint32(v), true
}

// digits reads the digits of a JSON integer (no sign, no leading zero),
// refusing a fraction or exponent and values of 19 digits or more.
func (s *pageScan) digits() (uint64, bool) {
	b, i := s.b, s.i
	if i >= len(b) || b[i] < '0' || b[i] > '9' {
		return 0, false
	}
	var v uint64
	if b[i] == '0' {
		i++
	} else {
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if i-s.i >= 18 {
				return 0, false
			}
			v = v*10 + uint64(b[i]-'0')
		}
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E' || (b[i] >= '0' && b[i] <= '9')) {
		return 0, false
	}
	s.i = i
	return v, true
}

// number skips a JSON number.
func (s *pageScan) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	s.i = i
	return true
}

// skip skips any JSON value, checking its syntax, without recursion.
func (s *pageScan) skip() bool {
	var stack [maxSkipDepth]byte // '{' or '[' of each open container
	depth := 0
	for {
		// A value.
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch c := s.b[s.i]; c {
		case '{', '[':
			s.i++
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if s.peek(closer) {
				s.i++
				break
			}
			if depth == len(stack) {
				return false
			}
			stack[depth] = c
			depth++
			if c == '{' {
				if _, _, ok := s.str(); !ok || !s.peek(':') {
					return false
				}
				s.i++
			}
			continue // its first member's value
		case '"':
			if _, _, ok := s.str(); !ok {
				return false
			}
		case 't':
			if !s.literal("true") {
				return false
			}
		case 'f':
			if !s.literal("false") {
				return false
			}
		case 'n':
			if !s.literal("null") {
				return false
			}
		default:
			if !s.number() {
				return false
			}
		}
		// After a value: close containers, or go on to the next member.
		for {
			if depth == 0 {
				return true
			}
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			c := s.b[s.i]
			s.i++
			open := stack[depth-1]
			if c == ',' {
				if open == '{' {
					if _, _, ok := s.str(); !ok || !s.peek(':') {
						return false
					}
					s.i++
				}
				break
			}
			if (open == '{' && c == '}') || (open == '[' && c == ']') {
				depth--
				continue
			}
			return false
		}
	}
}

func (s *pageScan) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

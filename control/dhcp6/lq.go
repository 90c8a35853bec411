package dhcp6

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/netip"
)

// Leasequery query types (OPTION_LQ_QUERY; RFC 5007, RFC 5460).
const (
	QueryByAddress     uint8 = 1
	QueryByClientID    uint8 = 2
	QueryByRelayID     uint8 = 3
	QueryByLinkAddress uint8 = 4
	QueryByRemoteID    uint8 = 5
)

// Leasequery status codes (RFC 5007, RFC 5460).
const (
	StatusUnknownQueryType uint16 = 7
	StatusMalformedQuery   uint16 = 8
	StatusNotConfigured    uint16 = 9
	StatusNotAllowed       uint16 = 10
	StatusQueryTerminated  uint16 = 11
)

var statusNames = map[uint16]string{
	StatusSuccess: "Success", StatusUnspecFail: "UnspecFail", StatusNoAddrsAvail: "NoAddrsAvail",
	StatusNoBinding: "NoBinding", StatusNotOnLink: "NotOnLink", StatusUseMulticast: "UseMulticast",
	StatusNoPrefixAvail: "NoPrefixAvail", StatusUnknownQueryType: "UnknownQueryType",
	StatusMalformedQuery: "MalformedQuery", StatusNotConfigured: "NotConfigured",
	StatusNotAllowed: "NotAllowed", StatusQueryTerminated: "QueryTerminated",
}

// StatusName returns the RFC name of a status code, or "status-N".
func StatusName(code uint16) string {
	if n, ok := statusNames[code]; ok {
		return n
	}
	return fmt.Sprintf("status-%d", code)
}

// Errors of the leasequery codec.
var (
	ErrFrameTooLarge = errors.New("dhcpv6 message too large for a tcp frame")
	ErrEmptyFrame    = errors.New("tcp frame of length 0")
	ErrQueryType     = errors.New("leasequery query type unknown")
)

// Each yields the data of every option with the given code, in order.
func (o Options) Each(code uint16) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for {
			c, data, rest, ok := o.Next()
			if !ok {
				return
			}
			if c == code && !yield(data) {
				return
			}
			o = rest
		}
	}
}

// AppendHeader appends a client/server message header: type and
// transaction id.
func AppendHeader(dst []byte, t MessageType, xid [3]byte) []byte {
	return append(dst, byte(t), xid[0], xid[1], xid[2])
}

// AppendStatus appends an OPTION_STATUS_CODE.
func AppendStatus(dst []byte, code uint16, msg string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptStatusCode)
	dst = binary.BigEndian.AppendUint16(dst, uint16(2+len(msg)))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, msg...)
}

// AppendIAPrefix appends an OPTION_IAPREFIX with p's lifetimes, prefix and
// options (which must be a well-formed options area).
func AppendIAPrefix(dst []byte, p IAPrefix) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptIAPrefix)
	dst = binary.BigEndian.AppendUint16(dst, uint16(25+len(p.Options)))
	dst = binary.BigEndian.AppendUint32(dst, p.Preferred)
	dst = binary.BigEndian.AppendUint32(dst, p.Valid)
	dst = append(dst, byte(p.Prefix.Bits()))
	dst = appendAddr(dst, p.Prefix.Addr())
	return append(dst, p.Options...)
}

// AppendIAPD appends an OPTION_IA_PD holding opts (IAPREFIX options and
// perhaps a status code).
func AppendIAPD(dst []byte, iaid, t1, t2 uint32, opts []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptIAPD)
	dst = binary.BigEndian.AppendUint16(dst, uint16(12+len(opts)))
	dst = binary.BigEndian.AppendUint32(dst, iaid)
	dst = binary.BigEndian.AppendUint32(dst, t1)
	dst = binary.BigEndian.AppendUint32(dst, t2)
	return append(dst, opts...)
}

// LQQuery is a decoded OPTION_LQ_QUERY (RFC 5007 section 4.1.2.1): the
// query type, the link-address and the query options (a Relay-ID, a
// Remote-ID, an IAADDR, a Client-ID).
type LQQuery struct {
	Type    uint8
	Link    netip.Addr
	Options Options
}

// ParseLQQuery decodes an OPTION_LQ_QUERY's data.
func ParseLQQuery(data []byte) (LQQuery, error) {
	if len(data) < 17 {
		return LQQuery{}, fmt.Errorf("lq_query: %w", ErrShort)
	}
	opts := Options(data[17:])
	if err := ValidateOptions(opts); err != nil {
		return LQQuery{}, fmt.Errorf("lq_query: %w", err)
	}
	return LQQuery{Type: data[0], Link: netip.AddrFrom16([16]byte(data[1:17])), Options: opts}, nil
}

// AppendLQQuery appends an OPTION_LQ_QUERY of query type qt for link,
// holding opts (an options area).
func AppendLQQuery(dst []byte, qt uint8, link netip.Addr, opts []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptLQQuery)
	dst = binary.BigEndian.AppendUint16(dst, uint16(17+len(opts)))
	dst = append(dst, qt)
	dst = appendAddr(dst, link)
	return append(dst, opts...)
}

// LQRelayData is a decoded OPTION_LQ_RELAY_DATA (RFC 5007 section
// 4.1.2.4): the peer-address of the relay closest to the client and the
// last Relay-Forward the server received for it.
type LQRelayData struct {
	Peer  netip.Addr
	Relay []byte // a Relay-Forward message; aliases the input
}

// ParseLQRelayData decodes an OPTION_LQ_RELAY_DATA's data.
func ParseLQRelayData(data []byte) (LQRelayData, error) {
	if len(data) < 16 {
		return LQRelayData{}, fmt.Errorf("lq_relay_data: %w", ErrShort)
	}
	return LQRelayData{Peer: netip.AddrFrom16([16]byte(data[:16])), Relay: data[16:]}, nil
}

// AppendLQRelayData appends an OPTION_LQ_RELAY_DATA.
func AppendLQRelayData(dst []byte, peer netip.Addr, relayForw []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptLQRelayData)
	dst = binary.BigEndian.AppendUint16(dst, uint16(16+len(relayForw)))
	dst = appendAddr(dst, peer)
	return append(dst, relayForw...)
}

// AppendCLTTime appends an OPTION_CLT_TIME: seconds since the server last
// heard from the client.
func AppendCLTTime(dst []byte, secs uint32) []byte {
	dst = binary.BigEndian.AppendUint16(dst, OptCLTTime)
	dst = binary.BigEndian.AppendUint16(dst, 4)
	return binary.BigEndian.AppendUint32(dst, secs)
}

// ClientData is a decoded OPTION_CLIENT_DATA (RFC 5007 section 4.1.2.2),
// as a leasequery reply or a RELEASE-REQUEST (and its reply) carries it.
type ClientData struct {
	ClientID []byte // nil when absent
	// Prefixes are the OPTION_IAPREFIX options carried directly, as RFC
	// 5007 has them; IAPDs are OPTION_IA_PD options, which some servers
	// send to keep the IAID.
	Prefixes []IAPrefix
	IAPDs    []IAPD
	// CLTTime is OPTION_CLT_TIME when HasCLTTime.
	CLTTime    uint32
	HasCLTTime bool
	// RelayData is OPTION_LQ_RELAY_DATA, nil when absent.
	RelayData *LQRelayData
	Options   Options
}

// Status returns the client data's own status code (Success when absent).
func (c *ClientData) Status() uint16 { return optionsStatus(c.Options) }

// ParseClientData decodes an OPTION_CLIENT_DATA's data. Each IAPREFIX,
// IA_PD, CLT_TIME and LQ_RELAY_DATA inside must be well formed.
func ParseClientData(data []byte) (ClientData, error) {
	opts := Options(data)
	if err := ValidateOptions(opts); err != nil {
		return ClientData{}, fmt.Errorf("client_data: %w", err)
	}
	cd := ClientData{Options: opts}
	for o := opts; ; {
		code, d, rest, ok := o.Next()
		if !ok {
			break
		}
		o = rest
		switch code {
		case OptClientID:
			if cd.ClientID == nil {
				cd.ClientID = d
			}
		case OptIAPrefix:
			p, err := ParseIAPrefix(d)
			if err != nil {
				return ClientData{}, fmt.Errorf("client_data: %w", err)
			}
			cd.Prefixes = append(cd.Prefixes, p)
		case OptIAPD:
			ia, err := ParseIAPD(d)
			if err != nil {
				return ClientData{}, fmt.Errorf("client_data: %w", err)
			}
			cd.IAPDs = append(cd.IAPDs, ia)
		case OptCLTTime:
			if len(d) != 4 {
				return ClientData{}, fmt.Errorf("client_data: clt_time of %d bytes", len(d))
			}
			cd.CLTTime, cd.HasCLTTime = binary.BigEndian.Uint32(d), true
		case OptLQRelayData:
			rd, err := ParseLQRelayData(d)
			if err != nil {
				return ClientData{}, fmt.Errorf("client_data: %w", err)
			}
			cd.RelayData = &rd
		}
	}
	return cd, nil
}

// MaxFrame is the largest message a TCP frame carries (RFC 5460 section
// 5.1: a 16-bit message-size).
const MaxFrame = 0xffff

// AppendFramed appends msg preceded by its 16-bit length, as Bulk
// Leasequery sends messages over TCP.
func AppendFramed(dst, msg []byte) ([]byte, error) {
	if len(msg) > MaxFrame {
		return dst, fmt.Errorf("frame %d bytes: %w", len(msg), ErrFrameTooLarge)
	}
	if len(msg) == 0 {
		return dst, ErrEmptyFrame
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...), nil
}

// FrameReader reads length-framed messages from a TCP stream. It is not
// safe for concurrent use.
type FrameReader struct {
	r   io.Reader
	hdr [2]byte
	buf []byte
}

// NewFrameReader returns a FrameReader reading from r (which should be
// buffered when reads are costly).
func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// Next returns the next message. It stays valid until the next call. At a
// clean end of stream (between frames) it returns io.EOF; a stream that
// ends inside a frame gives io.ErrUnexpectedEOF, and a frame of length 0
// ErrEmptyFrame.
func (f *FrameReader) Next() ([]byte, error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		return nil, err // io.EOF only when no byte of the header came
	}
	n := int(binary.BigEndian.Uint16(f.hdr[:]))
	if n == 0 {
		return nil, ErrEmptyFrame
	}
	if cap(f.buf) < n {
		f.buf = make([]byte, n, max(n, 4096))
	}
	f.buf = f.buf[:n]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %d-byte frame: %w", n, err)
	}
	return f.buf, nil
}

package leasequery

import (
	"errors"
	"fmt"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Protocol errors of a reply stream. Each closes the connection (RFC 5460
// section 6.3 for an unknown transaction id; the others leave the stream
// in a state the requestor cannot trust).
var (
	ErrUnknownXID    = errors.New("reply for a transaction id with no outstanding query")
	ErrDataFirst     = errors.New("leasequery-data before its leasequery-reply")
	ErrDupReply      = errors.New("second leasequery-reply for one query")
	ErrUnexpected    = errors.New("unexpected message type on a bulk leasequery connection")
	ErrNoServerID    = errors.New("successful leasequery-reply without a server-id")
	ErrClientLink    = errors.New("leasequery-reply with OPTION_LQ_CLIENT_LINK, which bulk leasequery forbids")
	ErrStreamTooLong = errors.New("more queries outstanding than a stream tracks")
)

// EventKind says what a message meant for its query.
type EventKind uint8

// Events of a reply stream.
const (
	// EvReply is a successful LEASEQUERY-REPLY with client data: more
	// may follow in LEASEQUERY-DATA messages until LEASEQUERY-DONE.
	EvReply EventKind = iota + 1
	// EvData is a LEASEQUERY-DATA with client data.
	EvData
	// EvDiscarded is a LEASEQUERY-DATA without OPTION_CLIENT_DATA, which
	// RFC 5460 section 6.3 has the requestor discard.
	EvDiscarded
	// EvEnd ends the query: a LEASEQUERY-REPLY with an error status or
	// without client data (an empty result), or a LEASEQUERY-DONE (with
	// or without a status).
	EvEnd
)

// Event is what one message of a reply stream means.
type Event struct {
	Kind  EventKind
	Query int // index of the query, as given to Stream.Add
	// Options are the message's options, holding its OPTION_CLIENT_DATA
	// for EvReply and EvData; they alias the message.
	Options dhcp6.Options
	// Status and StatusMsg are the status of an EvEnd: Success for a
	// complete query (empty, or ended by a successful DONE).
	Status    uint16
	StatusMsg string
}

// Complete reports whether an EvEnd event ends its query successfully:
// the server returned every binding it holds for the query.
func (e *Event) Complete() bool { return e.Kind == EvEnd && e.Status == dhcp6.StatusSuccess }

// MaxOutstanding bounds the queries one Stream tracks.
const MaxOutstanding = 4096

// Stream follows the replies to the queries sent on one connection,
// several of which may be outstanding at once with interleaved replies
// (RFC 5460 section 6.5). It holds no I/O: feed it each message read and
// act on the Event it returns. It is not safe for concurrent use.
type Stream struct {
	pending map[[3]byte]*pendingQuery
	// ServerID is the Server-ID of the first successful reply, raw.
	serverIDs map[int][]byte
}

type pendingQuery struct {
	index     int
	streaming bool // the LEASEQUERY-REPLY came
}

// NewStream returns an empty Stream.
func NewStream() *Stream {
	return &Stream{pending: make(map[[3]byte]*pendingQuery), serverIDs: make(map[int][]byte)}
}

// Add records a query sent with transaction id xid; index names it in the
// events. Transaction ids must be distinct among outstanding queries.
func (s *Stream) Add(xid [3]byte, index int) error {
	if _, dup := s.pending[xid]; dup {
		return fmt.Errorf("transaction id %x already outstanding", xid)
	}
	if len(s.pending) >= MaxOutstanding {
		return ErrStreamTooLong
	}
	s.pending[xid] = &pendingQuery{index: index}
	return nil
}

// Outstanding returns how many queries have not ended.
func (s *Stream) Outstanding() int { return len(s.pending) }

// Pending yields the indexes of the queries that have not ended.
func (s *Stream) Pending() []int {
	out := make([]int, 0, len(s.pending))
	for _, p := range s.pending {
		out = append(out, p.index)
	}
	return out
}

// ServerID returns the Server-ID (raw DUID) of the query's
// LEASEQUERY-REPLY, nil before it came. It stays valid after the
// message.
func (s *Stream) ServerID(index int) []byte { return s.serverIDs[index] }

// Handle takes one message read from the connection. An error means the
// connection must be closed: every query still outstanding is then
// incomplete.
func (s *Stream) Handle(b []byte) (Event, error) {
	m, err := dhcp6.ParseMessage(b)
	if err != nil {
		return Event{}, fmt.Errorf("parse message from server: %w", err)
	}
	p := s.pending[m.XID]
	switch m.Type {
	case dhcp6.MsgLeasequeryReply:
		if p == nil {
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrUnknownXID)
		}
		if p.streaming {
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrDupReply)
		}
		code, msg := status(m.Options)
		if code != dhcp6.StatusSuccess {
			delete(s.pending, m.XID)
			return Event{Kind: EvEnd, Query: p.index, Status: code, StatusMsg: msg}, nil
		}
		sid, ok := m.Options.Get(dhcp6.OptServerID)
		if !ok || len(sid) == 0 {
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrNoServerID)
		}
		if _, ok := m.Options.Get(dhcp6.OptLQClientLink); ok {
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrClientLink)
		}
		s.serverIDs[p.index] = append([]byte(nil), sid...)
		if _, ok := m.Options.Get(dhcp6.OptClientData); !ok {
			// No binding matched; no DONE follows (RFC 5460 section 6.3).
			delete(s.pending, m.XID)
			return Event{Kind: EvEnd, Query: p.index, Status: dhcp6.StatusSuccess}, nil
		}
		p.streaming = true
		return Event{Kind: EvReply, Query: p.index, Options: m.Options}, nil
	case dhcp6.MsgLeasequeryData:
		if p == nil {
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrUnknownXID)
		}
		if !p.streaming {
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrDataFirst)
		}
		if _, ok := m.Options.Get(dhcp6.OptClientData); !ok {
			return Event{Kind: EvDiscarded, Query: p.index}, nil
		}
		return Event{Kind: EvData, Query: p.index, Options: m.Options}, nil
	case dhcp6.MsgLeasequeryDone:
		if p == nil || !p.streaming {
			// A DONE must follow a REPLY with data: before it, the xid
			// has no stream to end.
			return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrUnknownXID)
		}
		delete(s.pending, m.XID)
		code, msg := status(m.Options)
		return Event{Kind: EvEnd, Query: p.index, Status: code, StatusMsg: msg}, nil
	}
	return Event{}, fmt.Errorf("%s xid %x: %w", m.Type, m.XID, ErrUnexpected)
}

// status returns the status code in opts and its message (see
// dhcp6.Options.Status).
func status(opts dhcp6.Options) (uint16, string) {
	code, msg, _ := opts.Status()
	return code, msg
}

package binding

import (
	"encoding/hex"
	"net/netip"
	"time"
)

// Key identifies a binding (invariant 2 in ARCHITECTURE.md): the same client DUID
// may hold bindings on several ports, and one IA_PD several prefixes.
type Key struct {
	Port   string       // downlink interface name
	DUID   string       // the client's DUID, raw bytes
	IAID   uint32       // the IA_PD's IAID
	Prefix netip.Prefix // the delegated prefix, masked, exact length
}

// Binding is one delegated prefix and where to route it.
type Binding struct {
	Key
	// NextHop is the peer-address of the relayed exchange: the client's
	// (usually link-local) address, without zone.
	NextHop netip.Addr
	// MAC is the client's link-layer address, from the frame that carried
	// its last request.
	MAC [6]byte
	// Preferred and Expires are the absolute ends of the preferred and
	// valid lifetimes. A binding is valid while now < Expires.
	Preferred time.Time
	Expires   time.Time
	// ServerDUID is the raw DUID of the server that delegated the prefix.
	ServerDUID string
	// Updated is when the server last confirmed the binding.
	Updated time.Time
	// Source is what last installed or confirmed the binding: a snooped
	// Reply, the local store at start, or Bulk Leasequery. It is not
	// stored: a restored binding's source is SourceStore.
	Source Source
}

// Source says where a binding came from.
type Source uint8

// Binding sources.
const (
	SourceSnooped    Source = iota // a server's Reply the relay relayed
	SourceStore                    // the local store, at start
	SourceLeasequery               // Bulk Leasequery (RFC 5460)
)

var sourceNames = [...]string{"snooped", "store", "leasequery"}

func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return "unknown"
}

// DUIDHex returns the client DUID in lower-case hex, as the operator
// commands print and accept it.
func (k Key) DUIDHex() string { return hex.EncodeToString([]byte(k.DUID)) }

// Valid reports whether the binding is still valid at now.
func (b *Binding) Valid(now time.Time) bool { return now.Before(b.Expires) }

package neigh

import (
	"errors"
	"net/netip"
	"time"

	"github.com/vishvananda/netns"
)

// Gateway is the uplink's next hop as the forwarding plane needs it.
type Gateway struct {
	// Addr is the gateway's IPv6 address; a link-local one carries the
	// uplink's name as zone.
	Addr netip.Addr
	// MAC is the gateway's link-layer address; all zero when the update
	// says it is not usable.
	MAC     [6]byte
	Ifindex int // the uplink's interface index
}

// Options tune Watch. The zero value is what the relay uses.
type Options struct {
	// NetNS is the network namespace of the uplink; 0 or -1 (netns.None())
	// means the caller's. Watch neither closes nor keeps it after it
	// returns.
	NetNS netns.NsHandle
	// Poll is how often the kernel's tables are read again in case a
	// notification was lost, and how often a STALE entry is sent to be
	// confirmed; default DefaultPoll.
	Poll time.Duration
	// Retry is how often, while the gateway is unresolved, the tables are
	// read again and the kernel is asked to resolve it; default
	// DefaultRetry.
	Retry time.Duration

	// discardOnly makes tests use the fallback resolution trigger.
	discardOnly bool
}

// Defaults of Options.
const (
	DefaultPoll  = 30 * time.Second
	DefaultRetry = 3 * time.Second
)

// ErrUnsupported is returned by Watch where there is no netlink.
var ErrUnsupported = errors.New("neigh: the kernel neighbour table needs Linux")

func (o Options) withDefaults() Options {
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.NetNS == 0 {
		o.NetNS = netns.None()
	}
	return o
}

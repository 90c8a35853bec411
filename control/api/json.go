package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
)

// Infinite is the remaining lifetime reported for a binding that never
// ends: the DHCPv6 infinity, 0xffffffff seconds.
const Infinite = 0xffffffff

// BindingJSON is one binding as GET /v1/bindings reports it.
type BindingJSON struct {
	Interface  string       `json:"interface"`
	ClientDUID string       `json:"client_duid"` // lower-case hex
	IAID       uint32       `json:"iaid"`
	Prefix     netip.Prefix `json:"prefix"`
	NextHop    netip.Addr   `json:"next_hop"`
	NextHopMAC string       `json:"next_hop_mac"`
	// PreferredLifetime and ValidLifetime are the seconds remaining at the
	// time of the request: 0 once past, Infinite for infinity.
	PreferredLifetime uint32    `json:"preferred_lifetime"`
	ValidLifetime     uint32    `json:"valid_lifetime"`
	ServerDUID        string    `json:"server_duid"` // lower-case hex; "" when unknown
	Source            string    `json:"source"`      // snooped, store or leasequery
	Expires           time.Time `json:"expires"`     // UTC; 9999-01-01T00:00:00Z for infinity
}

// NewBindingJSON converts b, counting the remaining lifetimes from now.
func NewBindingJSON(b *binding.Binding, now time.Time) BindingJSON {
	return BindingJSON{
		Interface:         b.Port,
		ClientDUID:        b.DUIDHex(),
		IAID:              b.IAID,
		Prefix:            b.Prefix,
		NextHop:           b.NextHop,
		NextHopMAC:        binding.MACString(b.MAC),
		PreferredLifetime: Remaining(b.Preferred, now),
		ValidLifetime:     Remaining(b.Expires, now),
		ServerDUID:        hex.EncodeToString([]byte(b.ServerDUID)),
		Source:            b.Source.String(),
		Expires:           b.Expires.UTC(),
	}
}

// Remaining returns the whole seconds from now until end: 0 when end is
// past, Infinite when end is binding.Forever (an infinite lifetime).
func Remaining(end, now time.Time) uint32 {
	if !end.Before(binding.Forever) {
		return Infinite
	}
	d := end.Sub(now)
	switch {
	case d <= 0:
		return 0
	case d >= Infinite*time.Second:
		return Infinite - 1
	}
	return uint32(d / time.Second)
}

// ClearRequest is the body of POST /v1/clear. It selects bindings by
// exactly one of Prefix, Client (alone or with Interface), Interface, or
// All.
type ClearRequest struct {
	Prefix    string `json:"prefix,omitempty"`    // a delegated prefix, such as 2001:db8:1::/56
	Client    string `json:"client,omitempty"`    // a client DUID in hex, colons allowed
	Interface string `json:"interface,omitempty"` // a downlink port
	All       bool   `json:"all,omitempty"`
	// Release also asks the server to release the bindings (release.mode:
	// RELEASE-REQUEST or a Release on the client's behalf); only those it
	// released are cleared, the others are reported in NotReleased.
	Release bool `json:"release,omitempty"`
}

// ClearResponse is the answer to POST /v1/clear.
type ClearResponse struct {
	Cleared []BindingJSON `json:"cleared"`
	Count   int           `json:"count"`
	// NotReleased, with release, are the bindings the server did not
	// release (another status than Success or NoBinding, or no answer):
	// they are kept until they expire, and may be cleared without release.
	NotReleased []NotReleasedJSON `json:"not_released,omitempty"`
}

// NotReleasedJSON is a binding kept because its release failed, and why:
// the server's status (UnspecFail, NotAllowed, ...) or "no answer".
type NotReleasedJSON struct {
	BindingJSON
	Reason string `json:"reason"`
}

// errorJSON is the body of every answer that is not 200.
type errorJSON struct {
	Error string `json:"error"`
}

// ErrBadRequest is wrapped by every error of ClearRequest.Filter.
var ErrBadRequest = errors.New("invalid clear request")

// Filter checks the request and returns the binding filter it means.
func (r ClearRequest) Filter() (binding.Filter, error) {
	var f binding.Filter
	bad := func(format string, args ...any) (binding.Filter, error) {
		return binding.Filter{}, fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	if r.Interface != "" {
		if len(r.Interface) > 15 || strings.ContainsAny(r.Interface, "/: \t\n") {
			return bad("interface %q is not an interface name", r.Interface)
		}
		f.Port = r.Interface
	}
	switch {
	case r.All:
		if r.Prefix != "" || r.Client != "" || r.Interface != "" {
			return bad("all cannot be combined with prefix, client or interface")
		}
		f.All = true
	case r.Prefix != "":
		if r.Client != "" || r.Interface != "" {
			return bad("prefix cannot be combined with client or interface")
		}
		p, err := netip.ParsePrefix(r.Prefix)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
			return bad("prefix %q is not an IPv6 prefix", r.Prefix)
		}
		f.Prefix = p.Masked()
	case r.Client != "":
		duid, err := config.ParseDUID(r.Client)
		if err != nil {
			return bad("client %q is not a DUID in hex: %v", r.Client, err)
		}
		f.DUID = string(duid)
	case r.Interface != "":
	default:
		return bad("nothing selected: give a prefix, a client (with or without an interface), an interface, or all")
	}
	return f, nil
}

package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode"
)

// ErrNeedsRestart is wrapped by the errors Diff returns for a change a
// running relay cannot apply.
var ErrNeedsRestart = errors.New("needs a restart")

// RestartError is a change that only a restart applies, named by its key.
type RestartError struct {
	Key      string // such as "state_dir" or "downlinks[eth3]"
	Old, New string // the values, as the config would write them; empty for a downlink added or removed
	Why      string // why it cannot change at run time, when that is not obvious
}

func (e *RestartError) Error() string {
	var b strings.Builder
	b.WriteString("config: " + e.Key + ": ")
	if e.Old != "" || e.New != "" {
		fmt.Fprintf(&b, "%s changed to %s: ", e.Old, e.New)
	}
	b.WriteString("needs a restart")
	if e.Why != "" {
		b.WriteString(" (" + e.Why + ")")
	}
	return b.String()
}

func (e *RestartError) Unwrap() error { return ErrNeedsRestart }

// Changes says what a new config changes that a running relay applies in
// place. Diff fills it; the zero value is no change.
type Changes struct {
	// Keys names every key that changed, in config order, for the log:
	// "servers", "downlinks[eth1].max_delegations", "downlinks[eth3]"
	// (added or removed), "log_level".
	Keys []string
	// Added and Removed are the downlinks added (in the new config's
	// order) and removed (in the old one's), by interface. Order alone is
	// not a change: the running relay knows its ports by name.
	Added, Removed []string
	// Changed are the downlinks in both configs whose keys changed, in
	// the new config's order.
	Changed []DownlinkChange

	Servers        bool // servers or server_port
	TrustedServers bool // trusted_servers
	Delegation     bool // delegated_lengths or delegated_pools: the delegation policy
	LogLevel       bool // log_level
	BGP            bool // anything under bgp
}

// DownlinkChange is a downlink present in both configs whose keys changed.
type DownlinkChange struct {
	Interface string
	Keys      []string // the keys under the downlink, such as "max_delegations", in config order
}

// Has reports whether key (such as "interface_id") changed.
func (d DownlinkChange) Has(key string) bool { return slices.Contains(d.Keys, key) }

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool { return len(c.Keys) == 0 }

// DownlinkKeys tell what a downlink key configures, for Changes' helpers.
var (
	// relayDownlinkKeys go to the relay (relay.Port, relay.ConnConfig).
	relayDownlinkKeys = []string{"link_address", "interface_id", "trust_release_request", "trust_relay_forward", "max_client_rate", "max_client_burst"}
	// limitDownlinkKeys go to the binding table's limits.
	limitDownlinkKeys = []string{"max_delegations", "max_per_client", "unique_client"}
	// policyDownlinkKeys go to the binding table's delegation policy.
	policyDownlinkKeys = []string{"delegated_pools", "allowed_sources"}
	// planeDownlinkKeys configure the forwarding plane's port; the xdp
	// modes fix them at start.
	planeDownlinkKeys = []string{"link_type", "loop_policy", "loop_icmp", "loop_overrides", "allowed_sources"}
)

// Relay reports whether the relay's configuration changed: servers,
// trusted servers, downlinks added or removed, a downlink's relay keys
// (link_address, interface_id, trust_*, max_client_rate, max_client_burst).
func (c *Changes) Relay() bool {
	return c.Servers || c.TrustedServers || len(c.Added)+len(c.Removed) > 0 || c.downlinkHas(relayDownlinkKeys)
}

// Limits reports whether a downlink's binding limits changed, or a
// downlink was added (its limits are new).
func (c *Changes) Limits() bool { return len(c.Added) > 0 || c.downlinkHas(limitDownlinkKeys) }

// Policy reports whether the delegation policy changed: delegated_lengths,
// delegated_pools (global or a downlink's), allowed_sources, or the set of
// downlinks (the relay's own prefixes are its ports').
func (c *Changes) Policy() bool {
	return c.Delegation || len(c.Added)+len(c.Removed) > 0 || c.downlinkHas(policyDownlinkKeys)
}

func (c *Changes) downlinkHas(keys []string) bool {
	for _, d := range c.Changed {
		for _, k := range keys {
			if d.Has(k) {
				return true
			}
		}
	}
	return false
}

// change is what a top-level key is, for Diff.
type change uint8

const (
	restart change = iota // only a restart applies it
	servers
	trustedServers
	delegation
	downlinks
	logLevel
	bgp
)

// topKeys classes every field of Config by its Go name. A field missing
// here (a key added without teaching Diff) needs a restart, and
// TestDiffKnowsEveryField fails. Fields of struct type that need a
// restart are compared key by key ("uplink.interface").
var topKeys = map[string]change{
	"StateDir":         restart,
	"APISocket":        restart,
	"MetricsListen":    restart, // the listener is bound at start
	"RelayID":          restart, // the servers know the relay's bindings by it
	"Servers":          servers,
	"ServerPort":       servers,
	"TrustedServers":   trustedServers,
	"DelegatedLengths": delegation,
	"DelegatedPools":   delegation,
	"Uplink":           restart, // the uplink's sockets, gateway watch and plane port are made at start
	"Downlinks":        downlinks,
	"Dataplane":        restart, // the forwarding plane is attached at start
	"Kernel":           restart, // the kernel mode's table and routes: dataplane keys
	"Leasequery":       restart, // the Bulk Leasequery requestor is built at start
	"Release":          restart, // the releaser, its triggers and the relay's message types are built at start
	"LogLevel":         logLevel,
	"BGP":              bgp,
}

// downlinkKeys classes every field of Downlink: true if a running relay
// applies a change of it in every dataplane mode. planeDownlinkKeys are
// applied at run time except in the xdp modes (fixedPlanePorts).
var downlinkKeys = map[string]bool{
	"Interface":           true, // the name: a new name is another downlink
	"LinkAddress":         true,
	"InterfaceID":         true,
	"LinkType":            true,
	"MaxDelegations":      true,
	"MaxPerClient":        true,
	"UniqueClient":        true,
	"LoopPolicy":          true,
	"LoopICMP":            true,
	"TrustReleaseRequest": true,
	"TrustRelayForward":   true,
	"MaxClientRate":       true,
	"MaxClientBurst":      true,
	"DelegatedPools":      true,
	"AllowedSources":      true,
	"LoopOverrides":       true,
}

// fixedPlanePorts reports whether mode's forwarding plane takes its ports
// and their settings once, at start: the AF_XDP plane cannot add or remove
// a port, nor change a port's link type, loop policy or allowed sources,
// while it runs.
func fixedPlanePorts(mode DataplaneMode) bool {
	return mode == DataplaneXDP || mode == DataplaneXDPGeneric
}

// Diff compares the running config old with new, both validated (Parse),
// and returns what changed, for a reload to apply in place. When new
// changes anything only a restart applies, Diff returns an error naming
// each such key (every one is a *RestartError wrapping ErrNeedsRestart),
// and the reload must be refused as a whole:
//
//   - state_dir, api_socket, metrics_listen, relay_id;
//   - uplink (interface, gateway, no_route);
//   - every dataplane key (mode, queues, frame_size, icmp_rate), and the
//     kernel mode's keys;
//   - every leasequery and release key (the requestor, the releaser and
//     its triggers are built at start);
//   - in the xdp modes (old's mode): a downlink added or removed (the
//     AF_XDP plane cannot add a port at run time), or a downlink's
//     link_type, loop_policy, loop_icmp, loop_overrides or allowed_sources.
//
// Everything else is reported in Changes: downlinks added, removed or
// changed (by interface name), servers, trusted servers, the delegation
// policy, limits, log_level, bgp.
func Diff(old, new *Config) (*Changes, error) {
	var errs errList
	c := &Changes{}
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	for i := range ov.NumField() {
		f := ov.Type().Field(i)
		key := yamlKey(f.Name)
		a, b := ov.Field(i).Interface(), nv.Field(i).Interface()
		class, known := topKeys[f.Name]
		if class == downlinks {
			c.diffDownlinks(old, new, &errs)
			continue
		}
		if reflect.DeepEqual(a, b) {
			continue
		}
		switch {
		case !known:
			errs = append(errs, &RestartError{Key: key, Old: show(a), New: show(b), Why: "a key config.Diff does not know"})
		case class == restart:
			diffRestart(key, ov.Field(i), nv.Field(i), &errs)
		default:
			c.Keys = append(c.Keys, key)
			switch class {
			case servers:
				c.Servers = true
			case trustedServers:
				c.TrustedServers = true
			case delegation:
				c.Delegation = true
			case logLevel:
				c.LogLevel = true
			case bgp:
				c.BGP = true
			}
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// diffRestart adds a RestartError for each key under key (a struct's
// fields, recursively) whose value differs.
func diffRestart(key string, a, b reflect.Value, errs *errList) {
	if a.Kind() == reflect.Struct && !isValueType(a.Type()) {
		for i := range a.NumField() {
			if !a.Type().Field(i).IsExported() {
				continue
			}
			diffRestart(key+"."+yamlKey(a.Type().Field(i).Name), a.Field(i), b.Field(i), errs)
		}
		return
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		*errs = append(*errs, &RestartError{Key: key, Old: show(a.Interface()), New: show(b.Interface())})
	}
}

// isValueType reports whether t is a struct that stands for one value
// (an address, a prefix, a time): compared whole, never field by field.
func isValueType(t reflect.Type) bool {
	_, ok := reflect.New(t).Interface().(fmt.Stringer)
	return ok || t.NumField() == 0 || !t.Field(0).IsExported()
}

func (c *Changes) diffDownlinks(old, new *Config, errs *errList) {
	fixed := fixedPlanePorts(old.Dataplane.Mode)
	before := make(map[string]*Downlink, len(old.Downlinks))
	for i := range old.Downlinks {
		before[old.Downlinks[i].Interface] = &old.Downlinks[i]
	}
	after := make(map[string]bool, len(new.Downlinks))
	for i := range new.Downlinks {
		d := &new.Downlinks[i]
		after[d.Interface] = true
		key := "downlinks[" + d.Interface + "]"
		o := before[d.Interface]
		if o == nil {
			if fixed {
				*errs = append(*errs, &RestartError{Key: key, Why: fmt.Sprintf("added: the %s forwarding plane cannot add a port at run time", old.Dataplane.Mode)})
				continue
			}
			c.Added = append(c.Added, d.Interface)
			c.Keys = append(c.Keys, key)
			continue
		}
		ch := DownlinkChange{Interface: d.Interface}
		ov, nv := reflect.ValueOf(o).Elem(), reflect.ValueOf(d).Elem()
		for j := range ov.NumField() {
			f := ov.Type().Field(j)
			a, b := ov.Field(j).Interface(), nv.Field(j).Interface()
			if reflect.DeepEqual(a, b) {
				continue
			}
			k := yamlKey(f.Name)
			switch {
			case !downlinkKeys[f.Name]:
				*errs = append(*errs, &RestartError{Key: key + "." + k, Old: show(a), New: show(b), Why: "a key config.Diff does not know"})
			case fixed && slices.Contains(planeDownlinkKeys, k):
				*errs = append(*errs, &RestartError{Key: key + "." + k, Old: show(a), New: show(b),
					Why: fmt.Sprintf("the %s forwarding plane takes it at start", old.Dataplane.Mode)})
			default:
				ch.Keys = append(ch.Keys, k)
				c.Keys = append(c.Keys, key+"."+k)
			}
		}
		if len(ch.Keys) > 0 {
			c.Changed = append(c.Changed, ch)
		}
	}
	for _, d := range old.Downlinks {
		if after[d.Interface] {
			continue
		}
		key := "downlinks[" + d.Interface + "]"
		if fixed {
			*errs = append(*errs, &RestartError{Key: key, Why: fmt.Sprintf("removed: the %s forwarding plane cannot remove a port at run time", old.Dataplane.Mode)})
			continue
		}
		c.Removed = append(c.Removed, d.Interface)
		c.Keys = append(c.Keys, key)
	}
}

// yamlKey turns a Go field name into its config key: RelayID relay_id,
// APISocket api_socket, LoopICMP loop_icmp, BGP bgp.
func yamlKey(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// show writes a value as a config would hold it, for an error.
func show(v any) string {
	switch v := v.(type) {
	case []byte:
		if v == nil {
			return `""`
		}
		return hex.EncodeToString(v)
	case fmt.Stringer:
		return fmt.Sprintf("%q", v.String())
	}
	if reflect.ValueOf(v).Kind() == reflect.String {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprint(v)
}

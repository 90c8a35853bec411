package config

import (
	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/fib"
)

// FIB returns the policy as the FIB and the dataplane take it.
func (p LoopPolicy) FIB() fib.LoopPolicy {
	if p == LoopForward {
		return fib.LoopForward
	}
	return fib.LoopDrop
}

// PlanePort returns the downlink's forwarding settings as the dataplane
// takes them (the port's ID, MAC and addresses are the caller's).
func (d *Downlink) PlanePort() dataplane.PortConfig {
	return dataplane.PortConfig{
		MultiAccess: d.LinkType == MultiAccess,
		Loop:        d.LoopPolicy.FIB(),
		LoopICMP:    d.LoopICMP,
	}
}

// PlaneLoopOverrides returns the downlink's per-destination loop
// overrides (its loop_overrides prefix entries) as the dataplane takes
// them; the client entries are per binding.
func (d *Downlink) PlaneLoopOverrides() []dataplane.LoopOverride {
	var out []dataplane.LoopOverride
	for _, o := range d.LoopOverrides {
		if o.Prefix.IsValid() {
			out = append(out, dataplane.LoopOverride{Prefix: o.Prefix, Policy: o.Policy.FIB()})
		}
	}
	return out
}

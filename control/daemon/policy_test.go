package daemon

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
)

func TestBindingPolicy(t *testing.T) {
	cfg, err := config.Parse([]byte(`state_dir: /s
servers: [fd00:0:0:ffff::1]
delegated_lengths: 48-60
delegated_pools: [2001:db8:100::/40]
uplink: {interface: up0}
downlinks:
  - interface: dl0
  - interface: dl1
    delegated_pools: [2001:db8:200::/40]
    allowed_sources: [2001:db8:100:ff00::/56]
`))
	if err != nil {
		t.Fatal(err)
	}
	addrs := portAddrs{
		"up0": {netip.MustParsePrefix("fd00:0:0:ffff::2/64"), netip.MustParsePrefix("fe80::2/64")},
		"dl0": {netip.MustParsePrefix("2001:db8:1ff:ffff::1/64")},
	}
	tb := binding.NewTable(binding.PortLimits{}, nil)
	tb.SetPolicy(bindingPolicy(cfg, addrs))
	for _, tc := range []struct {
		port, prefix, reason string
	}{
		{"dl0", "2001:db8:100:100::/56", ""},
		{"dl0", "2001:db8:100::/44", binding.RefuseLength},
		{"dl0", "2001:db8:100::/64", binding.RefuseLength},
		{"dl0", "2001:db8:200::/56", binding.RefusePool},
		{"dl1", "2001:db8:200::/56", ""},
		{"dl1", "2001:db8:100:100::/56", binding.RefusePool},
		{"dl0", "2001:db8:100:ff00::/56", binding.RefuseOwn}, // allowed_sources of dl1
		{"dl0", "2001:db8:1ff:ff00::/56", binding.RefuseOwn}, // holds dl0's subnet and address
	} {
		err := tb.Check(binding.Key{Port: tc.port, DUID: "x", Prefix: netip.MustParsePrefix(tc.prefix)})
		var re *binding.RefusedError
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s %s refused: %v", tc.port, tc.prefix, err)
		case tc.reason != "" && (!errors.As(err, &re) || re.Reason != tc.reason):
			t.Errorf("%s %s: %v, want reason %s", tc.port, tc.prefix, err, tc.reason)
		}
	}
	// The uplink's subnet needs a policy without pools to be reached.
	cfg.DelegatedPools, cfg.DelegatedLengths = nil, config.LengthRange{Min: 32, Max: 64}
	tb.SetPolicy(bindingPolicy(cfg, addrs))
	err = tb.Check(binding.Key{Port: "dl0", DUID: "x", Prefix: netip.MustParsePrefix("fd00::/48")})
	var re *binding.RefusedError
	if !errors.As(err, &re) || re.Reason != binding.RefuseOwn {
		t.Errorf("a prefix covering the uplink subnet: %v", err)
	}
}

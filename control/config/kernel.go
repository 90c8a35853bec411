package config

import (
	"strconv"
	"strings"
)

// Kernel-mode routing tables (linux/rtnetlink.h).
const (
	TableMain    = 254 // RT_TABLE_MAIN: the default
	tableDefault = 253 // RT_TABLE_DEFAULT
	tableLocal   = 255 // RT_TABLE_LOCAL
)

// Kernel configures dataplane.mode kernel: the routes pdrelay writes
// into the kernel's FIB (dataplane/kroute). Their protocol is fixed
// (kroute.Protocol, 157) so that pdrelay finds its own routes again.
type Kernel struct {
	// Table is the routing table the routes go into; TableMain unless
	// kernel.table says otherwise.
	Table uint32
	// FlushOnStop removes pdrelay's routes and neighbour entries on a
	// clean stop; by default they stay, and the kernel forwards while
	// pdrelay restarts (RFC 8987 S-1).
	FlushOnStop bool
}

// rawKernel takes table as a string: YAML gives an integer or the name
// "main" alike.
type rawKernel struct {
	Table       string `yaml:"table"`
	FlushOnStop bool   `yaml:"flush_on_stop"`
}

func (r *rawKernel) validate(errs *errList) Kernel {
	k := Kernel{Table: TableMain, FlushOnStop: r.FlushOnStop}
	switch s := strings.TrimSpace(r.Table); s {
	case "", "main":
	default:
		n, err := strconv.ParseUint(s, 10, 32)
		switch {
		case err != nil || n == 0:
			errs.add("kernel.table", "%q is not a routing table: \"main\" or a number from 1 to 4294967295", r.Table)
		case n == tableDefault || n == tableLocal:
			errs.add("kernel.table", "%q is the kernel's %s table, no place for delegated routes; use main (254) or a table of your own",
				r.Table, map[uint64]string{tableDefault: "default", tableLocal: "local"}[n])
		default:
			k.Table = uint32(n)
		}
	}
	return k
}

package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"text/tabwriter"

	"github.com/pdrelay/pdrelay/control/leasequery"
)

// PortStatsJSON is one port's forwarding-plane counters in GET /v1/stats
// and `pdrelay stats --json`: packets by verdict reason (forwarded counts
// on the egress port, every other reason on the ingress port).
type PortStatsJSON struct {
	Interface string            `json:"interface"`
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxBytes   uint64            `json:"forwarded_bytes"`
	Packets   map[string]uint64 `json:"packets"` // by reason: forwarded, spoofed, loop, no_route, ...
}

// StatsSource gives the forwarding plane's counters; nil when the plane
// is off (dataplane.mode off).
type StatsSource func() []PortStatsJSON

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	if s.Stats == nil {
		writeJSON(w, http.StatusOK, []PortStatsJSON{})
		return
	}
	writeJSON(w, http.StatusOK, s.Stats())
}

// Stats returns the forwarding plane's counters.
func (c *Client) Stats(ctx context.Context) ([]PortStatsJSON, error) {
	var out []PortStatsJSON
	err := c.do(ctx, http.MethodGet, "/v1/stats", nil, &out)
	return out, err
}

const statsUsage = `usage: pdrelay stats [--json] [-s|--socket PATH | -c|--config FILE]`

// RunStats implements `pdrelay stats`: the forwarding plane's counters by
// port and reason.
func RunStats(args []string, stdout, stderr io.Writer) int {
	// The table also shows the Bulk Leasequery servers' last recoveries
	// (GET /v1/leasequery); --json keeps to the ports' counters, and
	// `pdrelay recover --json` or GET /v1/leasequery give the rest.
	var lq []leasequery.ServerStatus
	get := func(c *Client, ctx context.Context) ([]PortStatsJSON, error) {
		st, err := c.Stats(ctx)
		if err == nil {
			lq, _ = c.Leasequery(ctx) // a relay without it shows none
		}
		return st, err
	}
	return runQuery("stats", statsUsage, args, stdout, stderr, get, func(w io.Writer, st []PortStatsJSON) {
		printStats(w, st)
		printLeasequery(w, lq)
	})
}

// printStats prints the human table of `pdrelay stats`.
func printStats(w io.Writer, st []PortStatsJSON) {
	if len(st) == 0 {
		fmt.Fprintln(w, "forwarding plane off (dataplane.mode: off)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tRX-PACKETS\tRX-BYTES\tREASON\tPACKETS")
	for _, p := range st {
		reasons := make([]string, 0, len(p.Packets))
		for r, n := range p.Packets {
			if n > 0 {
				reasons = append(reasons, r)
			}
		}
		sort.Strings(reasons)
		fmt.Fprintf(tw, "%s\t%d\t%d\t\t\n", p.Interface, p.RxPackets, p.RxBytes)
		for _, r := range reasons {
			fmt.Fprintf(tw, "\t\t\t%s\t%d\n", r, p.Packets[r])
		}
	}
	tw.Flush()
}

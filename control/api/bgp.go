package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

// BGPStatusJSON is the answer of GET /v1/bgp and `pdrelay bgp --json`.
type BGPStatusJSON struct {
	// Enabled is false when the config has no bgp key; nothing else is
	// set then.
	Enabled  bool   `json:"enabled"`
	ASN      uint32 `json:"asn,omitempty"`
	RouterID string `json:"router_id,omitempty"`
	NextHop  string `json:"next_hop,omitempty"`
	// Prefixes is how many prefixes pdrelay announces: the delegated ones
	// (Delegated) and the aggregates.
	Prefixes  int64            `json:"prefixes"`
	Delegated int64            `json:"delegated"`
	Sessions  []BGPSessionJSON `json:"sessions"` // by peer address; never null
}

// BGPSessionJSON is one BGP session.
type BGPSessionJSON struct {
	Peer    string `json:"peer"`
	PeerASN uint32 `json:"peer_asn"`
	// State is idle, connect, active, opensent, openconfirm or
	// established.
	State string `json:"state"`
	// Since is when the session came up (established) or last went down;
	// absent if it never came up. UptimeSeconds counts from it while the
	// session is up, else 0.
	Since         *time.Time `json:"since,omitempty"`
	UptimeSeconds int64      `json:"uptime_seconds"`
	// PrefixesSent is what the session carries to the peer;
	// PrefixesReceived what the peer sent (pdrelay uses none).
	PrefixesSent     uint64 `json:"prefixes_sent"`
	PrefixesReceived uint64 `json:"prefixes_received"`
	UpdatesSent      uint64 `json:"updates_sent"`
	UpdatesReceived  uint64 `json:"updates_received"`
	Flaps            uint32 `json:"flaps"`
	// GracefulRestart is whether the peer advertised graceful restart:
	// without it a pdrelay restart withdraws the routes there.
	GracefulRestart bool   `json:"graceful_restart"`
	LastError       string `json:"last_error,omitempty"`
}

// BGPSource reports the BGP speaker's status; nil when the config has no
// bgp key.
type BGPSource func(ctx context.Context) (BGPStatusJSON, error)

func (s *Server) bgp(w http.ResponseWriter, r *http.Request) {
	if s.BGP == nil {
		writeJSON(w, http.StatusOK, BGPStatusJSON{Sessions: []BGPSessionJSON{}})
		return
	}
	st, err := s.BGP(r.Context())
	if err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	st.Enabled = true
	if st.Sessions == nil {
		st.Sessions = []BGPSessionJSON{}
	}
	writeJSON(w, http.StatusOK, st)
}

// BGP returns the BGP speaker's status.
func (c *Client) BGP(ctx context.Context) (BGPStatusJSON, error) {
	var out BGPStatusJSON
	err := c.do(ctx, http.MethodGet, "/v1/bgp", nil, &out)
	return out, err
}

const bgpUsage = `usage: pdrelay bgp [--json] [-s|--socket PATH | -c|--config FILE]

Shows the BGP sessions that announce the delegated prefixes (RFC 8987
R-4): each peer's state, how long it has been up, and the prefixes it
carries.

      --json            print the status as JSON
` + socketHelp

// RunBGP implements `pdrelay bgp`; args follow the subcommand. It
// returns the exit code.
func RunBGP(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bgp", bgpUsage, stderr)
	asJSON := fs.Bool("json", false, "")
	var sock socketFlags
	sock.register(fs)
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	c, ok := sock.client("bgp", stderr)
	if !ok {
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	st, err := c.BGP(ctx)
	if err != nil {
		return requestFailed(stderr, "bgp", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			fmt.Fprintf(stderr, "pdrelay bgp: %v\n", err)
			return ExitError
		}
		return ExitOK
	}
	printBGP(stdout, st)
	return ExitOK
}

// printBGP prints the human view of `pdrelay bgp`.
func printBGP(w io.Writer, st BGPStatusJSON) {
	if !st.Enabled {
		fmt.Fprintln(w, "bgp not configured (no bgp key in the config)")
		return
	}
	fmt.Fprintf(w, "asn %d, router id %s, next hop %s: %d prefixes announced (%d delegated, %d aggregates)\n",
		st.ASN, dash(st.RouterID), dash(st.NextHop), st.Prefixes, st.Delegated, st.Prefixes-st.Delegated)
	if len(st.Sessions) == 0 {
		fmt.Fprintln(w, "no neighbors")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tASN\tSTATE\tUP/DOWN\tSENT\tRECEIVED\tUPDATES-SENT\tFLAPS\tGR\tLAST-ERROR")
	for _, s := range st.Sessions {
		since := "never"
		switch {
		case s.State == "established":
			since = (time.Duration(s.UptimeSeconds) * time.Second).String()
		case s.Since != nil:
			since = "since " + s.Since.UTC().Format(time.RFC3339)
		}
		gr := "no"
		if s.GracefulRestart {
			gr = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Peer, s.PeerASN, s.State, since,
			s.PrefixesSent, s.PrefixesReceived, s.UpdatesSent, s.Flaps, gr, dash(s.LastError))
	}
	tw.Flush()
}

package lqserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Usage is the synopsis of `pdrelay lqserver`.
const Usage = `pdrelay lqserver --kea-socket PATH [--listen ADDR:PORT] [--release-listen ADDR:PORT]
      [--server-id HEX] [--allow PREFIX]... [--max-conns N] [--max-queries N] [--page-size N]
      [--data-timeout D] [--query-types LIST] [--bare-prefixes] [--release-types REQ,REPLY] [--release-allow PREFIX]...`

// Config is what `pdrelay lqserver` runs with.
type Config struct {
	KeaSocket     string
	Listen        string // TCP, Bulk Leasequery
	ReleaseListen string // UDP, RELEASE-REQUEST; "" for none
	ServerID      []byte // nil: learn Kea's (see ServerID)
	Allow         []netip.Prefix
	ReleaseAllow  []netip.Prefix
	MaxConns      int
	MaxQueries    int
	PageSize      int
	DataTimeout   time.Duration
	QueryTypes    []uint8
	BarePrefixes  bool
	RequestType   dhcp6.MessageType
	ReplyType     dhcp6.MessageType
}

type prefixList []netip.Prefix

func (p *prefixList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		pf, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return fmt.Errorf("%q is not a prefix or an address", f)
			}
			pf = netip.PrefixFrom(a, a.BitLen())
		}
		*p = append(*p, pf.Masked())
	}
	return nil
}

// ParseFlags parses the arguments of `pdrelay lqserver`.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("lqserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "usage:\n  %s\n", Usage); fs.PrintDefaults() }
	var c Config
	var allow, relAllow prefixList
	var serverID, queryTypes, relTypes string
	fs.StringVar(&c.KeaSocket, "kea-socket", "", "Kea's control socket (unix; the lease_cmds hook must be loaded)")
	fs.StringVar(&c.Listen, "listen", "[::]:547", "TCP address for Bulk Leasequery")
	fs.StringVar(&c.ReleaseListen, "release-listen", "", "UDP address for RELEASE-REQUEST; empty: not answered")
	fs.StringVar(&serverID, "server-id", "", "Kea's server DUID in hex; default: from Kea's config or its data directory")
	fs.Var(&allow, "allow", "requestor prefix allowed to connect (repeatable; default ::1/128 and 127.0.0.0/8)")
	fs.Var(&relAllow, "release-allow", "relay prefix whose RELEASE-REQUESTs are accepted (repeatable; default any)")
	fs.IntVar(&c.MaxConns, "max-conns", DefaultMaxConns, "open Bulk Leasequery connections at most (BULK_LQ_MAX_CONNS)")
	fs.IntVar(&c.MaxQueries, "max-queries", DefaultMaxQueries, "queries one connection runs in parallel at most")
	fs.IntVar(&c.PageSize, "page-size", DefaultPageSize, "leases per lease6-get-page")
	fs.DurationVar(&c.DataTimeout, "data-timeout", DefaultDataTimeout, "read and write timeout (BULK_LQ_DATA_TIMEOUT)")
	fs.BoolVar(&c.BarePrefixes, "bare-prefixes", false,
		"send prefixes as bare IAPREFIX options, strictly as RFC 5007 has it (the IAID is lost); default: wrapped in IA_PD")
	fs.StringVar(&queryTypes, "query-types", "1,2,3,4,5", "query types answered; others get NotAllowed")
	fs.StringVar(&relTypes, "release-types", fmt.Sprintf("%d,%d", DefaultReleaseRequestType, DefaultReleaseReplyType),
		"RELEASE-REQUEST and RELEASE-REQUEST-REPLY message types (experimental: no IANA values)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.KeaSocket == "" {
		return c, errors.New("--kea-socket is required")
	}
	if serverID != "" {
		d, err := ParseHex(serverID)
		if err != nil || len(d) < 3 || len(d) > 130 {
			return c, fmt.Errorf("--server-id %q is not a DUID in hex (3..130 bytes)", serverID)
		}
		c.ServerID = d
	}
	c.Allow, c.ReleaseAllow = allow, relAllow
	if len(c.Allow) == 0 {
		c.Allow = []netip.Prefix{netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("127.0.0.0/8")}
	}
	for name, v := range map[string]int{"--max-conns": c.MaxConns, "--max-queries": c.MaxQueries, "--page-size": c.PageSize} {
		if v < 1 {
			return c, fmt.Errorf("%s %d: must be at least 1", name, v)
		}
	}
	if c.DataTimeout <= 0 {
		return c, fmt.Errorf("--data-timeout %v: must be positive", c.DataTimeout)
	}
	for _, f := range strings.Split(queryTypes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < int(dhcp6.QueryByAddress) || n > int(dhcp6.QueryByRemoteID) {
			return c, fmt.Errorf("--query-types %q: %q is not a query type 1..5", queryTypes, f)
		}
		c.QueryTypes = append(c.QueryTypes, uint8(n))
	}
	rt := strings.Split(relTypes, ",")
	if len(rt) != 2 {
		return c, fmt.Errorf("--release-types %q: want REQUEST,REPLY", relTypes)
	}
	for i, f := range rt {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 255 {
			return c, fmt.Errorf("--release-types %q: %q is not a message type 1..255", relTypes, f)
		}
		if n <= 37 {
			return c, fmt.Errorf("--release-types %q: %d is an assigned message type (1..37 are taken)", relTypes, n)
		}
		if i == 0 {
			c.RequestType = dhcp6.MessageType(n)
		} else {
			c.ReplyType = dhcp6.MessageType(n)
		}
	}
	if c.RequestType == c.ReplyType {
		return c, fmt.Errorf("--release-types %q: request and reply types must differ", relTypes)
	}
	return c, nil
}

// Main runs `pdrelay lqserver` until SIGINT or SIGTERM; it returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	c, err := ParseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "pdrelay lqserver: %v\n", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := Run(ctx, c, log); err != nil {
		fmt.Fprintf(stderr, "pdrelay lqserver: %v\n", err)
		return 1
	}
	return 0
}

// Run serves Bulk Leasequery (and RELEASE-REQUEST with ReleaseListen)
// until ctx ends. It fails at once when a listener cannot be opened or,
// with ReleaseListen, when Kea's server DUID is unknown.
func Run(ctx context.Context, c Config, log *slog.Logger) error {
	kea := &Kea{Socket: c.KeaSocket, PageSize: c.PageSize}
	sid, src := c.ServerID, "--server-id"
	if sid == nil {
		var err error
		var kc *KeaConfig
		if kc, err = kea.Config(ctx); err == nil {
			sid, src, err = ServerID(kc, nil)
		}
		if err != nil {
			if c.ReleaseListen != "" {
				return fmt.Errorf("kea's server DUID is needed to validate RELEASE-REQUESTs: %w; pass --server-id", err)
			}
			sid = randomDUID()
			src = "generated"
			log.Warn("kea's server DUID unknown: leasequery replies carry a generated Server-ID, so a relay cannot release recovered bindings at Kea with it; pass --server-id",
				"error", err.Error())
		}
	}
	log.Info("server id", "duid", hex.EncodeToString(sid), "source", src)
	srv, err := NewServer(Options{
		Kea: kea, ServerID: sid, Allow: c.Allow, MaxConns: c.MaxConns, MaxQueries: c.MaxQueries,
		DataTimeout: c.DataTimeout, QueryTypes: c.QueryTypes, BarePrefixes: c.BarePrefixes, Logger: log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", c.Listen, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	n := 1
	if c.ReleaseListen != "" {
		rs, err := NewReleaseServer(ReleaseOptions{Kea: kea, ServerID: sid, RequestType: c.RequestType,
			ReplyType: c.ReplyType, Allow: c.ReleaseAllow, Logger: log})
		if err != nil {
			ln.Close()
			return err
		}
		pc, err := net.ListenPacket("udp", c.ReleaseListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--release-listen %s: %w", c.ReleaseListen, err)
		}
		defer pc.Close()
		n++
		go func() { errs <- rs.Serve(ctx, pc) }()
	}
	go func() { errs <- srv.Serve(ctx, ln) }()
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// randomDUID makes a DUID-UUID (RFC 6355).
func randomDUID() []byte {
	d := []byte{0, duidUUID}
	u := make([]byte, 16)
	_, _ = rand.Read(u)
	return append(d, u...)
}

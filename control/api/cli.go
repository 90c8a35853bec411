package api

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/pdrelay/pdrelay/control/config"
)

// Where the operator commands find the relay's socket: -s/--socket, else
// api_socket in the config named by -c/--config, else $PDRELAY_SOCKET,
// else DefaultSocket.
const (
	DefaultSocket = config.DefaultAPISocket
	SocketEnv     = "PDRELAY_SOCKET"
)

// Exit codes of the operator commands.
const (
	ExitOK    = 0
	ExitError = 1 // the relay could not be reached or refused the request
	ExitUsage = 2
)

// Timeouts of the operator commands. A clear with --release waits for
// the servers' answers, which are retransmitted for several seconds.
const (
	listTimeout  = 10 * time.Second
	clearTimeout = 60 * time.Second
)

const socketHelp = `  -s, --socket PATH     the relay's operator socket (default $` + SocketEnv + `,
                        else ` + DefaultSocket + `)
  -c, --config FILE     use api_socket from the relay's config file
`

const bindingsUsage = `usage: pdrelay bindings [--json] [-s|--socket PATH | -c|--config FILE]

Lists the active delegations: port, client DUID, IAID, prefix, next hop
and its MAC, preferred and valid lifetime remaining, server DUID, and
where the binding came from (snooped, store, leasequery).

      --json            print a JSON array instead of a table
` + socketHelp

const clearUsage = `usage: pdrelay clear (--prefix P | --client DUID [--interface IF] | --interface IF | --all)
                     [--release] [-s|--socket PATH | -c|--config FILE]

Clears bindings: their routes and source filters go at once (RFC 8987 O-2).

      --prefix P        the binding of delegated prefix P
      --client DUID     the bindings of a client DUID (hex, colons allowed),
                        on every port or only on --interface
      --interface IF    the bindings on downlink IF
      --all             every binding
      --release         first ask the server to release them (release.mode:
                        RELEASE-REQUEST or a Release on the client's behalf);
                        only those it releases are cleared, the others are
                        listed and kept until they expire (exit status 1)
` + socketHelp

// socketFlags are the flags that say where the relay is.
type socketFlags struct{ socket, config string }

func (s *socketFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.socket, "s", "", "")
	fs.StringVar(&s.socket, "socket", "", "")
	fs.StringVar(&s.config, "c", "", "")
	fs.StringVar(&s.config, "config", "", "")
}

// client returns a Client for the relay the flags name, or reports
// why there is none for command name and returns false (exit ExitUsage).
func (s *socketFlags) client(name string, stderr io.Writer) (*Client, bool) {
	path, err := s.path()
	if err != nil {
		fmt.Fprintf(stderr, "pdrelay %s: %v\n", name, err)
		return nil, false
	}
	return Dial(path), true
}

func (s *socketFlags) path() (string, error) {
	switch {
	case s.socket != "" && s.config != "":
		return "", errors.New("give --socket or --config, not both")
	case s.socket != "":
		return s.socket, nil
	case s.config != "":
		c, err := config.Load(s.config)
		if err != nil {
			return "", err
		}
		return c.APISocket, nil
	case os.Getenv(SocketEnv) != "":
		return os.Getenv(SocketEnv), nil
	}
	return DefaultSocket, nil
}

// newFlagSet returns a flag set that reports errors and usage on stderr.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs
}

// parse parses args; done is true when the command should return code.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, true
		}
		return ExitUsage, true // flag has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pdrelay %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return ExitUsage, true
	}
	return 0, false
}

// RunBindings implements `pdrelay bindings`; args follow the subcommand.
// It returns the exit code.
func RunBindings(args []string, stdout, stderr io.Writer) int {
	return runQuery("bindings", bindingsUsage, args, stdout, stderr, (*Client).Bindings, printBindings)
}

// runQuery runs a read-only operator command: --json and the socket
// flags, one API call, then the answer as JSON (an empty list, never
// null) or as the command's table.
func runQuery[T any](name, usage string, args []string, stdout, stderr io.Writer,
	get func(*Client, context.Context) ([]T, error), table func(io.Writer, []T)) int {
	fs := newFlagSet(name, usage, stderr)
	asJSON := fs.Bool("json", false, "")
	var sock socketFlags
	sock.register(fs)
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	c, ok := sock.client(name, stderr)
	if !ok {
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	v, err := get(c, ctx)
	if err != nil {
		fmt.Fprintf(stderr, "pdrelay %s: %v\n", name, err)
		return ExitError
	}
	if !*asJSON {
		table(stdout, v)
		return ExitOK
	}
	if v == nil {
		v = []T{}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "pdrelay %s: %v\n", name, err)
		return ExitError
	}
	return ExitOK
}

// printBindings prints the human table of `pdrelay bindings`.
func printBindings(w io.Writer, bs []BindingJSON) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tCLIENT-DUID\tIAID\tPREFIX\tNEXT-HOP\tMAC\tPREFERRED\tVALID\tSERVER-DUID\tSOURCE")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			b.Interface, dash(b.ClientDUID), b.IAID, b.Prefix, dash(addrString(b)), b.NextHopMAC,
			lifetime(b.PreferredLifetime), lifetime(b.ValidLifetime), dash(b.ServerDUID), dash(b.Source))
	}
	tw.Flush()
}

func addrString(b BindingJSON) string {
	if !b.NextHop.IsValid() {
		return ""
	}
	return b.NextHop.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lifetime formats remaining seconds: "infinite", or a duration such as
// "1h2m3s".
func lifetime(s uint32) string {
	if s == Infinite {
		return "infinite"
	}
	return (time.Duration(s) * time.Second).String()
}

// requestFailed reports a failed API request of command name and returns
// the exit code: a usage error when the relay refused the request as bad
// (HTTP 400), else an error.
func requestFailed(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "pdrelay %s: %v\n", name, err)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusBadRequest {
		return ExitUsage
	}
	return ExitError
}

// RunClear implements `pdrelay clear`; args follow the subcommand. It
// returns the exit code.
func RunClear(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("clear", clearUsage, stderr)
	var req ClearRequest
	fs.StringVar(&req.Prefix, "prefix", "", "")
	fs.StringVar(&req.Client, "client", "", "")
	fs.StringVar(&req.Interface, "interface", "", "")
	fs.BoolVar(&req.All, "all", false, "")
	fs.BoolVar(&req.Release, "release", false, "")
	var sock socketFlags
	sock.register(fs)
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	if _, err := req.Filter(); err != nil {
		fmt.Fprintf(stderr, "pdrelay clear: %v\n", err)
		fs.Usage()
		return ExitUsage
	}
	c, ok := sock.client("clear", stderr)
	if !ok {
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), clearTimeout)
	defer cancel()
	resp, err := c.Clear(ctx, req)
	if err != nil {
		return requestFailed(stderr, "clear", err)
	}
	if resp.Count == 0 && len(resp.NotReleased) == 0 {
		fmt.Fprintln(stdout, "no binding matched; nothing cleared")
		return ExitOK
	}
	if resp.Count > 0 {
		fmt.Fprintf(stdout, "cleared %d %s", resp.Count, plural(resp.Count))
		if req.Release {
			fmt.Fprint(stdout, ", released at the server")
		}
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		for _, b := range resp.Cleared {
			fmt.Fprintf(tw, "  %s\t%s\tclient %s\tiaid %d\n", b.Interface, b.Prefix, dash(b.ClientDUID), b.IAID)
		}
		tw.Flush()
	}
	if len(resp.NotReleased) == 0 {
		return ExitOK
	}
	// The server kept these: they stay until they expire. Exit 1 so a
	// script notices; the cleared ones above are cleared all the same.
	fmt.Fprintf(stdout, "not released, kept until they expire: %d %s\n", len(resp.NotReleased), plural(len(resp.NotReleased)))
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	for _, b := range resp.NotReleased {
		fmt.Fprintf(tw, "  %s\t%s\tclient %s\tiaid %d\t%s\n", b.Interface, b.Prefix, dash(b.ClientDUID), b.IAID, b.Reason)
	}
	tw.Flush()
	return ExitError
}

func plural(n int) string {
	if n == 1 {
		return "binding"
	}
	return "bindings"
}

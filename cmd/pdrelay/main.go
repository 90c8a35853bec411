// Command pdrelay is a DHCPv6 prefix-delegating relay (RFC 8987).
//
//	pdrelay run -c FILE
//	pdrelay bindings [--json] [-s|--socket PATH]
//	pdrelay clear (--prefix P | --client DUID [--interface IF] | --interface IF | --all) [--release] [-s|--socket PATH]
//	pdrelay stats [--json] [-s|--socket PATH]
//	pdrelay lqserver --kea-socket PATH [--listen ADDR:PORT] [--release-listen ADDR:PORT] ...
//	pdrelay recover [--server S] [--json] [-s|--socket PATH]
//	pdrelay reload [-s|--socket PATH]
//	pdrelay bgp [--json] [-s|--socket PATH]
//	pdrelay replay --pcap IN [--out OUT] -c FILE --mac PORT=MAC... (--bindings FILE | -s|--socket PATH) ...
//	pdrelay replay --pcap IN --interface IF [--rate original|PPS|max] [--loop K] ...
//	pdrelay version [--json]
//
// main only dispatches: the relay is wired in control/daemon, the operator
// commands in control/api, the leasequery server for Kea in control/lqserver.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/daemon"
	"github.com/pdrelay/pdrelay/control/lqserver"
	"github.com/pdrelay/pdrelay/control/replay"
	"github.com/pdrelay/pdrelay/internal/version"
)

const usage = `usage:
  pdrelay run -c FILE
  pdrelay bindings [--json] [-s|--socket PATH]
  pdrelay clear (--prefix P | --client DUID [--interface IF] | --interface IF | --all) [--release] [-s|--socket PATH]
  pdrelay stats [--json] [-s|--socket PATH]
  ` + lqserver.Usage + `
  pdrelay recover [--server S] [--json] [-s|--socket PATH]
  pdrelay reload [-s|--socket PATH]
  pdrelay bgp [--json] [-s|--socket PATH]
  ` + replay.Usage + `
  ` + replay.LiveUsage + `
  pdrelay version [--json]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runRelay(args[1:], stderr)
	case "bindings":
		return api.RunBindings(args[1:], stdout, stderr)
	case "clear":
		return api.RunClear(args[1:], stdout, stderr)
	case "stats":
		return api.RunStats(args[1:], stdout, stderr)
	case "lqserver":
		return lqserver.Main(args[1:], stdout, stderr)
	case "recover":
		return api.RunRecover(args[1:], stdout, stderr)
	case "reload":
		return api.RunReload(args[1:], stdout, stderr)
	case "bgp":
		return api.RunBGP(args[1:], stdout, stderr)
	case "replay":
		return replay.Main(args[1:], stdout, stderr)
	case "version", "--version":
		return runVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "pdrelay: unknown command %q\n%s", args[0], usage)
	return 2
}

func runRelay(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "/etc/pdrelay/pdrelay.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.RunFile(ctx, *path, stderr); err != nil {
		fmt.Fprintf(stderr, "pdrelay: %v\n", err)
		return 1
	}
	return 0
}

// runVersion prints the version, commit and Go version, one line or JSON.
func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: pdrelay version [--json]")
		return 2
	}
	info := version.Get()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			return 1
		}
		return 0
	}
	fmt.Fprintln(stdout, info)
	return 0
}

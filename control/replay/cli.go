package replay

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane"
)

// Usage is the offline replay's usage line, for pdrelay's usage text.
const Usage = `pdrelay replay --pcap IN [--out OUT.pcapng] -c FILE --mac PORT=MAC... [--gateway-mac MAC] [--in PORT] (--bindings FILE | -s|--socket PATH) [--json]`

// LiveUsage is the live replay's usage line: it sends the capture's
// frames as captured (no forwarding function) out of an interface.
const LiveUsage = `pdrelay replay --pcap IN --interface IF [--queue Q] [--rate original|PPS|max] [--loop K] [--burst B] [--realtime] [--progress] [--json]`

// macFlags collects repeated --mac PORT=MAC.
type macFlags map[string][6]byte

func (m macFlags) String() string { return "" }

func (m macFlags) Set(s string) error {
	name, mac, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q: want PORT=MAC", s)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("%q: %q is not an Ethernet address", s, mac)
	}
	if _, dup := m[name]; dup {
		return fmt.Errorf("%q: port %s given twice", s, name)
	}
	m[name] = [6]byte(hw)
	return nil
}

// Main runs `pdrelay replay` and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "usage: %s\n       %s\n", Usage, LiveUsage) }
	pcapIn := fs.String("pcap", "", "the capture to replay (pcap or pcapng, Ethernet)")
	outPath := fs.String("out", "", "write what would leave the relay here (pcapng, one interface per port)")
	cfgPath := fs.String("c", "", "the relay's config (ports and policies)")
	fs.StringVar(cfgPath, "config", "", "same as -c")
	macs := macFlags{}
	fs.Var(macs, "mac", "PORT=MAC: a port's own MAC; once per port")
	gw := fs.String("gateway-mac", "", "the uplink gateway's MAC (the default route); none: no default route")
	inPort := fs.String("in", "", "the ingress port of every frame; default: the port whose MAC is the frame's destination")
	bindingsPath := fs.String("bindings", "", "the bindings, as pdrelay bindings --json prints them")
	sock := fs.String("socket", "", "fetch the bindings from the relay at this socket")
	fs.StringVar(sock, "s", "", "same as --socket")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	lf := liveFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(stderr, "pdrelay replay: %s\nusage: %s\n       %s\n", msg, Usage, LiveUsage)
		return 2
	}
	if msg := lf.check(fs); msg != "" {
		return usageErr(msg)
	}
	if lf.iface != "" {
		return lf.main(*pcapIn, *asJSON, stdout, stderr, usageErr)
	}
	switch {
	case fs.NArg() > 0:
		return usageErr(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	case *pcapIn == "":
		return usageErr("--pcap is required")
	case *cfgPath == "":
		return usageErr("-c is required")
	case (*bindingsPath == "") == (*sock == ""):
		return usageErr("give exactly one of --bindings and --socket")
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "pdrelay replay: %v\n", err)
		return 1
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	opts := Options{Config: cfg, MACs: macs, In: *inPort}
	if *gw != "" {
		hw, err := net.ParseMAC(*gw)
		if err != nil || len(hw) != 6 {
			return usageErr(fmt.Sprintf("--gateway-mac %q: not an Ethernet address", *gw))
		}
		mac := [6]byte(hw)
		opts.GatewayMAC = &mac
	}
	if *bindingsPath != "" {
		data, err := os.ReadFile(*bindingsPath)
		if err != nil {
			return fail(fmt.Errorf("read bindings: %w", err))
		}
		if err := json.Unmarshal(data, &opts.Bindings); err != nil {
			return fail(fmt.Errorf("read bindings %s: %w", *bindingsPath, err))
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		opts.Bindings, err = api.Dial(*sock).Bindings(ctx)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("fetch bindings from %s: %w", *sock, err))
		}
	}
	in, err := os.Open(*pcapIn)
	if err != nil {
		return fail(err)
	}
	defer in.Close()
	var out *os.File
	var ow io.Writer
	if *outPath != "" {
		if out, err = os.Create(*outPath); err != nil {
			return fail(err)
		}
		ow = out
	}
	sum, err := Run(opts, in, ow)
	if out != nil {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", *outPath, cerr)
		}
	}
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(sum, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	WriteText(stdout, sum)
	return 0
}

// WriteText prints a summary for a person: the frames read, those not
// decided, the dataplane's verdicts by reason (in the dataplane's order),
// by port, and the frames written by egress port.
func WriteText(w io.Writer, s Summary) {
	fmt.Fprintf(w, "frames read        %d\n", s.Frames)
	fmt.Fprintf(w, "not decided        unmatched %d, truncated %d, not ethernet %d\n", s.Unmatched, s.Truncated, s.NotEthernet)
	if s.Unrouted > 0 {
		fmt.Fprintf(w, "unrouted bindings  %d\n", s.Unrouted)
	}
	fmt.Fprintln(w, "verdicts by reason:")
	writeReasons(w, "  ", s.Reasons)
	ports := sortedKeys(s.Ports)
	for _, p := range ports {
		fmt.Fprintf(w, "port %s:\n", p)
		writeReasons(w, "  ", s.Ports[p])
	}
	fmt.Fprintln(w, "written by egress port:")
	for _, p := range sortedKeys(s.Written) {
		fmt.Fprintf(w, "  %-20s %d\n", p, s.Written[p])
	}
}

func writeReasons(w io.Writer, indent string, m map[string]uint64) {
	for r := dataplane.Reason(0); r < dataplane.NumReasons; r++ {
		if n := m[r.String()]; n > 0 {
			fmt.Fprintf(w, "%s%-20s %d\n", indent, r.String(), n)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

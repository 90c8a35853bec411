package replay

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/fib"
)

// Options is what a replay needs besides the capture.
type Options struct {
	// Config gives the ports: the uplink, the downlinks and their policies.
	Config *config.Config
	// MACs is each port's own MAC, by interface name; every port of the
	// config needs one.
	MACs map[string][6]byte
	// GatewayMAC, if not nil, is the uplink gateway's MAC: the default
	// route. Nil: no default route.
	GatewayMAC *[6]byte
	// In, if set, names the ingress port of every frame; else a frame's
	// ingress port is the port whose MAC is its destination MAC.
	In string
	// Bindings are the routed prefixes.
	Bindings []api.BindingJSON
}

// Summary is what a replay counted.
type Summary struct {
	Frames      uint64 `json:"frames"`       // frames read from the capture
	Unmatched   uint64 `json:"unmatched"`    // no ingress port: not decided
	Truncated   uint64 `json:"truncated"`    // cut short by the capture: not decided
	NotEthernet uint64 `json:"not_ethernet"` // on a pcapng interface of another link type: not decided
	// Unrouted counts bindings on an interface the config lacks: like the
	// relay, the replay does not route them.
	Unrouted uint64 `json:"unrouted_bindings"`
	// Reasons are the dataplane's counts over all ports, by reason name
	// (dataplane.Reason.String); only those that are not zero.
	Reasons map[string]uint64 `json:"reasons"`
	// Ports are the same counts by port name (Forwarded on the egress
	// port, every other reason on the ingress port).
	Ports map[string]map[string]uint64 `json:"ports"`
	// Written counts the frames written to the output, by egress port.
	Written map[string]uint64 `json:"written"`
}

// ErrCapture is wrapped by the errors about the capture file.
var ErrCapture = errors.New("bad capture")

// frameRoom is the buffer each frame is decided in: an ICMPv6 error is
// built in place, up to 1294 bytes, as in an AF_XDP frame of 2048.
const frameRoom = 2048

// plan is the replay's view of the ports.
type plan struct {
	names []string // by fib.PortID: uplink 0, downlinks 1..
	ids   map[string]fib.PortID
	macs  [][6]byte
}

// Run replays the capture read from in and writes what would leave the
// relay to out as pcapng (nil: nothing is written), one interface per port
// in config order (the uplink first), named as the port.
func Run(opts Options, in io.Reader, out io.Writer) (Summary, error) {
	sum := Summary{Reasons: map[string]uint64{}, Ports: map[string]map[string]uint64{}, Written: map[string]uint64{}}
	cfg := opts.Config
	if cfg == nil {
		return sum, errors.New("no config")
	}
	p := plan{ids: map[string]fib.PortID{}}
	dc := dataplane.Config{ICMPRate: cfg.Dataplane.ICMPRate}
	add := func(name string, pc dataplane.PortConfig) error {
		mac, ok := opts.MACs[name]
		if !ok {
			return fmt.Errorf("port %s: no MAC given (--mac %s=MAC)", name, name)
		}
		pc.ID = fib.PortID(len(p.names))
		pc.MAC = mac
		pc.LinkLocal = linkLocal(mac)
		p.ids[name] = pc.ID
		p.names = append(p.names, name)
		p.macs = append(p.macs, mac)
		dc.Ports = append(dc.Ports, pc)
		return nil
	}
	if err := add(cfg.Uplink.Interface, dataplane.PortConfig{Uplink: true, NoRoutePass: cfg.Uplink.NoRoute == config.NoRoutePass}); err != nil {
		return sum, err
	}
	for i := range cfg.Downlinks {
		d := &cfg.Downlinks[i]
		if err := add(d.Interface, d.PlanePort()); err != nil {
			return sum, err
		}
		dc.LoopOverrides = append(dc.LoopOverrides, d.PlaneLoopOverrides()...)
	}
	for name := range opts.MACs {
		if _, ok := p.ids[name]; !ok {
			return sum, fmt.Errorf("--mac %s: not a port in the config", name)
		}
	}
	fw, err := dataplane.New(dc)
	if err != nil {
		return sum, fmt.Errorf("%w", err)
	}
	snap, unrouted, err := buildFIB(cfg, p.ids, opts)
	if err != nil {
		return sum, err
	}
	sum.Unrouted = unrouted
	inPort := fib.PortID(0)
	if opts.In != "" {
		id, ok := p.ids[opts.In]
		if !ok {
			return sum, fmt.Errorf("--in %s: not a port in the config", opts.In)
		}
		inPort = id
	}

	rd, err := openCapture(in)
	if err != nil {
		return sum, err
	}
	var w *pcapgo.NgWriter
	if out != nil {
		if w, err = newWriter(out, p.names); err != nil {
			return sum, fmt.Errorf("write output: %w", err)
		}
	}
	buf := make([]byte, frameRoom)
	frames := make([][]byte, 1)
	res := make([]dataplane.Result, 1)
	for {
		data, ci, err := rd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sum, fmt.Errorf("read frame %d: %w: %w", sum.Frames+1, ErrCapture, err)
		}
		sum.Frames++
		switch {
		case !rd.ethernet(ci):
			sum.NotEthernet++
			continue
		case ci.CaptureLength < ci.Length || len(data) < ci.Length:
			sum.Truncated++
			continue
		}
		in := inPort
		if opts.In == "" {
			var ok bool
			if in, ok = p.byMAC(data); !ok {
				sum.Unmatched++
				continue
			}
		}
		if len(data) > cap(buf) {
			buf = make([]byte, len(data))
		}
		frame := buf[:copy(buf[:cap(buf)], data)]
		frames[0] = frame
		// The capture's clock is the dataplane's: the ICMPv6 rate limit
		// runs on the capture's time, the same on every replay.
		fw.ForwardBatch(snap, in, frames, ci.Timestamp.UnixNano(), res)
		r := res[0]
		if r.Verdict != dataplane.Forward && r.Verdict != dataplane.ICMPReply {
			continue
		}
		name := p.names[r.Port]
		sum.Written[name]++
		if w == nil {
			continue
		}
		oci := gopacket.CaptureInfo{Timestamp: ci.Timestamp, CaptureLength: r.Len, Length: r.Len, InterfaceIndex: int(r.Port)}
		if err := w.WritePacket(oci, frame[:r.Len]); err != nil {
			return sum, fmt.Errorf("write output: %w", err)
		}
	}
	if w != nil {
		if err := w.Flush(); err != nil {
			return sum, fmt.Errorf("write output: %w", err)
		}
	}
	fw.Flush()
	fw.Each(func(port fib.PortID, r dataplane.Reason, n uint64) {
		if n == 0 {
			return
		}
		name := "unknown"
		if int(port) < len(p.names) {
			name = p.names[port]
		}
		sum.Reasons[r.String()] += n
		if sum.Ports[name] == nil {
			sum.Ports[name] = map[string]uint64{}
		}
		sum.Ports[name][r.String()] += n
	})
	return sum, nil
}

// byMAC returns the port whose MAC is the frame's destination MAC.
func (p *plan) byMAC(frame []byte) (fib.PortID, bool) {
	if len(frame) < 6 {
		return 0, false
	}
	for i, m := range p.macs {
		if [6]byte(frame[:6]) == m {
			return fib.PortID(i), true
		}
	}
	return 0, false
}

// buildFIB publishes the routes and source filters the relay would have
// with these bindings: as control/daemon's fibWriter, each binding's
// prefix is a route out of its port and an allowed source on it, with the
// client's own loop policy; each downlink's allowed_sources; the default
// route to the uplink gateway when its MAC is known.
func buildFIB(cfg *config.Config, ids map[string]fib.PortID, opts Options) (*fib.Snapshot, uint64, error) {
	tb := fib.NewTable()
	clientLoop := map[string]map[string]fib.LoopPolicy{} // port → DUID hex → policy
	for _, d := range cfg.Downlinks {
		if err := tb.SetAllowedSources(ids[d.Interface], d.AllowedSources); err != nil {
			return nil, 0, fmt.Errorf("downlinks %s allowed_sources: %w", d.Interface, err)
		}
		for _, o := range d.LoopOverrides {
			if o.Client != nil {
				if clientLoop[d.Interface] == nil {
					clientLoop[d.Interface] = map[string]fib.LoopPolicy{}
				}
				clientLoop[d.Interface][hex.EncodeToString(o.Client)] = o.Policy.FIB()
			}
		}
	}
	var unrouted uint64
	for i, b := range opts.Bindings {
		port, ok := ids[b.Interface]
		if !ok || port == ids[cfg.Uplink.Interface] {
			unrouted++
			continue
		}
		var mac [6]byte
		if b.NextHopMAC != "" {
			hw, err := net.ParseMAC(b.NextHopMAC)
			if err != nil || len(hw) != 6 {
				return nil, 0, fmt.Errorf("binding %d (%v): next_hop_mac %q: not an Ethernet address", i, b.Prefix, b.NextHopMAC)
			}
			mac = [6]byte(hw)
		}
		r := fib.Route{Prefix: b.Prefix, Port: port, NextHop: b.NextHop, MAC: mac, Loop: clientLoop[b.Interface][b.ClientDUID]}
		if err := tb.AddRoute(r); err != nil {
			return nil, 0, fmt.Errorf("binding %d (%v): %w", i, b.Prefix, err)
		}
		if err := tb.AddSource(port, b.Prefix); err != nil {
			return nil, 0, fmt.Errorf("binding %d (%v): %w", i, b.Prefix, err)
		}
	}
	if opts.GatewayMAC != nil {
		if err := tb.SetDefault(&fib.Route{Port: ids[cfg.Uplink.Interface], MAC: *opts.GatewayMAC, NextHop: cfg.Uplink.Gateway}); err != nil {
			return nil, 0, fmt.Errorf("default route: %w", err)
		}
	}
	return tb.Publish(), unrouted, nil
}

// linkLocal returns the EUI-64 link-local address of mac (RFC 4291
// appendix A), the kernel's default for an Ethernet port.
func linkLocal(mac [6]byte) netip.Addr {
	a := [16]byte{0: 0xfe, 1: 0x80}
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// capture reads pcap or pcapng.
type capture struct {
	pcap *pcapgo.Reader
	ng   *pcapgo.NgReader
}

// openCapture tells pcap from pcapng by the first four bytes.
func openCapture(in io.Reader) (*capture, error) {
	br := bufio.NewReader(in)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("read capture header: %w: %w", ErrCapture, err)
	}
	if [4]byte(magic) == [4]byte{0x0a, 0x0d, 0x0d, 0x0a} {
		// Mixed link types: frames of a non-Ethernet interface are read
		// and counted (not ethernet); pcapgo's default skips them unseen.
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("read pcapng header: %w: %w", ErrCapture, err)
		}
		return &capture{ng: ng}, nil
	}
	r, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("read pcap header: %w: %w", ErrCapture, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return nil, fmt.Errorf("%w: link type %v, want Ethernet", ErrCapture, r.LinkType())
	}
	return &capture{pcap: r}, nil
}

func (c *capture) next() ([]byte, gopacket.CaptureInfo, error) {
	if c.ng != nil {
		return c.ng.ReadPacketData()
	}
	return c.pcap.ReadPacketData()
}

// ethernet reports whether the frame read last is an Ethernet frame.
func (c *capture) ethernet(ci gopacket.CaptureInfo) bool {
	if c.ng == nil {
		return true // checked at open
	}
	intf, err := c.ng.Interface(ci.InterfaceIndex)
	return err == nil && intf.LinkType == layers.LinkTypeEthernet
}

// newWriter starts a pcapng file with one Ethernet interface per port and
// no host information (OS, hardware), so that output is the same on every
// machine.
func newWriter(out io.Writer, names []string) (*pcapgo.NgWriter, error) {
	intf := func(name string) pcapgo.NgInterface {
		return pcapgo.NgInterface{Name: name, LinkType: layers.LinkTypeEthernet, TimestampResolution: 9}
	}
	w, err := pcapgo.NewNgWriterInterface(out, intf(names[0]), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{Application: "pdrelay replay"},
	})
	if err != nil {
		return nil, err
	}
	for _, n := range names[1:] {
		if _, err := w.AddInterface(intf(n)); err != nil {
			return nil, err
		}
	}
	return w, nil
}

package cpload

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteWatch records when each route of one protocol appears in a
// namespace's IPv6 routing table, from the kernel's route notifications
// (RTNLGRP_IPV6_ROUTE). A route is usable by the kernel's forwarding from
// the moment the kernel sends its notification, so the time RouteWatch
// reads one is an upper bound on when the route became active: it adds
// the notification's trip through the netlink socket and this process's
// scheduling.
type RouteWatch struct {
	mu      sync.Mutex
	added   map[netip.Prefix]time.Time
	removed int
	errs    []error
	done    chan struct{}
	stopped chan struct{}
}

// WatchRoutes starts watching the routes of protocol proto in namespace
// ns. Stop ends it.
func WatchRoutes(ns string, proto int) (*RouteWatch, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("watch routes: netns %s: %w", ns, err)
	}
	defer h.Close()
	w := &RouteWatch{added: make(map[netip.Prefix]time.Time), done: make(chan struct{}), stopped: make(chan struct{})}
	ch := make(chan netlink.RouteUpdate, 1<<16)
	err = netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{
		Namespace: &h,
		// A burst of a million routes must not overflow the socket: a
		// lost notification is a route never timed (counted by Missing).
		ReceiveBufferSize: 256 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			w.errs = append(w.errs, err)
			w.mu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watch routes in %s: %w", ns, err)
	}
	go func() {
		defer close(w.stopped)
		for u := range ch {
			now := time.Now()
			if int(u.Route.Protocol) != proto || u.Route.Dst == nil || u.Route.Family != unix.AF_INET6 {
				continue
			}
			a, ok := netip.AddrFromSlice(u.Route.Dst.IP)
			if !ok {
				continue
			}
			bits, _ := u.Route.Dst.Mask.Size()
			p := netip.PrefixFrom(a, bits)
			w.mu.Lock()
			switch u.Type {
			case unix.RTM_NEWROUTE:
				if _, seen := w.added[p]; !seen {
					w.added[p] = now
				}
			case unix.RTM_DELROUTE:
				w.removed++
			}
			w.mu.Unlock()
		}
	}()
	return w, nil
}

// Stop ends the watch.
func (w *RouteWatch) Stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// Added returns when route p was first seen, if it was.
func (w *RouteWatch) Added(p netip.Prefix) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.added[p]
	return t, ok
}

// Counts returns how many routes were seen added and removed, and the
// errors the subscription reported (ENOBUFS: notifications lost).
func (w *RouteWatch) Counts() (added, removed int, errs []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.added), w.removed, append([]error(nil), w.errs...)
}

// Metrics scrapes a Prometheus text endpoint reachable only inside a
// namespace.
type Metrics struct {
	URL    string
	client *http.Client
}

// NewMetrics returns a scraper of http://addr/metrics; dial opens the
// connection (inside the namespace).
func NewMetrics(addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Metrics {
	return &Metrics{
		URL:    "http://" + addr + "/metrics",
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: false}},
	}
}

// Sample is one scrape: every series' value by its name and labels as
// the endpoint wrote them ("name{a=\"b\"}").
type Sample struct {
	At     time.Time
	Series map[string]float64
}

// Scrape reads the endpoint once.
func (m *Metrics) Scrape() (Sample, error) {
	resp, err := m.client.Get(m.URL)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", m.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return Sample{}, fmt.Errorf("scrape %s: %s", m.URL, resp.Status)
	}
	return parseMetrics(resp.Body, time.Now())
}

// parseMetrics reads the Prometheus text format: comments are skipped,
// each other line is a series and its value (a timestamp after it is
// ignored).
func parseMetrics(r io.Reader, at time.Time) (Sample, error) {
	s := Sample{At: at, Series: make(map[string]float64)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the last space outside the labels' braces.
		end := strings.LastIndexByte(line, '}')
		rest := line[end+1:]
		name := line[:end+1]
		if end < 0 {
			name, rest, _ = strings.Cut(line, " ")
			rest = " " + rest
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return Sample{}, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return Sample{}, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s.Series[name] = v
	}
	return s, sc.Err()
}

// Sum adds the series of metric name whose labels contain every one of
// match (each `key="value"`).
func (s Sample) Sum(name string, match ...string) float64 {
	var t float64
	for k, v := range s.Series {
		n, labels, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, m := range match {
			if !strings.Contains(labels, m) {
				ok = false
				break
			}
		}
		if ok {
			t += v
		}
	}
	return t
}

// Bucket is one bucket of a Prometheus histogram: the observations at
// most LE.
type Bucket struct {
	LE    float64
	Count float64
}

// HistogramDelta returns histogram name's buckets in b less those in a
// (the observations made between the two scrapes), cumulative, by
// increasing bound; +Inf is the last.
func HistogramDelta(a, b Sample, name string) []Bucket {
	var bs []Bucket
	for k, v := range b.Series {
		n, labels, ok := strings.Cut(k, "{")
		if !ok || n != name+"_bucket" {
			continue
		}
		_, le, ok := strings.Cut(labels, `le="`)
		if !ok {
			continue
		}
		le, _, _ = strings.Cut(le, `"`)
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		bs = append(bs, Bucket{LE: bound, Count: v - a.Series[k]})
	}
	slices.SortFunc(bs, func(x, y Bucket) int { return cmp.Compare(x.LE, y.LE) })
	return bs
}

// QuantileBound returns the bound of the first bucket holding at least
// the q-quantile of the observations: the quantile is at most that (the
// bucket's bound, not an interpolation). It is NaN with no observations.
func QuantileBound(bs []Bucket, q float64) float64 {
	if len(bs) == 0 || bs[len(bs)-1].Count == 0 {
		return math.NaN()
	}
	want := q * bs[len(bs)-1].Count
	for _, b := range bs {
		if b.Count >= want {
			return b.LE
		}
	}
	return math.Inf(1)
}

// Within returns the share of the observations at most le, which must be
// one of the buckets' bounds (NaN otherwise, or with no observations).
func Within(bs []Bucket, le float64) float64 {
	if len(bs) == 0 || bs[len(bs)-1].Count == 0 {
		return math.NaN()
	}
	for _, b := range bs {
		if b.LE == le {
			return b.Count / bs[len(bs)-1].Count
		}
	}
	return math.NaN()
}

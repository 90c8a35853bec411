package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/release"
)

// Backend is what the server needs of the binding table;
// *binding.Manager satisfies it.
type Backend interface {
	List(ctx context.Context) ([]binding.Binding, error)
	Clear(ctx context.Context, f binding.Filter) ([]binding.Binding, error)
}

var _ Backend = (*binding.Manager)(nil)

// Releaser asks the server to release bindings on the clients' behalf
// (relay-initiated release; *release.Releaser is one). Release reports per
// binding whether the server released it (Success or NoBinding), and
// clears those it released; the others stay until they expire. An error
// means nothing was sent (release.ErrModeOff, release.ErrOperatorOff).
type Releaser interface {
	Release(ctx context.Context, bs []binding.Binding) ([]release.Result, error)
}

// Server serves the operator API over HTTP. Set its fields before Serve;
// it is then safe for concurrent use.
type Server struct {
	backend Backend
	log     *slog.Logger
	mux     *http.ServeMux
	// Releaser serves `clear --release`. NewServer sets it when the
	// backend is also a Releaser; when nil, such requests are refused
	// (501) and nothing is cleared.
	Releaser Releaser
	// Now is the clock remaining lifetimes are counted from.
	Now func() time.Time
	// Stats serves GET /v1/stats; nil when the forwarding plane is off.
	Stats StatsSource
	// Recoverer serves POST /v1/recover and GET /v1/leasequery (Bulk
	// Leasequery, recover.go); nil when leasequery.servers is empty.
	Recoverer Recoverer
	// Reloader serves POST /v1/reload (`pdrelay reload`); nil: refused
	// (501).
	Reloader Reloader
	// BGP serves GET /v1/bgp (bgp.go); nil when the config has no bgp key.
	BGP BGPSource
}

// maxBody bounds a request body.
const maxBody = 64 << 10

// NewServer returns a server for b. log may be nil.
func NewServer(b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{backend: b, log: log, mux: http.NewServeMux(), Now: time.Now}
	if r, ok := b.(Releaser); ok {
		s.Releaser = r
	}
	s.mux.HandleFunc("GET /v1/bindings", s.bindings)
	s.mux.HandleFunc("POST /v1/clear", s.clear)
	s.mux.HandleFunc("GET /v1/stats", s.stats)
	s.mux.HandleFunc("POST /v1/recover", s.recover)
	s.mux.HandleFunc("GET /v1/leasequery", s.leasequeryStatus)
	s.mux.HandleFunc("POST /v1/reload", s.reload)
	s.mux.HandleFunc("GET /v1/bgp", s.bgp)
	return s
}

// ServeHTTP serves one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve listens on a unix socket at socketPath (see Listen) and serves the
// API until ctx is done. It then stops, removes the socket and returns
// nil.
func (s *Server) Serve(ctx context.Context, socketPath string) error {
	ln, err := Listen(socketPath)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves the API on ln until ctx is done, then closes ln
// and returns nil; it returns an error if ln fails.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("operator api listening", "socket", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		ln.Close()
		return fmt.Errorf("serve operator api: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close()
	}
	<-errc
	ln.Close()
	return nil
}

func (s *Server) bindings(w http.ResponseWriter, r *http.Request) {
	bs, err := s.backend.List(r.Context())
	if err != nil {
		s.fail(w, http.StatusServiceUnavailable, fmt.Errorf("list bindings: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, s.toJSON(bs))
}

func (s *Server) clear(w http.ResponseWriter, r *http.Request) {
	var req ClearRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, http.StatusBadRequest, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	f, err := req.Filter()
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	ctx := r.Context()
	if req.Release {
		s.clearRelease(w, ctx, req, f)
		return
	}
	cleared, err := s.backend.Clear(ctx, f)
	if err != nil {
		s.fail(w, http.StatusServiceUnavailable, fmt.Errorf("clear bindings: %w", err))
		return
	}
	s.log.Info("operator cleared bindings", "prefix", req.Prefix, "client", req.Client,
		"interface", req.Interface, "all", req.All, "release", req.Release, "count", len(cleared))
	writeJSON(w, http.StatusOK, ClearResponse{Cleared: s.toJSON(cleared), Count: len(cleared)})
}

// clearRelease serves clear with release: the selected bindings are
// released at the server first; those it released are cleared (by the
// Releaser), the others are kept and reported, and the request succeeds
// either way. A release refused by the config clears nothing (501).
func (s *Server) clearRelease(w http.ResponseWriter, ctx context.Context, req ClearRequest, f binding.Filter) {
	if s.Releaser == nil {
		s.fail(w, http.StatusNotImplemented, errors.New("release is not configured (release.mode is off); nothing was cleared"))
		return
	}
	all, err := s.backend.List(ctx)
	if err != nil {
		s.fail(w, http.StatusServiceUnavailable, fmt.Errorf("list bindings: %w", err))
		return
	}
	var victims []binding.Binding
	for i := range all {
		if f.Match(&all[i]) {
			victims = append(victims, all[i])
		}
	}
	resp := ClearResponse{Cleared: []BindingJSON{}}
	if len(victims) > 0 {
		results, err := s.Releaser.Release(ctx, victims)
		switch {
		case errors.Is(err, release.ErrModeOff) || errors.Is(err, release.ErrOperatorOff):
			s.fail(w, http.StatusNotImplemented, fmt.Errorf("%w; nothing was cleared (clear without --release to clear locally only)", err))
			return
		case err != nil:
			s.fail(w, http.StatusBadGateway, fmt.Errorf("release %d bindings: %w; nothing was cleared", len(victims), err))
			return
		}
		now := s.Now()
		for i := range results {
			res := &results[i]
			if res.Released() {
				resp.Cleared = append(resp.Cleared, NewBindingJSON(&res.Binding, now))
				continue
			}
			resp.NotReleased = append(resp.NotReleased, NotReleasedJSON{NewBindingJSON(&res.Binding, now), res.Reason()})
		}
	}
	resp.Count = len(resp.Cleared)
	s.log.Info("operator cleared bindings", "prefix", req.Prefix, "client", req.Client,
		"interface", req.Interface, "all", req.All, "release", true, "count", resp.Count,
		"not_released", len(resp.NotReleased))
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) toJSON(bs []binding.Binding) []BindingJSON {
	now := s.Now()
	out := make([]BindingJSON, len(bs))
	for i := range bs {
		out[i] = NewBindingJSON(&bs[i], now)
	}
	return out
}

func (s *Server) fail(w http.ResponseWriter, code int, err error) {
	level := slog.LevelWarn
	if code == http.StatusBadRequest {
		level = slog.LevelDebug // the CLI checks requests; only scripts see this
	}
	s.log.Log(context.Background(), level, "operator api request failed", "status", code, "err", err)
	writeJSON(w, code, errorJSON{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing to do
}

// Package admin is the admin HTTP listener every medmesh daemon runs:
// /metrics, /healthz, /readyz, and /debug/pprof/ only when enabled. Each
// daemon has its own default port, so all three can share one host:
// coordinator 7403, sensor 7404, enforcer 7405.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The default admin addresses of the daemons.
const (
	DefaultAddr  = "127.0.0.1:7403" // coordinator
	SensorAddr   = "127.0.0.1:7404" // medmesh node
	EnforcerAddr = "127.0.0.1:7405" // medmesh enforcer
)

// Server serves the admin endpoints.
type Server struct {
	addr string
	log  *slog.Logger
	mux  *http.ServeMux
	http *http.Server

	mu   sync.Mutex
	lis  net.Listener
	done chan struct{}
	err  error
}

// New builds an admin server on addr ("" means DefaultAddr). g is gathered
// for /metrics; ready (nil means always ready) decides /readyz: 200 "ok",
// or 503 with the error's text.
func New(addr string, g prometheus.Gatherer, ready func() error, log *slog.Logger) *Server {
	if addr == "" {
		addr = DefaultAddr
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if g == nil {
		g = prometheus.NewRegistry()
	}
	if ready == nil {
		ready = func() error { return nil }
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slogPrinter{log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err.Error())
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return &Server{
		addr: addr,
		log:  log.With("component", "admin"),
		mux:  mux,
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
		},
	}
}

// Handle serves h at pattern (http.ServeMux syntax) next to /metrics.
// Call it before Start.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// EnablePprof serves /debug/pprof/ (the --pprof flag). Off by default:
// profiles expose internals and cost CPU. Call it before Start.
func (s *Server) EnablePprof() {
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "error", fmt.Sprint(v...)) }

// Start listens and serves in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis != nil {
		return errors.New("admin: already started")
	}
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	s.lis = lis
	s.done = make(chan struct{})
	s.log.Info("admin serving", "addr", lis.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.mu.Lock()
			s.err = fmt.Errorf("admin serve: %w", err)
			s.mu.Unlock()
		}
	}()
	return nil
}

// Addr is the bound address, nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Close shuts down gracefully, closing connections when ctx ends, and
// returns any serving error.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	started := s.lis != nil
	s.mu.Unlock()
	if !started {
		return nil
	}
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("admin shutdown: %w", err), s.http.Close())
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.err)
}

// Package grpcx is the one way medmesh builds gRPC servers and clients:
// mutual TLS from files (internal/pki), plaintext only on loopback,
// authorization of every call by one table (internal/authz), health,
// reflection, Prometheus metrics, slog logging, panic recovery, default
// deadlines, keepalive on both sides and message-size limits.
package grpcx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/pki"
)

// TLSFiles names the CA, certificate and key of a process: all three
// (mutual TLS) or none (plaintext, loopback only).
type TLSFiles = pki.Files

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addr is the listen address, e.g. "127.0.0.1:7400".
	Addr string
	// TLS empty means plaintext, allowed only when Addr is a loopback address.
	TLS TLSFiles
	// Authz maps every method the server serves to the roles allowed to
	// call it. Serve refuses to start while a registered method has no
	// row. On a plaintext (loopback) server every caller is authz.Local
	// and allowed.
	Authz authz.Table
	// MaxRecvMsgBytes limits a received message (default 4 MiB).
	MaxRecvMsgBytes int
	// MaxSendMsgBytes limits a sent message (default 16 MiB).
	MaxSendMsgBytes int
	// DefaultTimeout is the deadline given to unary calls that arrive
	// without one (default 30s). Streams get none: watches are long-lived.
	DefaultTimeout time.Duration
	// KeepaliveTime is how long the server waits on an idle connection
	// before it pings the client (default 30s).
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long it waits for the ping's answer before it
	// closes the connection (default 10s).
	KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the shortest ping interval a client may use;
	// clients pinging faster are disconnected (default 10s).
	KeepaliveMinTime time.Duration
}

// DefaultServerConfig returns the defaults, listening on 127.0.0.1:7400.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Addr:             "127.0.0.1:7400",
		MaxRecvMsgBytes:  4 << 20,
		MaxSendMsgBytes:  16 << 20,
		DefaultTimeout:   30 * time.Second,
		KeepaliveTime:    30 * time.Second,
		KeepaliveTimeout: 10 * time.Second,
		KeepaliveMinTime: 10 * time.Second,
	}
}

func (c *ServerConfig) validate() error {
	if c.Addr == "" {
		return errors.New("addr is empty")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	d := DefaultServerConfig()
	if c.MaxRecvMsgBytes <= 0 {
		c.MaxRecvMsgBytes = d.MaxRecvMsgBytes
	}
	if c.MaxSendMsgBytes <= 0 {
		c.MaxSendMsgBytes = d.MaxSendMsgBytes
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = d.DefaultTimeout
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = d.KeepaliveTime
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = d.KeepaliveTimeout
	}
	if c.KeepaliveMinTime <= 0 {
		c.KeepaliveMinTime = d.KeepaliveMinTime
	}
	return c.TLS.Validate()
}

// Server is a gRPC server with medmesh's interceptors, health and reflection.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	gs     *grpc.Server
	health *health.Server
	authz  *authz.Authorizer

	mu  sync.Mutex
	lis net.Listener
}

// NewServer builds a server. Register services on GRPC() before Serve. reg
// may be nil (no metrics).
func NewServer(cfg ServerConfig, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("grpc server config: %w", err)
	}
	var creds credentials.TransportCredentials
	if cfg.TLS.Enabled() {
		tc, err := pki.ServerConfig(cfg.TLS, pki.ServerOptions{})
		if err != nil {
			return nil, fmt.Errorf("grpc server %s: %w", cfg.Addr, err)
		}
		creds = credentials.NewTLS(tc)
	} else {
		loop, err := isLoopback(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("grpc server: %w", err)
		}
		if !loop {
			return nil, fmt.Errorf("grpc server %s: plaintext is allowed only on a loopback address; configure TLS", cfg.Addr)
		}
		log.Warn("grpc server without TLS: loopback only, every local caller may do everything", "addr", cfg.Addr)
		creds = insecure.NewCredentials()
	}
	m, err := newServerMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("grpc server metrics: %w", err)
	}
	log = log.With("component", "grpc")
	az := authz.New(cfg.Authz, !cfg.TLS.Enabled())
	gs := grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveTime,
			Timeout: cfg.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		// Outermost first: metrics and logging see the code recovery produced.
		grpc.ChainUnaryInterceptor(
			m.unary,
			logUnary(log),
			az.Unary,
			deadlineUnary(cfg.DefaultTimeout),
			recoverUnary(log),
		),
		grpc.ChainStreamInterceptor(
			m.stream,
			logStream(log),
			az.Stream,
			recoverStream(log),
		),
	)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return &Server{cfg: cfg, log: log, gs: gs, health: hs, authz: az}, nil
}

// BuiltinMethods are the rows for what every Server registers itself:
// health checks and reflection, open to every authenticated identity.
func BuiltinMethods() authz.Table {
	all := []pki.Role{authz.Anyone}
	return authz.Table{
		"/grpc.health.v1.Health/Check":                                   all,
		"/grpc.health.v1.Health/List":                                    all,
		"/grpc.health.v1.Health/Watch":                                   all,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      all,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": all,
	}
}

// GRPC returns the underlying server to register services on.
func (s *Server) GRPC() *grpc.Server { return s.gs }

// SetServing sets the health status of service ("" is the whole server).
func (s *Server) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(service, st)
}

// Listen binds cfg.Addr without serving yet, so Addr is known (":0" works).
// Serve calls it when needed.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis != nil {
		return nil
	}
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	s.lis = lis
	return nil
}

// Serve listens on cfg.Addr (unless Listen was called) and serves until
// Stop. It returns nil after Stop.
func (s *Server) Serve() error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	lis := s.lis
	s.mu.Unlock()
	return s.ServeListener(lis)
}

// ServeListener serves on lis until Stop. It refuses to serve while a
// registered method has no row in the authorization table.
func (s *Server) ServeListener(lis net.Listener) error {
	if missing := s.cfg.Authz.Missing(s.gs.GetServiceInfo()); len(missing) > 0 {
		return fmt.Errorf("grpc serve: methods without an authorization row (denied to all, refusing to start): %s", strings.Join(missing, ", "))
	}
	s.mu.Lock()
	s.lis = lis
	s.mu.Unlock()
	s.log.Info("grpc serving", "addr", lis.Addr().String(), "tls", s.cfg.TLS.Enabled(), "mtls", s.cfg.TLS.CAFile != "")
	if err := s.gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// Addr is the bound address, nil before Listen or Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Stop marks every service NOT_SERVING, then stops gracefully, letting
// running calls finish, and stops hard when ctx ends.
func (s *Server) Stop(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("grpc graceful stop timed out; closing connections")
		s.gs.Stop()
		<-done
	}
	// A server stopped before Serve never closes its listener.
	s.mu.Lock()
	if s.lis != nil {
		_ = s.lis.Close()
	}
	s.mu.Unlock()
}

// isLoopback reports whether every address host:port can mean is loopback.
// An empty host (all interfaces) is not loopback.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// AllLoopback reports whether every address (host:port) is a loopback
// address: the one case where a daemon may run without TLS.
func AllLoopback(addrs ...string) bool {
	for _, a := range addrs {
		if loop, err := isLoopback(a); err != nil || !loop {
			return false
		}
	}
	return true
}

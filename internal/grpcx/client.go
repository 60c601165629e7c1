package grpcx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/medmesh/medmesh/internal/pki"
)

// ClientConfig configures Dial.
type ClientConfig struct {
	// TLS empty means plaintext (warned about unless every target is
	// loopback; daemons refuse it off loopback before they dial). With TLS,
	// the server must present a coordinator certificate from the CA.
	TLS TLSFiles
	// DialTimeout bounds each connection attempt (default 5s). Dial itself
	// does not block: connection errors surface on the first call.
	DialTimeout time.Duration
	// MaxRecvMsgBytes limits a received message (default 16 MiB, the
	// server's default send limit).
	MaxRecvMsgBytes int
	// KeepaliveTime is the idle time before the client pings the server
	// (default 30s; must not be below the server's KeepaliveMinTime).
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long the client waits for the ping's answer
	// (default 10s).
	KeepaliveTimeout time.Duration
}

// DefaultClientConfig returns the defaults.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{
		DialTimeout:      5 * time.Second,
		MaxRecvMsgBytes:  16 << 20,
		KeepaliveTime:    30 * time.Second,
		KeepaliveTimeout: 10 * time.Second,
	}
}

func (c *ClientConfig) validate() error {
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	d := DefaultClientConfig()
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.MaxRecvMsgBytes <= 0 {
		c.MaxRecvMsgBytes = d.MaxRecvMsgBytes
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = d.KeepaliveTime
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = d.KeepaliveTimeout
	}
	return nil
}

// serviceConfig picks the first reachable address in order and retries
// calls that fail UNAVAILABLE (no connection, no leader yet) a few times,
// resending the same message. The coordinators answer UNAVAILABLE only for
// a write that had no effect, but gRPC also retries a call whose
// connection broke before any answer arrived, which the server may have
// carried out: only a write that carries a request id is applied at most
// once however often it is resent (the CLI's writes all do; coordinators
// forward writes with gRPC's retry buffer off, so a forward is sent once).
const serviceConfig = `{
  "loadBalancingConfig": [{"pick_first": {}}],
  "methodConfig": [{
    "name": [{}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

var resolverSeq atomic.Uint64

// SplitTargets splits "a:7400,b:7400" into its addresses, trimmed, empty
// ones dropped.
func SplitTargets(target string) []string {
	var out []string
	for _, a := range strings.Split(target, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Dial returns a client connection to target, one address or a
// comma-separated list ("a:7400,b:7400,c:7400") tried in order (pick_first:
// the first reachable address serves every call; coordinators forward writes
// to their leader). It does not block; the connection is made on the first
// call. Calls failing UNAVAILABLE, a broken connection's included, are
// retried up to 3 times with the same message, so a server must return
// UNAVAILABLE only for a call that had no effect, and a write must carry a
// request id to be applied at most once.
func Dial(target string, cfg ClientConfig, log *slog.Logger) (*grpc.ClientConn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("grpc client config: %w", err)
	}
	addrs := SplitTargets(target)
	if len(addrs) == 0 {
		return nil, errors.New("grpc dial: empty target")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("grpc dial: address %q: %w", a, err)
		}
	}
	opts, err := dialOptions(cfg, log, addrs)
	if err != nil {
		return nil, fmt.Errorf("grpc dial %s: %w", target, err)
	}
	r := manual.NewBuilderWithScheme(fmt.Sprintf("medmesh%d", resolverSeq.Add(1)))
	st := resolver.State{}
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	conn, err := grpc.NewClient(r.Scheme()+":///"+strings.Join(addrs, ","),
		append(opts, grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(serviceConfig))...)
	if err != nil {
		return nil, fmt.Errorf("grpc dial %s: %w", target, err)
	}
	return conn, nil
}

// DialOptions are the options of Dial's connections without its resolver
// and retry policy: transport credentials (mutual TLS to a coordinator, or
// plaintext, warned about off loopback), message size, keepalive and
// connection backoff. Clients that keep one connection per coordinator
// and choose among them themselves (the sensor's reporter, the enforcer's
// watcher) build each with grpc.NewClient(addr, opts...).
func DialOptions(cfg ClientConfig, log *slog.Logger, targets ...string) ([]grpc.DialOption, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("grpc client config: %w", err)
	}
	return dialOptions(cfg, log, targets)
}

func dialOptions(cfg ClientConfig, log *slog.Logger, addrs []string) ([]grpc.DialOption, error) {
	var creds credentials.TransportCredentials
	if cfg.TLS.Enabled() {
		tc, err := pki.ClientConfig(cfg.TLS, pki.RoleCoordinator)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	} else {
		for _, a := range addrs {
			if loop, _ := isLoopback(a); !loop {
				log.Warn("grpc client without TLS to a non-loopback address", "addr", a)
			}
		}
		creds = insecure.NewCredentials()
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveTime,
			Timeout:             cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		}),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}),
	}, nil
}

package coordinator

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/coordinator/internal/api"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

// Config configures one coordinator.
type Config struct {
	// ID is this coordinator's Raft server id. Required.
	ID string
	// DataDir holds the Raft log, stable store and snapshots. Required unless
	// Dev, where an empty DataDir means a temporary directory removed on
	// Close.
	DataDir string
	// APIAddr is the host:port of this coordinator's gRPC API, as other
	// coordinators reach it (writes are forwarded there).
	APIAddr string
	// RaftAddr is the host:port the Raft transport listens on and
	// advertises.
	RaftAddr string
	// TLS is this coordinator's identity: a coordinator certificate of the
	// campus CA. With it, the Raft transport is mutual TLS that admits only
	// coordinators, and the default Dial presents it to other coordinators.
	// Empty means plaintext, allowed only in dev mode or when the API, Raft
	// and join addresses are all loopback.
	TLS pki.Files
	// Dev runs a single node that bootstraps itself.
	Dev bool
	// BootstrapExpect is the number of coordinators that form a new cluster.
	// With 2 or more, the node with the lowest id among the BootstrapExpect
	// nodes found through Join bootstraps all of them.
	BootstrapExpect int
	// Join lists API addresses of other coordinators, tried until they
	// answer.
	Join []string

	// Raft timing. Tests shrink these to tens of milliseconds.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how often an idle leader sends each follower an
	// AppendEntries with only its commit index. The commit notices tell
	// followers of a commit at once; this is their fallback when a notice
	// is lost, and an idle cluster's background load.
	CommitTimeout     time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// ApplyTimeout bounds a Raft apply without a caller deadline.
	ApplyTimeout time.Duration
	// JoinInterval is the period of the join and registration loops, and the
	// first backoff of the bootstrap handshake.
	JoinInterval time.Duration
	// RaftLogLevel is hashicorp/raft's log level ("error", "warn", "info").
	RaftLogLevel string

	// IntelKey, when set, is the ed25519 public key every intelligence
	// bundle must be signed with: unsigned bundles are refused.
	IntelKey ed25519.PublicKey
	// IntelMaxAge is the age past which IntelStatus marks a source stale
	// (default 30 days). Stale data is still used.
	IntelMaxAge time.Duration
	// ComplianceTick is how often the leader checks whether the day's
	// compliance trend point is recorded and whether a risk exception's
	// expiry passed (default 1 minute).
	ComplianceTick time.Duration
	// TrendRefresh is how old the day's trend point may get before the
	// leader records it again (default 1 hour): one point a day, its
	// latest state.
	TrendRefresh time.Duration
	// Clock is the leader's clock for the compliance trend and exception
	// expiry; nil is time.Now. Tests compress days with it.
	Clock func() time.Time

	// SinkStuckAfter is how long an outbound sink fails before it counts
	// as stuck and raises a sink_stuck alert (default 5 minutes);
	// SinkCommitInterval how often the leader commits the sinks'
	// delivered positions (default 500ms).
	// SinkBackoffMax caps the backoff between delivery attempts (default
	// 30s).
	SinkStuckAfter     time.Duration
	SinkCommitInterval time.Duration
	SinkBackoffMax     time.Duration
	// Version is medmesh's version, in the events sinks send.
	Version string

	// API tunes the gRPC services.
	API api.Config
	// Dial opens a client connection to another coordinator's API (writes
	// forwarded to the leader, join handshake). nil means grpcx.Dial with
	// TLS (mutual TLS with the coordinator's own certificate, or plaintext
	// when TLS is empty, which validate allows only on loopback).
	Dial func(addr string) (*grpc.ClientConn, error)
}

// DefaultConfig returns production defaults on the standard ports.
func DefaultConfig() Config {
	return Config{
		APIAddr:            "127.0.0.1:7400",
		RaftAddr:           "127.0.0.1:7401",
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		ApplyTimeout:       10 * time.Second,
		JoinInterval:       500 * time.Millisecond,
		RaftLogLevel:       "warn",
		IntelMaxAge:        30 * 24 * time.Hour,
		ComplianceTick:     time.Minute,
		TrendRefresh:       time.Hour,
		API:                api.DefaultConfig(),
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("id is required"))
	}
	if c.DataDir == "" && !c.Dev {
		errs = append(errs, errors.New("data dir is required (or dev mode)"))
	}
	for _, a := range []struct{ name, v string }{{"api addr", c.APIAddr}, {"raft addr", c.RaftAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.name, a.v, err))
		}
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, errors.New("bootstrap expect must not be negative"))
	}
	if c.Dev && (c.BootstrapExpect > 1 || len(c.Join) > 0) {
		errs = append(errs, errors.New("dev mode is a single node: no bootstrap expect or join"))
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 {
		errs = append(errs, errors.New("bootstrap expect needs join addresses"))
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 || c.CommitTimeout <= 0 ||
		c.ApplyTimeout <= 0 || c.JoinInterval <= 0 || c.SnapshotInterval <= 0 {
		errs = append(errs, errors.New("timeouts and intervals must be positive"))
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, errors.New("leader lease timeout must not exceed the heartbeat timeout"))
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	} else if !c.TLS.Enabled() && !c.Dev && !grpcx.AllLoopback(append([]string{c.APIAddr, c.RaftAddr}, c.Join...)...) {
		errs = append(errs, errors.New("plaintext (no TLS files) is allowed only in dev mode or when the api, raft and join addresses are all loopback"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("coordinator config: %w", err)
	}
	return nil
}

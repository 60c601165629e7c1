// Package coordinator is medmesh's control plane: a Raft-replicated store of
// devices, baselines, policies, alerts, decisions and audit records
// (hashicorp/raft over hashicorp/raft-wal, synced on every append,
// migrating a raft-boltdb data directory once on start), and the gRPC API
// v1 served on top of it by every replica.
package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/coordinator/internal/api"
	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/fhirapi"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/raftlog"
	"github.com/medmesh/medmesh/coordinator/internal/raftnet"
	"github.com/medmesh/medmesh/coordinator/internal/sink"
	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

// Coordinator is one Raft replica with its API services.
type Coordinator struct {
	cfg     Config
	log     *slog.Logger
	tempDir string

	fsm       *fsm.FSM
	audit     *auditlog.Store
	raft      *raft.Raft
	store     *raftlog.Store
	snaps     *raft.FileSnapshotStore
	layer     *raftnet.StreamLayer
	transport *raft.NetworkTransport
	api       *api.Server
	intel     *intelStore
	sinks     *sink.Runner
	metrics   *metrics

	notify      chan bool
	leaderGen   atomic.Uint64 // incremented on every leadership change
	leaderReady atomic.Uint64 // generation whose post-election barrier is applied (0 = none)

	notices *raftnet.CommitNotices // tells followers of commits at once

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New opens the data directory and starts the Raft node (not yet
// bootstrapped or joined: Start does that).
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Coordinator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, log: log.With("coordinator", cfg.ID), fsm: fsm.New(), notify: make(chan bool, 64), conns: map[string]*grpc.ClientConn{}}
	if c.cfg.Dial == nil {
		cc := grpcx.DefaultClientConfig()
		cc.TLS = cfg.TLS // our own certificate is our client identity
		c.cfg.Dial = func(addr string) (*grpc.ClientConn, error) { return grpcx.Dial(addr, cc, c.log) }
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.open(reg); err != nil {
		return nil, errors.Join(err, c.shutdown(false))
	}
	return c, nil
}

func (c *Coordinator) open(reg prometheus.Registerer) error {
	cfg := c.cfg
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "medmesh-dev-")
		if err != nil {
			return fmt.Errorf("dev data dir: %w", err)
		}
		c.tempDir, cfg.DataDir, c.cfg.DataDir = dir, dir, dir
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	hl := hclog.FromStandardLogger(log.New(&slogWriter{c.log}, "", 0), &hclog.LoggerOptions{
		Name: "raft", Level: hclog.LevelFromString(cfg.RaftLogLevel),
	})
	// raft-wal syncs every append (fdatasync); a raft-boltdb store left by
	// an older version is migrated into it first (internal/raftlog).
	store, err := raftlog.Open(c.ctx, cfg.DataDir, hl, c.log)
	if err != nil {
		return fmt.Errorf("open raft store: %w", err)
	}
	c.store = store
	// The audit trail on disk: the FSM writes each record as it applies
	// it (auditlog; `medmesh audit verify --data-dir` checks it).
	audit, err := auditlog.Open(filepath.Join(cfg.DataDir, "audit"), auditlog.DefaultOptions())
	if err != nil {
		return err
	}
	c.audit = audit
	c.fsm.SetAuditStore(audit)
	// Bundles and SBOMs, kept out of Raft (intel.go).
	if c.intel, err = newIntelStore(cfg.DataDir, cfg.IntelKey); err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl)
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	c.snaps = snaps
	var tl *raftnet.TLS
	if cfg.TLS.Enabled() {
		if tl, err = raftnet.NewTLS(cfg.TLS); err != nil {
			return err
		}
	}
	layer, err := raftnet.NewStreamLayer(cfg.RaftAddr, tl, c.log)
	if err != nil {
		return fmt.Errorf("listen raft on %s: %w", cfg.RaftAddr, err)
	}
	c.layer = layer
	c.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 4, Timeout: 5 * time.Second, Logger: hl,
	})
	c.notices = raftnet.NewCommitNotices(c.transport, c.spawn)
	logs, err := raft.NewLogCache(1024, c.notices.LogStore(store))
	if err != nil {
		return fmt.Errorf("log cache: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	rc.SnapshotInterval = cfg.SnapshotInterval
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	// Unbuffered apply channel: the leader still groups concurrent applies
	// into one disk write, and no future is stranded in a buffer at shutdown.
	rc.BatchApplyCh = false
	rc.NotifyCh = c.notify
	rc.Logger = hl
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}
	r, err := raft.NewRaft(rc, c.notices.FSM(c.fsm), logs, store, snaps, c.notices.Transport(c.transport))
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	c.raft = r
	c.notices.Start(r, rc.LocalID)
	c.sinks = c.newSinkRunner()
	c.api, err = api.New(c, cfg.API, c.log)
	if err != nil {
		return err
	}
	c.metrics, err = newMetrics(reg, c)
	if err != nil {
		return err
	}
	c.wg.Add(1)
	go c.watchLeadership()
	c.wg.Add(1)
	go c.runAssessor()
	c.wg.Add(1)
	go c.runComplianceClock()
	c.wg.Add(1)
	go c.runSinks()
	return nil
}

// Register registers ClusterService, InventoryService, PolicyService,
// DecisionService, AlertService and SensorService on s.
func (c *Coordinator) Register(s *grpc.Server) { c.api.Register(s) }

// AuthzTable is the authorization table of the services Register adds.
func AuthzTable() authz.Table { return api.AuthzTable() }

// LoopbackServerOptions are the options of a plaintext gRPC server on a
// loopback address built without grpcx: the authorization interceptor with
// every caller authz.Local, so handlers know who called (the audit trail
// says local/<addr>). Handlers refuse writes they cannot attribute, so a
// server without an interceptor serves no writes at all.
func LoopbackServerOptions() []grpc.ServerOption {
	az := authz.New(AuthzTable(), true)
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(az.Unary), grpc.ChainStreamInterceptor(az.Stream)}
}

// ServiceNames lists the registered services (for health checks).
func ServiceNames() []string { return api.ServiceNames() }

// Start bootstraps or joins the cluster in the background: --dev and a
// single expected node bootstrap themselves; --bootstrap-expect N runs the
// join handshake; a node with existing Raft state simply rejoins.
func (c *Coordinator) Start(ctx context.Context) error {
	existing, err := raft.HasExistingState(c.store, c.store, c.snaps)
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	switch {
	case existing:
		c.log.Info("rejoining with existing raft state")
	case c.cfg.Dev || (c.cfg.BootstrapExpect <= 1 && len(c.cfg.Join) == 0):
		f := c.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: raft.ServerID(c.cfg.ID), Address: raft.ServerAddress(c.layer.Addr().String()), Suffrage: raft.Voter,
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap: %w", err)
		}
	case c.cfg.BootstrapExpect > 1:
		c.wg.Add(1)
		go c.bootstrapLoop()
	default:
		c.wg.Add(1)
		go c.joinLoop()
	}
	c.wg.Add(1)
	go c.registerLoop()
	return nil
}

// Ready returns nil once the node knows a leader (and, on the leader, once
// its post-election barrier is applied).
func (c *Coordinator) Ready() error {
	_, id := c.raft.LeaderWithID()
	if id == "" {
		return errors.New("no raft leader known")
	}
	if string(id) == c.cfg.ID && c.leaderReady.Load() != c.leaderGen.Load() {
		return errors.New("leader is applying its post-election barrier")
	}
	if _, ok := c.fsm.Servers()[string(id)]; !ok {
		return errors.New("leader has not registered its API address yet")
	}
	return nil
}

// Close shuts the coordinator down gracefully: a leader first transfers
// leadership to another voter.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.shutdown(true) })
	return c.closeErr
}

func (c *Coordinator) shutdown(transfer bool) error {
	c.cancel()
	var errs []error
	if c.raft != nil && transfer && c.raft.State() == raft.Leader && c.voters() > 1 {
		c.transferLeadership()
	}
	if c.api != nil {
		c.api.Close()
	}
	if c.raft != nil {
		// Waits for Raft's goroutines, then closes the transport.
		errs = append(errs, c.raft.Shutdown().Error())
	}
	// Every goroutine of c waits on c.ctx or on a Raft future through
	// await, so this returns even if Raft stranded a future at shutdown.
	c.wg.Wait()
	if c.transport != nil {
		errs = append(errs, c.transport.Close()) // idempotent; New failing before Raft
	}
	if c.store != nil {
		errs = append(errs, c.store.Close())
	}
	if c.audit != nil {
		errs = append(errs, c.audit.Close())
	}
	c.connMu.Lock()
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	c.connMu.Unlock()
	if c.metrics != nil {
		c.metrics.unregister()
	}
	if c.tempDir != "" {
		errs = append(errs, os.RemoveAll(c.tempDir))
	}
	return errors.Join(errs...)
}

// transferLeadership hands leadership to another voter before a graceful
// stop, waiting at most twice the election timeout: Raft itself gives up
// after one election timeout, and a stop must never hang on a peer that is
// stopping too.
func (c *Coordinator) transferLeadership() {
	f := c.raft.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTimer(2 * c.cfg.ElectionTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			c.log.Warn("leadership transfer on shutdown failed", "err", err)
		}
	case <-t.C:
		c.log.Warn("leadership transfer on shutdown timed out", "after", 2*c.cfg.ElectionTimeout)
	}
}

func (c *Coordinator) voters() int {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// slogWriter turns hashicorp's log lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	lvl := slog.LevelInfo
	switch {
	case strings.Contains(line, "[ERROR]"):
		lvl = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		lvl = slog.LevelWarn
	case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
		lvl = slog.LevelDebug
	}
	w.log.Log(context.Background(), lvl, line)
	return len(p), nil
}

// FHIRHandler serves the inventory read-only as FHIR R4 Device resources
// (GET /fhir/Device, /fhir/Device/{id}) to callers whose client
// certificate's role may read the inventory. Serve it with FHIRTLSConfig.
func (c *Coordinator) FHIRHandler() http.Handler { return fhirapi.New(c.api, api.AuthzTable()) }

// FHIRTLSConfig is the FHIR listener's TLS: this coordinator's certificate,
// a client certificate of the campus CA required.
func FHIRTLSConfig(f pki.Files) (*tls.Config, error) { return fhirapi.TLSConfig(f) }

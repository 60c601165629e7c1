// Package api implements the coordinator's gRPC services (medmesh.v1) on top
// of the replicated state: writes go through Raft on the leader (a follower
// forwards them), reads are linearizable unless the caller asks for a stale
// read, and watch streams are served by any replica from applied state.
package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/authz"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Sentinel errors of the serving replica's role.
var (
	// ErrNotLeader: this replica is not the leader.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader: no leader is known.
	ErrNoLeader = errors.New("no leader")
)

// forwardedKey marks a request forwarded by another coordinator, so it is
// never forwarded twice.
const forwardedKey = "x-medmesh-forwarded"

// probeKey marks a cluster-status probe between coordinators: answered
// locally, without fanning out.
const probeKey = "x-medmesh-probe"

// Backend is the Raft node the services run on.
type Backend interface {
	// ID is this coordinator's id.
	ID() string
	// FSM is the local replicated state.
	FSM() *fsm.FSM
	// Apply commits cmd through Raft. ErrNotLeader on a follower. A command
	// the FSM rejects returns its Result and Result.Err.
	Apply(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error)
	// Propose hands cmd to Raft without waiting; the function it returns
	// waits for the commit as Apply does. Commands proposed one after
	// another by one goroutine are committed in that order.
	Propose(ctx context.Context, cmd *fsmpb.Command) func() (*fsm.Result, error)
	// VerifyRead makes a linearizable read safe on the leader: the
	// post-election barrier is applied and leadership is confirmed.
	VerifyRead(ctx context.Context) error
	// IsLeader reports whether this replica is the leader.
	IsLeader() bool
	// LeaderConn is a client connection to the leader's API.
	LeaderConn() (*grpc.ClientConn, error)
	// LastContact is the time since the leader was last heard from (zero on
	// the leader).
	LastContact() time.Duration
	// ClusterStatus reports the Raft cluster; with fanout, it asks the other
	// coordinators for their own state.
	ClusterStatus(ctx context.Context, fanout bool) (*medmeshv1.GetClusterStatusResponse, error)
	// Join adds a coordinator (leader only).
	Join(ctx context.Context, id, raftAddr, apiAddr string, nonvoter bool) (uint64, error)
	// Remove removes a coordinator (leader only).
	Remove(ctx context.Context, id string) (uint64, error)
	// Transfer hands leadership to target ("" = any) (leader only).
	Transfer(ctx context.Context, target string) (string, error)
	// SaveSnapshot writes a backup archive of the state to w (leader only).
	SaveSnapshot(ctx context.Context, w io.Writer) (*medmeshv1.SnapshotSummary, error)
}

// Config tunes the services.
type Config struct {
	// WatchHeartbeat is how often a watch stream sends a heartbeat (the
	// applied index it has sent everything up to, and a resume token),
	// busy or idle: a watcher learns it is caught up only from heartbeats,
	// since a decision's applied index may be ahead of what was sent.
	WatchHeartbeat time.Duration
	// BatchMaxRecords bounds the sensor records coalesced into one Raft
	// entry; BatchMaxInflight the entries of sensor records proposed and
	// not yet committed (reports arriving meanwhile join the next entry).
	BatchMaxRecords  int
	BatchMaxInflight int
	// MaxRecordsPerReport bounds one ReportRequest.
	MaxRecordsPerReport int
	// MaxSeqJump bounds how far a sensor's seq may run ahead of the last one
	// accepted from it: a larger jump is refused, so a bad seq (2^64-1)
	// cannot make the coordinators skip the sensor's records from then on.
	// The default, 2^32, is far beyond what a sensor's spool (2^20 records)
	// can skip while it is cut off.
	MaxSeqJump uint64
}

// DefaultConfig returns the production settings.
func DefaultConfig() Config {
	return Config{
		WatchHeartbeat:      time.Second,
		BatchMaxRecords:     2048,
		BatchMaxInflight:    4,
		MaxRecordsPerReport: 4096,
		MaxSeqJump:          1 << 32,
	}
}

func (c *Config) validate() error {
	if c.MaxSeqJump == 0 {
		c.MaxSeqJump = DefaultConfig().MaxSeqJump
	}
	if c.WatchHeartbeat <= 0 || c.BatchMaxRecords <= 0 || c.BatchMaxInflight <= 0 || c.MaxRecordsPerReport <= 0 {
		return errors.New("api config: every limit must be positive")
	}
	return nil
}

// Server implements the eight medmesh.v1 services.
type Server struct {
	medmeshv1.UnimplementedClusterServiceServer
	medmeshv1.UnimplementedInventoryServiceServer
	medmeshv1.UnimplementedPolicyServiceServer
	medmeshv1.UnimplementedDecisionServiceServer
	medmeshv1.UnimplementedAlertServiceServer
	medmeshv1.UnimplementedSensorServiceServer
	medmeshv1.UnimplementedRuleServiceServer
	medmeshv1.UnimplementedIncidentServiceServer
	medmeshv1.UnimplementedRiskServiceServer
	medmeshv1.UnimplementedComplianceServiceServer
	medmeshv1.UnimplementedSinkServiceServer
	medmeshv1.UnimplementedAccountServiceServer
	medmeshv1.UnimplementedCampusServiceServer

	b       Backend
	cfg     Config
	log     *slog.Logger
	batch   *batcher
	members *memberTable
	// resolved holds the enforcers' reports of DNS-named peers.
	resolved *resolvedTable
	risk     RiskBackend // nil: RiskService is unimplemented
	// reports holds the compliance evaluations read in pages.
	reports *reportStore
	// wire holds decisions as encoded for WatchDecisions.
	wire *decisionWire
}

// New returns the services over b. Close stops the sensor batcher.
func New(b Backend, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{b: b, cfg: cfg, log: log, members: newMemberTable(), resolved: newResolvedTable(), reports: newReportStore(), wire: newDecisionWire()}
	s.risk, _ = b.(RiskBackend)
	s.batch = newBatcher(cfg.BatchMaxRecords, cfg.BatchMaxInflight, b.Propose)
	return s, nil
}

// Close stops the sensor batcher.
func (s *Server) Close() { s.batch.close() }

// Register registers the eight services on g.
func (s *Server) Register(g *grpc.Server) {
	medmeshv1.RegisterClusterServiceServer(g, s)
	medmeshv1.RegisterInventoryServiceServer(g, s)
	medmeshv1.RegisterPolicyServiceServer(g, s)
	medmeshv1.RegisterDecisionServiceServer(g, s)
	medmeshv1.RegisterAlertServiceServer(g, s)
	medmeshv1.RegisterSensorServiceServer(g, s)
	medmeshv1.RegisterRuleServiceServer(g, s)
	medmeshv1.RegisterIncidentServiceServer(g, s)
	medmeshv1.RegisterRiskServiceServer(g, s)
	medmeshv1.RegisterComplianceServiceServer(g, s)
	medmeshv1.RegisterSinkServiceServer(g, s)
	medmeshv1.RegisterAccountServiceServer(g, s)
	medmeshv1.RegisterCampusServiceServer(g, s)
}

// ServiceNames lists the registered services' full names (for health).
func ServiceNames() []string {
	return []string{
		medmeshv1.ClusterService_ServiceDesc.ServiceName,
		medmeshv1.InventoryService_ServiceDesc.ServiceName,
		medmeshv1.PolicyService_ServiceDesc.ServiceName,
		medmeshv1.DecisionService_ServiceDesc.ServiceName,
		medmeshv1.AlertService_ServiceDesc.ServiceName,
		medmeshv1.SensorService_ServiceDesc.ServiceName,
		medmeshv1.RuleService_ServiceDesc.ServiceName,
		medmeshv1.IncidentService_ServiceDesc.ServiceName,
		medmeshv1.RiskService_ServiceDesc.ServiceName,
		medmeshv1.ComplianceService_ServiceDesc.ServiceName,
		medmeshv1.SinkService_ServiceDesc.ServiceName,
		medmeshv1.AccountService_ServiceDesc.ServiceName,
		medmeshv1.CampusService_ServiceDesc.ServiceName,
	}
}

// toStatus maps errors to gRPC status codes. It is the one place where
// sentinel errors become codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var c codes.Code
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		c = codes.NotFound
	case errors.Is(err, fsm.ErrVersionMismatch):
		c = codes.Aborted
	case errors.Is(err, fsm.ErrFailedPrecondition):
		c = codes.FailedPrecondition
	case errors.Is(err, fsm.ErrInvalid):
		c = codes.InvalidArgument
	case errors.Is(err, fsm.ErrPermissionDenied):
		c = codes.PermissionDenied
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Rejected before the entry was appended: nothing happened, so
		// clients may retry (grpcx retries UNAVAILABLE).
		c = codes.Unavailable
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown),
		errors.Is(err, raft.ErrAbortedByRestore):
		// The entry may or may not commit: never UNAVAILABLE, which
		// clients retry, or one write could be applied twice.
		return status.Error(codes.Unknown, "outcome unknown: "+err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		c = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		c = codes.Canceled
	default:
		c = codes.Internal
	}
	return status.Error(c, err.Error())
}

func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, field+": "+format, args...)
}

// kind says how a method is routed.
type kind int

const (
	kindWrite kind = iota // leader only: forwarded by followers
	kindRead              // linearizable unless the request asks for a stale read
)

// route decides where a call runs. It returns done=true with the leader's
// answer when the call was forwarded; otherwise the caller serves it here
// (for reads, after the linearizability check).
func route[Resp proto.Message](ctx context.Context, s *Server, method string, k kind, req proto.Message, resp Resp) (Resp, bool, error) {
	if k == kindRead && readConsistency(req) == medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE {
		return resp, false, nil
	}
	if s.b.IsLeader() {
		if k == kindRead {
			if err := s.b.VerifyRead(ctx); err != nil {
				return resp, true, toStatus(err)
			}
		}
		return resp, false, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return resp, true, toStatus(ErrNotLeader)
	}
	conn, err := s.b.LeaderConn()
	if err != nil {
		return resp, true, toStatus(err)
	}
	// The leader audits and authorizes the original caller, believed
	// because this coordinator's certificate says coordinator.
	out := metadata.AppendToOutgoingContext(authz.ForwardContext(ctx), forwardedKey, s.b.ID())
	var opts []grpc.CallOption
	if k == kindWrite {
		opts = append(opts, sentOnce)
	}
	if err := conn.Invoke(out, method, req, resp, opts...); err != nil {
		return resp, true, forwardError(k, err)
	}
	return resp, true, nil
}

// sentOnce makes a forwarded write final once its request has left this
// coordinator. The connection's retry policy (grpcx) resends a call that
// failed UNAVAILABLE, and gRPC counts a connection that broke before any
// answer arrived as such: a leader that committed the write and crashed,
// or whose connection was reset, before answering would be handed the
// same write again (applied twice without a request id). With no retry
// buffer, gRPC retries only attempts that sent nothing.
var sentOnce = grpc.MaxRetryRPCBufferSize(0)

// forwardError keeps a forwarded write's failure from reading as retryable:
// a connection that broke after the request left may have carried a write
// the leader committed, so UNAVAILABLE becomes UNKNOWN ("outcome unknown")
// unless the leader was never reached or refused the write before
// proposing it. The forward was sent at most once (sentOnce): gRPC retried
// only attempts that sent nothing, so the last attempt's error tells.
func forwardError(k kind, err error) error {
	st, ok := status.FromError(err)
	if k != kindWrite || !ok || st.Code() != codes.Unavailable {
		return err
	}
	msg := st.Message()
	for _, safe := range []string{
		"while dialing",                           // never connected
		ErrNotLeader.Error(), ErrNoLeader.Error(), // refused by the peer before proposing
		raft.ErrNotLeader.Error(), raft.ErrEnqueueTimeout.Error(), raft.ErrLeadershipTransferInProgress.Error(),
	} {
		if strings.Contains(msg, safe) {
			return err
		}
	}
	return status.Error(codes.Unknown, "outcome unknown: forwarded write to the leader failed: "+st.Message())
}

// readConsistency reads the request's "consistency" field, if any.
func readConsistency(req proto.Message) medmeshv1.ReadConsistency {
	m := req.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("consistency")
	if fd == nil || fd.Kind() != protoreflect.EnumKind {
		return medmeshv1.ReadConsistency_READ_CONSISTENCY_UNSPECIFIED
	}
	return medmeshv1.ReadConsistency(m.Get(fd).Enum())
}

func (s *Server) readInfo(req proto.Message, index uint64) *medmeshv1.ReadInfo {
	ri := &medmeshv1.ReadInfo{Index: index, ServedBy: s.b.ID()}
	if readConsistency(req) == medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE {
		ri.Stale = true
		ri.Staleness = durationpb.New(s.b.LastContact())
	}
	return ri
}

// apply commits a command stamped with the leader's time. A command with a
// client request that was applied before answers that first result (its
// index, its error), so a retry of a write whose outcome the client did
// not learn never applies it twice.
func (s *Server) apply(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	cmd.Time = nowPB()
	res, err := s.b.Apply(ctx, cmd)
	if err != nil {
		return res, toStatus(err)
	}
	return res, nil
}

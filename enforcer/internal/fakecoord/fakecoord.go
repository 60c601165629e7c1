// Package fakecoord is an in-memory stand-in for the coordinators' decision
// log, served over real gRPC: DecisionService.WatchDecisions and
// ClusterService.ReportMemberStatus. Tests and benchmarks
// of the enforcer use it; the coordinator itself lives in coordinator/.
package fakecoord

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Log is a committed decision log shared by any number of Servers (the
// replicas of a fake cluster).
type Log struct {
	mu      sync.Mutex
	entries []*medmeshv1.Decision
	index   uint64
	changed chan struct{}
	members map[string]*medmeshv1.Member
}

// NewLog returns an empty log.
func NewLog() *Log {
	return &Log{changed: make(chan struct{}), members: map[string]*medmeshv1.Member{}}
}

// Commit appends d at the next index (skipping gap indexes first, as Raft
// entries that are not decisions do), stamps index and create time, and
// returns the index.
func (l *Log) Commit(d *medmeshv1.Decision, gap uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.index += gap + 1
	d = proto.Clone(d).(*medmeshv1.Decision)
	d.Index = l.index
	if d.Id == "" {
		d.Id = fmt.Sprintf("dec-%d", l.index)
	}
	d.CreateTime = timestamppb.Now()
	l.entries = append(l.entries, d)
	close(l.changed)
	l.changed = make(chan struct{})
	return l.index
}

// Index returns the last committed index.
func (l *Log) Index() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.index
}

// Member returns the last status a member reported, or nil.
func (l *Log) Member(id string) *medmeshv1.Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.members[id]; m != nil {
		return proto.Clone(m).(*medmeshv1.Member)
	}
	return nil
}

func (l *Log) since(from uint64) ([]*medmeshv1.Decision, uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*medmeshv1.Decision
	for _, e := range l.entries {
		if e.Index > from {
			out = append(out, e)
		}
	}
	return out, l.index, l.changed
}

// Server serves a Log over gRPC on one address.
type Server struct {
	medmeshv1.UnimplementedDecisionServiceServer
	medmeshv1.UnimplementedClusterServiceServer
	log       *Log
	heartbeat time.Duration
	gs        *grpc.Server
	lis       net.Listener
	done      chan struct{}
}

// Start serves log on addr ("127.0.0.1:0" for a free port), sending a
// heartbeat on idle streams every heartbeat.
func Start(log *Log, addr string, heartbeat time.Duration) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &Server{log: log, heartbeat: heartbeat, gs: grpc.NewServer(), lis: lis, done: make(chan struct{})}
	medmeshv1.RegisterDecisionServiceServer(s.gs, s)
	medmeshv1.RegisterClusterServiceServer(s.gs, s)
	go func() { defer close(s.done); s.gs.Serve(lis) }()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Stop kills the server: open streams fail at once, like a crashed replica.
func (s *Server) Stop() {
	s.gs.Stop()
	<-s.done
}

// WatchDecisions streams entries after from_index, then follows the log.
func (s *Server) WatchDecisions(req *medmeshv1.WatchDecisionsRequest, st medmeshv1.DecisionService_WatchDecisionsServer) error {
	from := req.GetFromIndex()
	hb := time.NewTicker(s.heartbeat)
	defer hb.Stop()
	for {
		entries, index, changed := s.log.since(from)
		for _, e := range entries {
			if err := st.Send(&medmeshv1.WatchDecisionsResponse{Decision: e, AppliedIndex: index}); err != nil {
				return err
			}
			from = e.Index
		}
		select {
		case <-st.Context().Done():
			return st.Context().Err()
		case <-changed:
		case <-hb.C:
			if err := st.Send(&medmeshv1.WatchDecisionsResponse{AppliedIndex: index}); err != nil {
				return err
			}
			from = max(from, index)
		}
	}
}

// ReportMemberStatus records a member's heartbeat.
func (s *Server) ReportMemberStatus(_ context.Context, req *medmeshv1.ReportMemberStatusRequest) (*medmeshv1.ReportMemberStatusResponse, error) {
	if req.GetMember().GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "member id is required")
	}
	s.log.mu.Lock()
	s.log.members[req.GetMember().GetId()] = proto.Clone(req.GetMember()).(*medmeshv1.Member)
	s.log.mu.Unlock()
	return &medmeshv1.ReportMemberStatusResponse{}, nil
}

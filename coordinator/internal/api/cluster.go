package api

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// memberTable keeps the sensors and enforcers that reported their status.
// It lives in memory on the leader and is not replicated.
type memberTable struct {
	mu sync.Mutex
	m  map[string]*medmeshv1.Member
}

func newMemberTable() *memberTable { return &memberTable{m: map[string]*medmeshv1.Member{}} }

func (t *memberTable) put(m *medmeshv1.Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[m.GetRole()+"/"+m.GetId()] = m
}

func (t *memberTable) list() []*medmeshv1.Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*medmeshv1.Member, 0, len(t.m))
	for _, m := range t.m {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role < out[j].Role
		}
		return out[i].Id < out[j].Id
	})
	return out
}

// GetClusterStatus reports the coordinators and the reporting members.
func (s *Server) GetClusterStatus(ctx context.Context, req *medmeshv1.GetClusterStatusRequest) (*medmeshv1.GetClusterStatusResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	probe := len(md.Get(probeKey)) > 0
	if !probe {
		if resp, done, err := route(ctx, s, medmeshv1.ClusterService_GetClusterStatus_FullMethodName, kindRead, req, &medmeshv1.GetClusterStatusResponse{}); done {
			return resp, err
		}
	}
	resp, err := s.b.ClusterStatus(ctx, !probe)
	if err != nil {
		return nil, toStatus(err)
	}
	if !probe {
		for _, m := range s.members.list() {
			resp.Members = append(resp.Members, m)
		}
	}
	resp.ReadInfo = s.readInfo(req, s.b.FSM().AppliedIndex())
	return resp, nil
}

// JoinCluster adds a coordinator to the Raft configuration. A coordinator
// joins only under the id its certificate names.
func (s *Server) JoinCluster(ctx context.Context, req *medmeshv1.JoinClusterRequest) (*medmeshv1.JoinClusterResponse, error) {
	for _, f := range []struct{ name, v string }{{"id", req.GetId()}, {"raft_addr", req.GetRaftAddr()}, {"api_addr", req.GetApiAddr()}} {
		if err := required(f.name, f.v); err != nil {
			return nil, err
		}
	}
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if who.Role == pki.RoleCoordinator && who.Name != req.GetId() {
		return nil, status.Errorf(codes.PermissionDenied, "id: %s may join only as %q, not %q", who, who.Name, req.GetId())
	}
	if resp, done, err := route(ctx, s, medmeshv1.ClusterService_JoinCluster_FullMethodName, kindWrite, req, &medmeshv1.JoinClusterResponse{}); done {
		return resp, err
	}
	idx, err := s.b.Join(ctx, req.GetId(), req.GetRaftAddr(), req.GetApiAddr(), req.GetNonvoter())
	if err != nil {
		return nil, toStatus(err)
	}
	return &medmeshv1.JoinClusterResponse{Index: idx}, nil
}

// RemoveMember removes a coordinator from the Raft configuration.
func (s *Server) RemoveMember(ctx context.Context, req *medmeshv1.RemoveMemberRequest) (*medmeshv1.RemoveMemberResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.ClusterService_RemoveMember_FullMethodName, kindWrite, req, &medmeshv1.RemoveMemberResponse{}); done {
		return resp, err
	}
	idx, err := s.b.Remove(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &medmeshv1.RemoveMemberResponse{Index: idx}, nil
}

// TransferLeadership moves leadership to another voter.
func (s *Server) TransferLeadership(ctx context.Context, req *medmeshv1.TransferLeadershipRequest) (*medmeshv1.TransferLeadershipResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.ClusterService_TransferLeadership_FullMethodName, kindWrite, req, &medmeshv1.TransferLeadershipResponse{}); done {
		return resp, err
	}
	leader, err := s.b.Transfer(ctx, req.GetTargetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &medmeshv1.TransferLeadershipResponse{NewLeader: leader}, nil
}

// ReportMemberStatus records a sensor's or enforcer's heartbeat on the
// leader, and an enforcer's report of what it installed for DNS-named
// policy peers (shown by GetPolicy).
func (s *Server) ReportMemberStatus(ctx context.Context, req *medmeshv1.ReportMemberStatusRequest) (*medmeshv1.ReportMemberStatusResponse, error) {
	m := req.GetMember()
	if m == nil {
		return nil, invalid("member", "required")
	}
	if err := required("member.id", m.GetId()); err != nil {
		return nil, err
	}
	if m.GetRole() != "sensor" && m.GetRole() != "enforcer" {
		return nil, invalid("member.role", "%q is not sensor or enforcer", m.GetRole())
	}
	if m.GetRole() != "enforcer" && len(req.GetResolvedPeers()) > 0 {
		return nil, invalid("resolved_peers", "only enforcers resolve DNS-named peers")
	}
	if err := validateResolvedPeers(req.GetResolvedPeers()); err != nil {
		return nil, err
	}
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := speaksFor(who, pki.Role(m.GetRole()), m.GetId(), "member"); err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.ClusterService_ReportMemberStatus_FullMethodName, kindWrite, req, &medmeshv1.ReportMemberStatusResponse{}); done {
		return resp, err
	}
	now := time.Now()
	m = proto.CloneOf(m)
	m.LastSeen = timestamppb.New(now)
	if m.State == "" {
		m.State = "alive"
	}
	s.members.put(m)
	if m.GetRole() == "enforcer" {
		s.resolved.put(m.GetId(), req.GetResolvedPeers(), now)
	}
	return &medmeshv1.ReportMemberStatusResponse{}, nil
}

package api

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func wireTestDecision(i int) *medmeshv1.Decision {
	const mac = "02:00:00:00:00:01"
	return &medmeshv1.Decision{
		Id: fmt.Sprintf("d-%d", i), Index: uint64(100 + i), DeviceMac: mac,
		Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY,
		State:  medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, CreateTime: timestamppb.Now(),
		Policy: &medmeshv1.Policy{Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE,
			Rules: []*medmeshv1.Rule{{Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.0.0.0/24"}, Protocol: 6, PortMin: 443, PortMax: 443}}},
	}
}

// wireServer serves WatchDecisions from a list through one decisionWire,
// as Server.WatchDecisions does, each stream with the applied index given
// in its request's from_index, and records whether each stream shared.
type wireServer struct {
	medmeshv1.UnimplementedDecisionServiceServer
	w         *decisionWire
	decisions []*medmeshv1.Decision

	mu     sync.Mutex
	shared []bool
	sent   []*grpc.PreparedMsg // the shared messages, in order, of each sharing stream
}

func (s *wireServer) WatchDecisions(req *medmeshv1.WatchDecisionsRequest, stream medmeshv1.DecisionService_WatchDecisionsServer) error {
	shared := shareable(stream.Context())
	s.mu.Lock()
	s.shared = append(s.shared, shared)
	s.mu.Unlock()
	for _, d := range s.decisions {
		if err := s.w.send(stream, shared, d, req.GetFromIndex()); err != nil {
			return err
		}
		if shared {
			m, err := s.w.message(stream, d, 0)
			if err != nil {
				return err
			}
			s.mu.Lock()
			s.sent = append(s.sent, m)
			s.mu.Unlock()
		}
	}
	return nil
}

// watchAll runs one WatchDecisions stream to its end.
func watchAll(t *testing.T, c medmeshv1.DecisionServiceClient, applied uint64, opts ...grpc.CallOption) []*medmeshv1.WatchDecisionsResponse {
	t.Helper()
	st, err := c.WatchDecisions(context.Background(), &medmeshv1.WatchDecisionsRequest{FromIndex: applied}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var out []*medmeshv1.WatchDecisionsResponse
	for {
		r, err := st.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
}

// TestDecisionWireSharesOneMessage, over real gRPC on loopback: streams
// that send uncompressed send each decision as one message prepared once,
// which decodes in every watcher to the response a marshal of it gives
// (the applied index of the stream that prepared it); a stream whose
// client compressed its request, here the first, gets its own, compressed,
// and shares nothing.
func TestDecisionWireSharesOneMessage(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ws := &wireServer{w: newDecisionWire(), decisions: []*medmeshv1.Decision{wireTestDecision(1), wireTestDecision(2), wireTestDecision(3)}}
	medmeshv1.RegisterDecisionServiceServer(srv, ws)
	go srv.Serve(lis)
	defer srv.Stop()
	var clients []medmeshv1.DecisionServiceClient
	for range 2 {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		clients = append(clients, medmeshv1.NewDecisionServiceClient(cc))
	}
	// The compressed stream first: what it sends must not be shared.
	compressed := watchAll(t, clients[1], 400, grpc.UseCompressor(gzip.Name))
	first := watchAll(t, clients[0], 200)
	second := watchAll(t, clients[1], 300)
	for i, d := range ws.decisions {
		want := &medmeshv1.WatchDecisionsResponse{Decision: d, AppliedIndex: 200, ResumeToken: indexToken(d.GetIndex())}
		for _, got := range []*medmeshv1.WatchDecisionsResponse{first[i], second[i]} {
			if !proto.Equal(got, want) {
				t.Fatalf("decision %d: received %v, want %v", i, got, want)
			}
		}
		want.AppliedIndex = 400
		if !proto.Equal(compressed[i], want) {
			t.Fatalf("decision %d, compressed stream: received %v, want %v", i, compressed[i], want)
		}
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if fmt.Sprint(ws.shared) != "[false true true]" {
		t.Fatalf("streams shared %v, want the two uncompressed ones", ws.shared)
	}
	for i := range ws.decisions {
		if ws.sent[i] != ws.sent[len(ws.decisions)+i] {
			t.Fatalf("decision %d: the two streams sent different messages", i)
		}
	}
}

// TestDecisionWireStaysBounded: a replaced decision (the FSM replaces,
// never changes, one it updates) gets its own message; the cache holds at
// most decisionWireSize decisions and prepares an evicted one again.
func TestDecisionWireStaysBounded(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := wireTestDecision(1)
	reviewed := proto.CloneOf(d)
	reviewed.State = medmeshv1.DecisionState_DECISION_STATE_APPROVED
	ws := &wireServer{w: newDecisionWire(), decisions: []*medmeshv1.Decision{d, reviewed}}
	for i := range 3 * decisionWireSize {
		ws.decisions = append(ws.decisions, wireTestDecision(10+i))
	}
	ws.decisions = append(ws.decisions, d)
	srv := grpc.NewServer()
	medmeshv1.RegisterDecisionServiceServer(srv, ws)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	got := watchAll(t, medmeshv1.NewDecisionServiceClient(cc), 1)
	if len(got) != len(ws.decisions) {
		t.Fatalf("received %d decisions, want %d", len(got), len(ws.decisions))
	}
	if got[1].GetDecision().GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED {
		t.Fatalf("the replaced decision arrived as %v", got[1].GetDecision())
	}
	if !proto.Equal(got[len(got)-1].GetDecision(), d) {
		t.Fatalf("an evicted decision arrived as %v", got[len(got)-1].GetDecision())
	}
	ws.w.mu.Lock()
	defer ws.w.mu.Unlock()
	if len(ws.w.m) != decisionWireSize {
		t.Fatalf("cache holds %d decisions, want at most %d", len(ws.w.m), decisionWireSize)
	}
}

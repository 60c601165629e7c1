package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// SinkBackend runs the outbound sinks (on the leader). A Backend that is
// one serves GetSinkStatus and TestSink.
type SinkBackend interface {
	// SinkStatus is the leader's delivery state of every sink; nil when
	// this coordinator does not run them.
	SinkStatus() []*medmeshv1.SinkStatus
	// TestSink sends one test event to s and returns its id.
	TestSink(ctx context.Context, s *medmeshv1.Sink, actor string) (string, error)
}

// ListSinks lists the sinks by name, with their committed positions.
func (s *Server) ListSinks(ctx context.Context, req *medmeshv1.ListSinksRequest) (*medmeshv1.ListSinksResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.SinkService_ListSinks_FullMethodName, kindRead, req, &medmeshv1.ListSinksResponse{}); done {
		return resp, err
	}
	sinks, idx := s.b.FSM().Sinks()
	return &medmeshv1.ListSinksResponse{Sinks: sinks, ReadInfo: s.readInfo(req, idx)}, nil
}

// PutSink creates or replaces a sink, audited with the caller's identity.
func (s *Server) PutSink(ctx context.Context, req *medmeshv1.PutSinkRequest) (*medmeshv1.PutSinkResponse, error) {
	v := proto.CloneOf(req.GetSink())
	if v == nil {
		return nil, invalid("sink", "required")
	}
	// Output-only fields are ignored.
	v.Version, v.Revision, v.UpdateTime, v.UpdatedBy, v.AlertPosition, v.AuditSeq, v.PostureIndex, v.PostureMac = 0, 0, nil, "", 0, 0, 0, ""
	if err := sinkcfg.Validate(v); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if len(req.GetReason()) > maxTextField {
		return nil, invalid("reason", "longer than %d bytes", maxTextField)
	}
	id, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.SinkService_PutSink_FullMethodName, kindWrite, req, &medmeshv1.PutSinkResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_SinkPut{SinkPut: &fsmpb.SinkPut{
		Sink: v, ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Comment: comment, Reason: req.GetReason(),
		StartAtBeginning: req.GetStartAtBeginning(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.PutSinkResponse{Sink: res.Sink, Index: res.Index}, nil
}

// DeleteSink removes a sink, audited with the caller's identity.
func (s *Server) DeleteSink(ctx context.Context, req *medmeshv1.DeleteSinkRequest) (*medmeshv1.DeleteSinkResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	if len(req.GetReason()) > maxTextField {
		return nil, invalid("reason", "longer than %d bytes", maxTextField)
	}
	id, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.SinkService_DeleteSink_FullMethodName, kindWrite, req, &medmeshv1.DeleteSinkResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_SinkDelete{SinkDelete: &fsmpb.SinkDelete{
		Name: req.GetName(), ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Comment: comment, Reason: req.GetReason(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.DeleteSinkResponse{Index: res.Index}, nil
}

func (s *Server) sinkBackend() (SinkBackend, error) {
	sb, ok := s.b.(SinkBackend)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this coordinator runs no sinks")
	}
	return sb, nil
}

// TestSink sends one test event from the leader (a follower forwards the
// call). It changes no state.
func (s *Server) TestSink(ctx context.Context, req *medmeshv1.TestSinkRequest) (*medmeshv1.TestSinkResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.SinkService_TestSink_FullMethodName, kindWrite, req, &medmeshv1.TestSinkResponse{}); done {
		return resp, err
	}
	sb, err := s.sinkBackend()
	if err != nil {
		return nil, err
	}
	var v *medmeshv1.Sink
	sinks, _ := s.b.FSM().Sinks()
	for _, x := range sinks {
		if x.GetName() == req.GetName() {
			v = x
		}
	}
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "sink %q not found", req.GetName())
	}
	evID, err := sb.TestSink(ctx, v, id.String())
	resp := &medmeshv1.TestSinkResponse{EventId: evID, Delivered: err == nil}
	if err != nil {
		resp.Error = err.Error()
	}
	return resp, nil
}

// GetSinkStatus reports the leader's delivery state (a follower forwards
// the call: only the leader delivers).
func (s *Server) GetSinkStatus(ctx context.Context, req *medmeshv1.GetSinkStatusRequest) (*medmeshv1.GetSinkStatusResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.SinkService_GetSinkStatus_FullMethodName, kindWrite, req, &medmeshv1.GetSinkStatusResponse{}); done {
		return resp, err
	}
	sb, err := s.sinkBackend()
	if err != nil {
		return nil, err
	}
	st := sb.SinkStatus()
	if st == nil {
		return nil, status.Error(codes.Unavailable, "the sinks are starting on this leader; try again")
	}
	return &medmeshv1.GetSinkStatusResponse{Sinks: st, ServedBy: s.b.ID()}, nil
}

package api

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ListDecisions lists decisions by index.
func (s *Server) ListDecisions(ctx context.Context, req *medmeshv1.ListDecisionsRequest) (*medmeshv1.ListDecisionsResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodeIndexToken("page_token", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	mac := ""
	if req.GetDeviceMac() != "" {
		if mac, err = normalizeMAC("device_mac", req.GetDeviceMac()); err != nil {
			return nil, err
		}
	}
	if resp, done, err := route(ctx, s, medmeshv1.DecisionService_ListDecisions_FullMethodName, kindRead, req, &medmeshv1.ListDecisionsResponse{}); done {
		return resp, err
	}
	keep := func(d *medmeshv1.Decision) bool {
		return (mac == "" || d.GetDeviceMac() == mac) && (req.GetState() == 0 || d.GetState() == req.GetState())
	}
	page, more, idx := s.b.FSM().ListDecisions(after, n, keep)
	resp := &medmeshv1.ListDecisionsResponse{Decisions: page, ReadInfo: s.readInfo(req, idx)}
	if more {
		resp.NextPageToken = indexToken(page[len(page)-1].GetIndex())
	}
	return resp, nil
}

// ApproveDecision approves a pending decision: a new log entry.
func (s *Server) ApproveDecision(ctx context.Context, req *medmeshv1.ApproveDecisionRequest) (*medmeshv1.ApproveDecisionResponse, error) {
	d, err := s.review(ctx, medmeshv1.DecisionService_ApproveDecision_FullMethodName, req, req.GetId(), req.GetRequestId(), req.GetActor(), req.GetReason(), true, &medmeshv1.ApproveDecisionResponse{})
	if err != nil || d == nil {
		return nil, err
	}
	return &medmeshv1.ApproveDecisionResponse{Decision: d}, nil
}

// RejectDecision rejects a pending decision: a new log entry.
func (s *Server) RejectDecision(ctx context.Context, req *medmeshv1.RejectDecisionRequest) (*medmeshv1.RejectDecisionResponse, error) {
	d, err := s.review(ctx, medmeshv1.DecisionService_RejectDecision_FullMethodName, req, req.GetId(), req.GetRequestId(), req.GetActor(), req.GetReason(), false, &medmeshv1.RejectDecisionResponse{})
	if err != nil || d == nil {
		return nil, err
	}
	return &medmeshv1.RejectDecisionResponse{Decision: d}, nil
}

func (s *Server) review(ctx context.Context, method string, req proto.Message, id, requestID, actor, reason string, approve bool, fwd proto.Message) (*medmeshv1.Decision, error) {
	if err := required("id", id); err != nil {
		return nil, err
	}
	who, comment, err := author(ctx, actor)
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(who, requestID)
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, method, kindWrite, req, fwd); done {
		if err != nil {
			return nil, err
		}
		return resp.(interface{ GetDecision() *medmeshv1.Decision }).GetDecision(), nil
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
		TargetId: id, Approve: approve, Actor: who.String(), Comment: comment, Reason: reason, DecisionId: newID("d"), TwoPerson: true,
	}}})
	if err != nil {
		return nil, err
	}
	return res.Decision, nil
}

package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/response"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ListRules lists the response rules by name.
func (s *Server) ListRules(ctx context.Context, req *medmeshv1.ListRulesRequest) (*medmeshv1.ListRulesResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.RuleService_ListRules_FullMethodName, kindRead, req, &medmeshv1.ListRulesResponse{}); done {
		return resp, err
	}
	rules, idx := s.b.FSM().Rules()
	return &medmeshv1.ListRulesResponse{Rules: rules, ReadInfo: s.readInfo(req, idx)}, nil
}

// PutRule creates or replaces a response rule, audited with the caller's
// identity. The authorization table lets approvers only: a rule decides
// what medmesh blocks on its own.
func (s *Server) PutRule(ctx context.Context, req *medmeshv1.PutRuleRequest) (*medmeshv1.PutRuleResponse, error) {
	r := proto.CloneOf(req.GetRule())
	if r == nil {
		return nil, invalid("rule", "required")
	}
	if err := response.Validate(r); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "rule: %v", err)
	}
	id, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.RuleService_PutRule_FullMethodName, kindWrite, req, &medmeshv1.PutRuleResponse{}); done {
		return resp, err
	}
	// Output-only fields are ignored.
	r.Version, r.Revision, r.UpdateTime, r.UpdatedBy = 0, 0, nil, ""
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_RulePut{RulePut: &fsmpb.RulePut{
		Rule: r, ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Comment: comment, Reason: req.GetReason(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.PutRuleResponse{Rule: res.Rule, Index: res.Index}, nil
}

// DeleteRule removes a response rule, audited with the caller's identity.
func (s *Server) DeleteRule(ctx context.Context, req *medmeshv1.DeleteRuleRequest) (*medmeshv1.DeleteRuleResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	id, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.RuleService_DeleteRule_FullMethodName, kindWrite, req, &medmeshv1.DeleteRuleResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_RuleDelete{RuleDelete: &fsmpb.RuleDelete{
		Name: req.GetName(), ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Comment: comment, Reason: req.GetReason(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.DeleteRuleResponse{Index: res.Index}, nil
}

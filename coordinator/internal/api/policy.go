package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// PutPolicy creates or replaces a policy, with optional compare-and-set.
func (s *Server) PutPolicy(ctx context.Context, req *medmeshv1.PutPolicyRequest) (*medmeshv1.PutPolicyResponse, error) {
	p := proto.CloneOf(req.GetPolicy())
	if err := validatePut(p); err != nil {
		return nil, err
	}
	id, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	if p.GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE && !mayEnforce(id) {
		return nil, status.Errorf(codes.PermissionDenied, "policy.mode: %s may write policies in monitor mode only; enforce mode needs an approver", id)
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_PutPolicy_FullMethodName, kindWrite, req, &medmeshv1.PutPolicyResponse{}); done {
		return resp, err
	}
	if mac := p.GetDeviceMac(); mac != "" && s.b.FSM().Device(mac) == nil {
		return nil, status.Errorf(codes.NotFound, "policy.device_mac: device %s not found", mac)
	}
	// Output-only fields are ignored.
	p.Active, p.Version, p.Revision, p.CreateTime, p.UpdateTime, p.UpdatedBy = false, 0, 0, nil, nil, ""
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_PolicyPut{PolicyPut: &fsmpb.PolicyPut{
		Policy: p, ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Comment: comment, Reason: req.GetReason(), DecisionId: newID("d"),
		MonitorOnly: !mayEnforce(id), TwoPerson: true,
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.PutPolicyResponse{Policy: res.Policy, Index: res.Index}, nil
}

// GetPolicy returns one policy.
func (s *Server) GetPolicy(ctx context.Context, req *medmeshv1.GetPolicyRequest) (*medmeshv1.GetPolicyResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_GetPolicy_FullMethodName, kindRead, req, &medmeshv1.GetPolicyResponse{}); done {
		return resp, err
	}
	idx := s.b.FSM().AppliedIndex()
	p := s.b.FSM().Policy(req.GetName())
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "name: policy %q not found", req.GetName())
	}
	return &medmeshv1.GetPolicyResponse{Policy: p, ReadInfo: s.readInfo(req, idx), ResolvedPeers: s.resolved.forPolicy(p.GetName())}, nil
}

// ListPolicies lists policies by name.
func (s *Server) ListPolicies(ctx context.Context, req *medmeshv1.ListPoliciesRequest) (*medmeshv1.ListPoliciesResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	mac := ""
	if req.GetDeviceMac() != "" {
		if mac, err = normalizeMAC("device_mac", req.GetDeviceMac()); err != nil {
			return nil, err
		}
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_ListPolicies_FullMethodName, kindRead, req, &medmeshv1.ListPoliciesResponse{}); done {
		return resp, err
	}
	page, more, idx := s.b.FSM().ListPolicies(after, n, mac)
	resp := &medmeshv1.ListPoliciesResponse{Policies: page, ReadInfo: s.readInfo(req, idx)}
	if more {
		resp.NextPageToken = encodeToken(page[len(page)-1].GetName())
	}
	return resp, nil
}

// DeletePolicy removes a policy.
func (s *Server) DeletePolicy(ctx context.Context, req *medmeshv1.DeletePolicyRequest) (*medmeshv1.DeletePolicyResponse, error) {
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
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_DeletePolicy_FullMethodName, kindWrite, req, &medmeshv1.DeletePolicyResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{
		Name: req.GetName(), ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Comment: comment, Reason: req.GetReason(), DecisionId: newID("d"),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.DeletePolicyResponse{Index: res.Index}, nil
}

// ActivatePolicy activates a policy; its APPLY_POLICY decision reaches the
// enforcers.
func (s *Server) ActivatePolicy(ctx context.Context, req *medmeshv1.ActivatePolicyRequest) (*medmeshv1.ActivatePolicyResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	id, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	if err := required("reason", req.GetReason()); err != nil {
		return nil, err
	}
	if _, ok := medmeshv1.PolicyMode_name[int32(req.GetMode())]; !ok {
		return nil, invalid("mode", "unknown mode %d", req.GetMode())
	}
	// Enforce mode is an approver's act; a policy stored in enforce mode
	// and activated without a mode is refused by the FSM.
	if req.GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE && !mayEnforce(id) {
		return nil, status.Errorf(codes.PermissionDenied, "mode: only an approver activates enforce mode, not %s", id)
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_ActivatePolicy_FullMethodName, kindWrite, req, &medmeshv1.ActivatePolicyResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{
		Name: req.GetName(), Mode: req.GetMode(), Actor: id.String(), Comment: comment, Reason: req.GetReason(), DecisionId: newID("d"),
		MonitorOnly: !mayEnforce(id), TwoPerson: true,
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.ActivatePolicyResponse{Policy: res.Policy, DecisionId: res.Decision.GetId(), DecisionIndex: res.Index}, nil
}

// ListAuditRecords reads back the audit trail, oldest first.
func (s *Server) ListAuditRecords(ctx context.Context, req *medmeshv1.ListAuditRecordsRequest) (*medmeshv1.ListAuditRecordsResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodeIndexToken("page_token", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_ListAuditRecords_FullMethodName, kindRead, req, &medmeshv1.ListAuditRecordsResponse{}); done {
		return resp, err
	}
	page, last, more, idx := s.b.FSM().ListAudit(after, n, req.GetResource())
	resp := &medmeshv1.ListAuditRecordsResponse{Records: page, ReadInfo: s.readInfo(req, idx)}
	if more {
		resp.NextPageToken = indexToken(last)
	}
	return resp, nil
}

package api

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/compliance/report"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ComplianceBackend evaluates the committed state against the control
// catalog (compliance.Evaluate). A Backend that is one serves GetReport;
// the exceptions and the trend are served from the FSM in any case.
type ComplianceBackend interface {
	// EvaluateCompliance computes the report for a framework
	// (UNSPECIFIED: every framework) from the committed state, and the
	// applied index it read.
	EvaluateCompliance(ctx context.Context, framework medmeshv1.ComplianceFramework) (*medmeshv1.ComplianceReport, uint64, error)
}

// GetReport evaluates the committed state, stamped with the index it was
// read at and the active bundle's date, and completes it with the
// exceptions in force and the trend.
func (s *Server) GetReport(ctx context.Context, req *medmeshv1.GetComplianceReportRequest) (*medmeshv1.GetComplianceReportResponse, error) {
	if _, ok := medmeshv1.ComplianceFramework_name[int32(req.GetFramework())]; !ok {
		return nil, invalid("framework", "unknown framework %d", req.GetFramework())
	}
	cb, ok := s.b.(ComplianceBackend)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this coordinator cannot evaluate compliance")
	}
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_GetReport_FullMethodName, kindRead, req, &medmeshv1.GetComplianceReportResponse{}); done {
		return resp, err
	}
	rep, idx, err := cb.EvaluateCompliance(ctx, req.GetFramework())
	if err != nil {
		return nil, toStatus(err)
	}
	f := s.b.FSM()
	rep.RaftIndex = idx
	if b := f.ActiveIntel(); b != nil {
		rep.BundleDate, rep.BundleDigest = b.GetCreated(), b.GetDigest()
	}
	exc, _ := f.Exceptions()
	trend, _ := f.Trend()
	return &medmeshv1.GetComplianceReportResponse{Report: report.ApplyState(rep, exc, trend, time.Now())}, nil
}

// AcceptException accepts an action or a finding as a risk exception.
// The authorization table lets approvers only: an exception takes work
// off the plan an auditor reads.
func (s *Server) AcceptException(ctx context.Context, req *medmeshv1.AcceptExceptionRequest) (*medmeshv1.AcceptExceptionResponse, error) {
	switch req.GetTargetKind() {
	case medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION, medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING:
	default:
		return nil, invalid("target_kind", "action or finding")
	}
	for _, f := range []struct{ n, v string }{{"target", req.GetTarget()}, {"owner", req.GetOwner()}, {"reason", req.GetReason()}} {
		if err := required(f.n, strings.TrimSpace(f.v)); err != nil {
			return nil, err
		}
		if err := checkText(f.n, f.v); err != nil {
			return nil, err
		}
	}
	if !req.GetExpireTime().IsValid() {
		return nil, invalid("expire_time", "required")
	}
	who, comment, err := author(ctx, req.GetComment())
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(who, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_AcceptException_FullMethodName, kindWrite, req, &medmeshv1.AcceptExceptionResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_ExceptionAccept{ExceptionAccept: &fsmpb.ExceptionAccept{
		Exception: &medmeshv1.RiskException{
			TargetKind: req.GetTargetKind(), Target: strings.TrimSpace(req.GetTarget()),
			Owner: req.GetOwner(), Reason: req.GetReason(), ExpireTime: req.GetExpireTime(),
		},
		Actor: who.String(), Comment: comment,
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.AcceptExceptionResponse{Exception: res.Exception}, nil
}

// RevokeException ends an exception in force, audited.
func (s *Server) RevokeException(ctx context.Context, req *medmeshv1.RevokeExceptionRequest) (*medmeshv1.RevokeExceptionResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := required("reason", strings.TrimSpace(req.GetReason())); err != nil {
		return nil, err
	}
	if err := checkText("reason", req.GetReason()); err != nil {
		return nil, err
	}
	who, comment, err := author(ctx, req.GetComment())
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(who, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_RevokeException_FullMethodName, kindWrite, req, &medmeshv1.RevokeExceptionResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_ExceptionRevoke{ExceptionRevoke: &fsmpb.ExceptionRevoke{
		Id: req.GetId(), Actor: who.String(), Reason: req.GetReason(), Comment: comment,
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.RevokeExceptionResponse{Exception: res.Exception}, nil
}

// ListExceptions lists the exceptions in the order they were accepted.
func (s *Server) ListExceptions(ctx context.Context, req *medmeshv1.ListExceptionsRequest) (*medmeshv1.ListExceptionsResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_ListExceptions_FullMethodName, kindRead, req, &medmeshv1.ListExceptionsResponse{}); done {
		return resp, err
	}
	exc, idx := s.b.FSM().Exceptions()
	resp := &medmeshv1.ListExceptionsResponse{Index: idx}
	now := time.Now()
	for _, e := range exc {
		if !req.GetActiveOnly() || report.InForce(e, now) {
			resp.Exceptions = append(resp.Exceptions, e)
		}
	}
	return resp, nil
}

// GetTrend returns the daily points, oldest first.
func (s *Server) GetTrend(ctx context.Context, req *medmeshv1.GetTrendRequest) (*medmeshv1.GetTrendResponse, error) {
	if req.GetDays() > fsm.MaxTrendDays {
		return nil, invalid("days", "at most %d", fsm.MaxTrendDays)
	}
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_GetTrend_FullMethodName, kindRead, req, &medmeshv1.GetTrendResponse{}); done {
		return resp, err
	}
	pts, idx := s.b.FSM().Trend()
	if n := int(req.GetDays()); n > 0 && len(pts) > n {
		pts = pts[len(pts)-n:]
	}
	return &medmeshv1.GetTrendResponse{Points: pts, Index: idx}, nil
}

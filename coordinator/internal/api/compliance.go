package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/compliance"
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
	// (UNSPECIFIED: every framework) from the committed state, stamped
	// with the applied index it read and the active bundle and completed
	// with the exceptions and the trend, and returns that index.
	EvaluateCompliance(ctx context.Context, framework medmeshv1.ComplianceFramework) (*medmeshv1.ComplianceReport, uint64, error)
}

// GetReport evaluates the committed state, stamped with the index it was
// read at and the active bundle's date, and completed with the exceptions
// in force and the trend; in pages when asked (report_pages.go): a page
// token reads on in the evaluation its first page made.
func (s *Server) GetReport(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
	if _, ok := medmeshv1.ComplianceFramework_name[int32(req.GetFramework())]; !ok {
		return nil, invalid("framework", "unknown framework %d", req.GetFramework())
	}
	if _, err := reportPageSize(req.GetPageSize()); err != nil {
		return nil, err
	}
	id, offset, err := decodeReportToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	cb, ok := s.b.(ComplianceBackend)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this coordinator cannot evaluate compliance")
	}
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_GetReport_FullMethodName, kindRead, req, &medmeshv1.GetReportResponse{}); done {
		return resp, err
	}
	if id != "" {
		return s.nextReportPage(req, id, offset)
	}
	rep, _, err := cb.EvaluateCompliance(ctx, req.GetFramework())
	if err != nil {
		return nil, toStatus(err)
	}
	return s.firstReportPage(rep, req.GetPageSize())
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

// maxMDS2Upload bounds an MDS2 workbook upload.
const maxMDS2Upload = 16 << 20

// ImportMDS2 receives an MDS2 workbook, reads its answers and attaches
// them to the device model it names, audited.
func (s *Server) ImportMDS2(stream medmeshv1.ComplianceService_ImportMDS2Server) error {
	ctx := stream.Context()
	rb, err := s.riskBackend()
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "required in the first message")
	}
	for _, f := range []struct{ n, v string }{{"name", h.GetName()}, {"manufacturer", h.GetManufacturer()}, {"model", h.GetModel()}, {"reason", h.GetReason()}} {
		if err := checkText("header."+f.n, f.v); err != nil {
			return err
		}
	}
	who, comment, err := author(ctx, h.GetComment())
	if err != nil {
		return err
	}
	creq, err := clientRequest(who, h.GetRequestId())
	if err != nil {
		return err
	}
	tmp, err := receive(rb, first, stream.Recv, maxMDS2Upload)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	b, err := os.ReadFile(tmp)
	if err != nil {
		return status.Errorf(codes.Internal, "upload: %v", err)
	}
	name := cmp.Or(strings.TrimSpace(h.GetName()), "mds2.xlsx")
	form, err := compliance.ParseMDS2(bytes.NewReader(b), name)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "%s: %v", name, err)
	}
	a := &medmeshv1.MDS2Attachment{
		Name: name, Digest: fmt.Sprintf("%x", sha256.Sum256(b)),
		Manufacturer: cmp.Or(strings.TrimSpace(h.GetManufacturer()), strings.TrimSpace(form.Manufacturer)),
		Model:        cmp.Or(strings.TrimSpace(h.GetModel()), strings.TrimSpace(form.Model)),
	}
	if a.Manufacturer == "" || a.Model == "" {
		return status.Errorf(codes.InvalidArgument, "%s: the form names no manufacturer (DOC-1) or model (DOC-3): give header.manufacturer and header.model", name)
	}
	for _, id := range slices.Sorted(maps.Keys(form.Items)) {
		it := form.Items[id]
		a.Answers = append(a.Answers, &medmeshv1.MDS2Answer{Id: it.ID, Answer: string(it.Answer), Text: it.Text, Note: it.Note, Question: it.Question})
	}
	resp, done, err := forwardUpload(ctx, s, tmp,
		func(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) (grpc.ClientStreamingClient[medmeshv1.ImportMDS2Request, medmeshv1.ImportMDS2Response], error) {
			return medmeshv1.NewComplianceServiceClient(conn).ImportMDS2(ctx, opts...)
		},
		func(chunk []byte, first bool) *medmeshv1.ImportMDS2Request {
			m := &medmeshv1.ImportMDS2Request{Chunk: chunk}
			if first {
				m.Header = h
			}
			return m
		})
	if done {
		if err != nil {
			return err
		}
		return stream.SendAndClose(resp)
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_Mds2Attach{Mds2Attach: &fsmpb.MDS2Attach{
		Attachment: a, Actor: who.String(), Reason: h.GetReason(), Comment: comment,
	}}})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&medmeshv1.ImportMDS2Response{Attachment: res.MDS2})
}

// ListMDS2 lists the attached MDS2 forms.
func (s *Server) ListMDS2(ctx context.Context, req *medmeshv1.ListMDS2Request) (*medmeshv1.ListMDS2Response, error) {
	if resp, done, err := route(ctx, s, medmeshv1.ComplianceService_ListMDS2_FullMethodName, kindRead, req, &medmeshv1.ListMDS2Response{}); done {
		return resp, err
	}
	ms, idx := s.b.FSM().MDS2s()
	return &medmeshv1.ListMDS2Response{Attachments: ms, Index: idx}, nil
}

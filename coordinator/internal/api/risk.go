package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/posture"
	"github.com/medmesh/medmesh/internal/authz"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// RiskBackend is the coordinator's store of bundles and SBOMs, kept in its
// data directory out of Raft. A Backend that is one serves RiskService.
type RiskBackend interface {
	// NewUpload is a temporary file for an upload.
	NewUpload() (*os.File, error)
	// AdmitBundle checks the bundle archive at tmp with the configured
	// intel key and keeps it by digest (tmp is consumed). A refused
	// bundle is INVALID_ARGUMENT naming the file and the reason.
	AdmitBundle(tmp, name string) (*medmeshv1.IntelBundle, error)
	// AdmitSBOM reads the SBOM at tmp and keeps it by SHA-256.
	AdmitSBOM(tmp, name string) (*medmeshv1.SBOMAttachment, error)
	// BlobPath is where a kept bundle or SBOM is, and whether it is here.
	BlobPath(kind, digest string) (string, bool)
	// IntelSources is the status of the bundle with this digest as loaded
	// here (UNAVAILABLE while it is being fetched).
	IntelSources(digest string, maxAge time.Duration) ([]risk.SourceStatus, error)
	// IntelMaxAge is the configured default for IntelStatus.
	IntelMaxAge() time.Duration
}

// Upload bounds.
const (
	maxBundleUpload = 4 << 30
	maxSBOMUpload   = 64 << 20
	uploadChunk     = 1 << 20
)

func (s *Server) riskBackend() (RiskBackend, error) {
	if s.risk == nil {
		return nil, status.Error(codes.Unimplemented, "this coordinator keeps no bundles")
	}
	return s.risk, nil
}

// receive writes the chunks of an upload (the first already received) to
// a new temporary file, at most limit bytes, and returns its path.
func receive[Req interface{ GetChunk() []byte }](rb RiskBackend, first Req, recv func() (Req, error), limit int64) (string, error) {
	f, err := rb.NewUpload()
	if err != nil {
		return "", status.Errorf(codes.Internal, "upload: %v", err)
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	var n int64
	chunk := first.GetChunk()
	for {
		if n += int64(len(chunk)); n > limit {
			return fail(status.Errorf(codes.InvalidArgument, "upload larger than %d bytes", limit))
		}
		if _, err := f.Write(chunk); err != nil {
			return fail(status.Errorf(codes.Internal, "upload: %v", err))
		}
		m, err := recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(err)
		}
		chunk = m.GetChunk()
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return "", status.Errorf(codes.Internal, "upload: %v", err)
	}
	return f.Name(), nil
}

// sendFile streams a file as chunks through send.
func sendFile(path string, send func(chunk []byte, first bool, size int64) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, uploadChunk)
	first := true
	for {
		n, err := f.Read(buf)
		if n > 0 || first {
			if err := send(buf[:n], first, st.Size()); err != nil {
				return err
			}
			first = false
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// forwardUpload decides where an upload is committed: here on the leader
// (false), or, on a follower, by streaming the kept file to the leader
// with the same header (true, with the leader's answer in resp).
func forwardUpload[Req any, Resp any](ctx context.Context, s *Server, path string,
	open func(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	msg func(chunk []byte, first bool) *Req,
) (*Resp, bool, error) {
	if s.b.IsLeader() {
		return nil, false, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, true, toStatus(ErrNotLeader)
	}
	conn, err := s.b.LeaderConn()
	if err != nil {
		return nil, true, toStatus(err)
	}
	out := metadata.AppendToOutgoingContext(authz.ForwardContext(ctx), forwardedKey, s.b.ID())
	st, err := open(out, conn, sentOnce)
	if err != nil {
		return nil, true, forwardError(kindWrite, err)
	}
	err = sendFile(path, func(chunk []byte, first bool, _ int64) error { return st.Send(msg(chunk, first)) })
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, true, forwardError(kindWrite, err)
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return nil, true, forwardError(kindWrite, err)
	}
	return resp, true, nil
}

func checkText(field, v string) error {
	if len(v) > maxTextField {
		return invalid(field, "longer than %d bytes", maxTextField)
	}
	return nil
}

// ImportBundle receives a bundle, checks it, keeps it and activates it.
func (s *Server) ImportBundle(stream medmeshv1.RiskService_ImportBundleServer) error {
	rb, err := s.riskBackend()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "required in the first message")
	}
	for _, f := range []struct{ n, v string }{{"name", h.GetName()}, {"reason", h.GetReason()}} {
		if err := checkText("header."+f.n, f.v); err != nil {
			return err
		}
	}
	who, comment, err := author(ctx, h.GetActor())
	if err != nil {
		return err
	}
	creq, err := clientRequest(who, h.GetRequestId())
	if err != nil {
		return err
	}
	tmp, err := receive(rb, first, stream.Recv, maxBundleUpload)
	if err != nil {
		return err
	}
	b, err := rb.AdmitBundle(tmp, h.GetName())
	if err != nil {
		return err
	}
	path, _ := rb.BlobPath("bundle", b.GetDigest())
	resp, done, err := forwardUpload(ctx, s, path,
		func(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) (grpc.ClientStreamingClient[medmeshv1.ImportBundleRequest, medmeshv1.ImportBundleResponse], error) {
			return medmeshv1.NewRiskServiceClient(conn).ImportBundle(ctx, opts...)
		},
		func(chunk []byte, first bool) *medmeshv1.ImportBundleRequest {
			m := &medmeshv1.ImportBundleRequest{Chunk: chunk}
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
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_IntelActivate{IntelActivate: &fsmpb.IntelActivate{
		Bundle: b, Actor: who.String(), Reason: h.GetReason(), Comment: comment,
	}}})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&medmeshv1.ImportBundleResponse{Bundle: res.Intel, Index: res.Index})
}

// ImportSBOM receives an SBOM, reads it, keeps it and attaches it to a
// device model.
func (s *Server) ImportSBOM(stream medmeshv1.RiskService_ImportSBOMServer) error {
	rb, err := s.riskBackend()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "required in the first message")
	}
	if err := required("header.vendor", strings.TrimSpace(h.GetVendor())); err != nil {
		return err
	}
	if err := required("header.model", strings.TrimSpace(h.GetModel())); err != nil {
		return err
	}
	for _, f := range []struct{ n, v string }{{"version", h.GetVersion()}, {"name", h.GetName()}, {"reason", h.GetReason()}} {
		if err := checkText("header."+f.n, f.v); err != nil {
			return err
		}
	}
	who, comment, err := author(ctx, h.GetActor())
	if err != nil {
		return err
	}
	creq, err := clientRequest(who, h.GetRequestId())
	if err != nil {
		return err
	}
	tmp, err := receive(rb, first, stream.Recv, maxSBOMUpload)
	if err != nil {
		return err
	}
	a, err := rb.AdmitSBOM(tmp, cmp.Or(h.GetName(), "sbom"))
	if err != nil {
		return err
	}
	path, _ := rb.BlobPath("sbom", a.GetDigest())
	resp, done, err := forwardUpload(ctx, s, path,
		func(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) (grpc.ClientStreamingClient[medmeshv1.ImportSBOMRequest, medmeshv1.ImportSBOMResponse], error) {
			return medmeshv1.NewRiskServiceClient(conn).ImportSBOM(ctx, opts...)
		},
		func(chunk []byte, first bool) *medmeshv1.ImportSBOMRequest {
			m := &medmeshv1.ImportSBOMRequest{Chunk: chunk}
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
	a.Vendor, a.Model, a.Version = strings.TrimSpace(h.GetVendor()), strings.TrimSpace(h.GetModel()), strings.TrimSpace(h.GetVersion())
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_SbomAttach{SbomAttach: &fsmpb.SBOMAttach{
		Attachment: a, Actor: who.String(), Reason: h.GetReason(), Comment: comment,
	}}})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&medmeshv1.ImportSBOMResponse{Attachment: res.SBOM, Index: res.Index})
}

// IntelStatus reports the active bundle and its sources.
func (s *Server) IntelStatus(ctx context.Context, req *medmeshv1.IntelStatusRequest) (*medmeshv1.IntelStatusResponse, error) {
	rb, err := s.riskBackend()
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.RiskService_IntelStatus_FullMethodName, kindRead, req, &medmeshv1.IntelStatusResponse{}); done {
		return resp, err
	}
	f := s.b.FSM()
	idx := f.AppliedIndex()
	maxAge := rb.IntelMaxAge()
	if d := req.GetMaxAgeDays(); d > 0 {
		maxAge = time.Duration(d) * 24 * time.Hour
	}
	resp := &medmeshv1.IntelStatusResponse{Bundle: f.ActiveIntel(), MaxAgeDays: uint32(maxAge / (24 * time.Hour)), Sboms: f.SBOMs(), ReadInfo: s.readInfo(req, idx)}
	ps, _ := f.Postures()
	for _, p := range ps {
		resp.AssessedDevices++
		resp.Findings += uint32(len(p.GetFindings())) + p.GetTruncated()
	}
	if resp.Bundle == nil {
		return resp, nil
	}
	srcs, err := rb.IntelSources(resp.Bundle.GetDigest(), maxAge)
	if err != nil {
		return nil, err
	}
	for _, x := range srcs {
		is := &medmeshv1.IntelSource{Kind: x.Kind, Source: x.Source, Files: uint32(x.Files), Records: uint32(x.Records), AgeDays: uint32(max(x.AgeDays, 0)), Stale: x.Stale}
		if !x.Date.IsZero() {
			is.Date = timestamppb.New(x.Date)
		}
		if x.Stale {
			resp.Stale++
		}
		resp.Sources = append(resp.Sources, is)
	}
	return resp, nil
}

// findingFilter is a ListFindings request's filters.
type findingFilter struct {
	kind          string
	kev, withSupp bool
	minSev        int
	minConf       int
}

func (ff findingFilter) keep(f *medmeshv1.Finding) bool {
	return (ff.kind == "" || f.GetKind() == ff.kind) && (!ff.kev || f.GetKev()) &&
		(ff.withSupp || f.GetSuppressed() == "") &&
		posture.SeverityRank[f.GetSeverity()] >= ff.minSev && posture.ConfidenceRank[f.GetConfidence()] >= ff.minConf
}

// FindingKinds are the kinds ListFindings filters on.
var FindingKinds = []string{
	string(risk.KindVulnerability), string(risk.KindEndOfLife), string(risk.KindRecall), string(risk.KindDefaultCredentials),
	string(risk.KindExternalCommunication), string(risk.KindCleartextPHI),
}

// ListFindings lists findings by device MAC, then urgency.
func (s *Server) ListFindings(ctx context.Context, req *medmeshv1.ListFindingsRequest) (*medmeshv1.ListFindingsResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	ff := findingFilter{kind: req.GetKind(), kev: req.GetKev(), withSupp: req.GetIncludeSuppressed()}
	if ff.kind != "" && !slices.Contains(FindingKinds, ff.kind) {
		return nil, invalid("kind", "%q: want one of %s", ff.kind, strings.Join(FindingKinds, ", "))
	}
	if v := req.GetMinSeverity(); v != "" {
		if ff.minSev = posture.SeverityRank[v]; ff.minSev == 0 {
			return nil, invalid("min_severity", "%q: want critical, high, medium, low or info", v)
		}
	}
	if v := req.GetMinConfidence(); v != "" {
		if ff.minConf = posture.ConfidenceRank[v]; ff.minConf == 0 {
			return nil, invalid("min_confidence", "%q: want exact, observed, range, model, possible or vendor", v)
		}
	}
	mac := ""
	if req.GetDeviceMac() != "" {
		if mac, err = normalizeMAC("device_mac", req.GetDeviceMac()); err != nil {
			return nil, err
		}
	}
	afterMAC, afterPos, err := decodeFindingsToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.RiskService_ListFindings_FullMethodName, kindRead, req, &medmeshv1.ListFindingsResponse{}); done {
		return resp, err
	}
	ps, idx := s.b.FSM().Postures()
	resp := &medmeshv1.ListFindingsResponse{ReadInfo: s.readInfo(req, idx)}
	lastPos := -1
	for _, p := range ps {
		if (mac != "" && p.GetDeviceMac() != mac) || p.GetDeviceMac() < afterMAC {
			continue
		}
		for i, f := range p.GetFindings() {
			if p.GetDeviceMac() == afterMAC && i <= afterPos || !ff.keep(f) {
				continue
			}
			if len(resp.Findings) == n {
				last := resp.Findings[n-1]
				resp.NextPageToken = encodeToken(last.GetDeviceMac() + "#" + strconv.Itoa(lastPos))
				return resp, nil
			}
			resp.Findings = append(resp.Findings, &medmeshv1.DeviceFinding{DeviceMac: p.GetDeviceMac(), Hostname: p.GetHostname(), Finding: f})
			lastPos = i
		}
	}
	return resp, nil
}

// decodeFindingsToken reads a ListFindings page token: the last (device,
// finding position) returned; empty: from the start (position -1).
func decodeFindingsToken(tok string) (string, int, error) {
	if tok == "" {
		return "", -1, nil
	}
	k, err := decodeToken(tok)
	if err != nil {
		return "", 0, err
	}
	m, p, ok := strings.Cut(k, "#")
	pos, perr := strconv.Atoi(p)
	if !ok || perr != nil || pos < 0 {
		return "", 0, invalid("page_token", "malformed")
	}
	return m, pos, nil
}

// decodePostureToken reads a WatchFindings resume token: (index, mac).
func decodePostureToken(tok string) (uint64, string, error) {
	k, err := decodeToken(tok)
	if err != nil {
		return 0, "", err
	}
	i, m, ok := strings.Cut(k, "/")
	v, perr := strconv.ParseUint(i, 10, 64)
	if !ok || perr != nil {
		return 0, "", invalid("resume_token", "malformed")
	}
	return v, m, nil
}

// GetPosture returns one device's posture.
func (s *Server) GetPosture(ctx context.Context, req *medmeshv1.GetPostureRequest) (*medmeshv1.GetPostureResponse, error) {
	mac, err := normalizeMAC("device_mac", req.GetDeviceMac())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.RiskService_GetPosture_FullMethodName, kindRead, req, &medmeshv1.GetPostureResponse{}); done {
		return resp, err
	}
	f := s.b.FSM()
	idx := f.AppliedIndex()
	p := f.Posture(mac)
	if p == nil {
		if f.Device(mac) == nil {
			return nil, status.Errorf(codes.NotFound, "device_mac: device %s not found", mac)
		}
		return nil, status.Errorf(codes.NotFound, "device_mac: device %s has not been assessed yet", mac)
	}
	return &medmeshv1.GetPostureResponse{Posture: p, ReadInfo: s.readInfo(req, idx)}, nil
}

// Top lists the postures with a score above zero, highest first.
func (s *Server) Top(ctx context.Context, req *medmeshv1.TopRequest) (*medmeshv1.TopResponse, error) {
	n := int(req.GetN())
	switch {
	case n < 0:
		return nil, invalid("n", "must not be negative")
	case n == 0:
		n = 10
	case n > maxPageSize:
		n = maxPageSize
	}
	if resp, done, err := route(ctx, s, medmeshv1.RiskService_Top_FullMethodName, kindRead, req, &medmeshv1.TopResponse{}); done {
		return resp, err
	}
	ps, idx := s.b.FSM().Postures()
	ps = slices.DeleteFunc(ps, func(p *medmeshv1.DevicePosture) bool { return p.GetScore().GetScore() == 0 })
	slices.SortStableFunc(ps, func(a, b *medmeshv1.DevicePosture) int {
		return cmp.Or(-cmp.Compare(a.GetScore().GetScore(), b.GetScore().GetScore()), strings.Compare(a.GetDeviceMac(), b.GetDeviceMac()))
	})
	return &medmeshv1.TopResponse{Postures: ps[:min(n, len(ps))], ReadInfo: s.readInfo(req, idx)}, nil
}

// WatchFindings streams postures in commit order from a resume point. The
// resume token is (index, mac): one FindingsPut commits many devices.
func (s *Server) WatchFindings(req *medmeshv1.WatchFindingsRequest, stream medmeshv1.RiskService_WatchFindingsServer) error {
	idx, mac := req.GetFromIndex(), ""
	if tok := req.GetResumeToken(); tok != "" {
		var err error
		if idx, mac, err = decodePostureToken(tok); err != nil {
			return err
		}
	}
	f := s.b.FSM()
	ctx := stream.Context()
	tick := time.NewTicker(s.cfg.WatchHeartbeat)
	defer tick.Stop()
	token := func() string { return encodeToken(fmt.Sprintf("%d/%s", idx, mac)) }
	first := true
	for {
		changed := f.Changed()
		ps, applied := f.PosturesChanged(idx, mac)
		for _, p := range ps {
			idx, mac = p.GetIndex(), p.GetDeviceMac()
			if err := stream.Send(&medmeshv1.WatchFindingsResponse{Posture: p, AppliedIndex: applied, ResumeToken: token()}); err != nil {
				return err
			}
		}
		if first {
			first = false
			if err := stream.Send(&medmeshv1.WatchFindingsResponse{AppliedIndex: applied, ResumeToken: token()}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
			if err := stream.Send(&medmeshv1.WatchFindingsResponse{AppliedIndex: f.AppliedIndex(), ResumeToken: token()}); err != nil {
				return err
			}
		}
	}
}

// FetchBlob streams a kept bundle or SBOM to another coordinator.
func (s *Server) FetchBlob(req *medmeshv1.FetchBlobRequest, stream medmeshv1.RiskService_FetchBlobServer) error {
	rb, err := s.riskBackend()
	if err != nil {
		return err
	}
	path, ok := rb.BlobPath(req.GetKind(), req.GetDigest())
	if path == "" {
		return invalid("kind", "want bundle or sbom, and a digest of 64 lower-case hex digits")
	}
	if !ok {
		return status.Errorf(codes.NotFound, "%s %s is not on %s", req.GetKind(), req.GetDigest(), s.b.ID())
	}
	return sendFile(path, func(chunk []byte, first bool, size int64) error {
		m := &medmeshv1.FetchBlobResponse{Chunk: chunk}
		if first {
			m.Size = uint64(size)
		}
		return stream.Send(m)
	})
}

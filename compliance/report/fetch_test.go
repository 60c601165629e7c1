package report

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// pager serves a report in pages of two devices as GetReport does (the
// real server is tested in coordinator: TestComplianceReportPages); its
// hooks make the pages a broken server could send.
type pager struct {
	r     *medmeshv1.ComplianceReport
	calls int
	// page, when set, changes the answer to call number calls.
	page func(calls int, resp *medmeshv1.GetReportResponse) (*medmeshv1.GetReportResponse, error)
}

func (p *pager) get(_ context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
	p.calls++
	off := 0
	if req.GetPageToken() != "" {
		off, _ = strconv.Atoi(req.GetPageToken())
	}
	end := min(off+2, len(p.r.GetDevices()))
	r := &medmeshv1.ComplianceReport{GenerateTime: p.r.GetGenerateTime(), RaftIndex: p.r.GetRaftIndex(), Coverage: p.r.GetCoverage()}
	if off == 0 {
		r = proto.CloneOf(p.r)
	}
	r.Devices = p.r.GetDevices()[off:end]
	resp := &medmeshv1.GetReportResponse{Report: r, DeviceOffset: uint32(off), DeviceTotal: uint32(len(p.r.GetDevices()))}
	if end < len(p.r.GetDevices()) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	if p.page != nil {
		return p.page(p.calls, resp)
	}
	return resp, nil
}

// TestFetchAssemblesOneEvaluation: Fetch puts the pages together into the
// report; it starts again when the server no longer holds the evaluation
// (ABORTED); it refuses pages of another evaluation, out of place, or
// missing, rather than write a report stitched together; and it takes
// the whole report from a coordinator older than paging.
func TestFetchAssemblesOneEvaluation(t *testing.T) {
	r, _, _ := campus()
	r.Devices = append(r.Devices, &medmeshv1.DeviceCompliance{DeviceMac: "00:00:00:00:00:05"})
	ctx := context.Background()

	p := &pager{r: r}
	got, err := Fetch(ctx, 0, p.get)
	if err != nil || !proto.Equal(got, r) || p.calls != 3 {
		t.Fatalf("fetch: %d calls, equal %v, %v", p.calls, proto.Equal(got, r), err)
	}

	p = &pager{r: r, page: func(n int, resp *medmeshv1.GetReportResponse) (*medmeshv1.GetReportResponse, error) {
		if n == 2 {
			return nil, status.Error(codes.Aborted, "no longer held")
		}
		return resp, nil
	}}
	if got, err := Fetch(ctx, 0, p.get); err != nil || !proto.Equal(got, r) || p.calls != 1+1+3 {
		t.Fatalf("fetch after ABORTED: %d calls, %v", p.calls, err)
	}
	p = &pager{r: r, page: func(int, *medmeshv1.GetReportResponse) (*medmeshv1.GetReportResponse, error) {
		return nil, status.Error(codes.Aborted, "no longer held")
	}}
	if _, err := Fetch(ctx, 0, p.get); status.Code(err) != codes.Aborted || p.calls != fetchAttempts {
		t.Fatalf("always ABORTED: %d calls, %v", p.calls, err)
	}

	for name, broken := range map[string]func(*medmeshv1.GetReportResponse){
		"another index":          func(resp *medmeshv1.GetReportResponse) { resp.Report.RaftIndex++ },
		"another generate time":  func(resp *medmeshv1.GetReportResponse) { resp.Report.GenerateTime = timestamppb.New(now.Add(1)) },
		"a page out of place":    func(resp *medmeshv1.GetReportResponse) { resp.DeviceOffset++ },
		"another total":          func(resp *medmeshv1.GetReportResponse) { resp.DeviceTotal++ },
		"a page short, the last": func(resp *medmeshv1.GetReportResponse) { resp.Report.Devices = resp.Report.Devices[:0] },
	} {
		p := &pager{r: r, page: func(n int, resp *medmeshv1.GetReportResponse) (*medmeshv1.GetReportResponse, error) {
			if n == 3 {
				broken(resp)
			}
			return resp, nil
		}}
		if got, err := Fetch(ctx, 0, p.get); err == nil || !strings.Contains(err.Error(), "compliance report") {
			t.Errorf("%s: Fetch answered a report of %d devices (%v)", name, len(got.GetDevices()), err)
		}
	}

	// An older coordinator ignores page_size: the whole report, no token,
	// no total.
	old := func(context.Context, *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
		return &medmeshv1.GetReportResponse{Report: proto.CloneOf(r)}, nil
	}
	if got, err := Fetch(ctx, 0, old); err != nil || !proto.Equal(got, r) {
		t.Fatalf("from an older coordinator: %v", err)
	}
}

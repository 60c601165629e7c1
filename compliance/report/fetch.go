package report

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// PageSize is the devices Fetch asks for per page.
const PageSize = 500

// fetchAttempts bounds how often Fetch starts again from the first page
// when the coordinator no longer holds the evaluation it was reading.
const fetchAttempts = 3

// GetReportFunc is ComplianceService.GetReport, over gRPC or in process.
type GetReportFunc func(context.Context, *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error)

// Fetch asks get for the whole report of framework fw page by page and
// assembles it: the first page's report with every page's devices after
// it, in order, as one unpaged GetReport would have answered. Every page
// must come from the first page's evaluation (the same generate time and
// Raft index, each page starting where the last ended): a report stitched
// from two states is an error, never an answer. When the coordinator no
// longer holds the evaluation (ABORTED: it expired, or the leader
// changed), Fetch starts again from the first page, at most three times.
func Fetch(ctx context.Context, fw medmeshv1.ComplianceFramework, get GetReportFunc) (*medmeshv1.ComplianceReport, error) {
	var err error
	for range fetchAttempts {
		var r *medmeshv1.ComplianceReport
		r, err = fetchOnce(ctx, fw, get)
		if status.Code(err) != codes.Aborted {
			return r, err
		}
	}
	return nil, fmt.Errorf("compliance report: started %d times, the coordinators dropped the evaluation each time: %w", fetchAttempts, err)
}

func fetchOnce(ctx context.Context, fw medmeshv1.ComplianceFramework, get GetReportFunc) (*medmeshv1.ComplianceReport, error) {
	first, err := get(ctx, &medmeshv1.GetReportRequest{Framework: fw, PageSize: PageSize})
	if err != nil {
		return nil, err
	}
	r := first.GetReport()
	if r == nil {
		return nil, fmt.Errorf("compliance report: the first page has no report")
	}
	if first.GetNextPageToken() == "" && first.GetDeviceTotal() == 0 {
		// Whole: a coordinator older than paging ignores page_size and
		// answers the whole report (or the campus has no device).
		return r, nil
	}
	for tok := first.GetNextPageToken(); tok != ""; {
		page, err := get(ctx, &medmeshv1.GetReportRequest{Framework: fw, PageSize: PageSize, PageToken: tok})
		if err != nil {
			return nil, err
		}
		p := page.GetReport()
		switch {
		case p.GetRaftIndex() != r.GetRaftIndex() || !proto.Equal(p.GetGenerateTime(), r.GetGenerateTime()):
			return nil, fmt.Errorf("compliance report: a page of the evaluation at index %d (%v) in the report of index %d (%v)",
				p.GetRaftIndex(), p.GetGenerateTime().AsTime(), r.GetRaftIndex(), r.GetGenerateTime().AsTime())
		case int(page.GetDeviceOffset()) != len(r.GetDevices()) || page.GetDeviceTotal() != first.GetDeviceTotal():
			return nil, fmt.Errorf("compliance report: a page at device %d of %d after %d of %d devices",
				page.GetDeviceOffset(), page.GetDeviceTotal(), len(r.GetDevices()), first.GetDeviceTotal())
		case len(p.GetDevices()) == 0 && page.GetNextPageToken() != "":
			return nil, fmt.Errorf("compliance report: an empty page at device %d", page.GetDeviceOffset())
		}
		r.Devices = append(r.Devices, p.GetDevices()...)
		tok = page.GetNextPageToken()
	}
	if len(r.GetDevices()) != int(first.GetDeviceTotal()) {
		return nil, fmt.Errorf("compliance report: %d devices of %d", len(r.GetDevices()), first.GetDeviceTotal())
	}
	return r, nil
}

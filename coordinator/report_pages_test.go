package coordinator

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	compreport "github.com/medmesh/medmesh/compliance/report"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// sameReport reports whether two reports are equal but for when they were
// generated (two evaluations of one state differ only there).
func sameReport(a, b *medmeshv1.ComplianceReport) bool {
	a, b = proto.CloneOf(a), proto.CloneOf(b)
	a.GenerateTime, b.GenerateTime = nil, nil
	return proto.Equal(a, b)
}

// TestComplianceReportPages: a 3-node cluster with 1,200 devices, the
// report read in pages through a follower (forwarded to the leader that
// holds the evaluation). The pages together equal the report the leader
// evaluates directly at the same Raft index; a device renamed and a
// device added after the first page change nothing in the later pages
// (one evaluation), while a new report shows both; when the leader that
// held the evaluation goes, a page is ABORTED and Fetch starts again on
// the new leader.
func TestComplianceReportPages(t *testing.T) {
	cl := newCluster(t, 3, nil)
	const nDev = 1200
	seedDevices(t, cl, nDev, "02:00:00:00:00:07")
	ctx := ctxT(t, 2*time.Minute)
	fol := cl.followers()[0]
	client := medmeshv1.NewComplianceServiceClient(fol.conn)
	fw := medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED

	// The first page, and the leader's own evaluation of the same state
	// (again if something was written in between).
	var first *medmeshv1.GetReportResponse
	var direct *medmeshv1.ComplianceReport
	for try := 0; ; try++ {
		var err error
		first, err = client.GetReport(ctx, &medmeshv1.GetReportRequest{Framework: fw, PageSize: 500})
		if err != nil {
			t.Fatal(err)
		}
		var idx uint64
		direct, idx, err = cl.leader().c.EvaluateCompliance(ctx, fw)
		if err != nil {
			t.Fatal(err)
		}
		if idx == first.GetReport().GetRaftIndex() {
			break
		}
		if try == 5 {
			t.Fatalf("the state kept moving: first page at %d, evaluation at %d", first.GetReport().GetRaftIndex(), idx)
		}
	}
	// seedDevices adds a few devices of its own to nDev.
	total := len(direct.GetDevices())
	if total < nDev || int(first.GetDeviceTotal()) != total || len(first.GetReport().GetDevices()) != 500 || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %d devices of %d, token %q", len(first.GetReport().GetDevices()), first.GetDeviceTotal(), first.GetNextPageToken())
	}

	// Between pages: a device of the second page is renamed, one is added.
	renamed := direct.GetDevices()[700].GetDeviceMac()
	if direct.GetDevices()[700].GetHostname() != "" {
		t.Fatalf("device %s already has a hostname", renamed)
	}
	added := "02:00:00:00:99:01"
	report(t, cl.leader(), "seed", 1_000_000, // after seedDevices' sequence numbers
		&medmeshv1.Device{Mac: renamed, Hostname: "renamed-between-pages"},
		&medmeshv1.Device{Mac: added, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION})

	got := proto.CloneOf(first.GetReport())
	pages := 1
	for tok := first.GetNextPageToken(); tok != ""; pages++ {
		page, err := client.GetReport(ctx, &medmeshv1.GetReportRequest{Framework: fw, PageSize: 500, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if p := page.GetReport(); p.GetRaftIndex() != got.GetRaftIndex() || !proto.Equal(p.GetGenerateTime(), got.GetGenerateTime()) {
			t.Fatalf("page %d from the evaluation at %d, the first from %d", pages+1, p.GetRaftIndex(), got.GetRaftIndex())
		}
		got.Devices = append(got.Devices, page.GetReport().GetDevices()...)
		tok = page.GetNextPageToken()
	}
	if pages != (total+499)/500 {
		t.Fatalf("%d pages of 500 for %d devices", pages, total)
	}
	if !sameReport(got, direct) {
		t.Fatalf("the pages together (%d devices) are not the report the leader evaluates at index %d (%d devices)", len(got.GetDevices()), direct.GetRaftIndex(), len(direct.GetDevices()))
	}
	for _, d := range got.GetDevices() {
		if d.GetDeviceMac() == added || d.GetHostname() == "renamed-between-pages" {
			t.Fatalf("a change made after the first page is in a later page: %s %q", d.GetDeviceMac(), d.GetHostname())
		}
	}

	// A new report is a new evaluation: it has both changes.
	fresh, err := compreport.Fetch(ctx, fw, func(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
		return client.GetReport(ctx, req)
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, d := range fresh.GetDevices() {
		seen[d.GetDeviceMac()] = d.GetHostname()
	}
	if len(fresh.GetDevices()) != total+1 || seen[renamed] != "renamed-between-pages" || fresh.GetRaftIndex() <= got.GetRaftIndex() {
		t.Fatalf("the new report: %d devices at index %d, %s named %q", len(fresh.GetDevices()), fresh.GetRaftIndex(), renamed, seen[renamed])
	}
	if _, ok := seen[added]; !ok {
		t.Fatalf("the new report lacks %s", added)
	}

	// The leader holding an evaluation goes: its next page is ABORTED
	// (no other coordinator holds it), and Fetch starts again.
	held, err := client.GetReport(ctx, &medmeshv1.GetReportRequest{Framework: fw, PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	old := cl.leader()
	old.stop(false)
	var asker *node
	for _, n := range cl.nodes {
		if n.up {
			asker = n
			break
		}
	}
	other := medmeshv1.NewComplianceServiceClient(asker.conn)
	if _, err := other.GetReport(ctx, &medmeshv1.GetReportRequest{Framework: fw, PageSize: 500, PageToken: held.GetNextPageToken()}); status.Code(err) != codes.Aborted {
		t.Fatalf("a page of an evaluation the old leader held: %v, want ABORTED", err)
	}
	calls := 0
	again, err := compreport.Fetch(ctx, fw, func(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
		calls++
		if calls == 2 {
			// The second call reads on in the evaluation the dead leader
			// held: what a client mid-report sees at a leader change.
			req = &medmeshv1.GetReportRequest{Framework: fw, PageSize: req.GetPageSize(), PageToken: held.GetNextPageToken()}
		}
		return other.GetReport(ctx, req)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + (total+1+499)/500; len(again.GetDevices()) != total+1 || calls != want {
		t.Fatalf("after the leader change: %d devices in %d calls, want %d in %d (a page refused, then every page)", len(again.GetDevices()), calls, total+1, want)
	}
	t.Logf("pages of one evaluation: %d devices in %d pages equal the leader's evaluation at index %d", len(got.GetDevices()), pages, got.GetRaftIndex())
}

package coordinator

import (
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// fakeClock is a leader clock a test moves forward: days pass in
// milliseconds.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestComplianceExceptionsAndTrendCompressedTime: a real coordinator
// over mutual TLS whose leader clock runs days in milliseconds. An
// approver accepts an exception (a retry with its request id applies
// once; operators are refused), the leader expires it when its expiry
// passes in leader time, and every step is in the audit trail; the
// leader records one trend point per day, and the report carries both.
func TestComplianceExceptionsAndTrendCompressedTime(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	cp := newCampusWith(t, func(c *Config) { c.Clock, c.ComplianceTick = clk.now, 20*time.Millisecond })
	approver := medmeshv1.NewComplianceServiceClient(cp.as(pki.RoleApprover, "carol"))
	operator := medmeshv1.NewComplianceServiceClient(cp.as(pki.RoleOperator, "oscar"))
	viewer := medmeshv1.NewComplianceServiceClient(cp.as(pki.RoleViewer, "vera"))
	ctx := ctxT(t, 60*time.Second)

	// Day 1's point is recorded by the leader from committed state.
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool { return cp.c.FSM().HasTrendDay(clk.now().UTC().Format(time.DateOnly)) }, "no trend point for day 1")

	req := &medmeshv1.AcceptExceptionRequest{
		TargetKind: medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION, Target: "patch:B. Braun/Space@1.2.5",
		Owner: "biomed", Reason: "vendor validation pending", ExpireTime: timestamppb.New(clk.now().Add(36 * time.Hour)), RequestId: "exc-accept-1",
	}
	if _, err := operator.AcceptException(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("operator accepting an exception: %v", err)
	}
	first, err := approver.AcceptException(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := approver.AcceptException(ctx, req)
	if err != nil || again.GetException().GetId() != first.GetException().GetId() {
		t.Fatalf("retry: %v %v", again, err)
	}
	list, err := viewer.ListExceptions(ctx, &medmeshv1.ListExceptionsRequest{ActiveOnly: true})
	if err != nil || len(list.GetExceptions()) != 1 {
		t.Fatalf("in force: %v %v", list, err)
	}
	id := first.GetException().GetId()

	// Two days pass in leader time: the exception expires, and a point is
	// recorded for each day the leader saw.
	for range 2 {
		clk.add(24 * time.Hour)
		day := clk.now().UTC().Format(time.DateOnly)
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool { return cp.c.FSM().HasTrendDay(day) }, "no trend point for %s", day)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		l, err := viewer.ListExceptions(ctx, &medmeshv1.ListExceptionsRequest{})
		return err == nil && len(l.GetExceptions()) == 1 && l.GetExceptions()[0].GetState() == medmeshv1.ExceptionState_EXCEPTION_STATE_EXPIRED
	}, "exception %s did not expire", id)
	if l, _ := viewer.ListExceptions(ctx, &medmeshv1.ListExceptionsRequest{ActiveOnly: true}); len(l.GetExceptions()) != 0 {
		t.Fatalf("expired exception still listed in force: %v", l)
	}

	audit, err := medmeshv1.NewPolicyServiceClient(cp.as(pki.RoleViewer, "vera")).ListAuditRecords(ctx, &medmeshv1.ListAuditRecordsRequest{Resource: "exception/" + id, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, r := range audit.GetRecords() {
		steps = append(steps, r.GetAction()+" by "+r.GetActor())
	}
	if got := strings.Join(steps, "; "); got != "exception.accept by approver/carol; exception.expire by leader" {
		t.Fatalf("audit trail of %s: %s", id, got)
	}
	if r := audit.GetRecords()[1]; r.GetTime().AsTime().Before(req.GetExpireTime().AsTime()) {
		t.Fatalf("expired at %v, before its expiry %v", r.GetTime().AsTime(), req.GetExpireTime().AsTime())
	}

	// Later the same day the leader records the day's point again: a day
	// keeps one point, its latest state. (Unless this crosses midnight UTC,
	// which starts the next day's point instead.)
	day3 := clk.now().UTC().Format(time.DateOnly)
	before := cp.c.FSM().TrendPointOf(day3).GetRecordTime().AsTime()
	clk.add(2 * time.Hour)
	if clk.now().UTC().Format(time.DateOnly) == day3 {
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
			return cp.c.FSM().TrendPointOf(day3).GetRecordTime().AsTime().After(before)
		}, "the day's point was not refreshed")
	} else {
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool { return cp.c.FSM().HasTrendDay(clk.now().UTC().Format(time.DateOnly)) }, "no point for the next day")
	}
	trend, err := viewer.GetTrend(ctx, &medmeshv1.GetTrendRequest{})
	if err != nil || len(trend.GetPoints()) < 3 {
		t.Fatalf("trend: %v %v", trend, err)
	}
	if p := trend.GetPoints(); p[0].GetExceptionsActive() != 0 || p[1].GetExceptionsActive() != 1 || p[2].GetExceptionsActive() != 0 {
		t.Fatalf("trend exceptions: %v", trend.GetPoints())
	}
	rep, err := viewer.GetReport(ctx, &medmeshv1.GetReportRequest{Framework: medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.GetReport()
	if r.GetRaftIndex() == 0 || len(r.GetTrend()) != len(trend.GetPoints()) || len(r.GetExceptions()) != 1 || r.GetExceptions()[0].GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_EXPIRED {
		t.Fatalf("report index %d, %d points, exceptions %v", r.GetRaftIndex(), len(r.GetTrend()), r.GetExceptions())
	}
}

// TestImportMDS2: an operator uploads an MDS2 workbook (the fixture in the
// HN 1-2019 layout) in chunks; a viewer may not; its answers attach to the
// model and a device of that model is evaluated with them.
func TestImportMDS2(t *testing.T) {
	cp := newCampus(t)
	ctx := ctxT(t, 60*time.Second)
	b, err := os.ReadFile("../compliance/internal/mds2/testdata/acme-infuser-3000.xlsx")
	if err != nil {
		t.Fatal(err)
	}
	upload := func(c medmeshv1.ComplianceServiceClient, reqID string) (*medmeshv1.ImportMDS2Response, error) {
		st, err := c.ImportMDS2(ctx)
		if err != nil {
			return nil, err
		}
		for i := 0; i < len(b); i += 4096 {
			m := &medmeshv1.ImportMDS2Request{Chunk: b[i:min(i+4096, len(b))]}
			if i == 0 {
				m.Header = &medmeshv1.ImportMDS2Request_Header{Name: "acme-infuser-3000.xlsx", Reason: "vendor MDS2", RequestId: reqID}
			}
			if err := st.Send(m); err == io.EOF {
				break // the server ended the stream: CloseAndRecv has its status
			} else if err != nil {
				return nil, err
			}
		}
		return st.CloseAndRecv()
	}
	if _, err := upload(medmeshv1.NewComplianceServiceClient(cp.as(pki.RoleViewer, "vera")), "m0"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer import: %v", err)
	}
	op := medmeshv1.NewComplianceServiceClient(cp.as(pki.RoleOperator, "oscar"))
	resp, err := upload(op, "m1")
	if err != nil {
		t.Fatal(err)
	}
	a := resp.GetAttachment()
	if a.GetManufacturer() != "Acme Medical" || a.GetModel() != "Infuser 3000" || len(a.GetAnswers()) < 10 || a.GetAttachedBy() != "operator/oscar" {
		t.Fatalf("attachment %s/%s, %d answers, by %s", a.GetManufacturer(), a.GetModel(), len(a.GetAnswers()), a.GetAttachedBy())
	}
	again, err := upload(op, "m1")
	if err != nil || again.GetAttachment().GetIndex() != a.GetIndex() {
		t.Fatalf("retry applied again: %v %v", again, err)
	}
	txcf := ""
	for _, x := range a.GetAnswers() {
		if x.GetId() == "TXCF-2" {
			txcf = x.GetAnswer()
		}
	}
	if txcf != "No" {
		t.Fatalf("TXCF-2 answer %q, want No", txcf)
	}
	bad, err := op.ImportMDS2(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad.Send(&medmeshv1.ImportMDS2Request{Header: &medmeshv1.ImportMDS2Request_Header{Name: "not.xlsx"}, Chunk: []byte("not a workbook")})
	if _, err := bad.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "not.xlsx") {
		t.Fatalf("a broken workbook: %v", err)
	}

	// A device of that model is evaluated with the vendor's answers.
	if _, err := cp.c.Apply(ctx, &fsmpb.Command{Time: timestamppb.Now(), Command: &fsmpb.Command_DeviceUpsert{DeviceUpsert: &fsmpb.DeviceUpsert{SensorId: "s1",
		Device: &medmeshv1.Device{Mac: "02:00:00:00:30:01", Vendor: "Acme Medical", Model: "Infuser 3000", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, IpAddresses: []string{"10.1.0.9"}}}}}); err != nil {
		t.Fatal(err)
	}
	rep, err := medmeshv1.NewComplianceServiceClient(cp.as(pki.RoleViewer, "vera")).GetReport(ctx, &medmeshv1.GetReportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.GetReport()
	if r.GetCoverage().GetWithMds2() != 1 || len(r.GetDevices()) != 1 || r.GetDevices()[0].GetMds2() == "" {
		t.Fatalf("report: coverage %v, devices %v", r.GetCoverage(), r.GetDevices())
	}
	mds2Evidence := false
	for _, res := range r.GetDevices()[0].GetResults() {
		for _, e := range res.GetEvidence() {
			mds2Evidence = mds2Evidence || e.GetKind() == "mds2"
		}
	}
	if !mds2Evidence {
		t.Fatal("no control rests on the MDS2's answers")
	}
}

package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// report sends one batch of device observations as sensor s.
func report(t testing.TB, n *node, sensor string, seq uint64, devs ...*medmeshv1.Device) {
	t.Helper()
	stream, err := medmeshv1.NewSensorServiceClient(n.conn).Report(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: sensor}
	for i, d := range devs {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: seq + uint64(i), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}})
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("report: %v", err)
	}
	_ = stream.CloseSend()
}

func TestInventoryDecisionsAndMembers(t *testing.T) {
	cl := newCluster(t, 1, nil)
	n := cl.nodes[0]
	inv := medmeshv1.NewInventoryServiceClient(n.conn)
	ctx := ctxT(t, 20*time.Second)

	// Watch devices from the start, in the background.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := inv.WatchDevices(wctx, &medmeshv1.WatchDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}

	var devs []*medmeshv1.Device
	for i := 0; i < 12; i++ {
		class := medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP
		if i%3 == 0 {
			class = medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION
		}
		devs = append(devs, &medmeshv1.Device{Mac: fmt.Sprintf("00-1B-44-11-3A-%02X", i), DeviceClass: class,
			Location: &medmeshv1.Location{Floor: "3"}, Risk: &medmeshv1.RiskScore{Score: uint32(i * 5)}})
	}
	report(t, n, "s1", 1, devs...)

	// Every device arrives on the watch once, normalised.
	seen := map[string]bool{}
	var lastTok string
	for len(seen) < 12 {
		m, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if seen[m.GetDevice().GetMac()] {
			t.Fatalf("device %s sent twice", m.GetDevice().GetMac())
		}
		seen[m.GetDevice().GetMac()] = true
		lastTok = m.GetResumeToken()
	}
	if !seen["00:1b:44:11:3a:0b"] {
		t.Fatalf("MACs not normalised: %v", seen)
	}

	// List with filters and pages.
	var pumps []string
	tok := ""
	for {
		resp, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 3, PageToken: tok, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL, Floor: "3"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTotalSize() != 8 {
			t.Fatalf("total_size = %d, want 8", resp.GetTotalSize())
		}
		for _, d := range resp.GetDevices() {
			pumps = append(pumps, d.GetMac())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(pumps) != 8 {
		t.Fatalf("paged %d life-critical devices, want 8: %v", len(pumps), pumps)
	}
	resp, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{MinRiskScore: 50})
	if err != nil || len(resp.GetDevices()) != 2 {
		t.Fatalf("min_risk_score 50: %v %v", resp.GetDevices(), err)
	}

	// Operator update: labels and a tier override, audited.
	mac := "00:1b:44:11:3a:01"
	up, err := inv.UpdateDevice(ctx, &medmeshv1.UpdateDeviceRequest{
		Device:     &medmeshv1.Device{Mac: "00:1B:44:11:3A:01", Labels: map[string]string{"ward": "icu"}, Tier: medmeshv1.Tier_TIER_CLINICAL},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels", "tier"}}, Actor: "alice", Reason: "biomed review",
	})
	if err != nil || up.GetDevice().GetTier() != medmeshv1.Tier_TIER_CLINICAL || up.GetDevice().GetLabels()["ward"] != "icu" {
		t.Fatalf("update: %v %v", up, err)
	}
	_, err = inv.UpdateDevice(ctx, &medmeshv1.UpdateDeviceRequest{Device: &medmeshv1.Device{Mac: mac}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"vendor"}}, Actor: "a"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("update of an output-only field: %v", err)
	}
	audit, err := n.policies().ListAuditRecords(ctx, &medmeshv1.ListAuditRecordsRequest{Resource: "device/" + mac})
	// The actor is the caller's identity (a plaintext loopback caller is
	// local/<addr>); the request's actor field is only a comment.
	if err != nil || len(audit.GetRecords()) != 1 || !strings.HasPrefix(audit.GetRecords()[0].GetActor(), "local/127.0.0.1_") ||
		audit.GetRecords()[0].GetComment() != "actor field: alice" || audit.GetRecords()[0].GetReason() != "biomed review" {
		t.Fatalf("audit: %v %v", audit, err)
	}
	// The change shows on the watch, after the resume point.
	m, err := watch.Recv()
	if err != nil || m.GetDevice().GetMac() != mac || m.GetDevice().GetTier() != medmeshv1.Tier_TIER_CLINICAL {
		t.Fatalf("watch after update: %v %v", m, err)
	}
	// Resuming from the token before the update replays only the update.
	wctx2, wcancel2 := context.WithCancel(ctx)
	defer wcancel2()
	w2, err := inv.WatchDevices(wctx2, &medmeshv1.WatchDevicesRequest{ResumeToken: lastTok})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w2.Recv(); err != nil || m.GetDevice().GetMac() != mac {
		t.Fatalf("resumed device watch: %v %v", m, err)
	}

	// The response engine's automatic decision against a pump waits for
	// an operator; approval is a new log entry.
	pumpMAC := "00:1b:44:11:3a:02"
	d, err := n.c.ProposeDecision(ctx, &medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, DeviceMac: pumpMAC, Actor: "response-engine"}, true)
	if err != nil || d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("automatic decision against a pump: %v %v", d, err)
	}
	ap, err := n.decisions().ApproveDecision(ctx, &medmeshv1.ApproveDecisionRequest{Id: d.GetId(), Actor: "bob", Reason: "confirmed compromise"})
	if err != nil || ap.GetDecision().GetTargetDecisionId() != d.GetId() || ap.GetDecision().GetIndex() <= d.GetIndex() {
		t.Fatalf("approve: %v %v", ap, err)
	}
	if _, err := n.decisions().RejectDecision(ctx, &medmeshv1.RejectDecisionRequest{Id: d.GetId(), Actor: "bob"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("reject after approve: %v", err)
	}
	pending, err := n.decisions().ListDecisions(ctx, &medmeshv1.ListDecisionsRequest{State: medmeshv1.DecisionState_DECISION_STATE_APPROVED, DeviceMac: pumpMAC})
	if err != nil || len(pending.GetDecisions()) != 2 {
		t.Fatalf("approved decisions: %v %v", pending, err)
	}

	// Sensors and enforcers that report their status appear in the cluster
	// status next to the coordinators.
	if _, err := n.cluster().ReportMemberStatus(ctx, &medmeshv1.ReportMemberStatusRequest{Member: &medmeshv1.Member{Id: "e1", Role: "enforcer", AppliedIndex: ap.GetDecision().GetIndex()}}); err != nil {
		t.Fatal(err)
	}
	st, err := n.cluster().GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
	if err != nil || len(st.GetMembers()) != 2 || st.GetMembers()[1].GetRole() != "enforcer" || st.GetMembers()[1].GetLastSeen() == nil {
		t.Fatalf("status with an enforcer: %v %v", st, err)
	}
	// A simulation without a policy is bad input, naming the field.
	if _, err := n.policies().SimulatePolicy(ctx, &medmeshv1.SimulatePolicyRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("simulate: %v", err)
	}
}

func TestGracefulCloseTransfersLeadership(t *testing.T) {
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	start := time.Now()
	leader.stop(false)
	next := cl.leader()
	t.Logf("leadership moved from %s to %s in %v", leader.cfg.ID, next.cfg.ID, time.Since(start))
	put(t, next, "after-handover", "ok")
}

// TestJoinAndRemove adds a fourth coordinator to a running cluster through
// --join (it catches up and serves reads), then removes it.
func TestJoinAndRemove(t *testing.T) {
	cl := newCluster(t, 3, nil)
	put(t, cl.leader(), "before-join", "v")
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := testConfig("c4", t.TempDir(), api, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	cfg.Join = []string{cl.nodes[1].cfg.APIAddr} // a follower or the leader: either forwards
	n4 := &node{t: t, cfg: cfg, conn: dialT(t, api, pki.Files{})}
	n4.start()
	cl.nodes = append(cl.nodes, n4)
	cl.waitReady()
	st, err := n4.cluster().GetClusterStatus(ctxT(t, 5*time.Second), &medmeshv1.GetClusterStatusRequest{})
	if err != nil || len(st.GetMembers()) != 4 {
		t.Fatalf("status after join: %v %v", st, err)
	}
	got, err := n4.policies().GetPolicy(ctxT(t, 5*time.Second), &medmeshv1.GetPolicyRequest{Name: "before-join", Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
	if err != nil || got.GetPolicy().GetDescription() != "v" {
		t.Fatalf("joined node did not catch up: %v %v", got, err)
	}
	if _, err := cl.nodes[0].cluster().RemoveMember(ctxT(t, 5*time.Second), &medmeshv1.RemoveMemberRequest{Id: "c4"}); err != nil {
		t.Fatal(err)
	}
	st, err = cl.nodes[0].cluster().GetClusterStatus(ctxT(t, 5*time.Second), &medmeshv1.GetClusterStatusRequest{})
	if err != nil || len(st.GetMembers()) != 3 {
		t.Fatalf("status after remove: %v %v", st, err)
	}
	for _, m := range st.GetMembers() {
		if m.GetId() == "c4" {
			t.Fatal("c4 still a member")
		}
	}
}

package coordinator

import (
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The five attacks of issue 15, each against a real coordinator served over
// mutual TLS, with certificates from the campus CA.

const pumpMAC = "00:1b:44:11:3a:b7"

// sensorReport sends one request on a fresh Report stream and returns the ack or
// the stream's error.
func sensorReport(t *testing.T, conn *grpc.ClientConn, sensorID string, recs ...*medmeshv1.SensorRecord) (uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.Send(&medmeshv1.ReportRequest{SensorId: sensorID, Records: recs}); err != nil {
		_, err = s.Recv()
		return 0, err
	}
	resp, err := s.Recv()
	s.CloseSend()
	return resp.GetAckedSeq(), err
}

func deviceRecord(seq uint64, mac string, class medmeshv1.DeviceClass) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{
		Device: &medmeshv1.Device{Mac: mac, DeviceClass: class, ClassConfidence: 0.99, IpAddresses: []string{"10.1.0.20"}}}}}
}

func alertRecord(seq uint64, mac, kind string, score uint32) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
		DeviceMac: mac, Kind: kind, Risk: &medmeshv1.RiskScore{Score: score}, Summary: kind + " from the device",
		Flow: &medmeshv1.FlowRef{Src: "10.1.0.20", Dst: "10.9.9.9", Dport: 445, Proto: 6}}}}
}

// seedPump has the genuine ICU sensor report an infusion pump.
func seedPump(t *testing.T, cp *campus) *grpc.ClientConn {
	t.Helper()
	icu := cp.as(pki.RoleSensor, "s-icu")
	if _, err := sensorReport(t, icu, "s-icu", deviceRecord(1, pumpMAC, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP)); err != nil {
		t.Fatalf("genuine sensor report: %v", err)
	}
	d := cp.c.FSM().Device(pumpMAC)
	if d.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL {
		t.Fatalf("pump after the genuine report: %v", d)
	}
	return icu
}

func quarantinePolicy(mode medmeshv1.PolicyMode) *medmeshv1.Policy {
	// No rules in enforce mode: everything but DHCP and DNS dropped.
	return &medmeshv1.Policy{Name: "quarantine-pump", Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: pumpMAC}, Mode: mode}
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %v", what, err, code)
	}
	t.Logf("%s: %v", what, err)
}

// (a) An anonymous client cannot put or activate an enforcing quarantine
// policy as "chief-medical-officer"; an operator cannot activate enforce
// mode; the audit names the certificate, not the actor field.
func TestAttackAnonymousEnforcingQuarantine(t *testing.T) {
	cp := newCampus(t)
	seedPump(t, cp)
	ctx := ctxT(t, 20*time.Second)

	anon := medmeshv1.NewPolicyServiceClient(cp.anonymous())
	_, err := anon.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: quarantinePolicy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), Actor: "chief-medical-officer", Reason: "urgent"})
	wantCode(t, "anonymous put", err, codes.Unauthenticated)
	_, err = anon.ActivatePolicy(ctx, &medmeshv1.ActivatePolicyRequest{Name: "quarantine-pump", Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, Actor: "chief-medical-officer", Reason: "urgent"})
	wantCode(t, "anonymous activate", err, codes.Unauthenticated)

	op := medmeshv1.NewPolicyServiceClient(cp.as(pki.RoleOperator, "bob"))
	_, err = op.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: quarantinePolicy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), Actor: "chief-medical-officer", Reason: "urgent"})
	wantCode(t, "operator puts an enforce-mode policy", err, codes.PermissionDenied)
	if _, err := op.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: quarantinePolicy(medmeshv1.PolicyMode_POLICY_MODE_MONITOR), Actor: "chief-medical-officer", Reason: "watch it"}); err != nil {
		t.Fatalf("operator puts a monitor-mode policy: %v", err)
	}
	_, err = op.ActivatePolicy(ctx, &medmeshv1.ActivatePolicyRequest{Name: "quarantine-pump", Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, Actor: "chief-medical-officer", Reason: "urgent"})
	wantCode(t, "operator activates enforce mode", err, codes.PermissionDenied)

	// A policy an approver stored in enforce mode, activated by an operator
	// without naming a mode, is refused by the FSM.
	ap := medmeshv1.NewPolicyServiceClient(cp.as(pki.RoleApprover, "carol"))
	if _, err := ap.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: quarantinePolicy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), Reason: "prepared"}); err != nil {
		t.Fatalf("approver stores an enforce-mode policy: %v", err)
	}
	_, err = op.ActivatePolicy(ctx, &medmeshv1.ActivatePolicyRequest{Name: "quarantine-pump", Actor: "chief-medical-officer", Reason: "urgent"})
	wantCode(t, "operator activates a stored enforce-mode policy", err, codes.PermissionDenied)
	if p := cp.c.FSM().Policy("quarantine-pump"); p.GetActive() {
		t.Fatalf("policy active after refused activations: %v", p)
	}

	audit, err := op.ListAuditRecords(ctx, &medmeshv1.ListAuditRecordsRequest{Resource: "policy/quarantine-pump"})
	if err != nil || len(audit.GetRecords()) != 2 {
		t.Fatalf("audit: %v %v", audit, err)
	}
	for i, want := range []string{"operator/bob", "approver/carol"} {
		r := audit.GetRecords()[i]
		if r.GetActor() != want {
			t.Errorf("audit record %d: actor %q, want the certificate identity %q", i, r.GetActor(), want)
		}
		if strings.Contains(r.GetActor(), "chief-medical-officer") {
			t.Errorf("audit record %d: actor taken from the request: %v", i, r)
		}
	}
	if c := audit.GetRecords()[0].GetComment(); !strings.Contains(c, "chief-medical-officer") {
		t.Errorf("the actor field is kept only as a comment; comment %q", c)
	}
	t.Logf("audit: %v", audit.GetRecords())
}

// (b) A sensor certificate cannot re-tier a life-critical pump by reporting
// it as a workstation, so a forged scan alert scored 99 gives a pending
// decision, not an effective quarantine; nor can it report as another
// sensor.
func TestAttackForgedSensorCannotLowerTier(t *testing.T) {
	cp := newCampus(t)
	seedPump(t, cp)
	evil := cp.as(pki.RoleSensor, "s-evil")

	_, err := sensorReport(t, evil, "s-icu", deviceRecord(2, pumpMAC, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION))
	wantCode(t, "s-evil reports as s-icu", err, codes.PermissionDenied)

	if _, err := sensorReport(t, evil, "s-evil", deviceRecord(1, pumpMAC, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION)); err != nil {
		t.Fatalf("s-evil reports as itself: %v", err)
	}
	d := cp.c.FSM().Device(pumpMAC)
	if d.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || d.GetDeviceClass() != medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP {
		t.Fatalf("pump re-tiered by a sensor: tier %v class %v", d.GetTier(), d.GetDeviceClass())
	}
	if _, err := sensorReport(t, evil, "s-evil", alertRecord(2, pumpMAC, "scan", 99)); err != nil {
		t.Fatalf("s-evil alert: %v", err)
	}
	var q *medmeshv1.Decision
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		page, _, _ := cp.c.FSM().ListDecisions(0, 100, func(d *medmeshv1.Decision) bool {
			return d.GetDeviceMac() == pumpMAC && d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
		})
		if len(page) > 0 {
			q = page[0]
		}
		return q != nil
	}, "no quarantine decision for the forged alert")
	if q.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("forged scan alert: decision %v, want PENDING_APPROVAL", q)
	}
	t.Logf("forged alert: %s %s: %s", q.GetAction(), q.GetState(), q.GetReason())
}

// (c) A join naming an unreachable voter leaves the cluster writable, and
// still after a restart; a coordinator certificate joins only as itself.
func TestAttackJoinUnreachableVoter(t *testing.T) {
	cp := newCampus(t)
	ctx := ctxT(t, 60*time.Second)
	evil := medmeshv1.NewClusterServiceClient(cp.as(pki.RoleCoordinator, "c-evil"))
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nobody listens
	_, err := evil.JoinCluster(ctx, &medmeshv1.JoinClusterRequest{Id: "c-other", RaftAddr: dead, ApiAddr: dead})
	wantCode(t, "c-evil joins as c-other", err, codes.PermissionDenied)
	_, err = evil.JoinCluster(ctx, &medmeshv1.JoinClusterRequest{Id: "c-evil", RaftAddr: dead, ApiAddr: dead})
	if err == nil {
		t.Fatal("join of an unreachable voter accepted")
	}
	t.Logf("join of an unreachable voter: %v", err)

	write := func(what string, v int) {
		t.Helper()
		op := medmeshv1.NewPolicyServiceClient(cp.as(pki.RoleOperator, "bob"))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		p := classPolicy("after-join", fmt.Sprint(v))
		if _, err := op.PutPolicy(wctx, &medmeshv1.PutPolicyRequest{Policy: p, Reason: what}); err != nil {
			t.Fatalf("write %s: %v", what, err)
		}
	}
	write("after the join attempt", 1)

	// An address that accepts connections but never speaks Raft: the
	// joiner stays a non-voter (no say in the quorum) until it would have
	// caught up, and is removed when it does not.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	hangUp := func() { // lets Raft's stalled replication to it end
		mute.Close()
		for c := range accepted {
			c.Close()
		}
	}
	jctx, jcancel := context.WithTimeout(ctx, 2*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := evil.JoinCluster(jctx, &medmeshv1.JoinClusterRequest{Id: "c-evil", RaftAddr: mute.Addr().String(), ApiAddr: mute.Addr().String()})
		done <- err
	}()
	write("while a mute joiner waits to catch up", 2)
	err = <-done
	jcancel()
	if err == nil {
		t.Fatal("a joiner that never caught up became a voter")
	}
	t.Logf("join of a mute address: %v", err)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool {
		f := cp.c.raft.GetConfiguration()
		return f.Error() == nil && len(f.Configuration().Servers) == 1
	}, "raft configuration keeps the refused joiner: %v", cp.c.raft.GetConfiguration().Configuration().Servers)
	write("after the mute joiner was removed", 3)
	hangUp()

	cp.stop()
	cp.start()
	write("after a restart", 4)
}

// (d) seq = 2^64-1 is refused, and the sensor's genuine alerts afterwards
// are stored.
func TestAttackSeqAtMaxRejected(t *testing.T) {
	cp := newCampus(t)
	icu := seedPump(t, cp)
	_, err := sensorReport(t, icu, "s-icu", alertRecord(math.MaxUint64, pumpMAC, "new_peer", 10))
	wantCode(t, "seq 2^64-1", err, codes.InvalidArgument)
	acked, err := sensorReport(t, icu, "s-icu", alertRecord(2, pumpMAC, "new_peer", 10))
	if err != nil || acked != 2 {
		t.Fatalf("genuine alert after the bad seq: acked %d, %v", acked, err)
	}
	if a := cp.c.FSM().Alert("s-icu/2"); a == nil {
		t.Fatal("genuine alert s-icu/2 not stored")
	}
	if s := cp.c.FSM().SensorSeq("s-icu"); s != 2 {
		t.Fatalf("s-icu's last seq %d, want 2", s)
	}
}

// (e) Two-person rule: an approver cannot approve a decision its own
// identity caused; a different approver can.
func TestAttackSelfApproval(t *testing.T) {
	cp := newCampus(t)
	icu := seedPump(t, cp)
	ctx := ctxT(t, 20*time.Second)
	alice := cp.as(pki.RoleApprover, "alice")
	pc := medmeshv1.NewPolicyServiceClient(alice)
	if _, err := pc.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: quarantinePolicy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), Reason: "isolate"}); err != nil {
		t.Fatal(err)
	}
	act, err := pc.ActivatePolicy(ctx, &medmeshv1.ActivatePolicyRequest{Name: "quarantine-pump", Reason: "isolate the pump"})
	if err != nil {
		t.Fatal(err)
	}
	d := cp.c.FSM().Decision(act.GetDecisionId())
	if d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL || d.GetActor() != "approver/alice" {
		t.Fatalf("enforce mode on a life-critical pump by one approver: %v", d)
	}
	_, err = medmeshv1.NewDecisionServiceClient(alice).ApproveDecision(ctx, &medmeshv1.ApproveDecisionRequest{Id: d.GetId(), Actor: "dr.house", Reason: "mine"})
	wantCode(t, "alice approves her own decision", err, codes.PermissionDenied)
	resp, err := medmeshv1.NewDecisionServiceClient(cp.as(pki.RoleApprover, "bob")).ApproveDecision(ctx, &medmeshv1.ApproveDecisionRequest{Id: d.GetId(), Reason: "second pair of eyes"})
	if err != nil || resp.GetDecision().GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || resp.GetDecision().GetActor() != "approver/bob" {
		t.Fatalf("bob approves: %v %v", resp, err)
	}

	// A decision caused by sensor/s-icu's alert may be reviewed by
	// approver/s-icu: the same name in another role is another identity.
	if _, err := sensorReport(t, icu, "s-icu", alertRecord(2, pumpMAC, "scan", 95)); err != nil {
		t.Fatal(err)
	}
	var q *medmeshv1.Decision
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		page, _, _ := cp.c.FSM().ListDecisions(0, 100, func(d *medmeshv1.Decision) bool {
			return d.GetAlertId() == "s-icu/2" && d.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
		})
		if len(page) > 0 {
			q = page[0]
		}
		return q != nil
	}, "no pending decision for s-icu's alert")
	if _, err := medmeshv1.NewDecisionServiceClient(cp.as(pki.RoleApprover, "s-icu")).RejectDecision(ctx, &medmeshv1.RejectDecisionRequest{Id: q.GetId(), Reason: "false positive"}); err != nil {
		t.Fatalf("approver/s-icu reviews sensor/s-icu's decision: %v", err)
	}
}

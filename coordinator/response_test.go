package coordinator

import (
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// reportAlerts sends alerts as sensor s, from sequence number seq.
func reportAlerts(t *testing.T, n *node, sensor string, seq uint64, alerts ...*medmeshv1.Alert) {
	t.Helper()
	stream, err := medmeshv1.NewSensorServiceClient(n.conn).Report(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: sensor}
	for i, a := range alerts {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: seq + uint64(i), Record: &medmeshv1.SensorRecord_Alert{Alert: a}})
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("report: %v", err)
	}
	_ = stream.CloseSend()
}

func decisionsNow(t *testing.T, n *node) []*medmeshv1.Decision {
	t.Helper()
	resp, err := n.decisions().ListDecisions(ctxT(t, 5*time.Second), &medmeshv1.ListDecisionsRequest{PageSize: 1000})
	if err != nil {
		t.Fatalf("list decisions: %v", err)
	}
	return resp.GetDecisions()
}

// TestResponseEngine: the replicated rules turn a committed alert into
// decisions in the alert's own entry (same index, no second commit); a
// life-critical device's become pending and take effect only on approval;
// a new leader neither re-seeds the rules nor decides anything twice.
func TestResponseEngine(t *testing.T) {
	cl := newCluster(t, 3, nil)
	cl.waitReady()
	ws, pump := "02:00:00:00:00:01", "02:00:00:00:00:02"
	report(t, cl.leader(), "s1", 1,
		&medmeshv1.Device{Mac: ws, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, Tier: medmeshv1.Tier_TIER_NON_CLINICAL, IpAddresses: []string{"10.1.0.10"}},
		&medmeshv1.Device{Mac: pump, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL, IpAddresses: []string{"10.1.0.20"}})
	scan := func(id, mac, src string) *medmeshv1.Alert {
		return &medmeshv1.Alert{Id: id, SensorId: "s1", DeviceMac: mac, Kind: "scan",
			Risk: &medmeshv1.RiskScore{Score: 95, Factors: []*medmeshv1.RiskFactor{{Name: "scan", Weight: 95}}},
			Flow: &medmeshv1.FlowRef{Src: src, Dst: "10.1.0.99", Proto: 6, Dport: 22}}
	}
	// Through a follower: the sensor may reach any replica.
	reportAlerts(t, cl.followers()[0], "s1", 3, scan("s1/1", ws, "10.1.0.10"), scan("s1/2", pump, "10.1.0.20"))

	find := func(ds []*medmeshv1.Decision, mac string, action medmeshv1.DecisionAction) []*medmeshv1.Decision {
		var out []*medmeshv1.Decision
		for _, d := range ds {
			if d.GetDeviceMac() == mac && d.GetAction() == action && d.GetTargetDecisionId() == "" {
				out = append(out, d)
			}
		}
		return out
	}
	q := medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
	var ds []*medmeshv1.Decision
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		ds = decisionsNow(t, cl.leader())
		return len(find(ds, ws, q)) == 1 && len(find(ds, pump, q)) == 1
	}, "quarantine decisions for both devices; have %v", ds)
	d := find(ds, ws, q)[0]
	if d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE || d.GetIndex() == 0 || d.GetAlertId() != "s1/1" || d.GetRule() != "quarantine-scanner" {
		t.Fatalf("workstation quarantine: %v", d)
	}
	if a := cl.leader().c.fsm.Alert("s1/1"); a.GetIndex() != d.GetIndex() {
		t.Fatalf("decision at index %d, its alert at %d: want the same entry", d.GetIndex(), a.GetIndex())
	}
	pending := find(ds, pump, q)[0]
	if pending.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("life-critical pump quarantined automatically: %v", pending)
	}
	before := len(ds)

	// Kill the leader: the new one must not seed or decide again.
	old := cl.leader()
	old.stop(true)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		l := cl.leader()
		return l != nil && l != old
	}, "new leader")
	cl.waitReady()
	ds = decisionsNow(t, cl.leader())
	if len(ds) != before {
		t.Fatalf("after failover %d decisions, want %d: %v", len(ds), before, ds)
	}

	resp, err := cl.leader().decisions().ApproveDecision(ctxT(t, 5*time.Second), &medmeshv1.ApproveDecisionRequest{Id: pending.GetId(), Actor: "biomed-oncall", Reason: "pump confirmed compromised"})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if resp.GetDecision().GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || resp.GetDecision().GetIndex() <= pending.GetIndex() {
		t.Fatalf("approval entry: %v", resp.GetDecision())
	}
}

package coordinator

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/policy"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestGenerateSimulateMUD drives issue 6's policy path through the API: a
// sensor reports a device, its frozen baseline and flow summaries; the
// generated policy allows what the baseline learned, the simulation lists
// the one flow outside it, and the MUD export imports back to the same
// rules.
func TestGenerateSimulateMUD(t *testing.T) {
	cl := newCluster(t, 1, nil)
	cl.waitReady()
	n := cl.leader()
	ctx := ctxT(t, 10*time.Second)
	mac := "02:00:00:00:00:07"
	out := medmeshv1.Direction_DIRECTION_OUTBOUND
	recs := []*medmeshv1.SensorRecord{
		{Seq: 1, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: mac, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, IpAddresses: []string{"10.1.0.7"}}}}},
		{Seq: 2, Record: &medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{
			DeviceMac: mac, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Version: 1,
			Entries: []*medmeshv1.BaselineEntry{{PeerCidr: "10.9.0.5/32", Protocol: 6, Port: 2575, App: "hl7", Direction: out}}}}},
		{Seq: 3, Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: mac, DeviceIp: "10.1.0.7", PeerIp: "10.9.0.5", Protocol: 6, Port: 2575, App: "hl7", Direction: out, Flows: 3, WindowSeconds: 60}}},
		{Seq: 4, Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: mac, DeviceIp: "10.1.0.7", PeerIp: "203.0.113.9", Protocol: 6, Port: 443, Direction: out, Flows: 1, WindowSeconds: 60}}},
	}
	stream, err := medmeshv1.NewSensorServiceClient(n.conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&medmeshv1.ReportRequest{SensorId: "s1", Records: recs}); err != nil {
		t.Fatal(err)
	}
	if ack, err := stream.Recv(); err != nil || ack.GetAckedSeq() != 4 {
		t.Fatalf("report ack %v %v", ack, err)
	}

	gen, err := n.policies().GeneratePolicy(ctx, &medmeshv1.GeneratePolicyRequest{DeviceMac: mac})
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	p := gen.GetPolicy()
	if p.GetDeviceMac() != mac || len(p.GetRules()) == 0 || p.GetMode() != medmeshv1.PolicyMode_POLICY_MODE_MONITOR {
		t.Fatalf("generated policy: %v", p)
	}
	sim := gen.GetSimulation()
	if sim.GetFlowsTotal() != 4 || sim.GetFlowsAllowed() != 3 || sim.GetFlowsDropped() != 1 || sim.GetDropped()[0].GetFlow().GetPeerIp() != "203.0.113.9" {
		t.Fatalf("simulation: %v", sim)
	}
	if _, err := n.policies().GeneratePolicy(ctx, &medmeshv1.GeneratePolicyRequest{DeviceMac: "02:00:00:00:00:99"}); status.Code(err) != codes.NotFound {
		t.Fatalf("generate for an unknown device: %v", err)
	}

	put, err := n.policies().PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: p, Actor: "biomed", Reason: "generated from baseline"})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	exp, err := n.policies().ExportPolicyMud(ctx, &medmeshv1.ExportPolicyMudRequest{Name: put.GetPolicy().GetName()})
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	imp, err := n.policies().ImportPolicyMud(ctx, &medmeshv1.ImportPolicyMudRequest{DeviceMac: mac, MudJson: exp.GetMudJson(), Name: p.GetName()})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	rules := func(p *medmeshv1.Policy) *medmeshv1.Policy {
		return &medmeshv1.Policy{Rules: policy.Canonical(p).GetRules()}
	}
	if !proto.Equal(rules(imp.GetPolicy()), rules(p)) {
		t.Fatalf("MUD round trip changed the rules:\n got %v\nwant %v", imp.GetPolicy().GetRules(), p.GetRules())
	}
	if _, err := n.policies().ImportPolicyMud(ctx, &medmeshv1.ImportPolicyMudRequest{DeviceMac: mac, MudJson: "{not json"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("import of bad JSON: %v", err)
	}
}

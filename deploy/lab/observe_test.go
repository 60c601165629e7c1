package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// fakeAPI answers the reads the observer makes with a fixed state.
type fakeAPI struct {
	medmeshv1.UnimplementedClusterServiceServer
	medmeshv1.UnimplementedInventoryServiceServer
	medmeshv1.UnimplementedAlertServiceServer
	medmeshv1.UnimplementedDecisionServiceServer
	medmeshv1.UnimplementedSensorServiceServer
	medmeshv1.UnimplementedIncidentServiceServer
}

func (fakeAPI) ListIncidents(context.Context, *medmeshv1.ListIncidentsRequest) (*medmeshv1.ListIncidentsResponse, error) {
	return &medmeshv1.ListIncidentsResponse{Incidents: []*medmeshv1.Incident{{
		Id: "inc-0011223344556677", Index: 31, DeviceMac: "00:14:b8:00:01:0d", State: medmeshv1.IncidentState_INCIDENT_STATE_OPEN,
		Devices: []*medmeshv1.IncidentDevice{{Mac: "00:14:b8:00:01:0d"}, {Mac: "58:46:e1:00:01:0a"}},
		Timeline: []*medmeshv1.IncidentStep{
			{Stage: medmeshv1.IncidentStage_INCIDENT_STAGE_RECONNAISSANCE, Attack: &medmeshv1.AttackReference{Matrix: "ics", TacticId: "TA0102", TechniqueId: "T0846"}},
			{Stage: medmeshv1.IncidentStage_INCIDENT_STAGE_EXFILTRATION, Attack: &medmeshv1.AttackReference{Matrix: "enterprise", TacticId: "TA0010"}},
		},
		Evidence:  &medmeshv1.IncidentEvidence{AlertCount: 2},
		Score:     90,
		Responses: []*medmeshv1.IncidentResponse{{Rule: "r", Action: medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY, DecisionId: "r-1"}, {Rule: "b", Action: medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER}},
	}}}, nil
}

func (fakeAPI) GetClusterStatus(context.Context, *medmeshv1.GetClusterStatusRequest) (*medmeshv1.GetClusterStatusResponse, error) {
	return &medmeshv1.GetClusterStatusResponse{Leader: "c2", CommitIndex: 42, Members: []*medmeshv1.Member{
		{Id: "c2", Role: "coordinator", State: "leader", AppliedIndex: 42},
		{Id: "e1", Role: "enforcer", State: "alive", AppliedIndex: 40},
	}}, nil
}

func (fakeAPI) ListDevices(context.Context, *medmeshv1.ListDevicesRequest) (*medmeshv1.ListDevicesResponse, error) {
	return &medmeshv1.ListDevicesResponse{Devices: []*medmeshv1.Device{
		{Mac: "58:46:e1:00:01:0a", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL},
		{Mac: "02:00:00:00:00:99", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN},
	}}, nil
}

func (fakeAPI) ListAlerts(context.Context, *medmeshv1.ListAlertsRequest) (*medmeshv1.ListAlertsResponse, error) {
	return &medmeshv1.ListAlertsResponse{Alerts: []*medmeshv1.Alert{
		{Index: 30, DeviceMac: "00:14:B8:00:01:0D", Kind: "external_destination", Summary: "new peer 203.0.113.10"},
		{Index: 12, DeviceMac: "00:14:b8:00:01:0d", Kind: "scan", Summary: "50 probes"},
	}}, nil
}

func (fakeAPI) ListDecisions(context.Context, *medmeshv1.ListDecisionsRequest) (*medmeshv1.ListDecisionsResponse, error) {
	return &medmeshv1.ListDecisionsResponse{Decisions: []*medmeshv1.Decision{
		{Index: 31, DeviceMac: "00:14:b8:00:01:0d", Action: medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY,
			State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, Actor: "response-engine", Reason: "exfiltration"},
	}}, nil
}

func (fakeAPI) GetBaseline(_ context.Context, r *medmeshv1.GetBaselineRequest) (*medmeshv1.GetBaselineResponse, error) {
	if r.GetDeviceMac() != "00:14:b8:00:01:0d" {
		return &medmeshv1.GetBaselineResponse{Baseline: &medmeshv1.Baseline{}, ClassBaseline: true}, nil
	}
	return &medmeshv1.GetBaselineResponse{Baseline: &medmeshv1.Baseline{DeviceMac: r.GetDeviceMac(), FreezeTime: nil}}, nil
}

// fakeObserver is an observer of the default lab reading fakeAPI through
// the generated clients.
func fakeObserver(t *testing.T) (*Lab, *Observer) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	f := fakeAPI{}
	medmeshv1.RegisterClusterServiceServer(srv, f)
	medmeshv1.RegisterInventoryServiceServer(srv, f)
	medmeshv1.RegisterAlertServiceServer(srv, f)
	medmeshv1.RegisterDecisionServiceServer(srv, f)
	medmeshv1.RegisterSensorServiceServer(srv, f)
	medmeshv1.RegisterIncidentServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	cfg := DefaultConfig()
	cfg.Binary, cfg.LabBinary = "/bin/true", "/bin/true"
	l, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return l, NewObserver(l, conn)
}

func TestObserverReadsTheAPI(t *testing.T) {
	_, obs := fakeObserver(t)
	s := obs.Snapshot(context.Background())
	if s.Leader != "c2" || s.Commit != 42 || len(s.Members) != 2 {
		t.Errorf("cluster: %+v", s)
	}
	if len(s.Devices) != 2 || s.Devices[0].Name != "pump1" || s.Devices[0].Class != "infusion-pump" || s.Devices[0].Tier != "life-critical" || s.Devices[1].Name != "" {
		t.Errorf("devices: %+v", s.Devices)
	}
	if len(s.Alerts) != 2 || s.Alerts[0].Index != 12 || s.Alerts[1].Device != "nursecall1" {
		t.Errorf("alerts not by index or not named: %+v", s.Alerts)
	}
	if len(s.Decisions) != 1 || s.Decisions[0].Action != "enforce-policy" || s.Decisions[0].State != "effective" || s.Decisions[0].Device != "nursecall1" {
		t.Errorf("decisions: %+v", s.Decisions)
	}
	if len(s.Incidents) != 1 || s.Incidents[0].Device != "nursecall1" || s.Incidents[0].Devices != 2 ||
		strings.Join(s.Incidents[0].Stages, ",") != "reconnaissance (T0846),exfiltration (TA0010)" || strings.Join(s.Incidents[0].Decisions, ",") != "enforce-policy" {
		t.Errorf("incidents: %+v", s.Incidents)
	}
	// A baseline without a freeze time is not frozen.
	if frozen, err := obs.BaselineFrozen(context.Background(), "00:14:B8:00:01:0D"); err != nil || frozen {
		t.Errorf("baseline frozen=%v err=%v", frozen, err)
	}

	var buf bytes.Buffer
	Render(&buf, s, "title")
	for _, want := range []string{"leader c2", "pump1", "infusion-pump", "#31", "enforce-policy", "response-engine: exfiltration", "scan",
		"INCIDENTS (1)", "reconnaissance (T0846) > exfiltration (TA0010); decided: enforce-policy"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("view lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestScenarioTotals records a scenario's end from the observer's snapshot of
// the API and two reads of the enforcer counters, and checks the totals a
// script reads from `medmesh-lab run -o json`.
func TestScenarioTotals(t *testing.T) {
	_, obs := fakeObserver(t)
	snap := obs.Snapshot(context.Background())
	if snap.APIError != "" && !strings.HasPrefix(snap.APIError, "counters:") {
		t.Fatalf("api: %s", snap.APIError)
	}
	snap.APIError = "" // counters need root; they are given below
	before := []Traffic{
		{Device: "pump1", Floor: 1, LifeCritical: true, ToEnforcer: 40, Passed: 40},
		{Device: "monitor1", Floor: 1, LifeCritical: true, ToEnforcer: 500, Passed: 500},
		{Device: "nursecall1", Floor: 1, ToEnforcer: 100, Passed: 100},
		{Device: "pump2", Floor: 2, LifeCritical: true, ToEnforcer: 7, Passed: 7},
	}
	after := []Traffic{
		{Device: "pump1", Floor: 1, LifeCritical: true, ToEnforcer: 52, Passed: 49, Dropped: 3},    // 3 dropped during
		{Device: "monitor1", Floor: 1, LifeCritical: true, ToEnforcer: 20, Passed: 18, Dropped: 2}, // counters restarted: 2
		{Device: "nursecall1", Floor: 1, ToEnforcer: 180, Passed: 130, Dropped: 50},                // 50
		{Device: "ws1", Floor: 1, ToEnforcer: 10, Passed: 10},                                      // new: 0
		{Device: "pump2", Floor: 2, LifeCritical: true, ToEnforcer: 9, Passed: 9},                  // 0
	}
	out := ScenarioOutcome{Scenario: ScenarioCompromisedDevice, Device: "nursecall1", DetectionToDropMs: 625}
	out.record(before, after, snap)

	drops := map[string]uint64{}
	for _, tr := range out.Traffic {
		drops[tr.Device] = tr.Dropped
	}
	if want := map[string]uint64{"pump1": 3, "monitor1": 2, "nursecall1": 50, "ws1": 0, "pump2": 0}; !maps.Equal(drops, want) {
		t.Errorf("drops during the scenario %v, want %v", drops, want)
	}
	want := Totals{DevicesFound: len(snap.Devices), Alerts: len(snap.Alerts), Decisions: len(snap.Decisions), Incidents: len(snap.Incidents), EnforcerDrops: 55, LifeCriticalDrops: 5}
	if want.DevicesFound != 2 || want.Alerts != 2 || want.Decisions != 1 || want.Incidents != 1 {
		t.Fatalf("the observer read %d devices, %d alerts, %d decisions from the fake API", want.DevicesFound, want.Alerts, want.Decisions)
	}
	if out.Totals != want {
		t.Errorf("totals %+v, want %+v", out.Totals, want)
	}
	if len(out.Notes) != 0 {
		t.Errorf("notes %v", out.Notes)
	}

	// A script reads the totals and the latency without walking traffic.
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Totals            map[string]float64 `json:"totals"`
		DetectionToDropMs *float64           `json:"detection_to_drop_ms"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]float64{"devices_found": 2, "alerts": 2, "decisions": 1, "enforcer_drops": 55, "life_critical_drops": 5} {
		if got, ok := doc.Totals[k]; !ok || got != v {
			t.Errorf("json totals.%s = %v (present %v), want %v: %s", k, got, ok, v, b)
		}
	}
	if doc.DetectionToDropMs == nil || *doc.DetectionToDropMs != 625 {
		t.Errorf("json detection_to_drop_ms missing or wrong: %s", b)
	}

	// The API failing at the end is a note, not lost totals of the counters.
	snap.APIError = "list alerts: unavailable"
	out = ScenarioOutcome{}
	out.record(before, after, snap)
	if out.Totals.EnforcerDrops != 55 || len(out.Notes) != 1 || !strings.Contains(out.Notes[0], "list alerts") {
		t.Errorf("with an API error: totals %+v, notes %v", out.Totals, out.Notes)
	}
}

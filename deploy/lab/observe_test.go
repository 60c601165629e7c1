package lab

import (
	"bytes"
	"context"
	"io"
	"log/slog"
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

func TestObserverReadsTheAPI(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	f := fakeAPI{}
	medmeshv1.RegisterClusterServiceServer(srv, f)
	medmeshv1.RegisterInventoryServiceServer(srv, f)
	medmeshv1.RegisterAlertServiceServer(srv, f)
	medmeshv1.RegisterDecisionServiceServer(srv, f)
	medmeshv1.RegisterSensorServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cfg := DefaultConfig()
	cfg.Binary = "/bin/true"
	l, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	obs := NewObserver(l, conn)
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
	// A baseline without a freeze time is not frozen.
	if frozen, err := obs.BaselineFrozen(context.Background(), "00:14:B8:00:01:0D"); err != nil || frozen {
		t.Errorf("baseline frozen=%v err=%v", frozen, err)
	}

	var buf bytes.Buffer
	Render(&buf, s, "title")
	for _, want := range []string{"leader c2", "pump1", "infusion-pump", "#31", "enforce-policy", "response-engine: exfiltration", "scan"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("view lacks %q:\n%s", want, buf.String())
		}
	}
}

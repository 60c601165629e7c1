//go:build linux

package enforcer_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/enforcer"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestClassPolicyDropsAtEnforcer: a real coordinator and a real XDP
// enforcer on the lab's device link. A class policy for IT workstations,
// activated when the lab device and two other workstations are known,
// reaches the enforcer as one decision per device and drops the lab
// device's denied traffic; a workstation classified after activation gets
// the policy too.
func TestClassPolicyDropsAtEnforcer(t *testing.T) {
	l := newLab(t)
	mac := devMAC(t, l)
	srv := "10.2.0.2"
	_, apis := startCoordinators(t, 1)
	conn, err := grpc.NewClient(apis[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// The enforcer attaches in the enforcer's namespace and follows the
	// coordinator, which listens in this one.
	logf, err := os.Create(filepath.Join(t.TempDir(), "enforcer.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("enforcer.log:\n%s", b)
		}
	}()
	cfg := enforcer.DefaultConfig()
	cfg.ID, cfg.Interface, cfg.Coordinators, cfg.PinDir = "e1", "e0", apis, l.pinDir
	cfg.MaxDevices, cfg.ReportInterval = 64, 100*time.Millisecond
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr("10.2.0.53")}
	cfg.DHCPServers = []netip.Addr{netip.MustParseAddr("10.2.0.67")}
	var e *enforcer.Enforcer
	inNS(t, l.enf, func() {
		e, err = enforcer.New(cfg, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug})), prometheus.NewRegistry())
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := errors.Join(<-done, e.Close()); err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	}()

	others := []string{"02:00:00:00:0c:01", "02:00:00:00:0c:02"}
	reportDevices(t, conn, 1, mac, others[0], others[1])
	if !l.tcpOK(t, srv+":22") {
		t.Fatal("no policy yet: tcp to :22 must pass")
	}

	pc := medmeshv1.NewPolicyServiceClient(conn)
	pol := &medmeshv1.Policy{
		Name: "class/it-workstation", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
		Mode:  medmeshv1.PolicyMode_POLICY_MODE_ENFORCE,
		Rules: []*medmeshv1.Rule{rule("https", srv+"/32", 6, 443), rule("probe", srv+"/32", 17, 9000)},
	}
	if _, err := pc.PutPolicy(testCtx(t), &medmeshv1.PutPolicyRequest{Policy: pol, Actor: "test", Reason: "class policy test"}); err != nil {
		t.Fatal(err)
	}
	act, err := pc.ActivatePolicy(testCtx(t), &medmeshv1.ActivatePolicyRequest{Name: pol.Name, Actor: "test", Reason: "class policy test"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool { return e.Applied() >= act.GetDecisionIndex() }, "activation applied")
	// One decision per device, all at the activation's index.
	ds, err := medmeshv1.NewDecisionServiceClient(conn).ListDecisions(testCtx(t), &medmeshv1.ListDecisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var macs []string
	for _, d := range ds.GetDecisions() {
		if d.GetIndex() == act.GetDecisionIndex() && d.GetState() == medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
			macs = append(macs, d.GetDeviceMac())
		}
	}
	if len(macs) != 3 {
		t.Fatalf("decisions at the activation: %v", ds.GetDecisions())
	}

	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool { return !l.tcpOK(t, srv+":22") }, "class policy drops tcp to :22")
	if !l.tcpOK(t, srv+":443") {
		t.Fatal("class policy dropped allowed tcp to :443")
	}
	l.sendUDP(t, 0, srv+":9999", 10)
	l.sendUDP(t, 0, srv+":9000", 10)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool { return l.udp(9000) >= 10 }, "allowed datagrams pass")
	if n := l.udp(9999); n != 0 {
		t.Fatalf("%d denied datagrams passed", n)
	}
	if v := pinnedVerdicts(t, l.pinDir); v["drop_denied"] == 0 {
		t.Fatalf("verdicts %v", v)
	}

	// A workstation classified after the activation gets the policy in the
	// apply that classifies it: the enforcer then holds four devices.
	reportDevices(t, conn, 4, "02:00:00:00:0c:03")
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool { return e.Devices() == 4 }, "device classified later has the class policy")
}

// reportDevices has sensor s1 report IT workstations, records from seq on.
func reportDevices(t *testing.T, conn *grpc.ClientConn, seq uint64, macs ...string) {
	t.Helper()
	req := &medmeshv1.ReportRequest{SensorId: "s1"}
	for i, m := range macs {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: seq + uint64(i), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{
			Device: &medmeshv1.Device{Mac: m, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}}}})
	}
	last := seq + uint64(len(macs)) - 1
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		rs, err := medmeshv1.NewSensorServiceClient(conn).Report(rctx)
		if err != nil {
			return false
		}
		if err := rs.Send(req); err != nil {
			return false
		}
		resp, err := rs.Recv()
		rs.CloseSend()
		return err == nil && resp.GetAckedSeq() >= last
	}, "devices reported")
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

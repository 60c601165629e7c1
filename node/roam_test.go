package node

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/engine"
	"github.com/medmesh/medmesh/node/internal/reporter"
	"github.com/medmesh/medmesh/node/internal/spool"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var (
	pumpMAC = flow.MAC{0x00, 0x12, 0x21, 0x00, 0x00, 0x0a} // B. Braun OUI
	gwMAC   = flow.MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	pumpIP  = netip.MustParseAddr("10.1.0.10")
	hl7IP   = netip.MustParseAddr("10.9.0.5")
	dnsIP   = netip.MustParseAddr("10.9.0.53")
	t0      = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC).UnixNano()
)

func rec(dst netip.Addr, sport, dport uint16, proto uint8, ts int64) *flow.Record {
	return &flow.Record{Src: pumpIP, Dst: dst, SrcPort: sport, DstPort: dport, Proto: proto,
		FwdPackets: 4, FwdBytes: 600, RevPackets: 3, RevBytes: 300, FirstNs: ts, LastNs: ts + 1e6,
		SrcMAC: pumpMAC, DstMAC: gwMAC}
}

// pumpTraffic is the pump's normal life: HL7 to the interface engine and DNS,
// every second of record time in [from, to).
func pumpTraffic(e *engine.Engine, from, to time.Duration) {
	for d := from; d < to; d += time.Second {
		ts := t0 + int64(d)
		e.HandleFlow(rec(hl7IP, uint16(40000+d/time.Second), 2575, 6, ts))
		e.HandleFlow(rec(dnsIP, uint16(50000+d/time.Second), 53, 17, ts))
	}
}

func testEngine(t *testing.T, id string) *engine.Engine {
	t.Helper()
	c := engine.DefaultConfig()
	c.SensorID = id
	c.Baseline.Window = 10 * time.Second
	c.Baseline.Slot = time.Second
	e, err := engine.New(c, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRoamingDeviceKeepsItsBaseline is issue 5's roaming acceptance: a pump
// learned at sensor A roams to sensor B; B fetches its baseline replicated
// by the coordinator, scores its usual traffic without a single alert, and
// still alerts on a peer the baseline does not allow (it scores rather than
// learns).
func TestRoamingDeviceKeepsItsBaseline(t *testing.T) {
	// A real coordinator (--dev: one replica, Raft with fsync, gRPC).
	api := net.JoinHostPort("127.0.0.1", itoa(testutil.FreePort(t)))
	cc := coordinator.DefaultConfig()
	cc.ID, cc.Dev, cc.APIAddr, cc.RaftAddr = "c1", true, api, net.JoinHostPort("127.0.0.1", itoa(testutil.FreePort(t)))
	co, err := coordinator.New(cc, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(coordinator.LoopbackServerOptions()...)
	co.Register(gs)
	lis, err := net.Listen("tcp", api)
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(func() { gs.Stop(); _ = co.Close() })
	if err := co.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return co.Ready() == nil }, "coordinator not ready")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Sensor A learns the pump and reports device and frozen baseline.
	a := testEngine(t, "sA")
	pumpTraffic(a, 0, 12*time.Second)
	a.FreezeAll()
	bs := a.Baselines()
	if len(bs) == 0 {
		t.Fatal("sensor A froze no baseline")
	}
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: "sA"}
	for i, d := range a.Devices() {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}})
	}
	for _, b := range bs {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: uint64(len(req.Records) + 1), Record: &medmeshv1.SensorRecord_Baseline{Baseline: b}})
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("report from A: %v", err)
	}

	// Sensor B: engine plus reporter against the coordinator, no gossip (a
	// device new here is always looked up).
	sp, err := spool.Open(spoolConfig(t.TempDir()), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rc := reporter.DefaultConfig()
	rc.SensorID, rc.Coordinators = "sB", []string{api}
	rep, err := reporter.New(rc, sp, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	b := testEngine(t, "sB")
	n := &node{cfg: Config{Sensor: DefaultConfig().Sensor}, log: slog.New(slog.DiscardHandler), eng: b, rep: rep,
		sentDev: map[string]*medmeshv1.Device{}, sentBase: map[string]uint64{}, seenHere: map[string]bool{}}
	n.cfg.Sensor.ID = "sB"

	// The pump's first flow at B makes it a device here; the sync looks its
	// baseline up and imports it.
	later := 3600 * time.Second
	pumpTraffic(b, later, later+time.Second)
	n.syncDevices(ctx)
	if got := n.sentBase[pumpMAC.String()]; got != bs[0].GetVersion() {
		t.Fatalf("B did not import the replicated baseline (version %d, want %d)", got, bs[0].GetVersion())
	}

	// Its usual traffic raises nothing at B ...
	pumpTraffic(b, later+time.Second, later+30*time.Second)
	if al := b.Alerts(); len(al) != 0 {
		t.Fatalf("roaming pump raised %d alerts at B for allowed behaviour, first: %v", len(al), al[0])
	}
	// ... while a peer outside its baseline does: B scores, it does not
	// re-learn.
	b.HandleFlow(rec(netip.MustParseAddr("10.1.7.7"), 41000, 22, 6, t0+int64(later+31*time.Second)))
	if al := b.Alerts(); len(al) == 0 {
		t.Fatal("a new peer of the roaming pump raised no alert at B")
	}
}

func spoolConfig(dir string) spool.Config {
	c := spool.DefaultConfig()
	c.Dir = dir
	return c
}

func itoa(i int) string { return strconv.Itoa(i) }

package reporter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/gossip"
	"github.com/medmesh/medmesh/node/internal/spool"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// As in the coordinator's own tests: hashicorp/raft leaves a
		// future queued in a buffered channel unanswered at shutdown;
		// Coordinator.await stops waiting for it, but the goroutine
		// reading it stays parked until the process exits.
		goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"),
	)
}

// fakeCoord is an in-memory SensorService with the coordinators' contract:
// per-sensor seq dedupe, acked_seq = highest committed seq.
type fakeCoord struct {
	medmeshv1.UnimplementedSensorServiceServer

	mu        sync.Mutex
	last      map[string]uint64
	committed []*medmeshv1.SensorRecord
	raw       int
	dropped   map[string]uint64
	reject    codes.Code // non-OK: Report fails with it at once
	rejected  int
	// dropAckOnce: commit the next request but fail the stream before acking.
	dropAckOnce bool
	baselines   map[string]*medmeshv1.Baseline
}

func newFake() *fakeCoord {
	return &fakeCoord{last: map[string]uint64{}, baselines: map[string]*medmeshv1.Baseline{}}
}

func (f *fakeCoord) Report(st grpc.BidiStreamingServer[medmeshv1.ReportRequest, medmeshv1.ReportResponse]) error {
	f.mu.Lock()
	if f.reject != codes.OK {
		f.rejected++
		f.mu.Unlock()
		return status.Error(f.reject, "not the leader and cannot forward")
	}
	f.mu.Unlock()
	for {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		if req.GetSensorId() == "" {
			return status.Error(codes.InvalidArgument, "sensor_id is required")
		}
		f.mu.Lock()
		for _, rec := range req.GetRecords() {
			f.raw++
			if rec.GetSeq() > f.last[req.GetSensorId()] {
				f.committed = append(f.committed, rec)
				f.last[req.GetSensorId()] = rec.GetSeq()
			}
		}
		f.dropped = req.GetDropped()
		ack := f.last[req.GetSensorId()]
		drop := f.dropAckOnce
		f.dropAckOnce = false
		f.mu.Unlock()
		if drop {
			return status.Error(codes.Unavailable, "leader lost before ack")
		}
		if err := st.Send(&medmeshv1.ReportResponse{AckedSeq: ack, Index: ack}); err != nil {
			return err
		}
	}
}

func (f *fakeCoord) GetBaseline(_ context.Context, req *medmeshv1.GetBaselineRequest) (*medmeshv1.GetBaselineResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.baselines[req.GetDeviceMac()]; ok {
		return &medmeshv1.GetBaselineResponse{Baseline: b}, nil
	}
	return nil, status.Error(codes.NotFound, "no baseline")
}

func (f *fakeCoord) snapshot() (committed []*medmeshv1.SensorRecord, raw int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*medmeshv1.SensorRecord(nil), f.committed...), f.raw
}

// server runs a fakeCoord on a fixed address that can be stopped and
// started again.
type server struct {
	t    *testing.T
	addr string
	fake *fakeCoord
	srv  *grpc.Server
	done chan struct{}
}

func startServer(t *testing.T, fake *fakeCoord, addr string) *server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, addr: lis.Addr().String(), fake: fake, srv: grpc.NewServer(), done: make(chan struct{})}
	medmeshv1.RegisterSensorServiceServer(s.srv, fake)
	go func() { defer close(s.done); s.srv.Serve(lis) }()
	t.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	s.srv.Stop()
	<-s.done
}

func (s *server) restart() *server { s.stop(); return startServer(s.t, s.fake, s.addr) }

func testConfig(sensor string, addrs ...string) Config {
	cfg := DefaultConfig()
	cfg.SensorID = sensor
	cfg.Coordinators = addrs
	cfg.BackoffMin = 10 * time.Millisecond
	cfg.BackoffMax = 200 * time.Millisecond
	cfg.AckTimeout = 2 * time.Second
	cfg.RPCTimeout = time.Second
	cfg.BatchSize = 32
	cfg.MaxUnacked = 128
	return cfg
}

type running struct {
	r      *Reporter
	sp     *spool.Spool
	cancel context.CancelFunc
	done   chan error
}

func run(t *testing.T, cfg Config, dir string) *running {
	t.Helper()
	scfg := spool.DefaultConfig()
	scfg.Dir = dir
	sp, err := spool.Open(scfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &running{r: r, sp: sp, cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- r.Run(ctx) }()
	t.Cleanup(x.stop)
	return x
}

func (x *running) stop() {
	if x.cancel == nil {
		return
	}
	x.cancel()
	<-x.done
	x.r.Close()
	x.sp.Close()
	x.cancel = nil
}

func alertRec(dev, n int) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
		Id:        fmt.Sprintf("dev%d-%04d", dev, n),
		DeviceMac: fmt.Sprintf("00:1b:4f:00:00:%02x", dev),
		Kind:      "new_peer",
	}}}
}

func enqueueAlerts(t *testing.T, r *Reporter, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for n := from; n < to; n++ {
		if err := r.Enqueue(ctx, alertRec(n%5, n)); err != nil {
			t.Fatal(err)
		}
	}
}

// checkExactlyOnce asserts every alert 0..n-1 was committed exactly once,
// in order per device, with strictly increasing seqs.
func checkExactlyOnce(t *testing.T, committed []*medmeshv1.SensorRecord, n int) {
	t.Helper()
	seen := map[string]int{}
	lastPerDev := map[string]int{}
	var lastSeq uint64
	for _, rec := range committed {
		if rec.GetSeq() <= lastSeq {
			t.Fatalf("seq %d after %d", rec.GetSeq(), lastSeq)
		}
		lastSeq = rec.GetSeq()
		a := rec.GetAlert()
		seen[a.GetId()]++
		num, _ := strconv.Atoi(a.GetId()[strings.IndexByte(a.GetId(), '-')+1:])
		if prev, ok := lastPerDev[a.GetDeviceMac()]; ok && num <= prev {
			t.Fatalf("device %s: alert %d after %d", a.GetDeviceMac(), num, prev)
		}
		lastPerDev[a.GetDeviceMac()] = num
	}
	for i := range n {
		id := fmt.Sprintf("dev%d-%04d", i%5, i)
		if seen[id] != 1 {
			t.Fatalf("alert %s committed %d times", id, seen[id])
		}
	}
	if len(committed) != n {
		t.Fatalf("committed %d records, want %d", len(committed), n)
	}
}

func TestOutageExactlyOnceInOrder(t *testing.T) {
	fake := newFake()
	srv := startServer(t, fake, "")
	dir := t.TempDir()
	x := run(t, testConfig("s1", srv.addr), dir)

	enqueueAlerts(t, x.r, 0, 200)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() bool {
		c, _ := fake.snapshot()
		return len(c) == 200
	}, "first 200 alerts not delivered")

	// Every coordinator down: the sensor keeps spooling.
	srv.stop()
	enqueueAlerts(t, x.r, 200, 400)
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		return x.sp.Stats().Records == 200
	}, "outage records not spooled (spool has %d)", x.sp.Stats().Records)

	// The reporter itself restarts during the outage, from its spool dir.
	x.stop()
	x = run(t, testConfig("s1", srv.addr), dir)
	if st := x.sp.Stats(); st.Records != 200 || st.LastSeq != 400 {
		t.Fatalf("spool after reporter restart: %+v", st)
	}
	enqueueAlerts(t, x.r, 400, 450)

	// One more wrinkle: the first request after recovery is committed but
	// its ack is lost; the resend must not duplicate.
	fake.mu.Lock()
	fake.dropAckOnce = true
	fake.mu.Unlock()
	srv = srv.restart()
	testutil.Eventually(t, 15*time.Second, 5*time.Millisecond, func() bool {
		c, _ := fake.snapshot()
		return len(c) == 450 && x.sp.Stats().Records == 0
	}, "alerts not all delivered after the outage")
	committed, raw := fake.snapshot()
	checkExactlyOnce(t, committed, 450)
	if raw <= 450 {
		t.Fatalf("raw deliveries %d: the lost ack caused no resend, test proves nothing", raw)
	}
	if last := committed[len(committed)-1].GetSeq(); last != 450 {
		t.Fatalf("last seq %d, want 450 (monotonic across the restart)", last)
	}
	t.Logf("450 alerts committed exactly once; %d records received in all (resends deduplicated)", raw)
}

func TestRotatesToAcceptingReplica(t *testing.T) {
	refusing := newFake()
	refusing.reject = codes.FailedPrecondition
	bad := startServer(t, refusing, "")
	good := newFake()
	ok := startServer(t, good, "")
	// A dead address first, a refusing replica second, the good one last.
	dead := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	x := run(t, testConfig("s2", dead, bad.addr, ok.addr), t.TempDir())
	enqueueAlerts(t, x.r, 0, 50)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() bool {
		c, _ := good.snapshot()
		return len(c) == 50
	}, "records did not reach the accepting replica")
	c, _ := good.snapshot()
	checkExactlyOnce(t, c, 50)
	refusing.mu.Lock()
	defer refusing.mu.Unlock()
	if refusing.rejected == 0 || len(refusing.committed) != 0 {
		t.Fatalf("refusing replica: rejected %d committed %d", refusing.rejected, len(refusing.committed))
	}
}

func TestSpoolFullDropsReportedAndAlertsKept(t *testing.T) {
	fake := newFake()
	srv := startServer(t, fake, "")
	srv.stop() // start in an outage
	scfg := spool.DefaultConfig()
	scfg.Dir = t.TempDir()
	scfg.MaxRecords = 20
	sp, err := spool.Open(scfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	r, err := New(testConfig("s3", srv.addr), sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	bg := context.Background()
	for i := range 30 {
		fs := &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{PeerIp: fmt.Sprint("10.0.0.", i)}}}
		if err := r.Enqueue(bg, fs); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if err := r.Enqueue(bg, alertRec(0, i*5)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		return sp.Stats().LastSeq == 40
	}, "records not spooled")
	if d := sp.Stats().Dropped; d["flow_summary"] != 20 || d["alert"] != 0 {
		t.Fatalf("dropped %v, want 20 flow summaries and no alert", d)
	}
	srv = srv.restart()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() bool {
		c, _ := fake.snapshot()
		return len(c) == 20
	}, "spooled records not delivered")
	c, _ := fake.snapshot()
	alerts := 0
	for _, rec := range c {
		if rec.GetAlert() != nil {
			alerts++
		}
	}
	fake.mu.Lock()
	dropped := fake.dropped
	fake.mu.Unlock()
	if alerts != 10 || dropped["flow_summary"] != 20 {
		t.Fatalf("delivered %d alerts, server was told dropped=%v", alerts, dropped)
	}
}

func TestEnqueueBackpressure(t *testing.T) {
	scfg := spool.DefaultConfig()
	scfg.Dir = t.TempDir()
	sp, err := spool.Open(scfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	cfg := testConfig("s4", "127.0.0.1:1")
	cfg.QueueSize = 3
	r, err := New(cfg, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Run is not started: the queue fills and Enqueue blocks.
	for i := range 3 {
		if err := r.Enqueue(context.Background(), alertRec(0, i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Enqueue(ctx, alertRec(0, 3)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("enqueue on a full queue: %v", err)
	}
	if err := r.Enqueue(context.Background(), &medmeshv1.SensorRecord{}); err == nil {
		t.Fatal("empty record accepted")
	}
}

func TestFlowSummaries(t *testing.T) {
	fake := newFake()
	srv := startServer(t, fake, "")
	cfg := testConfig("s5", srv.addr)
	cfg.SummaryWindow = time.Minute
	cfg.SummaryGrace = 0
	dir := t.TempDir()
	x := run(t, cfg, dir)

	dev := flow.MAC{0, 0x1b, 0x4f, 0, 0, 9}
	pacs := flow.MAC{0, 0x50, 0x56, 0, 0, 1}
	base := time.Now().Add(-5 * time.Minute).Truncate(time.Minute) // a window long closed
	for i := range 1000 {
		x.r.AddFlow(&flow.Record{
			Src: netip.MustParseAddr("10.1.0.9"), Dst: netip.MustParseAddr("10.2.0.5"),
			SrcPort: uint16(40000 + i), DstPort: 104, Proto: 6,
			FwdPackets: 10, FwdBytes: 1000, RevPackets: 5, RevBytes: 300,
			FirstNs: base.UnixNano(), LastNs: base.Add(time.Duration(i) * time.Millisecond).UnixNano(),
			App: "dicom", SrcMAC: dev, DstMAC: pacs,
		}, true)
	}
	// The same device answering an inbound flow is another summary.
	x.r.AddFlow(&flow.Record{
		Src: netip.MustParseAddr("10.9.0.1"), Dst: netip.MustParseAddr("10.1.0.9"),
		SrcPort: 5555, DstPort: 22, Proto: 6, FwdPackets: 3, FwdBytes: 200, RevPackets: 2, RevBytes: 100,
		LastNs: base.UnixNano(), SrcMAC: pacs, DstMAC: dev,
	}, false)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool {
		c, _ := fake.snapshot()
		return len(c) == 2
	}, "summaries not delivered")
	c, _ := fake.snapshot()
	got := map[medmeshv1.Direction]*medmeshv1.FlowSummary{}
	for _, rec := range c {
		got[rec.GetFlowSummary().GetDirection()] = rec.GetFlowSummary()
	}
	out, in := got[medmeshv1.Direction_DIRECTION_OUTBOUND], got[medmeshv1.Direction_DIRECTION_INBOUND]
	if out.GetFlows() != 1000 || out.GetPacketsOut() != 10000 || out.GetBytesOut() != 1000000 ||
		out.GetPacketsIn() != 5000 || out.GetBytesIn() != 300000 || out.GetPeerIp() != "10.2.0.5" ||
		out.GetPort() != 104 || out.GetApp() != "dicom" || out.GetDeviceMac() != dev.String() ||
		out.GetWindowStart().AsTime() != base.UTC() || out.GetWindowSeconds() != 60 || out.GetSensorId() != "s5" {
		t.Fatalf("outbound summary %v", out)
	}
	if in.GetFlows() != 1 || in.GetPeerIp() != "10.9.0.1" || in.GetPort() != 22 || in.GetPacketsOut() != 2 || in.GetBytesIn() != 200 {
		t.Fatalf("inbound summary %v", in)
	}

	// An open window is not sent yet, but is spooled on shutdown.
	x.r.AddFlow(&flow.Record{Src: netip.MustParseAddr("10.1.0.9"), Dst: netip.MustParseAddr("10.2.0.6"),
		DstPort: 443, Proto: 6, LastNs: time.Now().UnixNano(), SrcMAC: dev}, true)
	x.stop()
	if c, _ := fake.snapshot(); len(c) != 2 {
		t.Fatalf("open window sent early: %d records", len(c))
	}
	scfg := spool.DefaultConfig()
	scfg.Dir = dir
	sp, err := spool.Open(scfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	pending, err := sp.Pending(0, 10)
	if err != nil || len(pending) != 1 || pending[0].GetFlowSummary().GetPeerIp() != "10.2.0.6" {
		t.Fatalf("open window after shutdown: %v %v", pending, err)
	}
}

func TestBaselineFetchAndRoaming(t *testing.T) {
	fake := newFake()
	pump := flow.MAC{0x00, 0x1b, 0x4f, 0, 0, 7}
	fake.baselines[pump.String()] = &medmeshv1.Baseline{
		DeviceMac: pump.String(), Version: 3, SensorId: "sensor-a",
		Entries: []*medmeshv1.BaselineEntry{{PeerCidr: "10.2.0.5/32", Protocol: 6, Port: 2575, App: "hl7"}},
	}
	srv := startServer(t, fake, "")
	dead := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	x := run(t, testConfig("sensor-b", dead, srv.addr), t.TempDir())

	// Gossip: sensor A sees the pump, then the pump shows up at B.
	var gs []*gossip.Gossip
	for _, name := range []string{"sensor-a", "sensor-b"} {
		cfg := gossip.TestConfig(name)
		cfg.Keys = [][]byte{[]byte("0123456789abcdef")}
		if len(gs) > 0 {
			cfg.Join = []string{gs[0].Addr()}
		}
		g, err := gossip.New(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		gs = append(gs, g)
	}
	a, b := gs[0], gs[1]
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool { return b.NumAlive() == 2 }, "gossip pair did not form")
	a.Observe(pump, time.Now())
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		s, ok := b.Sighting(pump)
		return ok && s.Sensor == "sensor-a"
	}, "B did not hear A's sighting")

	prev, arrived := b.Observe(pump, time.Now())
	if !arrived || prev.Sensor != "sensor-a" {
		t.Fatalf("roaming hook: arrived=%v prev=%+v", arrived, prev)
	}
	resp, err := x.r.GetBaseline(context.Background(), pump.String(), medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP)
	if err != nil {
		t.Fatal(err)
	}
	if bl := resp.GetBaseline(); bl.GetVersion() != 3 || len(bl.GetEntries()) != 1 || bl.GetEntries()[0].GetPort() != 2575 {
		t.Fatalf("baseline %v", bl)
	}
	if _, err := x.r.GetBaseline(context.Background(), "00:00:00:00:00:01", 0); status.Code(errors.Unwrap(err)) != codes.NotFound {
		t.Fatalf("unknown device: %v", err)
	}
}

package watch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/enforcer/internal/fakecoord"
	tu "github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Alarmed reports whether the control-plane alarm is raised.
func (w *Watcher) Alarmed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alarmed
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memApplier records what it applies.
type memApplier struct {
	mu      sync.Mutex
	applied uint64
	lastID  string
	seen    []*medmeshv1.Decision
}

func (a *memApplier) Applied() uint64 { a.mu.Lock(); defer a.mu.Unlock(); return a.applied }
func (a *memApplier) Apply(d *medmeshv1.Decision) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if d.Index < a.applied || (d.Index == a.applied && a.lastID == d.Id) {
		return false, nil
	}
	a.applied, a.lastID = d.Index, d.Id
	if d.State == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		return true, nil
	}
	a.seen = append(a.seen, d)
	return true, nil
}
func (a *memApplier) indexes() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []uint64
	for _, d := range a.seen {
		out = append(out, d.Index)
	}
	return out
}

func testConfig(addrs ...string) Config {
	cfg := DefaultConfig()
	cfg.ID = "e1"
	cfg.Coordinators = addrs
	cfg.ReportInterval = 50 * time.Millisecond
	cfg.IdleTimeout = time.Second
	cfg.RetryMin = 10 * time.Millisecond
	cfg.RetryMax = 50 * time.Millisecond
	return cfg
}

func start(t *testing.T, cfg Config, a Applier) (*Watcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := New(cfg, a, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; w.Close() })
	return w, reg
}

func notify(mac string) *medmeshv1.Decision {
	return &medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac}
}

func TestRotatesWithoutGapOrDuplicate(t *testing.T) {
	log := fakecoord.NewLog()
	s1, err := fakecoord.Start(log, "127.0.0.1:0", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := fakecoord.Start(log, "127.0.0.1:0", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	var want []uint64
	for i := range 50 {
		want = append(want, log.Commit(notify(fmt.Sprintf("00:00:00:00:00:%02x", i)), uint64(i%3)))
	}
	a := &memApplier{}
	w, reg := start(t, testConfig(s1.Addr(), s2.Addr()), a)
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return a.Applied() >= want[len(want)-1] }, "first batch applied")
	s1.Stop() // the replica it streams from dies
	for i := range 50 {
		want = append(want, log.Commit(notify("00:00:00:00:01:00"), uint64(i%2)))
	}
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return a.Applied() >= want[len(want)-1] }, "second batch applied after failover")
	got := a.indexes()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("applied %v\nwant    %v", got, want)
	}
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool {
		m := log.Member("e1")
		return m != nil && m.AppliedIndex == want[len(want)-1] && m.Role == "enforcer" && m.Health == "ok"
	}, "member status with applied index reported")
	// Each resume sends the last index again (fenced): count the applied.
	if n := metric(t, reg, "medmesh_enforcer_decisions_total") - labelled(t, reg, "medmesh_enforcer_decisions_total", "fenced"); n != 100 {
		t.Fatalf("applied counter %v, want 100", n)
	}
	if n := metric(t, reg, "medmesh_enforcer_watch_reconnects_total"); n < 1 {
		t.Fatalf("reconnects %v, want >= 1", n)
	}
	// GET /applied: the last 64 applied, oldest first, each with its time.
	recent := w.RecentApplied()
	if len(recent) != recentApplied {
		t.Fatalf("recent applied: %d entries, want %d", len(recent), recentApplied)
	}
	for i, r := range recent {
		if want := want[len(want)-recentApplied+i]; r.Index != want || r.Action != "quarantine" || r.Applied.IsZero() {
			t.Fatalf("recent applied[%d] = %+v, want index %d, quarantine, a time", i, r, want)
		}
		if i > 0 && r.Applied.Before(recent[i-1].Applied) {
			t.Fatalf("recent applied[%d] at %v, before the one before it", i, r.Applied)
		}
	}
}

func TestAlarmWhenNoCoordinator(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", tu.FreePort(t))
	cfg := testConfig(addr)
	cfg.AlarmAfter = 300 * time.Millisecond
	a := &memApplier{applied: 42}
	w, reg := start(t, cfg, a)
	if w.Alarmed() {
		t.Fatal("alarm raised at start")
	}
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, w.Alarmed, "alarm raised")
	if v := metric(t, reg, "medmesh_enforcer_control_plane_alarm"); v != 1 {
		t.Fatalf("alarm gauge %v", v)
	}
	if h := w.Health(); !strings.Contains(h, "control plane unreachable") || !strings.Contains(h, "index 42") {
		t.Fatalf("health %q", h)
	}
	if a.Applied() != 42 {
		t.Fatal("state changed without a control plane")
	}
	// The coordinator comes back on that address: the alarm clears.
	log := fakecoord.NewLog()
	s, err := fakecoord.Start(log, addr, 50*time.Millisecond)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer s.Stop()
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool { return !w.Alarmed() }, "alarm cleared")
	if v := metric(t, reg, "medmesh_enforcer_control_plane_alarm"); v != 0 {
		t.Fatalf("alarm gauge %v after recovery", v)
	}
}

// TestApprovalIsSelfContained: an enforcer that starts after a pending
// entry (as after a restart) applies the approval entry as it comes, with
// the approved action it carries; it never calls the coordinators back
// (the fake serves no ListDecisions).
func TestApprovalIsSelfContained(t *testing.T) {
	log := fakecoord.NewLog()
	pending := notify("00:1b:44:11:3a:b7")
	pending.Id = "pump-q"
	pending.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
	log.Commit(pending, 0)
	s, err := fakecoord.Start(log, "127.0.0.1:0", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	a := &memApplier{applied: 1}
	start(t, testConfig(s.Addr()), a)
	idx := log.Commit(&medmeshv1.Decision{State: medmeshv1.DecisionState_DECISION_STATE_APPROVED, TargetDecisionId: "pump-q", DeviceMac: "00:1b:44:11:3a:b7",
		Action: pending.GetAction(), Rule: "quarantine-scanner"}, 0)
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return a.Applied() >= idx }, "approval applied")
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) != 1 || a.seen[0].Action != medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE || a.seen[0].Index != idx {
		t.Fatalf("approval applied as %v", a.seen)
	}
}

// metric sums a gathered gauge or counter family.
// labelled is the value of a counter with outcome label value.
func labelled(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// aheadServer sends a heartbeat claiming index 10 was fully delivered, then
// a decision at index 7: a replica whose heartbeat raced its own log read.
type aheadServer struct {
	medmeshv1.UnimplementedDecisionServiceServer
	medmeshv1.UnimplementedClusterServiceServer
}

func (aheadServer) WatchDecisions(req *medmeshv1.WatchDecisionsRequest, st medmeshv1.DecisionService_WatchDecisionsServer) error {
	if req.GetFromIndex() < 7 {
		st.Send(&medmeshv1.WatchDecisionsResponse{AppliedIndex: 10})
		d := notify("00:00:00:00:00:07")
		d.Index = 7
		st.Send(&medmeshv1.WatchDecisionsResponse{Decision: d, AppliedIndex: 10})
	}
	<-st.Context().Done()
	return nil
}

func TestHeartbeatAheadNeverSkipsADecision(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	medmeshv1.RegisterDecisionServiceServer(gs, aheadServer{})
	medmeshv1.RegisterClusterServiceServer(gs, aheadServer{})
	go gs.Serve(lis)
	defer gs.Stop()
	a := &memApplier{}
	start(t, testConfig(lis.Addr().String()), a)
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return a.Applied() == 7 }, "decision 7 applied after a heartbeat at 10")
	if got := a.indexes(); len(got) != 1 || got[0] != 7 {
		t.Fatalf("applied %v", got)
	}
}

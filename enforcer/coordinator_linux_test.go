//go:build linux

package enforcer_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/enforcer/internal/state"
	"github.com/medmesh/medmesh/enforcer/internal/watch"
	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

type coordNode struct {
	c   *coordinator.Coordinator
	gs  *grpc.Server
	api string
	up  bool
}

// TestLeaderKilledWhileDecisionsStream is issue 6's third acceptance point:
// three real coordinators (Raft, bolt stores with fsync, gRPC) and an
// enforcer watcher feeding real BPF maps. Policies are activated and changed
// in a loop; the leader is killed mid-stream (its gRPC server stopped,
// breaking its streams, and Raft killed without a leadership transfer, as
// kill -9 would). The enforcer must end with every committed decision
// applied once, in index order, none skipped.
func TestLeaderKilledWhileDecisionsStream(t *testing.T) {
	testutil.RequireRoot(t)
	nodes, apis := startCoordinators(t, 3)
	quiet := slog.New(slog.DiscardHandler)

	// The enforcer side: watcher -> state -> loaded BPF maps.
	dp, err := xdp.Load(xdp.Config{MaxDevices: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	st, err := state.New(dp, state.Snapshot{}, dp.Slots(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	wcfg := watch.DefaultConfig()
	wcfg.ID, wcfg.Coordinators = "e1", apis
	wcfg.ReportInterval, wcfg.IdleTimeout = 100*time.Millisecond, 2*time.Second
	wcfg.RetryMin, wcfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	w, err := watch.New(wcfg, st, quiet, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var (
		mu      sync.Mutex
		applied []uint64
	)
	w.OnApplied(func(d *medmeshv1.Decision, _ time.Time) {
		mu.Lock()
		applied = append(applied, d.GetIndex())
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conns := make([]*grpc.ClientConn, 3)
	for i, a := range apis {
		conns[i], err = grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	const mac = "02:00:00:00:00:2a"
	reportDevice(t, conns[0], mac)
	var acked []uint64
	var lastErr error
	put := func(i int, activate bool) {
		t.Helper()
		p := &medmeshv1.Policy{Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE,
			Rules: []*medmeshv1.Rule{{Name: "svc", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.20.0.0/16"}, Protocol: 6, PortMin: uint32(1000 + i), PortMax: uint32(1000 + i), Direction: medmeshv1.Direction_DIRECTION_OUTBOUND}}}
		testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, func() bool {
			for k, n := range nodes { // any live replica; followers forward to the leader
				if !n.up {
					continue
				}
				rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
				pc := medmeshv1.NewPolicyServiceClient(conns[k])
				resp, err := pc.PutPolicy(rctx, &medmeshv1.PutPolicyRequest{Policy: p, Actor: "test", Reason: fmt.Sprint("v", i)})
				if err == nil && activate {
					var ar *medmeshv1.ActivatePolicyResponse
					ar, err = pc.ActivatePolicy(rctx, &medmeshv1.ActivatePolicyRequest{Name: p.Name, Actor: "test", Reason: "start"})
					if err == nil {
						acked = append(acked, ar.GetDecisionIndex())
					}
				} else if err == nil {
					acked = append(acked, resp.GetIndex())
				}
				rcancel()
				if err == nil {
					return true
				}
				if lastErr == nil || lastErr.Error() != err.Error() {
					t.Logf("write %d via %s: %v", i, n.api, err)
				}
				lastErr = err
			}
			return false
		}, "write %d acknowledged (last error %v)", i, lastErr)
	}
	put(0, true)
	for i := 1; i <= 60; i++ {
		if i == 20 {
			for _, n := range nodes {
				if n.up && n.c.IsLeader() {
					n.up = false
					n.gs.Stop() // its streams and API break at once
					n.c.Kill()  // and Raft dies with it: no leadership transfer
					t.Logf("leader %s killed after %d writes", n.c.ID(), i)
					break // leadership moved: the next leader stays up
				}
			}
		}
		put(i, false)
	}
	last := acked[len(acked)-1]
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, func() bool { return st.Applied() >= last }, "enforcer applied up to %d", last)

	// Every committed decision, from a live replica's log.
	var committed []uint64
	for k, n := range nodes {
		if !n.up {
			continue
		}
		resp, err := medmeshv1.NewDecisionServiceClient(conns[k]).ListDecisions(context.Background(), &medmeshv1.ListDecisionsRequest{PageSize: 1000, DeviceMac: mac})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range resp.GetDecisions() {
			committed = append(committed, d.GetIndex())
		}
		break
	}
	mu.Lock()
	got := slices.Clone(applied)
	mu.Unlock()
	if !slices.Equal(got, committed) {
		t.Fatalf("applied %v\ncommitted %v", got, committed)
	}
	for _, a := range acked {
		if !slices.Contains(got, a) {
			t.Fatalf("acknowledged decision %d never applied", a)
		}
	}
	if len(got) != 61 {
		t.Fatalf("%d decisions applied, want 61", len(got))
	}
	// The applied index is visible in cluster status.
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		for k, n := range nodes {
			if !n.up {
				continue
			}
			resp, err := medmeshv1.NewClusterServiceClient(conns[k]).GetClusterStatus(context.Background(), &medmeshv1.GetClusterStatusRequest{})
			if err != nil {
				return false
			}
			for _, m := range resp.GetMembers() {
				if m.GetId() == "e1" && m.GetRole() == "enforcer" && m.GetAppliedIndex() >= last && m.GetHealth() == "ok" {
					return true
				}
			}
			return false
		}
		return false
	}, "enforcer e1 with applied index >= %d in cluster status", last)
	e, err := dp.Devices()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := dp.ReadSlot(e[mac].Slot)
	if err != nil || len(rules) != 1 || rules[0].PortMin != 1060 {
		t.Fatalf("maps hold %v (%v), want the last policy (port 1060)", rules, err)
	}
}

// startCoordinators starts n in-process coordinators (real Raft with bolt
// stores and fsync, real gRPC on loopback), with Raft timers shrunk to a few
// hundred milliseconds, and waits until they are ready.
func startCoordinators(t testing.TB, n int) ([]*coordNode, []string) {
	t.Helper()
	base := t.TempDir()
	var apis []string
	for range n {
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	}
	quiet := slog.New(slog.DiscardHandler)
	nodes := make([]*coordNode, n)
	for i := range nodes {
		cfg := coordinator.DefaultConfig()
		cfg.ID, cfg.DataDir, cfg.APIAddr = fmt.Sprintf("c%d", i+1), filepath.Join(base, fmt.Sprint(i)), apis[i]
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		if n > 1 {
			cfg.BootstrapExpect, cfg.Join = n, apis
		}
		cfg.HeartbeatTimeout, cfg.ElectionTimeout = 250*time.Millisecond, 250*time.Millisecond
		cfg.LeaderLeaseTimeout, cfg.CommitTimeout = 120*time.Millisecond, 5*time.Millisecond
		cfg.ApplyTimeout = 3 * time.Second
		cfg.JoinInterval, cfg.RaftLogLevel = 50*time.Millisecond, "off"
		cfg.API.WatchHeartbeat = 100 * time.Millisecond
		c, err := coordinator.New(cfg, quiet, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", apis[i])
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(coordinator.LoopbackServerOptions()...)
		c.Register(gs)
		go gs.Serve(lis)
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &coordNode{c: c, gs: gs, api: apis[i], up: true}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.up {
				n.gs.Stop()
				n.c.Close()
			}
		}
	})
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() bool {
		for _, n := range nodes {
			if n.c.Ready() != nil {
				return false
			}
		}
		return true
	}, "coordinators ready")
	return nodes, apis
}

// reportDevice has a sensor report mac through conn: policies belong to
// known devices.
func reportDevice(t testing.TB, conn *grpc.ClientConn, mac string) {
	t.Helper()
	// A workstation: enforce mode on a device of unknown or life-critical
	// tier waits for a second approver, which these tests are not about.
	reportDeviceClass(t, conn, mac, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION)
}

// reportDeviceClass has sensor s1 report mac, of class class, through conn
// (with TLS, conn must hold s1's sensor certificate).
func reportDeviceClass(t testing.TB, conn *grpc.ClientConn, mac string, class medmeshv1.DeviceClass) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		rs, err := medmeshv1.NewSensorServiceClient(conn).Report(rctx)
		if err != nil {
			return false
		}
		if err := rs.Send(&medmeshv1.ReportRequest{SensorId: "s1", Records: []*medmeshv1.SensorRecord{{Seq: 1,
			Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{Mac: mac, DeviceClass: class}}}}}}); err != nil {
			return false
		}
		resp, err := rs.Recv()
		rs.CloseSend()
		return err == nil && resp.GetAckedSeq() >= 1
	}, "device reported")
}

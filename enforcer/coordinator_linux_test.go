//go:build linux

package enforcer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
// three real coordinators (Raft, raft-wal stores with fdatasync, gRPC), each a
// process of its own, and an enforcer watcher feeding real BPF maps.
// Policies are activated and changed in a loop; the leader's process is
// killed mid-stream with SIGKILL (its streams break, and Raft dies without
// a leadership transfer). The enforcer must end with every committed
// decision applied once, in index order, none skipped.
func TestLeaderKilledWhileDecisionsStream(t *testing.T) {
	testutil.RequireRoot(t)
	nodes := startCoordinatorProcesses(t, 3)
	var apis []string
	for _, n := range nodes {
		apis = append(apis, n.api)
	}
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
			leader := leaderAPI(t, conns, nodes)
			for _, n := range nodes {
				if n.up && n.api == leader {
					n.kill(t) // its streams and API break at once, and Raft dies with it: no leadership transfer
					t.Logf("leader %s killed after %d writes", n.api, i)
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

// testCoordinatorConfig is coordinator i of the cluster whose API
// addresses are apis: real Raft with raft-wal stores and fdatasync, its timers
// shrunk to a few hundred milliseconds.
func testCoordinatorConfig(i int, apis []string, raftAddr, dataDir string) coordinator.Config {
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.APIAddr = fmt.Sprintf("c%d", i+1), dataDir, apis[i]
	cfg.RaftAddr = raftAddr
	if len(apis) > 1 {
		cfg.BootstrapExpect, cfg.Join = len(apis), apis
	}
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 250*time.Millisecond, 250*time.Millisecond
	cfg.LeaderLeaseTimeout, cfg.CommitTimeout = 120*time.Millisecond, 5*time.Millisecond
	cfg.ApplyTimeout = 3 * time.Second
	cfg.JoinInterval, cfg.RaftLogLevel = 50*time.Millisecond, "off"
	cfg.API.WatchHeartbeat = 100 * time.Millisecond
	return cfg
}

// serveCoordinator starts the coordinator of cfg with a plaintext gRPC
// server on its API address (loopback).
func serveCoordinator(cfg coordinator.Config) (*coordinator.Coordinator, *grpc.Server, error) {
	c, err := coordinator.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, nil, errors.Join(err, c.Close())
	}
	gs := grpc.NewServer(coordinator.LoopbackServerOptions()...)
	c.Register(gs)
	go gs.Serve(lis)
	if err := c.Start(context.Background()); err != nil {
		gs.Stop()
		return nil, nil, errors.Join(err, c.Close())
	}
	return c, gs, nil
}

// startCoordinators starts n in-process coordinators (testCoordinatorConfig,
// real gRPC on loopback) and waits until they are ready.
func startCoordinators(t testing.TB, n int) ([]*coordNode, []string) {
	t.Helper()
	base := t.TempDir()
	var apis []string
	for range n {
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	}
	nodes := make([]*coordNode, n)
	for i := range nodes {
		raftAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		c, gs, err := serveCoordinator(testCoordinatorConfig(i, apis, raftAddr, filepath.Join(base, fmt.Sprint(i))))
		if err != nil {
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

// coordProcEnv, set to "NODE RAFT-ADDR DATA-DIR API-ADDR...", makes the
// test binary a coordinator process (TestCoordinatorProcess).
const coordProcEnv = "MEDMESH_TEST_COORDINATOR_PROCESS"

// TestCoordinatorProcess is not a test but one coordinator process of
// startCoordinatorProcesses: with coordProcEnv set, it runs coordinator
// NODE as startCoordinators runs one, until its stdin closes or it is
// killed.
func TestCoordinatorProcess(t *testing.T) {
	v, ok := os.LookupEnv(coordProcEnv)
	if !ok {
		t.Skip("skipped: only a coordinator process of TestLeaderKilledWhileDecisionsStream")
	}
	f := strings.Fields(v)
	if len(f) < 4 {
		t.Fatalf("%s=%q: want node, raft address, data dir, API addresses", coordProcEnv, v)
	}
	i, err := strconv.Atoi(f[0])
	if err != nil || i < 0 || i >= len(f)-3 {
		t.Fatalf("%s=%q: node %q is not one of the API addresses", coordProcEnv, v, f[0])
	}
	c, gs, err := serveCoordinator(testCoordinatorConfig(i, f[3:], f[1], f[2]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer gs.Stop()
	fmt.Println("COORDINATOR SERVING")
	io.Copy(io.Discard, os.Stdin)
}

// coordProc is a coordinator process.
type coordProc struct {
	*hostProcess
	api string
	up  bool
}

// kill kills the process with SIGKILL, as a crash would.
func (p *coordProc) kill(t testing.TB) {
	t.Helper()
	p.up = false
	p.hostProcess.kill(t)
}

// startCoordinatorProcesses starts n coordinators, each a process of its
// own running the test binary as TestCoordinatorProcess, and waits until
// every one knows a leader that has registered its API address.
func startCoordinatorProcesses(t testing.TB, n int) []*coordProc {
	t.Helper()
	base := t.TempDir()
	var apis []string
	for range n {
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	}
	procs := make([]*coordProc, n)
	for i := range procs {
		p := startHostProcess(t, []string{"-test.run=^TestCoordinatorProcess$", "-test.count=1"},
			[]string{fmt.Sprintf("%s=%d 127.0.0.1:%d %s %s", coordProcEnv,
				i, testutil.FreePort(t), filepath.Join(base, fmt.Sprint(i)), strings.Join(apis, " "))})
		go io.Copy(io.Discard, p.stdout)
		procs[i] = &coordProc{hostProcess: p, api: apis[i], up: true}
	}
	conns := make([]*grpc.ClientConn, n)
	for i, a := range apis {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, func() bool {
		for _, cc := range conns {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := medmeshv1.NewClusterServiceClient(cc).GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
			cancel()
			if err != nil || st.GetLeaderApiAddr() == "" {
				return false
			}
		}
		return true
	}, "coordinator processes ready")
	return procs
}

// leaderAPI is the API address of the leader as a live coordinator knows
// it; conns[i] is connected to procs[i].
func leaderAPI(t testing.TB, conns []*grpc.ClientConn, procs []*coordProc) string {
	t.Helper()
	var leader string
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		for i, p := range procs {
			if !p.up {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := medmeshv1.NewClusterServiceClient(conns[i]).GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
			cancel()
			if err == nil && st.GetLeaderApiAddr() != "" {
				leader = st.GetLeaderApiAddr()
				return true
			}
		}
		return false
	}, "a live coordinator knows the leader")
	return leader
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

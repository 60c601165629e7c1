package reporter

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func coordLogger() *slog.Logger {
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// coord is one in-process coordinator serving its API on real TCP.
type coord struct {
	cfg coordinator.Config
	c   *coordinator.Coordinator
	gs  *grpc.Server
	up  bool
}

// coords is a three-coordinator cluster that can be stopped and started
// again on the same data directories and ports.
type coords struct {
	t     testing.TB
	nodes []*coord
	conn  *grpc.ClientConn // to the first coordinator
}

func startCoords(t testing.TB, n int, tweak func(*coordinator.Config)) *coords {
	t.Helper()
	var apis []string
	for range n {
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	}
	base := t.TempDir()
	cl := &coords{t: t}
	for i := range n {
		cfg := coordinator.DefaultConfig()
		cfg.ID = fmt.Sprintf("c%d", i+1)
		cfg.DataDir = filepath.Join(base, cfg.ID)
		cfg.APIAddr = apis[i]
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		// Shrunk, but not so far that a loaded shared machine flaps.
		cfg.HeartbeatTimeout = 500 * time.Millisecond
		cfg.ElectionTimeout = 500 * time.Millisecond
		cfg.LeaderLeaseTimeout = 250 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.JoinInterval = 50 * time.Millisecond
		cfg.RaftLogLevel = "off"
		if n > 1 {
			cfg.BootstrapExpect, cfg.Join = n, apis
		}
		if tweak != nil {
			tweak(&cfg)
		}
		cl.nodes = append(cl.nodes, &coord{cfg: cfg})
	}
	conn, err := grpc.NewClient(apis[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cl.conn = conn
	cl.start()
	t.Cleanup(func() {
		cl.stop()
		conn.Close()
	})
	return cl
}

func (cl *coords) addrs() []string {
	var out []string
	for _, n := range cl.nodes {
		out = append(out, n.cfg.APIAddr)
	}
	return out
}

func (cl *coords) start() {
	cl.t.Helper()
	for _, n := range cl.nodes {
		c, err := coordinator.New(n.cfg, coordLogger(), prometheus.NewRegistry())
		if err != nil {
			cl.t.Fatalf("new %s: %v", n.cfg.ID, err)
		}
		var lis net.Listener
		testutil.Eventually(cl.t, 5*time.Second, 20*time.Millisecond, func() bool {
			lis, err = net.Listen("tcp", n.cfg.APIAddr)
			return err == nil
		}, "listen %s: %v", n.cfg.APIAddr, err)
		gs := grpc.NewServer(coordinator.LoopbackServerOptions()...)
		c.Register(gs)
		go gs.Serve(lis)
		if err := c.Start(context.Background()); err != nil {
			cl.t.Fatalf("start %s: %v", n.cfg.ID, err)
		}
		n.c, n.gs, n.up = c, gs, true
	}
	testutil.Eventually(cl.t, 20*time.Second, 10*time.Millisecond, func() bool {
		for _, n := range cl.nodes {
			if n.c.Ready() != nil {
				return false
			}
		}
		return true
	}, "coordinators not ready")
}

// stop stops every coordinator, one after the other with the graceful
// Close: the sensors lose their whole control plane. Each Close is bounded:
// a hang fails the test with every goroutine's stack.
func (cl *coords) stop() {
	for _, n := range cl.nodes {
		if !n.up {
			continue
		}
		n.up = false
		n.gs.Stop()
		done := make(chan error, 1)
		go func() { done <- n.c.Close() }()
		select {
		case err := <-done:
			if err != nil {
				cl.t.Logf("close %s: %v", n.cfg.ID, err)
			}
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<22)
			buf = buf[:runtime.Stack(buf, true)]
			cl.t.Fatalf("coordinator %s: Close did not return within 10s; goroutines:\n%s", n.cfg.ID, buf)
		}
	}
}

// status returns the cluster status (leader, commit index).
func (cl *coords) status(ctx context.Context) (*medmeshv1.GetClusterStatusResponse, error) {
	return medmeshv1.NewClusterServiceClient(cl.conn).GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
}

// alerts lists every committed alert, by commit order.
func (cl *coords) alerts(ctx context.Context) ([]*medmeshv1.Alert, error) {
	var out []*medmeshv1.Alert
	c := medmeshv1.NewAlertServiceClient(cl.conn)
	token := ""
	for {
		resp, err := c.ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetAlerts()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return out, nil
		}
	}
}

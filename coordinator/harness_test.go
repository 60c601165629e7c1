package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// testConfig returns a config with Raft timers shrunk for tests.
func testConfig(id, dir, apiAddr, raftAddr string) Config {
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.APIAddr, cfg.RaftAddr = id, dir, apiAddr, raftAddr
	cfg.HeartbeatTimeout = 250 * time.Millisecond
	cfg.ElectionTimeout = 250 * time.Millisecond
	cfg.LeaderLeaseTimeout = 120 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.JoinInterval = 50 * time.Millisecond
	cfg.ApplyTimeout = 3 * time.Second
	cfg.RaftLogLevel = "off"
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		cfg.RaftLogLevel = "debug"
	}
	cfg.API.WatchHeartbeat = 100 * time.Millisecond
	return cfg
}

func testLogger() *slog.Logger {
	lvl := slog.LevelError
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// node is one in-process coordinator with its gRPC server on real TCP,
// built as production builds it (grpcx: the authorization interceptor; on
// plaintext loopback every caller is authz.Local).
type node struct {
	t    testing.TB
	cfg  Config
	c    *Coordinator
	gs   *grpcxServer
	conn *grpc.ClientConn // retries UNAVAILABLE (elections on a loaded machine)
	raw  *grpc.ClientConn // no retries: for the linearizability history
	api  *faultListener   // the API listener, whose connections a test can stall or cut
	up   bool
	ran  bool // started at least once: its Raft address is known to peers
}

func (n *node) start() {
	n.t.Helper()
	var c *Coordinator
	var err error
	for try := 0; ; try++ {
		c, err = New(n.cfg, testLogger(), prometheus.NewRegistry())
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			break
		}
		// The Raft port FreePort chose was taken before New bound it
		// (other packages' tests run in parallel). A node that never ran
		// takes another; a restarted one must keep its address, and waits
		// for a momentary holder (another FreePort probe) to let go.
		if !n.ran {
			n.cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(n.t))
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err != nil {
		n.t.Fatalf("new %s: %v", n.cfg.ID, err)
	}
	n.ran = true
	var lis net.Listener
	testutil.Eventually(n.t, 5*time.Second, 20*time.Millisecond, func() bool {
		lis, err = net.Listen("tcp", n.cfg.APIAddr)
		return err == nil
	}, "listen api %s: %v", n.cfg.APIAddr, err)
	gs := newGRPCXServer(n.t, n.cfg.APIAddr, n.cfg.TLS)
	c.Register(gs.GRPC())
	n.api = &faultListener{Listener: lis}
	go gs.ServeListener(n.api)
	if err := c.Start(context.Background()); err != nil {
		n.t.Fatalf("start %s: %v", n.cfg.ID, err)
	}
	n.c, n.gs, n.up = c, gs, true
}

// stop stops the node: kill=true as a crash, else gracefully.
func (n *node) stop(kill bool) {
	if !n.up {
		return
	}
	n.up = false
	var err error
	if kill {
		n.gs.Stop()
		err = n.c.kill()
	} else {
		err = n.c.Close()
		n.gs.Stop()
	}
	if err != nil {
		n.t.Logf("stop %s: %v", n.cfg.ID, err)
	}
}

// grpcxServer is the production gRPC server; Stop stops it at once.
type grpcxServer struct{ *grpcx.Server }

func (s *grpcxServer) Stop() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Server.Stop(ctx)
}

// newGRPCXServer builds the API server as `medmesh coordinator` does.
func newGRPCXServer(t testing.TB, addr string, tlsFiles grpcx.TLSFiles) *grpcxServer {
	t.Helper()
	cfg := grpcx.DefaultServerConfig()
	cfg.Addr, cfg.TLS, cfg.Authz = addr, tlsFiles, AuthzTable()
	log := slog.New(slog.DiscardHandler) // grpcx logs every failed call
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		log = testLogger()
	}
	s, err := grpcx.NewServer(cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &grpcxServer{s}
}

func (n *node) policies() medmeshv1.PolicyServiceClient {
	return medmeshv1.NewPolicyServiceClient(n.conn)
}
func (n *node) cluster() medmeshv1.ClusterServiceClient {
	return medmeshv1.NewClusterServiceClient(n.conn)
}
func (n *node) decisions() medmeshv1.DecisionServiceClient {
	return medmeshv1.NewDecisionServiceClient(n.conn)
}

type cluster struct {
	t     testing.TB
	nodes []*node
}

// newCluster starts n coordinators that form a cluster through the
// --bootstrap-expect handshake.
func newCluster(t testing.TB, n int, tweak func(*Config)) *cluster {
	t.Helper()
	return newClusterAs(t, n, tweak, pki.Files{})
}

// newClusterAs is newCluster whose test clients dial with client's
// certificate (mutual TLS), or plaintext when client is empty.
func newClusterAs(t testing.TB, n int, tweak func(*Config), client pki.Files) *cluster {
	t.Helper()
	cl := &cluster{t: t}
	var apis []string
	for i := 0; i < n; i++ {
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	}
	base := t.TempDir()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%d", i+1)
		cfg := testConfig(id, filepath.Join(base, id), apis[i], fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
		if n > 1 {
			cfg.BootstrapExpect, cfg.Join = n, apis
		}
		if tweak != nil {
			tweak(&cfg)
		}
		cl.nodes = append(cl.nodes, &node{t: t, cfg: cfg, conn: dialT(t, apis[i], client), raw: dialRawT(t, apis[i], client)})
	}
	for _, nd := range cl.nodes {
		nd.start()
	}
	t.Cleanup(func() {
		for _, nd := range cl.nodes {
			nd.stop(true)
			nd.conn.Close()
			if nd.raw != nil {
				nd.raw.Close()
			}
		}
	})
	cl.waitReady()
	return cl
}

// leader waits for a leader whose API is ready and returns it.
func (cl *cluster) leader() *node {
	cl.t.Helper()
	var l *node
	testutil.Eventually(cl.t, 10*time.Second, 10*time.Millisecond, func() bool {
		for _, n := range cl.nodes {
			if n.up && n.c.IsLeader() && n.c.Ready() == nil {
				l = n
				return true
			}
		}
		return false
	}, "no leader elected")
	return l
}

func (cl *cluster) followers() []*node {
	var out []*node
	for _, n := range cl.nodes {
		if n.up && !n.c.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// waitReady waits until every running node is ready (knows a registered
// leader) and every node's API address is registered.
func (cl *cluster) waitReady() {
	cl.t.Helper()
	cl.leader()
	testutil.Eventually(cl.t, 10*time.Second, 10*time.Millisecond, func() bool {
		for _, n := range cl.nodes {
			if !n.up {
				continue
			}
			if n.c.Ready() != nil {
				return false
			}
			if srv, ok := n.c.FSM().Servers()[n.cfg.ID]; !ok || srv.GetApiAddr() != n.cfg.APIAddr {
				return false
			}
			if !n.c.FSM().RulesSeeded() {
				return false
			}
		}
		return true
	}, "cluster not ready")
}

func freePort(t testing.TB) int { return testutil.FreePort(t) }

// dialT dials a coordinator with a client that retries unary calls failing
// with UNAVAILABLE for up to 10 s: on the shared 2-core machine a heartbeat
// can be late enough to cause an election mid-test. Tests that need every
// outcome (the linearizability history) use dialRawT.
func dialT(t testing.TB, addr string, client pki.Files) *grpc.ClientConn {
	t.Helper()
	retry := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	conn, err := grpc.NewClient(addr, clientCreds(t, client), grpc.WithUnaryInterceptor(retry))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func dialRawT(t testing.TB, addr string, client pki.Files) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, clientCreds(t, client))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// clientCreds is plaintext for empty files, else mutual TLS with them to a
// coordinator.
func clientCreds(t testing.TB, files pki.Files) grpc.DialOption {
	t.Helper()
	if !files.Enabled() {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	tc, err := pki.ClientConfig(files, pki.RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tc))
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func classPolicy(name, value string) *medmeshv1.Policy {
	return &medmeshv1.Policy{
		Name:        name,
		Subject:     &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP},
		Mode:        medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
		Description: value,
		Rules: []*medmeshv1.Rule{{
			Name: "hl7", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.20.0.0/16"}, Protocol: 6, PortMin: 2575, PortMax: 2575,
		}},
	}
}

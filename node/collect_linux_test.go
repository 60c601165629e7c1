package node

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestCollectOnlyNodeReportsRemoteDevices runs a collector-only sensor
// node (no --iface) against a real coordinator; Debian's softflowd
// replays a capture and exports IPFIX to it. The devices of the capture
// reach the coordinator's inventory at the exporter's named site, marked
// advisory, with the evidence flow export cannot carry marked absent and
// the service the flows show.
func TestCollectOnlyNodeReportsRemoteDevices(t *testing.T) {
	if _, err := exec.LookPath("softflowd"); err != nil {
		t.Skipf("skipped: softflowd not installed (deploy/deps.txt): %v", err)
	}
	capture := filepath.Join(testutil.Captures(t, "ndpi"), "hl7.pcap")
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

	collect := net.JoinHostPort("127.0.0.1", itoa(testutil.FreePort(t)))
	cfg := DefaultConfig()
	cfg.Sensor.ID = "s-remote"
	cfg.Collect.Addr = collect
	cfg.Collect.Sites = map[netip.Addr]string{netip.MustParseAddr("127.0.0.1"): "home-dialysis"}
	cfg.Collect.PairWait = 200 * time.Millisecond
	cfg.Coordinators, cfg.SpoolDir, cfg.SyncInterval = []string{api}, t.TempDir(), 100*time.Millisecond
	ready := make(chan struct{})
	cfg.Attached = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("node stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("node not ready")
	}
	if out, err := exec.Command("softflowd", "-a", "-r", capture, "-n", collect, "-v", "10").CombinedOutput(); err != nil {
		t.Fatalf("softflowd: %v\n%s", err, out)
	}

	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dc := medmeshv1.NewInventoryServiceClient(conn)
	var server *medmeshv1.Device
	testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, func() bool {
		resp, err := dc.GetDevice(ctx, &medmeshv1.GetDeviceRequest{Mac: "ip:10.0.0.126"})
		server = resp.GetDevice()
		return err == nil
	}, "the HL7 server seen through flow export did not reach the coordinator")
	if server.GetSite() != "home-dialysis" || !server.GetAdvisory() || server.GetLastSensorId() != "s-remote" ||
		!slices.Contains(server.GetAbsentEvidence(), "payload") || server.GetLocation().GetFloor() != "" {
		t.Fatalf("remote device at the coordinator: %v", server)
	}
	if !slices.ContainsFunc(server.GetServices(), func(s *medmeshv1.Service) bool { return s.GetProtocol() == 6 && s.GetPort() == 6661 }) {
		t.Errorf("the HL7 server's service (TCP 6661) not shown: %v", server.GetServices())
	}
	// The client may arrive in a later report than the server.
	var clientErr error
	testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, func() bool {
		_, clientErr = dc.GetDevice(ctx, &medmeshv1.GetDeviceRequest{Mac: "ip:10.0.0.155"})
		return clientErr == nil
	}, "the HL7 client seen through flow export did not reach the coordinator")
}

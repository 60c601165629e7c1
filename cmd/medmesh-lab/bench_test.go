package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// startDevCoordinator runs a single-node --dev coordinator (a temporary
// data directory) with its API on a plaintext loopback gRPC server, and
// returns the API address once it is ready.
func startDevCoordinator(t *testing.T) string {
	t.Helper()
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.Dev = "c1", true
	cfg.APIAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg.RaftLogLevel = "off"
	quiet := slog.New(slog.DiscardHandler)
	c, err := coordinator.New(cfg, quiet, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	scfg := grpcx.DefaultServerConfig()
	scfg.Addr, scfg.Authz = cfg.APIAddr, coordinator.AuthzTable()
	srv, err := grpcx.NewServer(scfg, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Register(srv.GRPC())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
		<-done
		if err := c.Close(); err != nil {
			t.Errorf("close coordinator: %v", err)
		}
	})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool { return c.Ready() == nil }, "dev coordinator not ready")
	return cfg.APIAddr
}

// TestBenchWrite runs `bench write` against a real coordinator: every
// write is acknowledged, the result is the JSON e2e/benchcoord reads, and
// the coordinator holds the distinct policies with the asked size.
func TestBenchWrite(t *testing.T) {
	addr := startDevCoordinator(t)
	stdout, code := runLab(t, "bench", "write", "--addr", addr, "--n", "60", "--concurrency", "4", "--value-size", "300", "--prefix", "bench/t", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stdout)
	}
	var res map[string]float64
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	for _, k := range []string{"ok", "failed", "ops_per_sec", "p50_ms", "p99_ms"} {
		if _, ok := res[k]; !ok {
			t.Errorf("result lacks %q: %s", k, stdout)
		}
	}
	if res["ok"] != 60 || res["failed"] != 0 || res["ops_per_sec"] <= 0 || res["p99_ms"] < res["p50_ms"] || res["p50_ms"] <= 0 {
		t.Fatalf("result %s", stdout)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := medmeshv1.NewPolicyServiceClient(cc).ListPolicies(context.Background(), &medmeshv1.ListPoliciesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range resp.GetPolicies() {
		if !strings.HasPrefix(p.GetName(), "bench/t/") {
			continue
		}
		names[p.GetName()] = true
		if len(p.GetDescription()) != 300 {
			t.Fatalf("policy %s: description %d bytes, want 300", p.GetName(), len(p.GetDescription()))
		}
	}
	if len(names) != 60 {
		t.Fatalf("%d distinct bench policies stored, want 60", len(names))
	}
}

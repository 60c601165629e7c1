package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestCoordinatorDevStartsFast runs `medmesh coordinator --dev` in process:
// it must serve in under 2 s, answer health checks SERVING, list the
// medmesh services through reflection, take a write, and stop cleanly.
func TestCoordinatorDevStartsFast(t *testing.T) {
	o := coordinatorOptions{
		dev:      true,
		api:      fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		raft:     fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		admin:    fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		logLevel: "warn",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- runCoordinator(ctx, o, io.Discard, ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("coordinator exited: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("coordinator --dev not ready within 2s")
	}
	took := time.Since(start)
	t.Logf("coordinator --dev ready after %v", took)

	conn, err := grpc.NewClient(o.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()

	for _, svc := range []string{"", medmeshv1.PolicyService_ServiceDesc.ServiceName} {
		h, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v %v", svc, h.GetStatus(), err)
		}
	}

	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	lr, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range lr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"medmesh.v1.ClusterService", "medmesh.v1.InventoryService", "medmesh.v1.PolicyService",
		"medmesh.v1.DecisionService", "medmesh.v1.AlertService", "medmesh.v1.SensorService"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	_ = rs.CloseSend()

	pol := &medmeshv1.Policy{Name: "class/pump", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP}}
	if _, err := medmeshv1.NewPolicyServiceClient(conn).PutPolicy(cctx, &medmeshv1.PutPolicyRequest{Policy: pol, Actor: "test"}); err != nil {
		t.Fatalf("put policy: %v", err)
	}
	st, err := medmeshv1.NewClusterServiceClient(conn).GetClusterStatus(cctx, &medmeshv1.GetClusterStatusRequest{})
	if err != nil || st.GetLeader() != "dev" || len(st.GetMembers()) != 1 || st.GetMembers()[0].GetState() != "leader" {
		t.Fatalf("cluster status: %v %v", st, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator did not stop")
	}
}

func TestCoordinatorBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"coordinator"},
		{"coordinator", "--id", "c1"},
		{"coordinator", "--dev", "--join", "127.0.0.1:1"},
		{"coordinator", "--id", "c1", "--data-dir", "x", "--bootstrap-expect", "3"},
		{"coordinator", "--dev", "--log-level", "loud"},
		{"coordinator", "--dev", "--tls-cert", "a.pem"},
	} {
		if code := run(args); code != exitUsage {
			t.Errorf("%s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
}

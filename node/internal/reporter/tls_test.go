package reporter

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
)

// TestReportsOverMutualTLS runs a coordinator as `medmesh coordinator`
// serves it (grpcx with mutual TLS and the authorization table) and a
// reporter with a sensor certificate: its alerts are acknowledged. A
// reporter with an operator's certificate, or with none, gets nothing
// acknowledged.
func TestReportsOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(role pki.Role, name string) grpcx.TLSFiles {
		c, k, err := ca.IssueFiles(dir, name, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		return grpcx.TLSFiles{CAFile: filepath.Join(dir, pki.CAFile), CertFile: c, KeyFile: k}
	}

	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.Dev, cfg.TLS, cfg.RaftLogLevel = "c1", true, issue(pki.RoleCoordinator, "c1"), "off"
	cfg.APIAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	c, err := coordinator.New(cfg, coordLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	scfg := grpcx.DefaultServerConfig()
	scfg.Addr, scfg.TLS, scfg.Authz = cfg.APIAddr, cfg.TLS, coordinator.AuthzTable()
	srv, err := grpcx.NewServer(scfg, coordLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Register(srv.GRPC())
	go srv.Serve()
	defer func() {
		// The reporters' streams outlive this function (t.Cleanup).
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		srv.Stop(sctx)
	}()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return c.Ready() == nil }, "coordinator not ready")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(name string, files grpcx.TLSFiles) *running {
		rc := testConfig(name, cfg.APIAddr)
		rc.TLS = files
		x := run(t, rc, t.TempDir())
		for n := range 10 {
			if err := x.r.Enqueue(ctx, taggedAlert(n%3, n)); err != nil {
				t.Fatal(err)
			}
		}
		return x
	}

	good := send("s1", issue(pki.RoleSensor, "s1"))
	operator := send("alice", issue(pki.RoleOperator, "alice"))
	plain := send("s2", grpcx.TLSFiles{})
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, func() bool {
		return good.sp.Stats().AckedSeq == 10
	}, "sensor s1 over mutual TLS: acked %d of 10", good.sp.Stats().AckedSeq)
	// Give the refused reporters the same time again, then check.
	time.Sleep(time.Second)
	for name, x := range map[string]*running{"operator certificate": operator, "no certificate": plain} {
		if acked := x.sp.Stats().AckedSeq; acked != 0 {
			t.Errorf("%s: %d records acknowledged, want 0", name, acked)
		}
	}
	var fromS1 int
	alerts, _, _ := c.FSM().AlertsFrom(0, 10000)
	for _, a := range alerts {
		if a.GetSensorId() == "s1" {
			fromS1++
		}
		if a.GetSensorId() == "alice" || a.GetSensorId() == "s2" {
			t.Errorf("alert %s from a refused reporter was committed", a.GetId())
		}
	}
	if fromS1 != 10 {
		t.Errorf("%d alerts of s1 committed, want 10", fromS1)
	}
}

package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestClusterStatusMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "test campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, role pki.Role, name string) (string, string) {
		c, k, err := ca.IssueFiles(dir, name, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	caFile := filepath.Join(dir, pki.CAFile)
	srvCert, srvKey := issue(ca, pki.RoleCoordinator, "c1")
	cliCert, cliKey := issue(ca, pki.RoleViewer, "alice")
	other, err := pki.CreateCA(filepath.Join(dir, "other"), "other campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	badCert, badKey := issue(other, pki.RoleViewer, "mallory")

	cfg := grpcx.DefaultServerConfig()
	cfg.Addr, cfg.Authz = "127.0.0.1:0", coordinator.AuthzTable()
	cfg.TLS = grpcx.TLSFiles{CertFile: srvCert, KeyFile: srvKey, CAFile: caFile}
	s, err := grpcx.NewServer(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	medmeshv1.RegisterClusterServiceServer(s.GRPC(), &fakeAPI{})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
		<-done
	}()
	addr := s.Addr().String()

	code, stdout, stderr := runCLI(t, "cluster", "status", "--addr", addr, "-o", "json",
		"--tls-ca", caFile, "--tls-cert", cliCert, "--tls-key", cliKey)
	if code != 0 || !strings.Contains(stdout, `"leader": "c2"`) {
		t.Fatalf("mTLS: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "cluster", "status", "--addr", addr, "--tls-ca", caFile, "--tls-cert", badCert, "--tls-key", badKey)
	if code != exitFailure || !strings.HasPrefix(oneLine(t, stderr), "medmesh: cannot reach coordinator at "+addr+": ") {
		t.Fatalf("certificate of another CA: exit %d, stderr %q", code, stderr)
	}
	t.Logf("with a certificate of another CA: %s", strings.TrimSpace(stderr))
	for _, args := range [][]string{{"--tls-ca", caFile}, {"--tls-cert", cliCert}, {"--tls-cert", cliCert, "--tls-key", cliKey}} {
		if code, _, stderr := runCLI(t, append([]string{"cluster", "status", "--addr", addr}, args...)...); code != exitUsage {
			t.Fatalf("%v alone: exit %d, stderr %q", args, code, stderr)
		}
	}
}

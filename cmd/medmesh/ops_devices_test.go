package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestDevicesSetLowersTierAudited: a sensor cannot move an infusion pump
// out of life-critical; `medmesh devices set` with an operator certificate
// can, and the audit trail names the certificate's identity. A viewer may
// not.
func TestDevicesSetLowersTierAudited(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "test campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, pki.CAFile)
	issue := func(role pki.Role, name string) grpcx.TLSFiles {
		c, k, err := ca.IssueFiles(dir, name, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		return grpcx.TLSFiles{CAFile: caFile, CertFile: c, KeyFile: k}
	}
	srv := issue(pki.RoleCoordinator, "dev")
	o := startCoordinator(t, coordinatorOptions{dev: true, tls: srv})
	ctx := context.Background()

	// The ICU sensor reports a pump; another report calls it a workstation.
	tc, err := pki.ClientConfig(issue(pki.RoleSensor, "s-icu"), pki.RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(o.api, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const mac = "00:1b:44:11:3a:b7"
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	rs, err := medmeshv1.NewSensorServiceClient(conn).Report(rctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []medmeshv1.DeviceClass{medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION} {
		if err := rs.Send(&medmeshv1.ReportRequest{SensorId: "s-icu", Records: []*medmeshv1.SensorRecord{{Seq: uint64(i + 1),
			Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{Mac: mac, DeviceClass: c,
				Model: "BD Alaris PCU", Firmware: "9.33", Identifiers: &medmeshv1.Identifiers{DhcpVendorClass: "BD Alaris PCU 9.33"}}}}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	rs.CloseSend()

	tlsArgs := func(f grpcx.TLSFiles) []string {
		return []string{"--addr", o.api, "--tls-ca", f.CAFile, "--tls-cert", f.CertFile, "--tls-key", f.KeyFile}
	}
	alice, viewer := issue(pki.RoleOperator, "alice"), issue(pki.RoleViewer, "vic")
	// Model and firmware reach the inventory and both views of it.
	code, stdout, stderr := runCLI(t, append([]string{"devices", "list"}, tlsArgs(alice)...)...)
	if code != 0 || !strings.Contains(stdout, "FIRMWARE") || !strings.Contains(stdout, "BD Alaris PCU") || !strings.Contains(stdout, "9.33") {
		t.Fatalf("devices list: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, append([]string{"devices", "get", mac}, tlsArgs(alice)...)...)
	if code != 0 || !regexp.MustCompile(`firmware\s+9\.33`).MatchString(stdout) || !strings.Contains(stdout, "BD Alaris PCU 9.33") {
		t.Fatalf("devices get: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, append([]string{"devices", "get", mac, "-o", "json"}, tlsArgs(alice)...)...)
	if code != 0 || !strings.Contains(stdout, "TIER_LIFE_CRITICAL") || !strings.Contains(stdout, "DEVICE_CLASS_INFUSION_PUMP") {
		t.Fatalf("pump after a sensor called it a workstation: exit %d %s %s", code, stdout, stderr)
	}

	code, _, stderr = runCLI(t, append([]string{"devices", "set", mac, "--tier", "non-clinical", "--reason", "decommissioned"}, tlsArgs(viewer)...)...)
	if code != exitFailure || !strings.Contains(stderr, "PermissionDenied") {
		t.Fatalf("viewer sets a tier: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, append([]string{"devices", "set", mac, "--tier", "non-clinical"}, tlsArgs(alice)...)...); code != exitUsage {
		t.Fatalf("no --reason: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr = runCLI(t, append([]string{"devices", "set", mac, "--class", "it-workstation", "--tier", "non-clinical",
		"--reason", "biomed: pump replaced by a workstation", "--actor", "dr.house"}, tlsArgs(alice)...)...)
	if code != 0 || !strings.Contains(stdout, "non-clinical (set by operator)") || !strings.Contains(stdout, "it-workstation") {
		t.Fatalf("devices set: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("devices set:\n%s", stdout)

	code, stdout, stderr = runCLI(t, append([]string{"policies", "audit", "--resource", "device/" + mac, "-o", "json"}, tlsArgs(alice)...)...)
	if code != 0 || !strings.Contains(stdout, `"actor": "operator/alice"`) || !strings.Contains(stdout, "actor field: dr.house") ||
		!strings.Contains(stdout, "biomed: pump replaced") {
		t.Fatalf("audit: exit %d\n%s%s", code, stdout, stderr)
	}
}

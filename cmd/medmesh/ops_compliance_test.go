package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	compreport "github.com/medmesh/medmesh/compliance/report"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestComplianceCLIAgainstACoordinator: the report from a coordinator
// with three devices as JSON, the same report rendered offline with
// --from has the same figures, and exceptions are accepted, listed and
// revoked through the CLI.
func TestComplianceCLIAgainstACoordinator(t *testing.T) {
	dir := t.TempDir()
	o := startCoordinator(t, coordinatorOptions{dev: true})
	addr := "--addr=" + o.api
	conn, err := grpc.NewClient(o.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: "s1"}
	for i, d := range []*medmeshv1.Device{
		{Mac: "02:00:00:00:19:01", Hostname: "pump-1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP},
		{Mac: "02:00:00:00:19:02", Hostname: "monitor-1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR},
		{Mac: "02:00:00:00:19:03", Hostname: "ws-1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
	} {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}})
	}
	if err := rs.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}

	js := filepath.Join(dir, "r.json")
	if code, _, stderr := runCLI(t, "compliance", "report", addr, "--framework", "hipaa", "--format", "json", "--out", js); code != 0 {
		t.Fatalf("report json: %d %s", code, stderr)
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var r medmeshv1.ComplianceReport
	if err := protojson.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.GetCoverage().GetDevices() != 3 || r.GetRaftIndex() == 0 || r.GetFramework() != medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA || len(r.GetControls()) == 0 {
		t.Fatalf("report: %d devices, index %d, framework %v, %d controls", r.GetCoverage().GetDevices(), r.GetRaftIndex(), r.GetFramework(), len(r.GetControls()))
	}
	code, page, stderr := runCLI(t, "compliance", "report", "--from", js)
	if code != 0 {
		t.Fatalf("report --from: %d %s", code, stderr)
	}
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`data-figure="([a-z-]+)">([^<]*)<`).FindAllStringSubmatch(page, -1) {
		got[m[1]] = m[2]
	}
	for k, v := range compreport.Summary(&r) {
		if got[k] != v {
			t.Errorf("figure %s: page %q, JSON %q", k, got[k], v)
		}
	}

	code, out, stderr := runCLI(t, "compliance", "exceptions", "accept", "patch:Example/Pump@2.0", addr, "--owner", "biomed", "--reason", "vendor validation", "--expires", "48h")
	if code != 0 || !strings.Contains(out, "accepts patch:Example/Pump@2.0") {
		t.Fatalf("accept: %d %s %s", code, out, stderr)
	}
	id := strings.Fields(out)[0]
	if code, _, stderr := runCLI(t, "compliance", "exceptions", "accept", "x", addr, "--owner", "biomed", "--reason", "r", "--expires", "-1h"); code == 0 || !strings.Contains(stderr, "future") {
		t.Fatalf("a past expiry was accepted: %d %s", code, stderr)
	}
	code, out, _ = runCLI(t, "compliance", "exceptions", "list", addr, "--active")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "biomed") {
		t.Fatalf("list: %d %s", code, out)
	}
	if code, _, stderr := runCLI(t, "compliance", "exceptions", "revoke", id, addr, "--reason", "patched"); code != 0 {
		t.Fatalf("revoke: %d %s", code, stderr)
	}
	code, out, _ = runCLI(t, "compliance", "exceptions", "list", addr, "--active")
	if code != 0 || strings.Contains(out, id) {
		t.Fatalf("revoked exception still in force: %s", out)
	}
	code, out, stderr = runCLI(t, "compliance", "mds2", "import", "../../compliance/internal/mds2/testdata/acme-infuser-3000.xlsx", addr, "--reason", "vendor MDS2")
	if code != 0 || !strings.Contains(out, "to Acme Medical Infuser 3000") {
		t.Fatalf("mds2 import: %d %s %s", code, out, stderr)
	}
	if code, out, _ := runCLI(t, "compliance", "mds2", "list", addr); code != 0 || !strings.Contains(out, "acme-infuser-3000.xlsx") {
		t.Fatalf("mds2 list: %d %s", code, out)
	}
	if code, out, _ := runCLI(t, "compliance", "trend", addr); code != 0 || !strings.Contains(out, "DAY") {
		t.Fatalf("trend: %d %s", code, out)
	}
}

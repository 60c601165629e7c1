package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// TestRiskCLIAgainstACoordinator runs the cluster forms of intel, sbom and
// risk against an in-process coordinator that requires signed bundles:
// an unsigned bundle is refused with the reason, a signed one (the shared
// CISA advisories, KEV and endoflife.date data, the risk fixtures and OSV
// records) becomes active, an SBOM attaches to a model, and risk top,
// device and findings explain what the devices have.
func TestRiskCLIAgainstACoordinator(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := risk.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile := filepath.Join(dir, "intel.key"), filepath.Join(dir, "intel.pub")
	os.WriteFile(keyFile, priv, 0o600)
	os.WriteFile(pubFile, pub, 0o644)
	o := startCoordinator(t, coordinatorOptions{dev: true, intelKey: pubFile})
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
	devs := []*medmeshv1.Device{
		{Mac: "02:00:00:00:19:01", Hostname: "spect-1", Vendor: "Siemens", Model: "SPECT Workplaces/Symbia.net Windows XP-Based", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY},
		{Mac: "02:00:00:00:19:02", Hostname: "vent-mon", Vendor: "Open Ventilator Remote Monitoring", Model: "Remote Ventilator Monitor Pi", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR},
		{Mac: "02:00:00:00:19:03", Hostname: "pump-1", Vendor: "BD", Model: "Alaris 8015 PC unit", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP,
			Identifiers: &medmeshv1.Identifiers{Hl7Udis: []string{"(01)10885403801512"}}},
	}
	req := &medmeshv1.ReportRequest{SensorId: "s1"}
	for i, d := range devs {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}})
	}
	if err := rs.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, "devices", "set", devs[0].Mac, addr, "--label", "os=Windows XP Professional SP3", "--label", "version=VA60B", "--reason", "CMDB"); code != 0 {
		t.Fatalf("devices set: %d %s", code, stderr)
	}

	// Sources: the shared public data, the risk fixtures, and OSV records.
	osvDir := filepath.Join(dir, "osv-src")
	os.MkdirAll(filepath.Join(osvDir, "osv"), 0o755)
	recs, _ := filepath.Glob("../../risk/internal/osv/testdata/records/*.json")
	for _, r := range recs {
		b, _ := os.ReadFile(r)
		os.WriteFile(filepath.Join(osvDir, "osv", filepath.Base(r)), b, 0o644)
	}
	sources := []string{"../../../shared/testdata/intel", fixtures, osvDir}

	// Unsigned: refused by the coordinator, with the reason.
	code, _, stderr := runCLI(t, append([]string{"intel", "import", addr}, sources[1])...)
	if code == 0 || !strings.Contains(stderr, "not signed") || !strings.Contains(stderr, "active bundle is unchanged") {
		t.Fatalf("unsigned import: exit %d, %s", code, stderr)
	}
	signed := filepath.Join(dir, "intel.tar.gz")
	if code, _, stderr := runCLI(t, append([]string{"intel", "bundle", "--out", signed, "--sign", keyFile}, sources...)...); code != 0 {
		t.Fatalf("intel bundle: %s", stderr)
	}
	code, stdout, stderr := runCLI(t, "intel", "import", addr, signed, "--reason", "monthly intel")
	if code != 0 || !strings.Contains(stdout, "signature verified by the coordinators") {
		t.Fatalf("signed import: exit %d, %s %s", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	code, stdout, stderr = runCLI(t, "sbom", "import", addr, "../../risk/internal/sbom/testdata/ventilator-monitor.cdx.json",
		"--vendor", "Open Ventilator Remote Monitoring", "--model", "Remote Ventilator Monitor Pi")
	if code != 0 || !strings.Contains(stdout, "cyclonedx-json") {
		t.Fatalf("sbom import: exit %d, %s %s", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))

	// The leader assesses; top lists the devices with why.
	var top struct {
		Postures []struct {
			DeviceMac  string `json:"device_mac"`
			SbomDigest string `json:"sbom_digest"`
			Score      struct {
				Score   int `json:"score"`
				Factors []struct {
					Name string `json:"name"`
				} `json:"factors"`
			} `json:"score"`
		} `json:"postures"`
	}
	testutil.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		code, stdout, _ := runCLI(t, "risk", "top", addr, "-o", "json")
		top.Postures = nil
		if code != 0 || json.Unmarshal([]byte(stdout), &top) != nil || len(top.Postures) != 3 {
			return false
		}
		for _, p := range top.Postures {
			if p.DeviceMac == devs[1].Mac && p.SbomDigest == "" {
				return false
			}
		}
		return true
	}, "risk top did not list the three devices assessed with the SBOM")
	if top.Postures[0].DeviceMac != devs[0].Mac || top.Postures[0].Score.Factors[0].Name != "kev" {
		t.Errorf("top: %+v; want the KEV-listed imaging system first", top.Postures)
	}
	code, stdout, _ = runCLI(t, "risk", "top", addr)
	if code != 0 || !strings.Contains(stdout, "kev +") || !strings.Contains(stdout, "CISA's Known Exploited Vulnerabilities") {
		t.Fatalf("risk top table:\n%s", stdout)
	}
	t.Logf("risk top:\n%s", stdout)

	code, stdout, _ = runCLI(t, "risk", "device", addr, devs[0].Mac)
	for _, want := range []string{"CVE-2017-7269", "KEV", "end_of_life", "Windows XP", "clinical tier x0.85"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("risk device lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCLI(t, "risk", "findings", addr, "--kind", "kev")
	if code != 0 || !strings.Contains(stdout, "CVE-2017-7269") || strings.Contains(stdout, "end_of_life") {
		t.Errorf("findings --kind kev:\n%s", stdout)
	}
	code, stdout, _ = runCLI(t, "risk", "findings", addr, "--kind", "recall", "--min-confidence", "exact")
	if code != 0 || !strings.Contains(stdout, devs[2].Mac) {
		t.Errorf("findings --kind recall:\n%s", stdout)
	}
	code, stdout, _ = runCLI(t, "risk", "findings", addr, "--device", devs[1].Mac, "-o", "json")
	if code != 0 || !strings.Contains(stdout, `"component": "pkg:`) {
		t.Errorf("the SBOM's component findings:\n%s", stdout)
	}
	code, stdout, _ = runCLI(t, "intel", "status", addr)
	for _, want := range []string{"active bundle intel.tar.gz", "CISA KEV catalog", "WARNING: older than 30 days", "Remote Ventilator Monitor Pi", "3 devices assessed"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("intel status lacks %q:\n%s", want, stdout)
		}
	}
	if code, _, stderr := runCLI(t, "risk", "findings", addr, "--kind", "nonsense"); code == 0 || !strings.Contains(stderr, "InvalidArgument") {
		t.Errorf("bad kind: %d %s", code, stderr)
	}
}

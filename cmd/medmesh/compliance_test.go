package main

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestComplianceAssess runs `compliance assess` offline on a replay
// report of a real capture joined with a CMDB inventory, the risk fixture
// bundle and an MDS2 workbook, and reads the JSON back as a
// ComplianceReport.
func TestComplianceAssess(t *testing.T) {
	args := []string{"compliance", "assess", "--inventory", "../../compliance/testdata/hl7-adt-report.json",
		"--inventory", "../../compliance/testdata/cmdb.jsonl", "--bundle", fixtures,
		"--mds2", "../../compliance/internal/mds2/testdata/acme-infuser-3000.xlsx", "--at", "2026-12-01"}
	code, out, stderr := runCLI(t, append(args, "--framework", "hipaa", "--format", "json")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rep := new(medmeshv1.ComplianceReport)
	if err := protojson.Unmarshal([]byte(out), rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c := rep.GetCoverage(); c.GetDevices() != 3 || c.GetWithMds2() != 1 || c.GetAssessed() != 3 || c.GetObserved() != 2 {
		t.Errorf("coverage %v", c)
	}
	if n := len(rep.GetControls()); n != 7 || rep.GetFramework() != medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA || rep.GetBundleDigest() == "" {
		t.Errorf("%d controls, framework %v, bundle %q", n, rep.GetFramework(), rep.GetBundleDigest())
	}
	var pump *medmeshv1.DeviceCompliance
	for _, d := range rep.GetDevices() {
		if d.GetDeviceMac() == "00:0c:29:b5:b6:48" {
			pump = d
		}
	}
	if pump == nil || pump.GetModel() != "Infuser 3000" || pump.GetMds2() != "acme-infuser-3000.xlsx" || pump.GetHostname() != "pump-3a-01" {
		t.Fatalf("the HL7 sender joined with its CMDB line: %v", pump)
	}
	for _, r := range pump.GetResults() {
		if r.GetControlId() != "hipaa-164.312(e)" {
			continue
		}
		if r.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_UNMET || !slices.ContainsFunc(r.GetEvidence(), func(e *medmeshv1.ComplianceEvidence) bool {
			return e.GetConfirmed() && e.GetSource() == "hl7-adt-report.json" && strings.Contains(e.GetText(), "HL7 seen in clear")
		}) {
			t.Errorf("164.312(e): %v", r)
		}
	}
	if len(rep.GetPlan().GetActions()) == 0 || rep.GetPlan().GetActions()[0].GetRank() != 1 {
		t.Errorf("plan %v", rep.GetPlan())
	}

	code, out, stderr = runCLI(t, append(args, "--format", "table")...)
	if code != 0 || !strings.Contains(out, "hipaa-164.312(e) Transmission security") || !strings.Contains(out, "proposed-2025-segmentation Network segmentation (proposed)") || !strings.Contains(out, " 1. ") {
		t.Errorf("table (exit %d, %s):\n%s", code, stderr, out)
	}
	if code, _, stderr = runCLI(t, append(args, "--framework", "sox")...); code != 2 || !strings.Contains(stderr, "want hipaa, hicp or proposed-2025") {
		t.Errorf("--framework sox: exit %d, %s", code, stderr)
	}
	if code, _, stderr = runCLI(t, "compliance", "assess", "--inventory", "../../compliance/testdata/README.md"); code != 2 || !strings.Contains(stderr, "neither a replay report") {
		t.Errorf("a file of neither format: exit %d, %s", code, stderr)
	}
}

package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/deploy/lab"
)

func runLab(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		out.WriteString(err.Error())
		code = exitFailure
		var ue usageError
		if errors.As(err, &ue) {
			code = exitUsage
		}
	}
	return out.String(), code
}

func TestLabCLIUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", "--state-dir", dir}, exitUsage, "--scenario is required"},
		{[]string{"status", "-o", "yaml", "--state-dir", dir}, exitUsage, "want table or json"},
		{[]string{"status", "--state-dir", dir}, 0, "lab: down"},
		{[]string{"status", "-o", "json", "--state-dir", dir}, 0, `"up": false`},
		{[]string{"run", "--scenario", "meteor-strike", "--state-dir", dir}, exitUsage, "known: compromised-device, compromised-pump"},
		{[]string{"sim", "--config", "{"}, exitUsage, "--config"},
		{[]string{"roam", "pump1", "--state-dir", dir}, exitUsage, "--floor is required"},
		{[]string{"bench", "write", "--n", "0"}, exitUsage, "--n and --concurrency must be positive"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
	} {
		out, code := runLab(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d containing %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

// TestPrintOutcomeTellsApprovalAndClassPolicy: the text outcome shows the
// class policy's drops and, for the pump, the pending decisions and their
// approvals as the JSON -o json prints.
func TestPrintOutcomeTellsApprovalAndClassPolicy(t *testing.T) {
	o := lab.ScenarioOutcome{Scenario: lab.ScenarioCompromisedPump, Device: "pump1", DetectionToDropMs: -1,
		ClassPolicy: &lab.ClassPolicyOutcome{Policy: lab.ClassPolicyName, Class: "it-workstation", Device: "ws1", DeviceClass: "it-workstation",
			Decisions: 2, DeniedTarget: "10.98.0.11:9999", DeniedSent: 20, Dropped: 20, AllowedTarget: "203.0.113.10:443", AllowedOK: true, Passed: 21},
		Pump: &lab.PumpOutcome{
			Pending:              []lab.DecisionView{{ID: "r-1", Index: 50, Device: "pump1", Action: "quarantine", State: "pending-approval", Rule: "quarantine-scanner", Actor: "response-engine"}},
			Approver:             "approver/lab-approver",
			Approved:             []lab.DecisionView{{ID: "d-2", Index: 54, Device: "pump1", Action: "quarantine", State: "approved", Actor: "approver/lab-approver", Target: "r-1"}},
			DroppedAfterApproval: 56, ApprovalToDropMs: 318,
		}}
	var b bytes.Buffer
	if err := printOutcome(&b, o); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ws1 (classified it-workstation): 20 datagrams to 10.98.0.11:9999 (denied): 20 packets dropped at its enforcer",
		"connected=true, 21 packets passed",
		"1 decisions waited for approval; its packets dropped meanwhile: 0",
		`"state": "pending-approval"`, `"target": "r-1"`,
		"after approval by approver/lab-approver: 56 packets of pump1 dropped, the first 318 ms after the approval",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("outcome lacks %q:\n%s", want, b.String())
		}
	}
}

// TestLabNeedsLinux plays a darwin build: the lab commands fail before
// doing anything, saying so.
func TestLabNeedsLinux(t *testing.T) {
	old := goos
	goos = "darwin"
	t.Cleanup(func() { goos = old })
	for _, args := range [][]string{{"up"}, {"status"}, {"env"}, {"sim", "--kind", "pump", "--id", "p1"}} {
		out, code := runLab(t, args...)
		if want := "the lab needs Linux (network namespaces, veth, tc, XDP); this build is for darwin"; code != exitFailure || !strings.Contains(out, want) {
			t.Errorf("%v: exit %d, output %q; want exit %d and %q", args, code, out, exitFailure, want)
		}
	}
}

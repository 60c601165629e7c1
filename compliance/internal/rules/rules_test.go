package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/compliance/internal/mds2"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func form(t *testing.T, name string) *mds2.Form {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "mds2", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fm, err := mds2.Parse(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return fm
}

// verdict condenses an outcome: "adverse", "supporting", "ne", "na".
func verdict(o Outcome) string {
	switch {
	case o.Adverse():
		return "adverse"
	case o.Supporting():
		return "supporting"
	case o.NotApplicable != "":
		return "na"
	}
	return "ne"
}

// TestRules: the rules the captures cannot drive (findings, policy, MDS2
// answers, bundle age), each way they can go, with the words that say why.
func TestRules(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	campus := &Campus{Now: now, BundleDigest: "abc", BundleDate: now.AddDate(0, -2, 0)}
	old := &Campus{Now: now, BundleDigest: "abc", BundleDate: now.AddDate(-1, 0, 0)}
	assessed := func(fs ...*medmeshv1.Finding) *medmeshv1.DevicePosture {
		return &medmeshv1.DevicePosture{BundleDigest: "abc", Findings: fs, Score: &medmeshv1.RiskScore{Score: 50}}
	}
	weak, strong := form(t, "acme-infuser-3000.xlsx"), form(t, "acme-imager-9.xlsx")
	seen := &medmeshv1.Device{Mac: "m", Protocols: []string{"dns"}}
	for _, tc := range []struct {
		name, rule string
		d          Device
		c          *Campus
		want, text string
	}{
		{"policy enforced", "segmentation", Device{Dev: seen, PolicyKnown: true, Policy: "enforce"}, campus, "supporting", "enforced"},
		{"policy monitor", "segmentation", Device{Dev: seen, PolicyKnown: true, Policy: "monitor"}, campus, "adverse", "monitor mode"},
		{"no policy", "segmentation", Device{Dev: seen, PolicyKnown: true}, campus, "adverse", "no least-privilege policy"},
		{"policy unknown", "segmentation", Device{Dev: seen}, campus, "ne", "offline"},
		{"external finding", "external_communication", Device{Dev: seen, Posture: assessed(&medmeshv1.Finding{Kind: "external_communication", Id: "external-communication", Summary: "talked to 203.0.113.9"})}, campus, "adverse", "203.0.113.9"},
		{"no external", "external_communication", Device{Dev: seen, Posture: assessed()}, campus, "supporting", "no communication outside"},
		{"kev vulnerability", "vulnerabilities", Device{Dev: seen, Posture: assessed(&medmeshv1.Finding{Kind: "vulnerability", Id: "CVE-2024-1", Severity: "critical", Confidence: "exact", Cvss: 9.8, Kev: true, FixedVersion: "2.1"})}, campus, "adverse", "CVE-2024-1 critical (exact match, CVSS 9.8, known exploited, fixed in 2.1)"},
		{"suppressed vulnerability", "vulnerabilities", Device{Dev: seen, Posture: assessed(&medmeshv1.Finding{Kind: "vulnerability", Id: "CVE-2024-1", Suppressed: "VEX: not affected"})}, campus, "supporting", "no known vulnerability"},
		{"not assessed", "vulnerabilities", Device{Dev: seen}, campus, "ne", "not assessed"},
		{"end of life", "end_of_life", Device{Dev: seen, Posture: assessed(&medmeshv1.Finding{Kind: "end_of_life", Id: "eol:x", Summary: "Windows 7 ended 2020-01-14"})}, campus, "adverse", "Windows 7"},
		{"recall", "recall", Device{Dev: seen, Posture: assessed(&medmeshv1.Finding{Kind: "recall", Id: "Z-1234-2024", Summary: "class II recall"})}, campus, "adverse", "class II"},
		{"fresh intelligence", "scan_recency", Device{Dev: seen, Posture: assessed()}, campus, "supporting", "61 days old"},
		{"stale intelligence", "scan_recency", Device{Dev: seen, Posture: assessed()}, old, "adverse", "more than 6 months"},
		{"no bundle", "scan_recency", Device{Dev: seen}, &Campus{Now: now}, "ne", "no intelligence bundle"},
		{"never assessed", "risk_assessed", Device{Dev: seen}, campus, "adverse", "not assessed against the active bundle"},
		{"integrity weak MDS2", "update_integrity", Device{Dev: seen, MDS2: weak}, campus, "adverse", "no software integrity checking"},
		{"integrity strong MDS2", "update_integrity", Device{Dev: seen, MDS2: strong}, campus, "supporting", "SAHD-3"},
		{"integrity no MDS2", "update_integrity", Device{Dev: seen}, campus, "ne", "does not show whether updates are signed"},
		{"mds2 on file", "mds2_on_file", Device{Dev: seen, MDS2: weak}, campus, "supporting", "SBOM available: Yes"},
		{"ssh only", "login_monitoring", Device{Dev: &medmeshv1.Device{Mac: "m", Protocols: []string{"ssh"}}}, campus, "ne", "banner only"},
		{"failed logins reported", "login_monitoring", Device{Dev: &medmeshv1.Device{Mac: "m", Protocols: []string{"ftp"}}, Alerts: []*medmeshv1.Alert{{Id: "s1/4", Kind: "failed_login_burst",
			Login: &medmeshv1.LoginEvidence{Protocol: "ftp", Attempts: 12, WindowSeconds: 60, Accounts: []string{"root", "admin"}}}}}, campus, "supporting", "12 refused ftp logins within 60s"},
		{"syslog collector", "syslog_sent", Device{Dev: &medmeshv1.Device{Mac: "m", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_SYSLOG_SERVER, Protocols: []string{"syslog"}}}, campus, "na", "collector"},
		{"vendor cannot export logs", "syslog_sent", Device{Dev: seen, MDS2: weak}, campus, "adverse", "AUDT-3 No"},
		{"unidentified", "identified", Device{Dev: &medmeshv1.Device{Mac: "m", Vendor: "Dell"}}, campus, "adverse", "not identified"},
		{"tls", "tls_version", Device{Dev: &medmeshv1.Device{Mac: "m", Protocols: []string{"tls"}}}, campus, "ne", "the device uses TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := All[tc.rule]
			if !ok || r.Campus {
				t.Fatalf("no device rule %q", tc.rule)
			}
			o := r.Device(&tc.d, tc.c)
			why := o.NotEvidenced + o.NotApplicable
			for _, e := range o.Evidence {
				why += " | " + e.GetText()
				if e.GetRule() != tc.rule && e.GetKind() != "mds2" {
					t.Errorf("evidence names rule %q", e.GetRule())
				}
			}
			if verdict(o) != tc.want || !strings.Contains(why, tc.text) {
				t.Errorf("%s: %s %q, want %s with %q", tc.rule, verdict(o), why, tc.want, tc.text)
			}
		})
	}
}

// TestCampusRules: inventory coverage and medmesh's audit trail.
func TestCampusRules(t *testing.T) {
	if o := All["inventory_coverage"].Eval(&Campus{Devices: 4, Classified: 3, Identified: 2}); !o.Adverse() || !strings.Contains(o.Evidence[0].GetText(), "4 device(s): 3 classified, 2 identified") {
		t.Errorf("coverage %v", o)
	}
	if o := All["inventory_coverage"].Eval(&Campus{Devices: 2, Classified: 2, Identified: 2}); o.Adverse() || !o.Supporting() {
		t.Errorf("full coverage %v", o)
	}
	if o := All["medmesh_audit"].Eval(&Campus{}); !strings.Contains(o.NotEvidenced, "offline") {
		t.Errorf("offline audit %v", o)
	}
	if o := All["medmesh_audit"].Eval(&Campus{RaftIndex: 42}); !o.Supporting() || !strings.Contains(o.Evidence[0].GetText(), "index 42") {
		t.Errorf("cluster audit %v", o)
	}
}

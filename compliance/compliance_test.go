package compliance

import (
	"math"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/compliance/internal/rules"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestCatalog loads the embedded catalog: every control names rules that
// exist, the controls the issue lists are there with their citations, the
// proposed rule's are marked proposed, and every rule is used.
func TestCatalog(t *testing.T) {
	cs, err := Catalog()
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*medmeshv1.ComplianceControl{}
	used := map[string]bool{}
	for _, c := range cs {
		byID[c.GetId()] = c
		for _, r := range c.GetRules() {
			if _, ok := rules.All[r]; !ok {
				t.Errorf("%s names the unknown rule %q", c.GetId(), r)
			}
			used[r] = true
		}
		if c.GetProposed() != (c.GetFramework() == medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_PROPOSED_2025) {
			t.Errorf("%s: proposed %v", c.GetId(), c.GetProposed())
		}
	}
	for id, cite := range map[string]string{
		"hipaa-164.312(a)": "45 CFR 164.312(a)(1)", "hipaa-164.312(b)": "45 CFR 164.312(b)", "hipaa-164.312(c)": "45 CFR 164.312(c)(1)",
		"hipaa-164.312(d)": "45 CFR 164.312(d)", "hipaa-164.312(e)": "45 CFR 164.312(e)(1)",
		"hipaa-164.308(a)(1)": "45 CFR 164.308(a)(1)(ii)(A)", "hipaa-164.308(a)(5)": "45 CFR 164.308(a)(5)(ii)(C)",
		"hicp-5": "Practice 5", "hicp-6": "Practice 6", "hicp-7": "Practice 7", "hicp-9": "Practice 9",
		"proposed-2025-inventory": "90 FR 898", "proposed-2025-vulnerability-scanning": "90 FR 898", "proposed-2025-segmentation": "90 FR 898",
	} {
		c := byID[id]
		if c == nil || !strings.Contains(c.GetCitation(), cite) {
			t.Errorf("control %s: %v, want citation with %q", id, c, cite)
		}
	}
	for name := range rules.All {
		if !used[name] {
			t.Errorf("rule %q is used by no control", name)
		}
	}
}

// TestCatalogRefusesMistakes: a catalog file with an unknown rule, an
// unknown field or a duplicate id is refused, naming the file and control.
func TestCatalogRefusesMistakes(t *testing.T) {
	for want, body := range map[string]string{
		`unknown evidence rule "no_such_rule"`:                `{"framework":"hicp","controls":[{"id":"hicp-1","citation":"c","title":"t","rules":["no_such_rule"]}]}`,
		`unknown field "rule"`:                                `{"framework":"hicp","controls":[{"id":"hicp-1","citation":"c","title":"t","rule":["identified"]}]}`,
		`id also in catalog/a.json`:                           `{"framework":"hicp","controls":[{"id":"hicp-1","citation":"c","title":"t","rules":["identified"]},{"id":"hicp-1","citation":"c","title":"t","rules":["identified"]}]}`,
		`required rule "segmentation" is not among its rules`: `{"framework":"hicp","controls":[{"id":"hicp-1","citation":"c","title":"t","rules":["identified"],"required_rules":["segmentation"]}]}`,
		`proposed must be true`:                               `{"framework":"proposed-2025","controls":[{"id":"proposed-2025-x","citation":"c","title":"t","rules":["identified"]}]}`,
		`framework "sox"`:                                     `{"framework":"sox","controls":[]}`,
	} {
		_, err := loadCatalog(fstest.MapFS{"catalog/a.json": {Data: []byte(body)}})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "catalog/a.json") {
			t.Errorf("%s: %v, want an error with %q", body, err, want)
		}
	}
}

var now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

const bundle = "b1a2c3d4e5f60718293a4b5c6d7e8f90"

func posture(mac string, score uint32, fs ...*medmeshv1.Finding) *medmeshv1.DevicePosture {
	return &medmeshv1.DevicePosture{DeviceMac: mac, Score: &medmeshv1.RiskScore{Score: score}, Findings: fs, BundleDigest: bundle}
}

// smallCampus: two infusion pumps of one model sharing a fixable critical
// CVE (one also with a documented default account), an end-of-life
// monitor with an unfixed CVE and HL7 in clear, and an unidentified
// workstation seen logging in over Telnet.
func smallCampus() []Device {
	cve := func() *medmeshv1.Finding {
		return &medmeshv1.Finding{Kind: "vulnerability", Id: "CVE-2025-0001", Severity: "critical", Confidence: "exact", Cvss: 9.8, FixedVersion: "2.0"}
	}
	dev := func(mac, vendor, model string, tier medmeshv1.Tier, protocols ...string) *medmeshv1.Device {
		return &medmeshv1.Device{Mac: mac, Vendor: vendor, Model: model, Tier: tier, Protocols: protocols}
	}
	life, clin := medmeshv1.Tier_TIER_LIFE_CRITICAL, medmeshv1.Tier_TIER_CLINICAL
	return []Device{
		{Device: dev("aa:00:00:00:00:04", "Dell", "", medmeshv1.Tier_TIER_NON_CLINICAL, "telnet"), Source: "ward.pcap",
			Alerts: []*medmeshv1.Alert{{Id: "s1/9", Kind: "cleartext_credentials", DeviceMac: "aa:00:00:00:00:04",
				Login: &medmeshv1.LoginEvidence{Protocol: "telnet", Account: "admin", Cleartext: true, Outcome: "accepted"}}}},
		{Device: dev("aa:00:00:00:00:01", "Acme Medical", "Infuser 3000", life), Posture: posture("aa:00:00:00:00:01", 60, cve(),
			&medmeshv1.Finding{Kind: "default_credentials", Id: "cred:acme/service", Severity: "high", Account: "service", Protocol: "http"})},
		{Device: dev("aa:00:00:00:00:02", "Acme Medical", "Infuser 3000", life), Posture: posture("aa:00:00:00:00:02", 40, cve())},
		{Device: dev("aa:00:00:00:00:03", "Globex", "M5", clin, "hl7"), Source: "ward.pcap", Posture: posture("aa:00:00:00:00:03", 80,
			&medmeshv1.Finding{Kind: "end_of_life", Id: "eol:m5/1", Severity: "high", Summary: "M5 1.x support ended 2024-01-01"},
			&medmeshv1.Finding{Kind: "vulnerability", Id: "CVE-2024-0002", Severity: "high", Confidence: "model"},
			&medmeshv1.Finding{Kind: "cleartext_phi_protocol", Id: "cleartext:hl7", Severity: "medium"})},
	}
}

// TestPlanSmallCampus checks the first three actions by hand.
//
// Weights: critical 10, high 7, medium 4. Device risk is the posture
// score, shared over its items by weight (the workstation has no posture:
// its items' weight, 7+4, stands for its risk).
//
//	pump 1 (60): CVE-2025-0001 10, default account 7   -> 17
//	pump 2 (40): CVE-2025-0001 10                      -> 10
//	M5     (80): end of life 7, CVE-2024-0002 7, HL7 4 -> 18
//	ws     (11): telnet password seen 7, telnet 4      -> 11
//
// Candidates (drop / effort):
//
//	change-credentials Infuser: 60*7/17 = 24.71 / 1 = 24.71
//	patch Infuser @2.0: 60*10/17 + 40*10/10 = 75.29 / 4 = 18.82
//	replace M5 (everything on it): 80 / 8 = 10
//	change-credentials ws: 11*7/11 = 7 / 1 = 7
//	enable-tls M5: 80*4/18 = 17.78 / 3 = 5.93 (nothing left after replace)
//	enable-tls ws: 4 / 3 = 1.33
func TestPlanSmallCampus(t *testing.T) {
	rep, err := Evaluate(Input{Devices: smallCampus(), Now: now, BundleDigest: bundle, BundleDate: now.AddDate(0, -1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.GetPlan()
	if p.GetCampusRisk() != 191 {
		t.Errorf("campus risk %v, want 60+40+80+11", p.GetCampusRisk())
	}
	type want struct {
		id       string
		kind     medmeshv1.RemediationKind
		devices  []string
		findings []string
		controls []string
		drop     float64
		effort   uint32
	}
	for i, w := range []want{
		{"change-credentials:Acme Medical Infuser 3000", medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS,
			[]string{"aa:00:00:00:00:01"}, []string{"cred:acme/service"}, []string{"hipaa-164.312(a)"}, 60.0 * 7 / 17, 1},
		{"patch:Acme Medical Infuser 3000@2.0", medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH,
			[]string{"aa:00:00:00:00:01", "aa:00:00:00:00:02"}, []string{"CVE-2025-0001"}, []string{"hicp-7"}, 60.0*10/17 + 40, 4},
		{"replace:Globex M5", medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE,
			[]string{"aa:00:00:00:00:03"}, []string{"CVE-2024-0002", "cleartext:hl7", "eol:m5/1"}, []string{"hicp-7"}, 80, 8},
		{"change-credentials:aa:00:00:00:00:04", medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS,
			[]string{"aa:00:00:00:00:04"}, nil, nil, 7, 1},
		{"enable-tls:aa:00:00:00:00:04", medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS,
			[]string{"aa:00:00:00:00:04"}, nil, []string{"hipaa-164.312(a)"}, 4, 3},
	} {
		if i >= len(p.GetActions()) {
			t.Fatalf("%d actions, want at least %d: %v", len(p.GetActions()), i+1, p.GetActions())
		}
		a := p.GetActions()[i]
		t.Logf("%d. %s: %s [%s]", a.GetRank(), a.GetId(), a.GetExplanation(), strings.Join(a.GetControlIds(), " "))
		if a.GetId() != w.id || a.GetKind() != w.kind || a.GetRank() != uint32(i+1) || a.GetEffort() != w.effort ||
			!slices.Equal(a.GetDeviceMacs(), w.devices) || !slices.Equal(a.GetFindingIds(), w.findings) ||
			math.Abs(a.GetExpectedRiskDrop()-w.drop) > 0.01 {
			t.Errorf("action %d = %v\nwant %+v", i+1, a, w)
		}
		for _, c := range w.controls {
			if !slices.Contains(a.GetControlIds(), c) {
				t.Errorf("action %s closes %v, want %s among them", a.GetId(), a.GetControlIds(), c)
			}
		}
		if !strings.Contains(a.GetExplanation(), "per point") {
			t.Errorf("action %s unexplained: %q", a.GetId(), a.GetExplanation())
		}
	}
	if n := len(p.GetActions()); n != 5 {
		t.Errorf("%d actions, want 5 (enable-tls M5 has nothing left after the replacement): %v", n, p.GetActions())
	}
	if a := p.GetActions()[0]; !strings.Contains(a.GetExplanation(), "life-critical") {
		t.Errorf("the pumps' action does not warn about life-critical devices: %q", a.GetExplanation())
	}
}

// TestEvaluateDeterministic: the same campus in any order gives the same
// report; a device twice or without a MAC is refused.
func TestEvaluateDeterministic(t *testing.T) {
	in := Input{Devices: smallCampus(), Now: now, BundleDigest: bundle, BundleDate: now.AddDate(0, -1, 0)}
	a, err := Evaluate(in)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(in.Devices)
	b, err := Evaluate(in)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(a, b) {
		t.Error("the report depends on the devices' order")
	}
	in.Devices = append(in.Devices, in.Devices[0])
	if _, err := Evaluate(in); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("duplicate device: %v", err)
	}
}

// TestReportSummary: coverage, counts by tier and posture, control
// summaries and framework filtering add up.
func TestReportSummary(t *testing.T) {
	rep, err := Evaluate(Input{Devices: smallCampus(), Now: now, BundleDigest: bundle, BundleDate: now.AddDate(0, -7, 0),
		Framework: medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_PROPOSED_2025})
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.GetCoverage(); c.GetDevices() != 4 || c.GetIdentified() != 3 || c.GetAssessed() != 3 || c.GetObserved() != 2 {
		t.Errorf("coverage %v", c)
	}
	var n uint32
	for _, dc := range rep.GetDeviceCounts() {
		n += dc.GetDevices()
	}
	if n != 4 || rep.GetDeviceCounts()[0].GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || rep.GetDeviceCounts()[0].GetPosture() != "high" {
		t.Errorf("device counts %v", rep.GetDeviceCounts())
	}
	if len(rep.GetControls()) != 3 {
		t.Fatalf("%d controls for proposed-2025, want 3", len(rep.GetControls()))
	}
	for _, s := range rep.GetControls() {
		if s.GetMet()+s.GetUnmet()+s.GetNotEvidenced()+s.GetNotApplicable() != 4 {
			t.Errorf("%s counts %v", s.GetControl().GetId(), s)
		}
		if !s.GetControl().GetProposed() {
			t.Errorf("%s not marked proposed", s.GetControl().GetId())
		}
	}
	// Intelligence seven months old: scanning is overdue on every assessed
	// device, and the workstation was never assessed.
	for _, s := range rep.GetControls() {
		if s.GetControl().GetId() == "proposed-2025-vulnerability-scanning" && (s.GetUnmet() != 4 || s.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_UNMET) {
			t.Errorf("vulnerability scanning %v", s)
		}
		if s.GetControl().GetId() == "proposed-2025-segmentation" && s.GetNotEvidenced() != 4 {
			t.Errorf("segmentation offline %v", s)
		}
	}
	// Network management offline: no communication outside the hospital
	// is seen, but without the policy state the control is not met.
	hicp, err := Evaluate(Input{Devices: smallCampus(), Now: now, Framework: medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HICP})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range hicp.GetControls() {
		if s.GetControl().GetId() == "hicp-6" && (s.GetMet() != 0 || s.GetNotEvidenced() != 4) {
			t.Errorf("hicp-6 offline: %v", s)
		}
	}
	if rep.GetControlsUnmet()+rep.GetControlsMet()+rep.GetControlsNotEvidenced() != 3 {
		t.Errorf("met %d unmet %d not evidenced %d", rep.GetControlsMet(), rep.GetControlsUnmet(), rep.GetControlsNotEvidenced())
	}
}

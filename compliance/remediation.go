package compliance

import (
	"cmp"
	"slices"
	"strings"

	"github.com/medmesh/medmesh/compliance/internal/plan"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Item weights by severity; a known-exploited vulnerability counts twice.
var severityWeight = map[string]float64{"critical": 10, "high": 7, "medium": 4, "low": 1, "info": 0.5}

// Which evidence rules each kind of action settles: a control unmet on a
// device is closed by an action when every rule that found adverse
// evidence for it there is one the action settles.
var settles = map[medmeshv1.RemediationKind][]string{
	medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH:                {"vulnerabilities"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE:              {"vulnerabilities", "end_of_life", "recall", "default_credentials", "scan_recency", "risk_assessed"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS:   {"default_credentials"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS:           {"cleartext_phi", "cleartext_http", "cleartext_login", "dicom_unauthenticated", "hl7_unauthenticated"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_SEGMENT:              {"external_communication", "segmentation"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_COMPENSATING_CONTROL: {},
}

const (
	patchK   = medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH
	replaceK = medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE
	credK    = medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS
	tlsK     = medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS
	segK     = medmeshv1.RemediationKind_REMEDIATION_KIND_SEGMENT
	compK    = medmeshv1.RemediationKind_REMEDIATION_KIND_COMPENSATING_CONTROL
)

// items are what make d risky, and the actions that close each: its
// unsuppressed findings, and what the sensors saw that no finding already
// says (a credential alert, a clear-text protocol).
func items(d Device) []plan.Item {
	var out []plan.Item
	keys := map[string]bool{}
	add := func(it plan.Item) {
		if keys[it.Key] || it.Weight <= 0 {
			return
		}
		keys[it.Key] = true
		out = append(out, it)
	}
	replaceable := slices.ContainsFunc(d.Posture.GetFindings(), func(f *medmeshv1.Finding) bool {
		return f.GetSuppressed() == "" && (f.GetKind() == "end_of_life" || f.GetKind() == "recall")
	})
	for _, f := range d.Posture.GetFindings() {
		if f.GetSuppressed() != "" {
			continue
		}
		w := severityWeight[f.GetSeverity()]
		it := plan.Item{Key: f.GetKind() + ":" + f.GetId(), FindingID: f.GetId(), Weight: w, Kinds: map[medmeshv1.RemediationKind]float64{}}
		switch f.GetKind() {
		case "vulnerability":
			if f.GetKev() {
				it.Weight *= 2
			}
			if f.GetFixedVersion() != "" {
				it.Kinds[patchK], it.Fixed = 1, f.GetFixedVersion()
			} else if !replaceable {
				it.Kinds[compK] = 0.5
			}
		case "end_of_life", "recall":
		case "default_credentials":
			it.Kinds[credK] = 1
		case "cleartext_phi_protocol":
			it.Kinds[tlsK] = 1
		case "external_communication":
			it.Kinds[segK] = 1
		default:
			continue
		}
		if replaceable {
			it.Kinds[replaceK] = 1
		}
		add(it)
	}
	kinds := func(k medmeshv1.RemediationKind) map[medmeshv1.RemediationKind]float64 {
		m := map[medmeshv1.RemediationKind]float64{k: 1}
		if replaceable {
			m[replaceK] = 1
		}
		return m
	}
	for _, a := range d.Alerts {
		switch a.GetKind() {
		case "default_credentials":
			add(plan.Item{Key: "alert:default_credentials:" + a.GetLogin().GetProtocol() + ":" + a.GetLogin().GetAccount(), Weight: severityWeight["critical"], Kinds: kinds(credK)})
		case "cleartext_credentials":
			add(plan.Item{Key: "alert:cleartext_credentials:" + a.GetLogin().GetProtocol() + ":" + a.GetLogin().GetAccount(), Weight: severityWeight["high"], Kinds: kinds(credK)})
		case "external_destination":
			if !keys["external_communication:external-communication"] {
				add(plan.Item{Key: "alert:external_destination", Weight: severityWeight["high"], Kinds: kinds(segK)})
			}
		}
	}
	has := func(app string) bool {
		return slices.Contains(d.Device.GetProtocols(), app) || slices.ContainsFunc(d.Device.GetServices(), func(s *medmeshv1.Service) bool { return s.GetApp() == app })
	}
	for _, app := range []string{"hl7", "dicom"} {
		if has(app) {
			add(plan.Item{Key: "cleartext_phi_protocol:cleartext:" + app, Weight: severityWeight["medium"], Kinds: kinds(tlsK)})
		}
	}
	for _, app := range []string{"telnet", "ftp", "vnc"} {
		if has(app) {
			add(plan.Item{Key: "cleartext_login:" + app, Weight: severityWeight["medium"], Kinds: kinds(tlsK)})
		}
	}
	if has("http") {
		add(plan.Item{Key: "cleartext_http", Weight: severityWeight["low"], Kinds: kinds(tlsK)})
	}
	return out
}

// remediation ranks the plan and names the controls each action closes.
func remediation(devs []Device, results []*medmeshv1.DeviceCompliance) *medmeshv1.RemediationPlan {
	in := make([]plan.Device, len(devs))
	for i, d := range devs {
		vendor, model, _ := identity(d)
		label := strings.TrimSpace(vendor + " " + model)
		if model == "" {
			label = d.Device.GetMac()
		}
		its := items(d)
		risk := float64(riskScore(d))
		if risk == 0 {
			// Not scored (no posture): the items' weight stands for it.
			for _, it := range its {
				risk += it.Weight
			}
			risk = min(risk, 100)
		}
		in[i] = plan.Device{MAC: d.Device.GetMac(), Label: label, Tier: d.Device.GetTier(), Risk: risk, Items: its}
	}
	actions, total := plan.Rank(in)
	byMAC := map[string]*medmeshv1.DeviceCompliance{}
	for _, r := range results {
		byMAC[r.GetDeviceMac()] = r
	}
	for _, a := range actions {
		rs := settles[a.GetKind()]
		for _, mac := range a.GetDeviceMacs() {
			for _, res := range byMAC[mac].GetResults() {
				if res.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_UNMET || slices.Contains(a.ControlIds, res.GetControlId()) {
					continue
				}
				all := true
				for _, e := range res.GetEvidence() {
					if e.GetAdverse() && !slices.Contains(rs, e.GetRule()) {
						all = false
					}
				}
				if all {
					a.ControlIds = append(a.ControlIds, res.GetControlId())
				}
			}
		}
		slices.SortFunc(a.ControlIds, func(x, y string) int { return cmp.Compare(x, y) })
	}
	return &medmeshv1.RemediationPlan{Actions: actions, CampusRisk: total,
		Method: "greedy: the action removing the most risk per effort point first, given what earlier actions closed; a device's risk is its posture score, shared over its findings and observed issues by severity weight (critical 10, high 7, medium 4, low 1; known-exploited x2); a compensating control halves what it covers"}
}

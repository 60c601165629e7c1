// Package rules holds the evidence rules the control catalog names: each reads what medmesh has of one device (or the campus) and says what it shows.
//
// A rule never invents evidence. What the sensor does not extract (the TLS
// version per device, whether a DICOM server accepts any calling AE title,
// whether updates are signed) is reported as not evidenced with the
// reason, or taken from the vendor's MDS2 and marked so. Evidence never
// holds payload or a password: alerts and findings already carry none.
package rules

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/compliance/internal/mds2"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Device is what medmesh has of one device.
type Device struct {
	Dev     *medmeshv1.Device
	Alerts  []*medmeshv1.Alert
	Posture *medmeshv1.DevicePosture // nil: not assessed
	MDS2    *mds2.Form               // the model's MDS2, nil when none
	// Vendor, Model and Version are the device's identity as risk matching
	// reads it (operator labels first, then the posture's, then the
	// sensors').
	Vendor, Model, Version string
	// Policy is the device's least-privilege policy mode ("enforce",
	// "monitor", "" for none); PolicyKnown is false where the caller does
	// not know (offline).
	Policy      string
	PolicyKnown bool
	// Source names where the observations come from (a capture file, a
	// sensor); evidence names it.
	Source string
}

// Campus is what holds for every device.
type Campus struct {
	Now          time.Time
	BundleDigest string
	BundleDate   time.Time // zero: unknown
	RaftIndex    uint64
	Devices      int
	Classified   int
	Identified   int
}

// Outcome is what a rule found. Adverse evidence makes a control unmet;
// otherwise supporting evidence makes it met. NotEvidenced and
// NotApplicable say why a rule could not decide.
type Outcome struct {
	Evidence      []*medmeshv1.ComplianceEvidence
	NotEvidenced  string
	NotApplicable string
}

// Adverse reports whether any evidence counts against the control.
func (o Outcome) Adverse() bool {
	return slices.ContainsFunc(o.Evidence, (*medmeshv1.ComplianceEvidence).GetAdverse)
}

// Supporting reports whether any evidence counts for it.
func (o Outcome) Supporting() bool {
	return slices.ContainsFunc(o.Evidence, func(e *medmeshv1.ComplianceEvidence) bool { return !e.GetAdverse() })
}

// Rule is one named evidence rule. Campus rules read only the Campus and
// are evaluated once; device rules once per device.
type Rule struct {
	Campus bool
	Device func(d *Device, c *Campus) Outcome
	Eval   func(c *Campus) Outcome
}

// All is every rule by name.
var All = map[string]Rule{
	"default_credentials":    {Device: defaultCredentials},
	"cleartext_login":        {Device: cleartextLogin},
	"syslog_sent":            {Device: syslogSent},
	"medmesh_audit":          {Campus: true, Eval: medmeshAudit},
	"update_integrity":       {Device: updateIntegrity},
	"dicom_unauthenticated":  {Device: unauthenticated("dicom")},
	"hl7_unauthenticated":    {Device: unauthenticated("hl7")},
	"cleartext_phi":          {Device: cleartextPHI},
	"cleartext_http":         {Device: cleartextHTTP},
	"tls_version":            {Device: tlsVersion},
	"identified":             {Device: identified},
	"risk_assessed":          {Device: riskAssessed},
	"inventory_coverage":     {Campus: true, Eval: inventoryCoverage},
	"login_monitoring":       {Device: loginMonitoring},
	"segmentation":           {Device: segmentation},
	"external_communication": {Device: externalCommunication},
	"vulnerabilities":        {Device: vulnerabilities},
	"scan_recency":           {Device: scanRecency},
	"mds2_on_file":           {Device: mds2OnFile},
	"end_of_life":            {Device: findingKind("end_of_life", "end of life")},
	"recall":                 {Device: findingKind("recall", "recall")},
	"network_map":            {Device: networkMap},
}

// Login protocols whose passwords cross the network in clear, as the
// sensor's login detectors name them.
var cleartextLoginApps = []string{"telnet", "ftp", "http", "mqtt", "snmp", "vnc"}

const notObserved = "no traffic of the device observed by a sensor"

func observed(d *Device) bool {
	return len(d.Dev.GetProtocols()) > 0 || len(d.Dev.GetServices()) > 0
}

func has(d *Device, app string) bool {
	if slices.Contains(d.Dev.GetProtocols(), app) {
		return true
	}
	return slices.ContainsFunc(d.Dev.GetServices(), func(s *medmeshv1.Service) bool { return s.GetApp() == app })
}

func seen(d *Device, apps []string) []string {
	var out []string
	for _, a := range apps {
		if has(d, a) {
			out = append(out, a)
		}
	}
	return out
}

func (d *Device) source() string { return cmp.Or(d.Source, "sensor") }

func (d *Device) obs(rule, text string, adverse bool) *medmeshv1.ComplianceEvidence {
	return &medmeshv1.ComplianceEvidence{Kind: "observation", Rule: rule, Text: text, Source: d.source(), ObservedTime: d.Dev.GetLastSeen(), Adverse: adverse}
}

func (d *Device) alert(rule string, a *medmeshv1.Alert, text string, adverse bool) *medmeshv1.ComplianceEvidence {
	src := "alert " + a.GetId()
	if d.Source != "" {
		src = d.Source + ": " + src
	}
	return &medmeshv1.ComplianceEvidence{Kind: "alert", Rule: rule, Text: text, Source: src, ObservedTime: a.GetDetectTime(), Adverse: adverse}
}

func (d *Device) finding(rule string, f *medmeshv1.Finding, text string) *medmeshv1.ComplianceEvidence {
	return &medmeshv1.ComplianceEvidence{Kind: "finding", Rule: rule, Text: text, Source: "finding " + f.GetId() + " (" + f.GetSource() + ")", ObservedTime: d.Posture.GetAssessTime(), Adverse: true}
}

// vendor adds the MDS2 answer to id as evidence, and marks the adverse
// observations confirmed when the vendor's answer agrees with them
// (answer == agree).
func (d *Device) vendor(o *Outcome, rule, id string, agree mds2.Answer, says string) {
	if d.MDS2 == nil {
		return
	}
	it, ok := d.MDS2.Get(id)
	if !ok {
		return
	}
	adverse := it.Answer == agree
	text := fmt.Sprintf("vendor answers %s to %s: %s", it.Answer, id, it.Question)
	if adverse {
		text = "vendor states " + says + fmt.Sprintf(" (%s %s)", id, it.Answer)
		for _, e := range o.Evidence {
			if e.GetAdverse() {
				e.Confirmed = true
			}
		}
	}
	o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{
		Kind: "mds2", Rule: rule, Text: text, Source: fmt.Sprintf("MDS2 %s (%s %s) %s", d.MDS2.Name, d.MDS2.Manufacturer, d.MDS2.Model, id), Adverse: adverse,
		Confirmed: adverse && slices.ContainsFunc(o.Evidence, func(e *medmeshv1.ComplianceEvidence) bool { return e.GetAdverse() && e.GetKind() != "mds2" }),
	})
}

func loginText(a *medmeshv1.Alert) string {
	l := a.GetLogin()
	acct := "no account"
	if l.GetAccount() != "" {
		acct = fmt.Sprintf("account %q", l.GetAccount())
	}
	peer := a.GetFlow().GetDst()
	if peer == "" {
		peer = "?"
	}
	return fmt.Sprintf("%s login (%s) with %s, %s", l.GetProtocol(), acct, peer, cmp.Or(l.GetOutcome(), "outcome not seen"))
}

func defaultCredentials(d *Device, _ *Campus) Outcome {
	const rule = "default_credentials"
	var o Outcome
	for _, a := range d.Alerts {
		if a.GetKind() == "default_credentials" {
			o.Evidence = append(o.Evidence, d.alert(rule, a, "factory-default password: "+loginText(a), true))
		}
	}
	for _, f := range d.Posture.GetFindings() {
		if f.GetKind() == "default_credentials" && f.GetSuppressed() == "" {
			o.Evidence = append(o.Evidence, d.finding(rule, f, fmt.Sprintf("the model ships with a documented default account %q over %s", f.GetAccount(), cmp.Or(f.GetProtocol(), "?"))))
		}
	}
	if len(o.Evidence) > 0 {
		d.vendor(&o, rule, "PAUT-6", mds2.No, "not every password can be changed")
		return o
	}
	if !observed(d) {
		o.NotEvidenced = notObserved
		return o
	}
	if apps := seen(d, append(slices.Clone(cleartextLoginApps), "ssh")); len(apps) > 0 {
		o.Evidence = append(o.Evidence, d.obs(rule, "login protocols seen ("+strings.Join(apps, ", ")+"), no factory-default password accepted", false))
		return o
	}
	o.NotApplicable = "no login protocol seen"
	return o
}

func cleartextLogin(d *Device, _ *Campus) Outcome {
	const rule = "cleartext_login"
	var o Outcome
	for _, a := range d.Alerts {
		if a.GetKind() == "cleartext_credentials" || (a.GetLogin().GetCleartext() && a.GetKind() != "failed_login_burst") {
			o.Evidence = append(o.Evidence, d.alert(rule, a, "password in clear: "+loginText(a), true))
		}
	}
	for _, app := range []string{"telnet", "ftp", "vnc"} {
		if has(d, app) {
			o.Evidence = append(o.Evidence, d.obs(rule, app+" seen: its logins cross the network in clear", true))
		}
	}
	if len(o.Evidence) > 0 || !observed(d) {
		if len(o.Evidence) == 0 {
			o.NotEvidenced = notObserved
		}
		return o
	}
	o.Evidence = append(o.Evidence, d.obs(rule, "no Telnet, FTP or VNC and no login in clear seen (protocols: "+strings.Join(d.Dev.GetProtocols(), ", ")+")", false))
	return o
}

func syslogSent(d *Device, _ *Campus) Outcome {
	const rule = "syslog_sent"
	var o Outcome
	if d.Dev.GetDeviceClass() == medmeshv1.DeviceClass_DEVICE_CLASS_SYSLOG_SERVER {
		o.NotApplicable = "the device is a syslog collector"
		return o
	}
	if has(d, "syslog") {
		o.Evidence = append(o.Evidence, d.obs(rule, "sends syslog", false))
		d.vendor(&o, rule, "AUDT-1", mds2.No, "the device creates no audit logs beyond the operating system's")
		return o
	}
	if d.MDS2 != nil {
		if it, ok := d.MDS2.Get("AUDT-3"); ok && it.Answer == mds2.No {
			o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "mds2", Rule: rule, Adverse: true, Confirmed: observed(d),
				Text:   "vendor states the audit log cannot be exported to a log server (AUDT-3 No); no syslog seen",
				Source: fmt.Sprintf("MDS2 %s (%s %s) AUDT-3", d.MDS2.Name, d.MDS2.Manufacturer, d.MDS2.Model)})
			return o
		}
	}
	if !observed(d) {
		o.NotEvidenced = notObserved
		return o
	}
	o.NotEvidenced = "no syslog from the device seen; it may keep logs locally (attach its MDS2 for the audit answers)"
	return o
}

func medmeshAudit(c *Campus) Outcome {
	var o Outcome
	if c.RaftIndex == 0 {
		o.NotEvidenced = "offline assessment: medmesh's own audit trail (committed through Raft) is not read"
		return o
	}
	o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: "medmesh_audit", Source: "medmesh audit trail",
		Text: fmt.Sprintf("every medmesh operator action is recorded in the Raft-replicated audit trail, read at index %d (verify with medmesh audit verify)", c.RaftIndex)})
	return o
}

func updateIntegrity(d *Device, _ *Campus) Outcome {
	const rule = "update_integrity"
	var o Outcome
	if d.MDS2 == nil {
		o.NotEvidenced = "the network does not show whether updates are signed: attach the model's MDS2 (SAHD-3, TXIG-1, IGAU-1)"
		return o
	}
	d.vendor(&o, rule, "SAHD-3", mds2.No, "no software integrity checking (updates are not checked)")
	d.vendor(&o, rule, "TXIG-1", mds2.No, "no mechanism ensures data is not modified in transmission")
	d.vendor(&o, rule, "IGAU-1", mds2.No, "no mechanism ensures stored data is not altered")
	if len(o.Evidence) == 0 {
		o.NotEvidenced = "the MDS2 " + d.MDS2.Name + " answers none of SAHD-3, TXIG-1, IGAU-1 with Yes or No"
	}
	return o
}

func unauthenticated(app string) func(d *Device, c *Campus) Outcome {
	rule := app + "_unauthenticated"
	text := map[string]string{
		"dicom": "DICOM associations seen in clear: peers are named by AE title only (no TLS, no user identity seen); whether any calling AE title is accepted is not extracted by the sensor",
		"hl7":   "HL7 v2 over MLLP seen in clear: MLLP carries no authentication of either end",
	}[app]
	return func(d *Device, _ *Campus) Outcome {
		var o Outcome
		if !observed(d) {
			o.NotEvidenced = notObserved
			return o
		}
		if !has(d, app) {
			o.NotApplicable = "no " + strings.ToUpper(app) + " seen"
			return o
		}
		o.Evidence = append(o.Evidence, d.obs(rule, text, true))
		d.vendor(&o, rule, "NAUT-1", mds2.No, "no node authentication between sender and recipient")
		return o
	}
}

func cleartextPHI(d *Device, _ *Campus) Outcome {
	const rule = "cleartext_phi"
	var o Outcome
	for _, app := range []string{"hl7", "dicom"} {
		if has(d, app) {
			o.Evidence = append(o.Evidence, d.obs(rule, map[string]string{"hl7": "HL7", "dicom": "DICOM"}[app]+" seen in clear (the sensor decoded it; inside TLS it sees only TLS)", true))
		}
	}
	for _, a := range d.Alerts {
		if a.GetKind() == "cleartext_phi" {
			o.Evidence = append(o.Evidence, d.alert(rule, a, fmt.Sprintf("%s in clear to %s, a peer outside its baseline", a.GetFlow().GetApp(), a.GetFlow().GetDst()), true))
		}
	}
	if len(o.Evidence) > 0 {
		d.vendor(&o, rule, "TXCF-2", mds2.No, "no transmission encryption of personally identifiable information")
		return o
	}
	if !observed(d) {
		o.NotEvidenced = notObserved
		return o
	}
	text := "no HL7 or DICOM in clear seen"
	if has(d, "tls") {
		text += "; TLS seen"
	}
	o.Evidence = append(o.Evidence, d.obs(rule, text, false))
	return o
}

func cleartextHTTP(d *Device, _ *Campus) Outcome {
	const rule = "cleartext_http"
	var o Outcome
	if !observed(d) {
		o.NotEvidenced = notObserved
		return o
	}
	if has(d, "http") {
		o.Evidence = append(o.Evidence, d.obs(rule, "HTTP seen in clear", true))
		return o
	}
	if has(d, "tls") {
		o.Evidence = append(o.Evidence, d.obs(rule, "web traffic only over TLS", false))
		return o
	}
	o.NotApplicable = "no HTTP seen"
	return o
}

func tlsVersion(d *Device, _ *Campus) Outcome {
	var o Outcome
	o.NotEvidenced = "TLS below 1.2: the sensor reads the TLS hello's version (TLS 1.3 shows as 1.2) but does not report it per device"
	if has(d, "tls") {
		o.NotEvidenced += "; the device uses TLS"
	}
	return o
}

func identified(d *Device, _ *Campus) Outcome {
	const rule = "identified"
	var o Outcome
	vendor, model, version := d.Vendor, d.Model, d.Version
	class := strings.TrimPrefix(d.Dev.GetDeviceClass().String(), "DEVICE_CLASS_")
	src := cmp.Or(d.Source, "inventory")
	if model != "" {
		o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: rule, Source: src, ObservedTime: d.Dev.GetLastSeen(),
			Text: strings.TrimSpace(fmt.Sprintf("identified: class %s, %s %s %s", class, vendor, model, version))})
		return o
	}
	o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: rule, Source: src, ObservedTime: d.Dev.GetLastSeen(), Adverse: true,
		Text: strings.TrimSpace(fmt.Sprintf("not identified: class %s, vendor %q, no model (set the model label from the CMDB)", class, vendor))})
	return o
}

func riskAssessed(d *Device, c *Campus) Outcome {
	const rule = "risk_assessed"
	var o Outcome
	if c.BundleDigest == "" {
		o.NotEvidenced = "no intelligence bundle: vulnerabilities, end of life and recalls not matched"
		return o
	}
	if d.Posture == nil || d.Posture.GetBundleDigest() == "" {
		o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: rule, Source: "risk", Adverse: true, Text: "not assessed against the active bundle"})
		return o
	}
	n := 0
	for _, f := range d.Posture.GetFindings() {
		if f.GetSuppressed() == "" {
			n++
		}
	}
	o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "finding", Rule: rule, Source: "bundle " + short(d.Posture.GetBundleDigest()), ObservedTime: d.Posture.GetAssessTime(),
		Text: fmt.Sprintf("assessed against bundle %s: %d finding(s), risk score %d", short(d.Posture.GetBundleDigest()), n, d.Posture.GetScore().GetScore())})
	return o
}

func inventoryCoverage(c *Campus) Outcome {
	var o Outcome
	if c.Devices == 0 {
		o.NotEvidenced = "no devices"
		return o
	}
	o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: "inventory_coverage", Source: "inventory",
		Adverse: c.Identified < c.Devices,
		Text:    fmt.Sprintf("%d device(s): %d classified, %d identified (vendor and model)", c.Devices, c.Classified, c.Identified)})
	return o
}

func loginMonitoring(d *Device, _ *Campus) Outcome {
	const rule = "login_monitoring"
	var o Outcome
	if !observed(d) {
		o.NotEvidenced = notObserved
		return o
	}
	apps := seen(d, cleartextLoginApps)
	for _, a := range d.Alerts {
		if a.GetKind() == "failed_login_burst" {
			l := a.GetLogin()
			o.Evidence = append(o.Evidence, d.alert(rule, a, fmt.Sprintf("reported: %d refused %s logins within %ds (accounts %s)", l.GetAttempts(), l.GetProtocol(), l.GetWindowSeconds(), strings.Join(l.GetAccounts(), ", ")), false))
		}
	}
	if len(apps) > 0 {
		o.Evidence = append(o.Evidence, d.obs(rule, "the sensor watches the device's "+strings.Join(apps, ", ")+" logins and reports failed-login bursts", false))
		return o
	}
	if len(o.Evidence) > 0 {
		return o
	}
	if has(d, "ssh") {
		o.NotEvidenced = "SSH logins are encrypted: the sensor sees the banner only, not the attempts"
		return o
	}
	o.NotApplicable = "no login protocol seen"
	return o
}

func segmentation(d *Device, _ *Campus) Outcome {
	const rule = "segmentation"
	var o Outcome
	if !d.PolicyKnown {
		o.NotEvidenced = "policy state not given (offline assessment)"
		return o
	}
	ev := &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: rule, Source: "policy"}
	switch d.Policy {
	case "enforce":
		ev.Text = "a least-privilege policy is enforced for the device"
	case "monitor":
		ev.Text, ev.Adverse = "the device's policy is in monitor mode: nothing is dropped", true
	default:
		ev.Text, ev.Adverse = "no least-privilege policy for the device", true
	}
	o.Evidence = append(o.Evidence, ev)
	return o
}

func externalCommunication(d *Device, _ *Campus) Outcome {
	const rule = "external_communication"
	var o Outcome
	for _, f := range d.Posture.GetFindings() {
		if f.GetKind() == "external_communication" {
			o.Evidence = append(o.Evidence, d.finding(rule, f, f.GetSummary()))
		}
	}
	if len(o.Evidence) == 0 {
		for _, a := range d.Alerts {
			if a.GetKind() == "external_destination" {
				o.Evidence = append(o.Evidence, d.alert(rule, a, "talked to "+cmp.Or(a.GetPeerName(), a.GetFlow().GetDst())+" outside the hospital", true))
			}
		}
	}
	if len(o.Evidence) > 0 {
		return o
	}
	if !observed(d) {
		o.NotEvidenced = notObserved
		return o
	}
	o.Evidence = append(o.Evidence, d.obs(rule, "no communication outside the hospital seen", false))
	return o
}

func vulnerabilities(d *Device, c *Campus) Outcome {
	const rule = "vulnerabilities"
	var o Outcome
	if d.Posture == nil || d.Posture.GetBundleDigest() == "" {
		o.NotEvidenced = "not assessed against an intelligence bundle"
		return o
	}
	for _, f := range d.Posture.GetFindings() {
		if f.GetKind() != "vulnerability" || f.GetSuppressed() != "" {
			continue
		}
		t := fmt.Sprintf("%s %s (%s match", f.GetId(), f.GetSeverity(), f.GetConfidence())
		if f.GetCvss() > 0 {
			t += fmt.Sprintf(", CVSS %.1f", f.GetCvss())
		}
		if f.GetKev() {
			t += ", known exploited"
		}
		if f.GetFixedVersion() != "" {
			t += ", fixed in " + f.GetFixedVersion()
		}
		o.Evidence = append(o.Evidence, d.finding(rule, f, t+")"))
	}
	if len(o.Evidence) == 0 {
		o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "finding", Rule: rule, Source: "bundle " + short(d.Posture.GetBundleDigest()), ObservedTime: d.Posture.GetAssessTime(),
			Text: "no known vulnerability matched"})
	}
	return o
}

// ScanInterval is how old the intelligence a device was assessed with may
// be (the proposed rule's "at least every 6 months").
const ScanInterval = 183 * 24 * time.Hour

func scanRecency(d *Device, c *Campus) Outcome {
	const rule = "scan_recency"
	var o Outcome
	if c.BundleDigest == "" {
		o.NotEvidenced = "no intelligence bundle"
		return o
	}
	if d.Posture == nil || d.Posture.GetBundleDigest() == "" {
		o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "inventory", Rule: rule, Source: "risk", Adverse: true, Text: "never assessed against a bundle"})
		return o
	}
	if c.BundleDate.IsZero() {
		o.NotEvidenced = "the bundle " + short(c.BundleDigest) + " has no date"
		return o
	}
	age := c.Now.Sub(c.BundleDate)
	days := int(age.Hours() / 24)
	ev := &medmeshv1.ComplianceEvidence{Kind: "finding", Rule: rule, Source: "bundle " + short(c.BundleDigest), ObservedTime: timestamppb.New(c.BundleDate)}
	if age > ScanInterval {
		ev.Adverse, ev.Text = true, fmt.Sprintf("assessed with intelligence dated %s, %d days old (more than 6 months)", c.BundleDate.Format(time.DateOnly), days)
	} else {
		ev.Text = fmt.Sprintf("assessed with intelligence dated %s, %d days old", c.BundleDate.Format(time.DateOnly), days)
	}
	o.Evidence = append(o.Evidence, ev)
	return o
}

func mds2OnFile(d *Device, _ *Campus) Outcome {
	const rule = "mds2_on_file"
	var o Outcome
	if d.MDS2 == nil {
		o.NotEvidenced = "no MDS2 on file for the device's model"
		return o
	}
	t := fmt.Sprintf("MDS2 on file: %s %s", d.MDS2.Manufacturer, d.MDS2.Model)
	if it, ok := d.MDS2.Get("SBOM-1"); ok {
		t += fmt.Sprintf("; SBOM available: %s", it.Answer)
	}
	o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "mds2", Rule: rule, Source: "MDS2 " + d.MDS2.Name, Text: t})
	return o
}

func findingKind(kind, words string) func(d *Device, c *Campus) Outcome {
	return func(d *Device, _ *Campus) Outcome {
		var o Outcome
		if d.Posture == nil || d.Posture.GetBundleDigest() == "" {
			o.NotEvidenced = "not assessed against an intelligence bundle"
			return o
		}
		for _, f := range d.Posture.GetFindings() {
			if f.GetKind() == kind && f.GetSuppressed() == "" {
				o.Evidence = append(o.Evidence, d.finding(kind, f, words+": "+f.GetSummary()))
			}
		}
		if len(o.Evidence) == 0 {
			o.Evidence = append(o.Evidence, &medmeshv1.ComplianceEvidence{Kind: "finding", Rule: kind, Source: "bundle " + short(d.Posture.GetBundleDigest()), ObservedTime: d.Posture.GetAssessTime(),
				Text: "no " + words + " matched"})
		}
		return o
	}
}

func networkMap(d *Device, _ *Campus) Outcome {
	const rule = "network_map"
	var o Outcome
	if !observed(d) {
		o.NotEvidenced = notObserved + ": the device is in the inventory only"
		return o
	}
	var svc []string
	for _, s := range d.Dev.GetServices() {
		svc = append(svc, fmt.Sprintf("%s/%d", cmp.Or(s.GetApp(), "?"), s.GetPort()))
	}
	t := "traffic mapped: protocols " + strings.Join(d.Dev.GetProtocols(), ", ")
	if len(svc) > 0 {
		t += "; serves " + strings.Join(svc, ", ")
	}
	o.Evidence = append(o.Evidence, d.obs(rule, t, false))
	return o
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

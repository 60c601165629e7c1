// Package posture turns what the coordinator knows of a device into its
// risk posture: the identity risk matching reads (Identity, the one
// mapping from the inventory), the findings the sensors' observations give
// (default credentials a service accepted, external communication,
// cleartext PHI protocols), and the 0-100 score
// with the factors that make it (Score). Everything here is a pure
// function of its arguments: the leader computes a posture, Raft commits
// it, and every replica stores the same one.
package posture

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// Labels an operator sets on a device (`medmesh devices set --label`) to
// give risk matching the identity a CMDB holds. They win over what sensors
// derived, because an operator's inventory names the exact product.
const (
	LabelVendor  = "vendor"
	LabelModel   = "model"
	LabelVersion = "version"
	LabelOS      = "os"
	LabelUDIDI   = "udi_di"
)

// Identity is what risk matching knows of a device: vendor, model and
// firmware (as its version) from the sensors (OUI, DHCP, SSDP, SNMP, HL7,
// DICOM, HTTP identifiers), the UDI-DI of the first HL7 UDI it sent, and
// the operator's labels above, which win. The inventory has no OS field:
// the OS comes from the label only. This is the one place the inventory
// maps onto risk.Device.
func Identity(d *medmeshv1.Device) risk.Device {
	r := risk.Device{
		MAC:     d.GetMac(),
		Name:    d.GetHostname(),
		Vendor:  strings.TrimSpace(d.GetVendor()),
		Model:   strings.TrimSpace(d.GetModel()),
		Version: strings.TrimSpace(d.GetFirmware()),
	}
	if ips := d.GetIpAddresses(); len(ips) > 0 {
		r.IP = ips[0]
	}
	for _, u := range d.GetIdentifiers().GetHl7Udis() {
		if di, ok := UDIDI(u); ok {
			r.UDIDI = di
			break
		}
	}
	if loc := d.GetLocation(); loc != nil {
		r.Location = strings.Trim(strings.Join([]string{loc.GetBuilding(), loc.GetFloor(), loc.GetZone()}, " "), " ")
	}
	labels := d.GetLabels()
	for key, dst := range map[string]*string{LabelVendor: &r.Vendor, LabelModel: &r.Model, LabelVersion: &r.Version, LabelOS: &r.OS, LabelUDIDI: &r.UDIDI} {
		if v := strings.TrimSpace(labels[key]); v != "" {
			*dst = v
		}
	}
	return r
}

// UDIDI reads the device identifier (DI) of a Unique Device Identifier in
// GS1 form: "(01)" followed by the 14-digit GTIN, in human-readable form
// with parentheses, or as the bare element string "01" + 14 digits at the
// start. A bare 14-digit string is taken as a DI. HIBCC and ICCBBA UDIs
// are not read (GUDID lists their DIs too, but their structure differs).
func UDIDI(udi string) (string, bool) {
	s := strings.TrimSpace(udi)
	switch {
	case strings.HasPrefix(s, "(01)"):
		s = s[4:]
	case len(s) > 16 && strings.HasPrefix(s, "01") && digits(s[2:16]):
		s = s[2:]
	case len(s) == 14:
	default:
		return "", false
	}
	if len(s) < 14 || !digits(s[:14]) {
		return "", false
	}
	// The check digit is not verified: a DI is only ever looked up in
	// GUDID, which is what says whether it names a device.
	return s[:14], true
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Destination is one place outside the hospital and outside the device's
// baseline that a sensor saw it talk to (an external_destination alert).
type Destination struct {
	Addr  string `json:"addr"`
	Name  string `json:"name,omitempty"` // from DNS or TLS SNI
	Proto uint32 `json:"proto,omitempty"`
	Port  uint32 `json:"port,omitempty"`
	Alert string `json:"alert,omitempty"` // the first alert that showed it
}

func (d Destination) String() string {
	s := d.Addr
	if d.Name != "" {
		s += " (" + d.Name + ")"
	}
	if d.Port != 0 {
		p := map[uint32]string{6: "tcp", 17: "udp"}[d.Proto]
		if p == "" {
			p = fmt.Sprintf("ip%d", d.Proto)
		}
		s += fmt.Sprintf(" %s/%d", p, d.Port)
	}
	return s
}

// ExternalAlert says whether an alert is about a destination outside the
// hospital and outside the device's baseline, and which.
func ExternalAlert(a *medmeshv1.Alert, deviceIPs []string) (Destination, bool) {
	ext := a.GetKind() == "external_destination" || a.GetKind() == "known_bad_destination"
	for _, f := range a.GetRisk().GetFactors() {
		ext = ext || f.GetName() == "external_destination" || f.GetName() == "known_bad_destination"
	}
	fl := a.GetFlow()
	if !ext || fl == nil {
		return Destination{}, false
	}
	addr, port := fl.GetDst(), fl.GetDport()
	if slices.Contains(deviceIPs, addr) {
		addr, port = fl.GetSrc(), fl.GetSport()
	}
	if addr == "" {
		return Destination{}, false
	}
	return Destination{Addr: addr, Name: a.GetPeerName(), Proto: fl.GetProto(), Port: port, Alert: a.GetId()}, true
}

// Credential is a factory-default credential a sensor saw a device's
// service accept (a default_credentials alert): the protocol, the port and
// the account, never the password (no alert carries one).
type Credential struct {
	Protocol string `json:"protocol"`
	Account  string `json:"account,omitempty"`
	Method   string `json:"method,omitempty"` // "banner": the model ships with it, the login itself was not seen
	Port     uint32 `json:"port,omitempty"`
	Alert    string `json:"alert,omitempty"` // the first alert that showed it
	Detail   string `json:"detail,omitempty"`
}

// CredentialAlert says whether an alert shows that the device itself (one
// of deviceIPs) runs a service with a factory-default credential: a
// default_credentials alert whose login the device's service accepted
// (for an SNMP notification, which the agent sends, the device sent it),
// or, for an SSH banner, whose model ships with a published account. An
// alert a sensor raised on the client because the service was outside
// the campus is about the service, not this device, and says no.
func CredentialAlert(a *medmeshv1.Alert, deviceIPs []string) (Credential, bool) {
	l, fl := a.GetLogin(), a.GetFlow()
	if a.GetKind() != "default_credentials" || l == nil || !l.GetDefaultPassword() || fl == nil {
		return Credential{}, false
	}
	banner := l.GetMethod() == "banner"
	if !banner && l.GetOutcome() != "accepted" && l.GetOutcome() != "no_answer" {
		return Credential{}, false
	}
	service, port := fl.GetDst(), fl.GetDport()
	if l.GetOutcome() == "no_answer" { // an SNMP notification: the agent sent it
		service, port = fl.GetSrc(), fl.GetSport()
	}
	if !slices.Contains(deviceIPs, service) {
		return Credential{}, false
	}
	return Credential{Protocol: l.GetProtocol(), Account: l.GetAccount(), Method: l.GetMethod(), Port: port, Alert: a.GetId(), Detail: a.GetSummary()}, true
}

// SortCredentials sorts credentials given in commit order and keeps the
// first of each protocol, port, account and method: the alert that first
// showed a credential explains it, and later alerts of the same change
// nothing.
func SortCredentials(cs []Credential) []Credential {
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b Credential) int {
		return cmp.Or(strings.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port), strings.Compare(a.Account, b.Account), strings.Compare(a.Method, b.Method))
	})
	return slices.CompactFunc(cs, func(a, b Credential) bool {
		return a.Protocol == b.Protocol && a.Port == b.Port && a.Account == b.Account && a.Method == b.Method
	})
}

// MaxEvidence bounds the destinations or services a finding lists.
const MaxEvidence = 16

// ConfidenceObserved is the confidence of what a sensor saw.
const ConfidenceObserved = "observed"

// Observed are the findings the sensors' observations give: default
// credentials its services accepted (creds, one finding per protocol,
// port and account), external communication (ext, sorted and
// deduplicated here) and cleartext HL7 or DICOM. A sensor decodes HL7 (MLLP) and DICOM only from cleartext
// payloads (inside TLS it sees "tls"), so a device whose protocols or
// services include them sent or served PHI protocols unencrypted.
func Observed(d *medmeshv1.Device, ext []Destination, creds []Credential) []*medmeshv1.Finding {
	var out []*medmeshv1.Finding
	for _, c := range SortCredentials(creds) {
		out = append(out, credentialFinding(c))
	}
	if len(ext) > 0 {
		ds := slices.Clone(ext)
		slices.SortFunc(ds, func(a, b Destination) int {
			return cmp.Or(strings.Compare(a.Addr, b.Addr), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), strings.Compare(a.Name, b.Name))
		})
		ds = slices.CompactFunc(ds, func(a, b Destination) bool { return a.Addr == b.Addr && a.Proto == b.Proto && a.Port == b.Port })
		var ev []string
		for _, x := range ds {
			if len(ev) < MaxEvidence {
				ev = append(ev, x.String())
			}
		}
		sum := fmt.Sprintf("talked to %d destination(s) outside the hospital and outside its baseline: %s", len(ds), strings.Join(ev[:min(3, len(ev))], ", "))
		if len(ds) > 3 {
			sum += ", ..."
		}
		out = append(out, &medmeshv1.Finding{
			Kind: string(risk.KindExternalCommunication), Id: "external-communication", Source: "sensor alerts " + ds[0].Alert,
			Confidence: ConfidenceObserved, Severity: "high", Summary: sum, Evidence: ev,
		})
	}
	for _, app := range []string{"dicom", "hl7"} {
		var ev []string
		if slices.Contains(d.GetProtocols(), app) {
			ev = append(ev, app+" seen in its traffic")
		}
		for _, s := range d.GetServices() {
			if s.GetApp() == app && len(ev) < MaxEvidence {
				p := map[uint32]string{6: "tcp", 17: "udp"}[s.GetProtocol()]
				ev = append(ev, fmt.Sprintf("serves %s on %s/%d", app, cmp.Or(p, "ip"), s.GetPort()))
			}
		}
		if len(ev) == 0 {
			continue
		}
		name := map[string]string{"hl7": "HL7 v2 (MLLP)", "dicom": "DICOM"}[app]
		out = append(out, &medmeshv1.Finding{
			Kind: string(risk.KindCleartextPHI), Id: "cleartext:" + app, Source: "sensor", Confidence: ConfidenceObserved, Severity: "medium",
			Protocol: app, Evidence: ev,
			Summary:     name + " without TLS: the sensor decoded it, so patient data crosses the network readable to anyone on the path",
			Remediation: map[string]string{"hl7": "wrap MLLP in TLS (or a VPN) between the device and the interface engine", "dicom": "use DICOM TLS (port 2762) or a VPN to the PACS"}[app],
		})
	}
	return out
}

// credentialFinding explains a credential by the alert that showed it.
// A login seen accepted is "observed"; an SSH banner of a model that ships
// with a published account is "model": the login is encrypted.
func credentialFinding(c Credential) *medmeshv1.Finding {
	acct := "a factory-default password"
	if c.Account != "" {
		acct = fmt.Sprintf("account %q with its factory-default password", c.Account)
	}
	where := c.Protocol
	if c.Port != 0 {
		where = fmt.Sprintf("%s (port %d)", c.Protocol, c.Port)
	}
	f := &medmeshv1.Finding{
		Kind: string(risk.KindDefaultCredentials), Id: "seen:" + c.Protocol + "/" + strconv.Itoa(int(c.Port)) + "/" + c.Account,
		Source: "sensor alert " + c.Alert, Confidence: ConfidenceObserved, Severity: "high", Protocol: c.Protocol, Account: c.Account,
		Summary:     fmt.Sprintf("its %s service accepted %s, seen on the wire (alert %s; no password is kept)", where, acct, c.Alert),
		Remediation: fmt.Sprintf("change the default password on %s, or turn the service off; until then keep the device segmented", where),
	}
	if c.Method == "banner" {
		f.Confidence = "model"
		f.Summary = fmt.Sprintf("its %s banner names a model that ships with account %q and a published password; the login is encrypted, so whether it is still set cannot be seen (alert %s)", where, c.Account, c.Alert)
	}
	if c.Detail != "" {
		f.Evidence = []string{c.Detail}
	}
	return f
}

// FromRisk is a risk.Finding on the wire.
func FromRisk(f risk.Finding) *medmeshv1.Finding {
	return &medmeshv1.Finding{
		Kind: string(f.Kind), Id: f.ID, Source: f.Source, Confidence: string(f.Confidence), Severity: f.Severity, Summary: f.Summary,
		Cvss: f.CVSS, CvssVector: f.CVSSVector, Epss: f.EPSS, Kev: f.KEV, FixedVersion: f.FixedVersion, Remediation: f.Remediation,
		Component: f.Component, Product: f.Product, Release: f.Release, EolDate: f.EOLDate,
		RecallNumber: f.RecallNumber, RecallClass: f.RecallClass, Reason: f.Reason,
		Protocol: f.Protocol, Account: f.Account, Suppressed: f.Suppressed,
	}
}

// Severity and confidence ranks, for filters and ordering.
var (
	SeverityRank   = map[string]int{"critical": 5, "high": 4, "medium": 3, "low": 2, "info": 1}
	ConfidenceRank = map[string]int{"exact": 6, ConfidenceObserved: 6, "range": 5, "model": 4, "possible": 3, "vendor": 2}
)

// confidenceWeight is how much of a factor's points a finding of this
// confidence earns.
func confidenceWeight(c string) float64 {
	switch c {
	case "exact", "range", ConfidenceObserved:
		return 1
	case "model":
		return 0.7
	case "possible":
		return 0.5
	case "vendor":
		return 0.3
	}
	return 0.3
}

// Points of each factor at full confidence (docs/architecture.md, "Risk
// posture score").
const (
	PointsKEV        = 35.0
	PointsPerCVSS    = 3.0 // x the highest CVSS base score: up to 30
	PointsEPSS       = 15.0
	PointsEndOfLife  = 20.0
	PointsRecallI    = 30.0
	PointsRecallII   = 15.0
	PointsRecallIII  = 5.0
	PointsRecallElse = 10.0
	PointsDefaultCre = 20.0
	PointsExternal   = 25.0
	PointsCleartext  = 10.0
)

// TierWeight is how much a device's criticality scales its score:
// life-critical, and unknown (which counts as life-critical), 1.0;
// clinical 0.85; non-clinical 0.7.
func TierWeight(tier medmeshv1.Tier, class medmeshv1.DeviceClass) (float64, string) {
	switch {
	case safety.LifeCritical(tier, class):
		return 1, "life-critical (or unknown) tier x1.0"
	case tier == medmeshv1.Tier_TIER_CLINICAL:
		return 0.85, "clinical tier x0.85"
	}
	return 0.7, "non-clinical tier x0.7"
}

// Exposure is how reachable a device is: whether it answers on any
// service (others can reach it) and whether it talks outside the hospital.
type Exposure struct {
	Serves   bool
	Internet bool
}

// Weight is 0.8, plus 0.1 for serving, plus 0.1 for talking to the
// internet.
func (e Exposure) Weight() (float64, string) {
	w, why := 0.8, []string{}
	if e.Serves {
		w += 0.1
		why = append(why, "answers on services +0.1")
	}
	if e.Internet {
		w += 0.1
		why = append(why, "talks outside the hospital +0.1")
	}
	if len(why) == 0 {
		why = append(why, "serves nothing, talks only inside")
	}
	return w, fmt.Sprintf("exposure x%.1f (%s)", w, strings.Join(why, ", "))
}

// ExposureOf is a device's exposure given its external destinations.
func ExposureOf(d *medmeshv1.Device, ext []Destination) Exposure {
	return Exposure{Serves: len(d.GetServices()) > 0, Internet: len(ext) > 0}
}

// Score is the posture score of a device's findings: each factor's points
// at full confidence times the confidence of the surest finding behind it,
// summed and capped at 100, times the tier weight and the exposure weight,
// rounded. Suppressed findings do not count. Each factor's weight is its
// share of the final score, so the factors add up to it (up to rounding);
// the last two factors say what the tier and exposure did.
func Score(fs []*medmeshv1.Finding, tier medmeshv1.Tier, class medmeshv1.DeviceClass, e Exposure) *medmeshv1.RiskScore {
	type factor struct {
		name, detail string
		points       float64
	}
	var facs []*factor
	best := func(name string, pts float64, detail string) {
		for _, f := range facs {
			if f.name == name {
				if pts > f.points {
					f.points, f.detail = pts, detail
				}
				return
			}
		}
		facs = append(facs, &factor{name: name, points: pts, detail: detail})
	}
	for _, f := range fs {
		if f.GetSuppressed() != "" {
			continue
		}
		c := confidenceWeight(f.GetConfidence())
		conf := fmt.Sprintf(" (%s match x%.1f)", f.GetConfidence(), c)
		switch risk.Kind(f.GetKind()) {
		case risk.KindVulnerability:
			if f.GetKev() {
				best("kev", PointsKEV*c, f.GetId()+" is in CISA's Known Exploited Vulnerabilities catalog"+conf)
			}
			cv := f.GetCvss()
			if cv == 0 {
				cv = map[string]float64{"critical": 9.5, "high": 7.5, "medium": 5, "low": 2}[f.GetSeverity()]
			}
			best("cvss", cv*PointsPerCVSS*c, fmt.Sprintf("%s CVSS %.1f%s", f.GetId(), cv, conf))
			if f.GetEpss() > 0 {
				best("epss", f.GetEpss()*PointsEPSS*c, fmt.Sprintf("%s EPSS %.3f (probability of exploitation in 30 days)%s", f.GetId(), f.GetEpss(), conf))
			}
		case risk.KindEndOfLife:
			best("end_of_life", PointsEndOfLife*c, fmt.Sprintf("%s %s out of security support since %s%s", f.GetProduct(), f.GetRelease(), f.GetEolDate(), conf))
		case risk.KindRecall:
			pts := map[string]float64{"Class I": PointsRecallI, "Class II": PointsRecallII, "Class III": PointsRecallIII}[f.GetRecallClass()]
			if pts == 0 {
				pts = PointsRecallElse
			}
			best("recall", pts*c, fmt.Sprintf("FDA recall %s (%s)%s", f.GetRecallNumber(), cmp.Or(f.GetRecallClass(), "class unknown"), conf))
		case risk.KindDefaultCredentials:
			best("default_credentials", PointsDefaultCre*c, fmt.Sprintf("default account %q over %s%s", f.GetAccount(), f.GetProtocol(), conf))
		case risk.KindExternalCommunication:
			best("external_communication", PointsExternal*c, f.GetSummary())
		case risk.KindCleartextPHI:
			best("cleartext_phi_protocol", PointsCleartext*c, f.GetProtocol()+" without TLS")
		}
	}
	sum := 0.0
	for _, f := range facs {
		sum += f.points
	}
	base := math.Min(100, sum)
	tw, twWhy := TierWeight(tier, class)
	ew, ewWhy := e.Weight()
	score := uint32(math.Round(base * tw * ew))
	out := &medmeshv1.RiskScore{Score: min(score, 100)}
	if sum == 0 {
		return out
	}
	slices.SortStableFunc(facs, func(a, b *factor) int {
		return cmp.Or(-cmp.Compare(a.points, b.points), strings.Compare(a.name, b.name))
	})
	for _, f := range facs {
		w := math.Round(f.points*(base/sum)*tw*ew*10) / 10
		out.Factors = append(out.Factors, &medmeshv1.RiskFactor{Name: f.name, Weight: w, Detail: f.detail})
	}
	capped := ""
	if sum > 100 {
		capped = fmt.Sprintf("; factors summed to %.0f, capped at 100", sum)
	}
	out.Factors = append(out.Factors,
		&medmeshv1.RiskFactor{Name: "tier", Detail: twWhy + capped},
		&medmeshv1.RiskFactor{Name: "exposure", Detail: ewWhy})
	return out
}

// SortFindings orders findings most urgent first: unsuppressed first, then
// severity, KEV, CVSS, EPSS, confidence, kind and id.
func SortFindings(fs []*medmeshv1.Finding) {
	slices.SortStableFunc(fs, func(a, b *medmeshv1.Finding) int {
		return cmp.Or(
			cmp.Compare(b0(a.GetSuppressed() != ""), b0(b.GetSuppressed() != "")),
			-cmp.Compare(SeverityRank[a.GetSeverity()], SeverityRank[b.GetSeverity()]),
			-cmp.Compare(b0(a.GetKev()), b0(b.GetKev())),
			-cmp.Compare(a.GetCvss(), b.GetCvss()),
			-cmp.Compare(a.GetEpss(), b.GetEpss()),
			-cmp.Compare(ConfidenceRank[a.GetConfidence()], ConfidenceRank[b.GetConfidence()]),
			strings.Compare(a.GetKind(), b.GetKind()),
			strings.Compare(a.GetId(), b.GetId()),
			strings.Compare(a.GetSource(), b.GetSource()),
		)
	})
}

func b0(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Inputs is everything an assessment reads. Its digest decides whether a
// device must be assessed again.
type Inputs struct {
	Identity risk.Device           `json:"identity"`
	Tier     medmeshv1.Tier        `json:"tier"`
	Class    medmeshv1.DeviceClass `json:"class"`
	Exposure Exposure              `json:"exposure"`
	External []Destination         `json:"external,omitempty"`
	Creds    []Credential          `json:"creds,omitempty"`
	Apps     []string              `json:"apps,omitempty"`
	Services []string              `json:"services,omitempty"`
	Bundle   string                `json:"bundle"`
	SBOM     string                `json:"sbom,omitempty"`
}

// Digest is a SHA-256 of the inputs (hex).
func (in Inputs) Digest() string {
	b, _ := json.Marshal(in) // plain structs: never fails
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// InputsOf gathers a device's inputs: ext in any order, creds in commit
// order.
func InputsOf(d *medmeshv1.Device, ext []Destination, creds []Credential, bundle, sbom string) Inputs {
	in := Inputs{Identity: Identity(d), Tier: d.GetTier(), Class: d.GetDeviceClass(), Exposure: ExposureOf(d, ext), Bundle: bundle, SBOM: sbom}
	in.Creds = SortCredentials(creds)
	in.External = slices.Clone(ext)
	slices.SortFunc(in.External, func(a, b Destination) int {
		return cmp.Or(strings.Compare(a.Addr, b.Addr), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), strings.Compare(a.Name, b.Name), strings.Compare(a.Alert, b.Alert))
	})
	for _, app := range []string{"dicom", "hl7"} {
		if slices.Contains(d.GetProtocols(), app) {
			in.Apps = append(in.Apps, app)
		}
	}
	for _, s := range d.GetServices() {
		if s.GetApp() == "hl7" || s.GetApp() == "dicom" {
			in.Services = append(in.Services, fmt.Sprintf("%s/%d/%d", s.GetApp(), s.GetProtocol(), s.GetPort()))
		}
	}
	return in
}

// Assess is a device's posture: the bundle's findings for its identity
// (intel may be nil: no bundle active), with its model's SBOM at sbomPath
// when it has one, plus what the sensors observed (ext, creds), sorted most urgent
// first, and the score. at is the leader's time (what has reached its end
// of life). An SBOM that cannot be matched is returned as the error beside
// a posture without its findings.
func Assess(intel *risk.Intel, d *medmeshv1.Device, ext []Destination, creds []Credential, sbomPath, sbomDigest string, at time.Time) (*medmeshv1.DevicePosture, error) {
	bundle := ""
	if intel != nil {
		bundle = intel.Digest()
	}
	in := InputsOf(d, ext, creds, bundle, sbomDigest)
	id := in.Identity
	var fs []*medmeshv1.Finding
	var sbomErr error
	if intel != nil {
		dev := id
		dev.SBOM = sbomPath
		rf, err := intel.Assess(dev, at)
		if err != nil && sbomPath != "" {
			sbomErr = err
			dev.SBOM = ""
			rf, err = intel.Assess(dev, at)
		}
		if err != nil {
			return nil, err
		}
		for _, f := range rf {
			fs = append(fs, FromRisk(f))
		}
	}
	fs = append(fs, Observed(d, ext, creds)...)
	SortFindings(fs)
	return &medmeshv1.DevicePosture{
		DeviceMac: d.GetMac(), Score: Score(fs, d.GetTier(), d.GetDeviceClass(), in.Exposure), Findings: fs,
		Identity: &medmeshv1.DeviceIdentity{Vendor: id.Vendor, Model: id.Model, Version: id.Version, Os: id.OS, UdiDi: id.UDIDI},
		Tier:     d.GetTier(), Hostname: d.GetHostname(), BundleDigest: bundle, SbomDigest: sbomDigest,
		AssessTime: timestamppb.New(at), InputDigest: in.Digest(),
	}, sbomErr
}

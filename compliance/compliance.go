// Package compliance evaluates devices against HIPAA Security Rule, HHS 405(d) HICP and proposed-2025 controls from what medmesh observed, and ranks a remediation plan.
//
// The controls are data (catalog/*.json, embedded): each names the
// evidence rules (compliance/internal/rules) it is judged by. Evaluate
// runs every rule for every device, from the device record the sensors
// built, its alerts, its risk posture (findings and score) and its model's
// MDS2 answers (ReadMDS2), and returns a ComplianceReport: each control's
// result per device with the evidence, counts over the campus, and the
// remediation plan (compliance/internal/plan). A control is unmet when any
// of its rules found adverse evidence, met when none did and some found
// supporting evidence (and every rule the control requires did), not
// applicable when every rule said so, and not evidenced otherwise, with
// why. Evaluate is a pure function of its input:
// it serves the coordinator (from committed state) and `medmesh compliance
// assess` offline alike.
package compliance

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/compliance/internal/mds2"
	"github.com/medmesh/medmesh/compliance/internal/rules"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// MDS2 is a device model's Manufacturer Disclosure Statement for Medical
// Device Security (ANSI/NEMA HN 1-2019): its answers by question ID.
type MDS2 = mds2.Form

// MDS2Item is one answered question of an MDS2.
type MDS2Item = mds2.Item

// ParseMDS2 reads an MDS2 workbook (.xlsx); name is for messages.
func ParseMDS2(r io.Reader, name string) (*MDS2, error) { return mds2.Parse(r, name) }

// ReadMDS2 reads an MDS2 workbook from a file.
func ReadMDS2(path string) (*MDS2, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mds2.Parse(f, filepath.Base(path))
}

// Device is what medmesh has of one device.
type Device struct {
	// Device is the inventory record (sensor-built, with the operator's
	// labels). Required, with a MAC.
	Device *medmeshv1.Device
	// Alerts the sensors raised about it.
	Alerts []*medmeshv1.Alert
	// Posture is its committed risk posture; nil when not assessed.
	Posture *medmeshv1.DevicePosture
	// Policy is its least-privilege policy mode ("enforce", "monitor", or
	// "" for none); PolicyKnown false when unknown (offline).
	Policy      string
	PolicyKnown bool
	// Source names where its observations come from (a capture file name,
	// a sensor id); evidence names it.
	Source string
}

// Input is everything Evaluate reads.
type Input struct {
	Devices []Device
	// MDS2 forms, matched to devices by model (and manufacturer, where
	// both name one).
	MDS2 []*MDS2
	// UNSPECIFIED: every framework.
	Framework medmeshv1.ComplianceFramework
	// Now stamps the report and judges how old the bundle is.
	Now time.Time
	// The active intelligence bundle ("" and zero when none).
	BundleDigest string
	BundleDate   time.Time
	// The Raft index the state was read at (0 offline).
	RaftIndex uint64
}

// Posture bands of a risk score.
func PostureBand(score uint32) string {
	switch {
	case score >= 70:
		return "critical"
	case score >= 40:
		return "high"
	case score >= 15:
		return "medium"
	case score > 0:
		return "low"
	}
	return "none"
}

// Evaluate computes the report. It fails on a device without a MAC (or
// twice the same) and on a broken catalog.
func Evaluate(in Input) (*medmeshv1.ComplianceReport, error) {
	catalog, err := Catalog()
	if err != nil {
		return nil, err
	}
	var controls []*medmeshv1.ComplianceControl
	for _, c := range catalog {
		if in.Framework == medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED || c.GetFramework() == in.Framework {
			controls = append(controls, c)
		}
	}
	devs := slices.Clone(in.Devices)
	seen := map[string]bool{}
	for _, d := range devs {
		mac := d.Device.GetMac()
		if mac == "" {
			return nil, fmt.Errorf("compliance: a device without a MAC (%s)", d.Device.GetHostname())
		}
		if seen[mac] {
			return nil, fmt.Errorf("compliance: device %s given twice", mac)
		}
		seen[mac] = true
	}
	slices.SortFunc(devs, func(a, b Device) int { return strings.Compare(a.Device.GetMac(), b.Device.GetMac()) })

	campus := &rules.Campus{Now: in.Now, BundleDigest: in.BundleDigest, BundleDate: in.BundleDate, RaftIndex: in.RaftIndex, Devices: len(devs)}
	rd := make([]*rules.Device, len(devs))
	cov := &medmeshv1.ComplianceCoverage{Devices: uint32(len(devs))}
	for i, d := range devs {
		r := &rules.Device{Dev: d.Device, Alerts: d.Alerts, Posture: d.Posture, Policy: d.Policy, PolicyKnown: d.PolicyKnown, Source: d.Source}
		vendor, model, version := identity(d)
		r.Vendor, r.Model, r.Version = vendor, model, version
		r.MDS2 = matchMDS2(in.MDS2, vendor, model)
		rd[i] = r
		if c := d.Device.GetDeviceClass(); c != medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED && c != medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN {
			cov.Classified++
		}
		if model != "" {
			cov.Identified++
		}
		if d.Posture.GetBundleDigest() != "" {
			cov.Assessed++
		}
		if r.MDS2 != nil {
			cov.WithMds2++
		}
		if len(d.Device.GetProtocols()) > 0 || len(d.Device.GetServices()) > 0 {
			cov.Observed++
		}
	}
	campus.Classified, campus.Identified = int(cov.Classified), int(cov.Identified)

	rep := &medmeshv1.ComplianceReport{
		GenerateTime: timestamppb.New(in.Now), Framework: in.Framework, BundleDigest: in.BundleDigest, RaftIndex: in.RaftIndex, Coverage: cov,
	}
	if !in.BundleDate.IsZero() {
		rep.BundleDate = timestamppb.New(in.BundleDate)
	}
	// Campus rules, once.
	campusOut := map[string]rules.Outcome{}
	for _, c := range controls {
		for _, name := range c.GetRules() {
			if r := rules.All[name]; r.Campus {
				if _, ok := campusOut[name]; !ok {
					campusOut[name] = r.Eval(campus)
				}
			}
		}
	}
	summaries := make([]*medmeshv1.ControlSummary, len(controls))
	for i, c := range controls {
		s := &medmeshv1.ControlSummary{Control: c}
		var ne []string
		for _, name := range c.GetRules() {
			if o, ok := campusOut[name]; ok {
				s.Evidence = append(s.Evidence, o.Evidence...)
				if o.NotEvidenced != "" {
					ne = append(ne, name+": "+o.NotEvidenced)
				}
			}
		}
		s.Detail = strings.Join(ne, "; ")
		summaries[i] = s
	}
	counts := map[[2]string]uint32{}
	for i, d := range devs {
		dc := &medmeshv1.DeviceCompliance{DeviceMac: d.Device.GetMac(), Hostname: d.Device.GetHostname(), Class: d.Device.GetDeviceClass(), Tier: d.Device.GetTier()}
		dc.Vendor, dc.Model, dc.Version = identity(d)
		dc.RiskScore = riskScore(d)
		dc.Posture = PostureBand(dc.RiskScore)
		if rd[i].MDS2 != nil {
			dc.Mds2 = rd[i].MDS2.Name
		}
		for ci, c := range controls {
			res := evaluateControl(c, rd[i], campus)
			dc.Results = append(dc.Results, res)
			s := summaries[ci]
			switch res.GetStatus() {
			case medmeshv1.ControlStatus_CONTROL_STATUS_MET:
				s.Met++
			case medmeshv1.ControlStatus_CONTROL_STATUS_UNMET:
				s.Unmet++
			case medmeshv1.ControlStatus_CONTROL_STATUS_NOT_EVIDENCED:
				s.NotEvidenced++
			default:
				s.NotApplicable++
			}
		}
		counts[[2]string{d.Device.GetTier().String(), dc.Posture}]++
		rep.Devices = append(rep.Devices, dc)
	}
	for _, s := range summaries {
		campusAdverse := slices.ContainsFunc(s.Evidence, (*medmeshv1.ComplianceEvidence).GetAdverse)
		switch {
		case s.Unmet > 0 || campusAdverse:
			s.Status = medmeshv1.ControlStatus_CONTROL_STATUS_UNMET
			rep.ControlsUnmet++
		case s.Met > 0 || len(s.Evidence) > 0:
			s.Status = medmeshv1.ControlStatus_CONTROL_STATUS_MET
			rep.ControlsMet++
		case s.NotEvidenced > 0 || len(devs) == 0:
			s.Status = medmeshv1.ControlStatus_CONTROL_STATUS_NOT_EVIDENCED
			rep.ControlsNotEvidenced++
		default:
			s.Status = medmeshv1.ControlStatus_CONTROL_STATUS_NOT_APPLICABLE
		}
	}
	rep.Controls = summaries
	keys := make([][2]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(medmeshv1.Tier_value[a[0]], medmeshv1.Tier_value[b[0]]), cmp.Compare(bandRank(a[1]), bandRank(b[1])))
	})
	for _, k := range keys {
		rep.DeviceCounts = append(rep.DeviceCounts, &medmeshv1.DeviceCount{Tier: medmeshv1.Tier(medmeshv1.Tier_value[k[0]]), Posture: k[1], Devices: counts[k]})
	}
	rep.Plan = remediation(devs, rep.Devices)
	return rep, nil
}

func bandRank(b string) int {
	return slices.Index([]string{"critical", "high", "medium", "low", "none"}, b)
}

// evaluateControl runs c's device rules on d and combines them.
func evaluateControl(c *medmeshv1.ComplianceControl, d *rules.Device, campus *rules.Campus) *medmeshv1.ControlResult {
	res := &medmeshv1.ControlResult{ControlId: c.GetId()}
	var adverse, supporting bool
	var ne, na []string
	ran, undecidedRequired := 0, false
	for _, name := range c.GetRules() {
		r := rules.All[name]
		if r.Campus {
			continue
		}
		ran++
		o := r.Device(d, campus)
		res.Evidence = append(res.Evidence, o.Evidence...)
		adverse = adverse || o.Adverse()
		supporting = supporting || o.Supporting()
		if o.NotEvidenced != "" {
			ne = append(ne, name+": "+o.NotEvidenced)
		}
		if o.NotApplicable != "" {
			na = append(na, name+": "+o.NotApplicable)
		}
		if slices.Contains(c.GetRequiredRules(), name) && !o.Supporting() {
			undecidedRequired = true
		}
	}
	switch {
	case adverse:
		res.Status = medmeshv1.ControlStatus_CONTROL_STATUS_UNMET
	case supporting && !undecidedRequired:
		res.Status = medmeshv1.ControlStatus_CONTROL_STATUS_MET
	case ran > 0 && len(na) == ran:
		res.Status = medmeshv1.ControlStatus_CONTROL_STATUS_NOT_APPLICABLE
	default:
		res.Status = medmeshv1.ControlStatus_CONTROL_STATUS_NOT_EVIDENCED
	}
	// Say what could not be evidenced even when other rules decided.
	res.Detail = strings.Join(append(ne, na...), "; ")
	return res
}

// identity is the device's vendor, model and version: the operator's
// labels, else the posture's (what risk matching used), else the sensors'.
func identity(d Device) (vendor, model, version string) {
	dev := d.Device
	id, l := d.Posture.GetIdentity(), dev.GetLabels()
	return cmp.Or(l["vendor"], id.GetVendor(), dev.GetVendor()), cmp.Or(l["model"], id.GetModel(), dev.GetModel()), cmp.Or(l["version"], id.GetVersion(), dev.GetFirmware())
}

func riskScore(d Device) uint32 {
	if d.Posture != nil {
		return d.Posture.GetScore().GetScore()
	}
	return d.Device.GetRisk().GetScore()
}

func norm(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	}), " ")
}

// matchMDS2 is the form whose DOC-3 model equals the device's model
// (case, spaces and punctuation aside) and whose manufacturer, if both
// name one, shares a word with the device's vendor. The first such form
// in name order wins.
func matchMDS2(forms []*MDS2, vendor, model string) *MDS2 {
	if model == "" {
		return nil
	}
	var best *MDS2
	for _, f := range forms {
		if norm(f.Model) != norm(model) {
			continue
		}
		if vendor != "" && f.Manufacturer != "" {
			vw, fw := strings.Fields(norm(vendor)), strings.Fields(norm(f.Manufacturer))
			if !slices.ContainsFunc(vw, func(w string) bool { return slices.Contains(fw, w) }) {
				continue
			}
		}
		if best == nil || f.Name < best.Name {
			best = f
		}
	}
	return best
}

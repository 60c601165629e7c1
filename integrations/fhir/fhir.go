// Package fhir maps medmesh's device inventory to and from HL7 FHIR R4 Device resources.
package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	model "github.com/samply/golang-fhir-models/fhir-models/fhir"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Code systems and identifier systems medmesh uses. They are URNs because
// no published FHIR system names a MAC address or medmesh's tiers.
const (
	SystemMAC         = "urn:medmesh:mac"
	SystemIP          = "urn:medmesh:ip"
	SystemAssetRecord = "urn:medmesh:asset-record"
	SystemTier        = "urn:medmesh:tier"
	SystemClass       = "urn:medmesh:device-class"
	// IssuerGS1 is the UDI issuer FHIR names for GS1 device identifiers.
	IssuerGS1 = "http://hl7.org/fhir/NamingSystem/gs1-di"
	// ContentType is what the FHIR endpoint serves.
	ContentType = "application/fhir+json"
)

var tierCodes = map[medmeshv1.Tier]string{
	medmeshv1.Tier_TIER_LIFE_CRITICAL: "life-critical",
	medmeshv1.Tier_TIER_CLINICAL:      "clinical",
	medmeshv1.Tier_TIER_NON_CLINICAL:  "non-clinical",
	medmeshv1.Tier_TIER_UNSPECIFIED:   "unknown",
}

var tierDisplay = map[medmeshv1.Tier]string{
	medmeshv1.Tier_TIER_LIFE_CRITICAL: "Life-critical: never blocked automatically",
	medmeshv1.Tier_TIER_CLINICAL:      "Clinical",
	medmeshv1.Tier_TIER_NON_CLINICAL:  "Non-clinical",
	medmeshv1.Tier_TIER_UNSPECIFIED:   "Unknown: treated as life-critical",
}

// ID is the FHIR resource id of a device: its MAC with dashes
// ("00-1b-44-11-3a-b7"), or "ip-" and the address's bytes in hex for a
// device known only by address. FHIR ids are [A-Za-z0-9.-]{1,64}.
func ID(mac string) string {
	if rest, ok := strings.CutPrefix(mac, "ip:"); ok {
		if a, err := netip.ParseAddr(rest); err == nil {
			return fmt.Sprintf("ip-%x", a.AsSlice())
		}
	}
	return strings.ReplaceAll(mac, ":", "-")
}

// MAC is the inverse of ID: the device key a resource id names.
func MAC(id string) (string, bool) {
	if h, ok := strings.CutPrefix(id, "ip-"); ok {
		var b []byte
		if _, err := fmt.Sscanf(h, "%x", &b); err != nil || (len(b) != 4 && len(b) != 16) || fmt.Sprintf("%x", b) != h {
			return "", false
		}
		a, _ := netip.AddrFromSlice(b)
		return "ip:" + a.String(), true
	}
	hw, err := net.ParseMAC(id)
	if err != nil || len(hw) != 6 || strings.Contains(id, ":") {
		return "", false
	}
	return hw.String(), true
}

// FormatLocation is "campus/building/floor/zone" with empty trailing parts
// dropped: the form medmesh devices import reads back.
func FormatLocation(l *medmeshv1.Location) string {
	p := []string{l.GetCampus(), l.GetBuilding(), l.GetFloor(), l.GetZone()}
	for len(p) > 0 && p[len(p)-1] == "" {
		p = p[:len(p)-1]
	}
	return strings.Join(p, "/")
}

// ClassCode is the code of a device class in SystemClass:
// DEVICE_CLASS_INFUSION_PUMP is "infusion-pump".
func ClassCode(c medmeshv1.DeviceClass) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(c.String(), "DEVICE_CLASS_"), "_", "-"))
}

// first returns the network's value, or else the asset register's: the
// network wins where both speak (an import never stores a contradiction).
func first(a, b string) *string {
	if a != "" {
		return &a
	}
	if b != "" {
		return &b
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// UDIs are the device's Unique Device Identifiers: the asset register's,
// or else those its HL7 traffic carried.
func UDIs(d *medmeshv1.Device) []string {
	if u := d.GetAsset().GetUdi(); u != "" {
		return []string{u}
	}
	return d.GetIdentifiers().GetHl7Udis()
}

// Device maps one inventory device to a FHIR R4 Device.
func Device(d *medmeshv1.Device) model.Device {
	a := d.GetAsset()
	out := model.Device{
		Id:           ptr(ID(d.GetMac())),
		Status:       ptr(model.FHIRDeviceStatusActive),
		Manufacturer: first(d.GetVendor(), a.GetManufacturer()),
		ModelNumber:  first(d.GetModel(), a.GetModel()),
		SerialNumber: first(a.GetSerial(), ""),
	}
	if strings.HasPrefix(d.GetMac(), "ip:") {
		out.Identifier = append(out.Identifier, model.Identifier{System: ptr(SystemIP), Value: ptr(strings.TrimPrefix(d.GetMac(), "ip:"))})
	} else {
		out.Identifier = append(out.Identifier, model.Identifier{System: ptr(SystemMAC), Value: ptr(d.GetMac())})
		for _, ip := range d.GetIpAddresses() {
			out.Identifier = append(out.Identifier, model.Identifier{System: ptr(SystemIP), Value: ptr(ip)})
		}
	}
	if r := a.GetRecordId(); r != "" {
		out.Identifier = append(out.Identifier, model.Identifier{System: ptr(SystemAssetRecord), Value: ptr(r)})
	}
	for i, u := range UDIs(d) {
		c := model.DeviceUdiCarrier{CarrierHRF: ptr(u)}
		if i == 0 && a.GetUdiDi() != "" {
			c.DeviceIdentifier, c.Issuer = ptr(a.GetUdiDi()), ptr(IssuerGS1)
		}
		out.UdiCarrier = append(out.UdiCarrier, c)
	}
	if len(out.UdiCarrier) == 0 && a.GetUdiDi() != "" {
		out.UdiCarrier = []model.DeviceUdiCarrier{{DeviceIdentifier: ptr(a.GetUdiDi()), Issuer: ptr(IssuerGS1)}}
	}
	if h := d.GetHostname(); h != "" {
		out.DeviceName = []model.DeviceDeviceName{{Name: h, Type: model.DeviceNameTypeUserFriendlyName}}
	}
	if c := d.GetDeviceClass(); c != medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
		out.Type = &model.CodeableConcept{
			Coding: []model.Coding{{System: ptr(SystemClass), Code: ptr(ClassCode(c))}},
			Text:   ptr(strings.ReplaceAll(ClassCode(c), "-", " ")),
		}
	}
	if v := first(d.GetFirmware(), a.GetVersion()); v != nil {
		out.Version = []model.DeviceVersion{{Type: &model.CodeableConcept{Text: ptr("firmware")}, Value: *v}}
	}
	if l := FormatLocation(d.GetLocation()); l != "" {
		out.Location = &model.Reference{Display: ptr(l)}
	}
	if o := a.GetOwner(); o != "" {
		out.Owner = &model.Reference{Display: ptr(o)}
	}
	t := d.GetTier()
	out.Safety = []model.CodeableConcept{{
		Coding: []model.Coding{{System: ptr(SystemTier), Code: ptr(tierCodes[t]), Display: ptr(tierDisplay[t])}},
	}}
	return out
}

// Bundle builds a Bundle of the devices: a "searchset" with base the
// server's base URL (fullUrl of each entry), or a "collection" for a file.
func Bundle(devs []*medmeshv1.Device, typ model.BundleType, base string) ([]byte, error) {
	b := model.Bundle{Type: typ, Total: ptr(len(devs))}
	if typ != model.BundleTypeSearchset {
		b.Total = nil
	}
	b.Entry = []model.BundleEntry{}
	for _, d := range devs {
		raw, err := json.Marshal(Device(d))
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.GetMac(), err)
		}
		e := model.BundleEntry{Resource: raw}
		if base != "" {
			e.FullUrl = ptr(strings.TrimSuffix(base, "/") + "/Device/" + ID(d.GetMac()))
		}
		if typ == model.BundleTypeSearchset {
			e.Search = &model.BundleEntrySearch{Mode: ptr(model.SearchEntryModeMatch)}
		}
		b.Entry = append(b.Entry, e)
	}
	return json.Marshal(b)
}

// OperationOutcome is a FHIR OperationOutcome with one issue: how the
// endpoint reports an error.
func OperationOutcome(code model.IssueType, diagnostics string) []byte {
	b, _ := json.Marshal(model.OperationOutcome{Issue: []model.OperationOutcomeIssue{{
		Severity: model.IssueSeverityError, Code: code, Diagnostics: ptr(diagnostics),
	}}})
	return b
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// ParseDevice decodes one Device resource strictly against the R4 model:
// resourceType "Device", no element the model does not know, codes from
// their value sets, a valid id.
func ParseDevice(raw []byte) (model.Device, error) {
	var probe struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return model.Device{}, err
	}
	if probe.ResourceType != "Device" {
		return model.Device{}, fmt.Errorf("resourceType %q, want Device", probe.ResourceType)
	}
	var d struct {
		model.OtherDevice
		ResourceType string `json:"resourceType"`
	}
	if err := strictDecode(raw, &d); err != nil {
		return model.Device{}, err
	}
	out := model.Device(d.OtherDevice)
	if out.Id != nil && !idPattern.MatchString(*out.Id) {
		return model.Device{}, fmt.Errorf("id %q is not a FHIR id", *out.Id)
	}
	for _, n := range out.DeviceName {
		if n.Name == "" {
			return model.Device{}, errors.New("deviceName without a name")
		}
	}
	for _, v := range out.Version {
		if v.Value == "" {
			return model.Device{}, errors.New("version without a value")
		}
	}
	return out, nil
}

// ParseBundle decodes a Bundle strictly (see ParseDevice) and returns its
// Device resources; other resource types are an error.
func ParseBundle(raw []byte) ([]model.Device, error) {
	var b struct {
		model.Bundle
		ResourceType string `json:"resourceType"`
	}
	if err := strictDecode(raw, &b); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if b.ResourceType != "Bundle" {
		return nil, fmt.Errorf("resourceType %q, want Bundle", b.ResourceType)
	}
	var out []model.Device
	for i, e := range b.Entry {
		if len(e.Resource) == 0 {
			return nil, fmt.Errorf("bundle entry %d: no resource", i+1)
		}
		d, err := ParseDevice(e.Resource)
		if err != nil {
			return nil, fmt.Errorf("bundle entry %d: %w", i+1, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// Record turns a FHIR Device into an asset import record: the device by
// its MAC identifier (or resource id), what the resource says about it.
func Record(d model.Device) (*medmeshv1.AssetRecord, error) {
	r := &medmeshv1.AssetRecord{Asset: &medmeshv1.Asset{}}
	a := r.Asset
	for _, id := range d.Identifier {
		if id.System == nil || id.Value == nil {
			continue
		}
		switch *id.System {
		case SystemMAC:
			if r.Mac == "" {
				r.Mac = *id.Value
			}
		case SystemIP:
			if r.Ip == "" {
				r.Ip = *id.Value
			}
		case SystemAssetRecord:
			a.RecordId = *id.Value
		}
	}
	if r.Mac == "" && d.Id != nil {
		if mac, ok := MAC(*d.Id); ok {
			if ip, isIP := strings.CutPrefix(mac, "ip:"); isIP {
				r.Ip = ip
			} else {
				r.Mac = mac
			}
		}
	}
	if r.Mac == "" && r.Ip == "" {
		return nil, fmt.Errorf("device %s: no %s or %s identifier", deref(d.Id), SystemMAC, SystemIP)
	}
	a.Manufacturer, a.Model, a.Serial = deref(d.Manufacturer), deref(d.ModelNumber), deref(d.SerialNumber)
	if len(d.Version) > 0 {
		a.Version = d.Version[0].Value
	}
	if len(d.UdiCarrier) > 0 {
		a.Udi, a.UdiDi = deref(d.UdiCarrier[0].CarrierHRF), deref(d.UdiCarrier[0].DeviceIdentifier)
	}
	if d.Owner != nil {
		a.Owner = deref(d.Owner.Display)
	}
	if d.Location != nil {
		r.Location = deref(d.Location.Display)
	}
	for _, s := range d.Safety {
		for _, c := range s.Coding {
			if deref(c.System) != SystemTier {
				continue
			}
			t, ok := TierOf(deref(c.Code))
			if !ok {
				return nil, fmt.Errorf("device %s: safety code %q is not one of life-critical, clinical, non-clinical, unknown", deref(d.Id), deref(c.Code))
			}
			a.Criticality = t
		}
	}
	return r, nil
}

// TierOf reads a tier code ("life-critical", "clinical", "non-clinical";
// "unknown" and "" are no tier).
func TierOf(code string) (medmeshv1.Tier, bool) {
	for t, c := range tierCodes {
		if strings.EqualFold(c, strings.TrimSpace(code)) {
			return t, true
		}
	}
	return medmeshv1.Tier_TIER_UNSPECIFIED, strings.TrimSpace(code) == ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

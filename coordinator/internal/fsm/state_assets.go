package fsm

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Asset import (medmesh devices import): what a CMDB or the biomedical
// engineering asset register says about devices the sensors found.
//
// The rules, the same for a dry run and a committed import:
//   - A field the network shows (vendor, model, firmware, UDIs, the
//     location a sensor or operator set) is never overwritten. A register
//     value equal to it (ignoring case and surrounding space) changes
//     nothing; a different one is a conflict, reported, and not stored.
//   - A field the network does not show is stored in the device's asset
//     record; a register value different from the stored one is a change.
//   - A criticality may raise the device's tier (it is kept as a floor the
//     class-derived tier never drops below) but never lower it: a lower
//     one, or any below an unknown tier, is a conflict.
//   - A record matching no device is reported unmatched: an import never
//     creates devices (sensors do).
//   - Every device changed gets one audit record naming the fields.

// planned is one device an import changes: before and after.
type planned struct {
	old, d *medmeshv1.Device
	fields []string
}

// planImport merges records into copies of the devices they match and
// reports the diff; it changes nothing.
func (s *state) planImport(recs []*medmeshv1.AssetRecord) ([]*planned, *medmeshv1.ImportDevicesResponse) {
	resp := &medmeshv1.ImportDevicesResponse{}
	byMAC := map[string]*planned{}
	var order []*planned
	for _, r := range recs {
		mac, why := s.matchRecord(r)
		if mac == "" {
			resp.Unmatched = append(resp.Unmatched, &medmeshv1.AssetUnmatched{Line: r.GetLine(), Mac: r.GetMac(), Ip: r.GetIp(), Reason: why})
			continue
		}
		p := byMAC[mac]
		if p == nil {
			old := s.devices[mac]
			p = &planned{old: old, d: proto.CloneOf(old)}
			byMAC[mac] = p
			order = append(order, p)
		}
		m := merger{d: p.d, line: r.GetLine(), resp: resp}
		m.merge(r)
		for _, f := range m.changed {
			if !slices.Contains(p.fields, f) {
				p.fields = append(p.fields, f)
			}
		}
	}
	var out []*planned
	for _, p := range order {
		if len(p.fields) > 0 {
			out = append(out, p)
		}
	}
	resp.DevicesChanged = int32(len(out))
	return out, resp
}

// matchRecord finds the device a record is about: by MAC, or else by an
// address exactly one device used.
func (s *state) matchRecord(r *medmeshv1.AssetRecord) (mac, why string) {
	if r.GetMac() != "" {
		if s.devices[r.GetMac()] == nil {
			return "", "no device with this MAC"
		}
		return r.GetMac(), ""
	}
	if r.GetIp() == "" {
		return "", "no MAC or IP address"
	}
	if s.devices["ip:"+r.GetIp()] != nil {
		return "ip:" + r.GetIp(), ""
	}
	found := s.deviceIPs[canonIP(r.GetIp())] // sorted MACs
	switch len(found) {
	case 0:
		return "", "no device with this IP address"
	case 1:
		return found[0], ""
	}
	return "", fmt.Sprintf("%d devices used this IP address (%s): give the MAC", len(found), strings.Join(found, ", "))
}

// merger merges one record into d, reporting to resp.
type merger struct {
	d       *medmeshv1.Device
	line    int32
	resp    *medmeshv1.ImportDevicesResponse
	changed []string
}

func (m *merger) change(field, from, to string) {
	m.resp.Changes = append(m.resp.Changes, &medmeshv1.AssetChange{Mac: m.d.GetMac(), Field: field, OldValue: from, NewValue: to})
	m.changed = append(m.changed, field)
}

func (m *merger) conflict(field, have, want, reason string) {
	m.resp.Conflicts = append(m.resp.Conflicts, &medmeshv1.AssetConflict{Mac: m.d.GetMac(), Field: field, InventoryValue: have, ImportValue: want, Reason: reason, Line: m.line})
}

// sameText compares register and network text: case and surrounding space
// do not matter.
func sameText(a, b string) bool { return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b)) }

// observed merges a field the network may show: shown is the network's
// value, *stored the asset record's.
func (m *merger) observed(field, shown string, stored *string, v string) {
	switch {
	case v == "":
	case shown != "" && sameText(shown, v):
	case shown != "":
		m.conflict(field, shown, v, "the network shows another value; kept")
	case *stored != v:
		m.change(field, *stored, v)
		*stored = v
	}
}

// owned merges a field only the asset register knows.
func (m *merger) owned(field string, stored *string, v string) {
	if v != "" && *stored != v {
		m.change(field, *stored, v)
		*stored = v
	}
}

func (m *merger) merge(r *medmeshv1.AssetRecord) {
	d, in := m.d, r.GetAsset()
	if d.Asset == nil {
		d.Asset = &medmeshv1.Asset{}
	}
	a := d.Asset
	m.observed("asset.manufacturer", d.GetVendor(), &a.Manufacturer, in.GetManufacturer())
	m.observed("asset.model", d.GetModel(), &a.Model, in.GetModel())
	m.observed("asset.version", d.GetFirmware(), &a.Version, in.GetVersion())
	udis := d.GetIdentifiers().GetHl7Udis()
	if v := in.GetUdi(); v != "" && len(udis) > 0 && !slices.ContainsFunc(udis, func(u string) bool { return sameText(u, v) }) {
		m.conflict("asset.udi", strings.Join(udis, ","), v, "the device's traffic carries other UDIs; kept")
	} else if len(udis) == 0 {
		m.owned("asset.udi", &a.Udi, v)
	}
	if v := in.GetUdiDi(); v != "" && len(udis) > 0 && !slices.ContainsFunc(udis, func(u string) bool { return strings.Contains(u, v) }) {
		m.conflict("asset.udi_di", strings.Join(udis, ","), v, "no UDI in the device's traffic has this device identifier; kept")
	} else {
		m.owned("asset.udi_di", &a.UdiDi, v)
	}
	m.owned("asset.serial", &a.Serial, in.GetSerial())
	m.owned("asset.owner", &a.Owner, in.GetOwner())
	m.owned("asset.record_id", &a.RecordId, in.GetRecordId())
	if r.GetLocation() != "" {
		m.location(r.GetLocation())
	}
	if t := in.GetCriticality(); t != medmeshv1.Tier_TIER_UNSPECIFIED {
		m.criticality(t)
	}
	if proto.Equal(a, &medmeshv1.Asset{}) {
		d.Asset = nil
	}
}

// LocationParts splits "campus/building/floor/zone" (fewer parts fill
// from the left).
func LocationParts(s string) []string {
	p := strings.Split(s, "/")
	for i := range p {
		p[i] = strings.TrimSpace(p[i])
	}
	return p
}

// FormatLocation is the inverse of LocationParts: "" for no location.
func FormatLocation(l *medmeshv1.Location) string {
	p := []string{l.GetCampus(), l.GetBuilding(), l.GetFloor(), l.GetZone()}
	for len(p) > 0 && p[len(p)-1] == "" {
		p = p[:len(p)-1]
	}
	return strings.Join(p, "/")
}

func (m *merger) location(s string) {
	if m.d.Location == nil {
		m.d.Location = &medmeshv1.Location{}
	}
	l := m.d.Location
	dst := []*string{&l.Campus, &l.Building, &l.Floor, &l.Zone}
	names := []string{"campus", "building", "floor", "zone"}
	for i, v := range LocationParts(s) {
		if i >= len(dst) || v == "" {
			continue
		}
		switch have := *dst[i]; {
		case have == v:
		case have != "":
			m.conflict("location."+names[i], have, v, "the inventory (a sensor or an operator) says otherwise; kept")
		default:
			m.change("location."+names[i], "", v)
			*dst[i] = v
		}
	}
	if proto.Equal(l, &medmeshv1.Location{}) {
		m.d.Location = nil
	}
}

// criticality raises the device's tier to t, never lowers it.
func (m *merger) criticality(t medmeshv1.Tier) {
	d := m.d
	switch {
	case safety.Protection(t) > safety.Protection(d.GetTier()):
		if old := d.GetAsset().GetCriticality(); old != t {
			m.change("asset.criticality", tierText(old), tierText(t))
			d.Asset.Criticality = t
		}
		m.change("tier", tierText(d.GetTier()), tierText(t))
		d.Tier = t
	case safety.Protection(t) < safety.Protection(d.GetTier()):
		m.conflict("tier", tierText(d.GetTier()), tierText(t), "an import never lowers a device's tier; an operator's audited update can")
	}
}

func tierText(t medmeshv1.Tier) string {
	if t == medmeshv1.Tier_TIER_UNSPECIFIED {
		return ""
	}
	return t.String()
}

// assetFloor raises d's tier to the criticality its asset record gives,
// if that protects it more.
func assetFloor(d *medmeshv1.Device) {
	if c := d.GetAsset().GetCriticality(); c != medmeshv1.Tier_TIER_UNSPECIFIED && safety.Protection(c) > safety.Protection(d.Tier) {
		d.Tier = c
	}
}

// applyDeviceImport commits an import: each changed device stored and
// audited.
func (s *state) applyDeviceImport(index uint64, now *timestamppb.Timestamp, c *fsmpb.DeviceImport) *Result {
	for _, r := range c.GetRecords() {
		if r.GetMac() == "" && r.GetIp() != "" {
			if _, err := netip.ParseAddr(r.GetIp()); err != nil {
				return &Result{Err: fmt.Errorf("record line %d ip: %w", r.GetLine(), ErrInvalid)}
			}
		}
	}
	plans, resp := s.planImport(c.GetRecords())
	res := &Result{Import: resp}
	for _, p := range plans {
		p.d.Revision = index
		comment := "import changed " + strings.Join(p.fields, ", ")
		if c.GetSource() != "" {
			comment += " from " + c.GetSource()
		}
		if c.GetComment() != "" {
			comment += "; " + c.GetComment()
		}
		s.appendAudit(index, now, c.GetActor(), "device.import", "device/"+p.d.Mac, c.GetReason(), "", "", comment)
		res.addDecisions(s.storeDevice(index, now, p.old, p.d, trigger{id: "i" + uitoa(index), actor: c.GetActor(), comment: c.GetComment(), twoPerson: true}))
	}
	return res
}

// PlanImport is the diff an import of recs would make now (a dry run).
func (f *FSM) PlanImport(recs []*medmeshv1.AssetRecord) (*medmeshv1.ImportDevicesResponse, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, resp := f.st.planImport(recs)
	resp.DryRun = true
	return resp, f.st.applied
}

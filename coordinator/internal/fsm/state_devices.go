package fsm

import (
	"fmt"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// applyDeviceUpsert merges a sensor observation. Operator-owned fields
// (labels, an overridden tier, location set by an operator) are kept.
//
// A sensor observation never lowers a device's safety state: a class that
// would imply a lower tier than the device has is not taken (the device
// keeps its class; an unclassified device may get its first class), and
// the tier only ever rises, so a life-critical or unknown tier stays until
// an operator's UpdateDevice changes it. A new device takes the tier its
// first observation implies.
//
// Addresses and identifiers accumulate across observations (a device
// roams, several sensors see it), except for a router: the sensor that
// recognised it reports its own addresses and what it said itself, and
// those replace whatever was attached before the sensor knew (addresses
// it forwards are never a router's).
func (s *state) applyDeviceUpsert(index uint64, now *timestamppb.Timestamp, sensorID string, obs *medmeshv1.Device) *Result {
	if obs.GetMac() == "" {
		return &Result{Err: fmt.Errorf("device mac: %w", ErrInvalid)}
	}
	old := s.devices[obs.GetMac()]
	var d *medmeshv1.Device
	if old == nil {
		d = &medmeshv1.Device{Mac: obs.GetMac(), FirstSeen: obs.GetFirstSeen()}
		if d.FirstSeen == nil {
			d.FirstSeen = now
		}
	} else {
		d = proto.CloneOf(old)
	}
	if c := obs.GetDeviceClass(); c != medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED &&
		(d.DeviceClass == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED || !safety.Lowers(d.Tier, safety.TierForClass(c))) {
		d.DeviceClass = c
		d.ClassConfidence = obs.GetClassConfidence()
		d.ClassEvidence = obs.GetClassEvidence()
	}
	if router := obs.GetDeviceClass() == medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER; router && d.DeviceClass == medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER {
		d.IpAddresses = union(nil, obs.GetIpAddresses())
		d.Model, d.Firmware, d.Hostname = obs.GetModel(), obs.GetFirmware(), obs.GetHostname()
		d.Identifiers, d.Protocols, d.Services = nil, nil, nil
	} else {
		d.IpAddresses = union(d.IpAddresses, obs.GetIpAddresses())
		setIf(&d.Model, obs.GetModel())
		setIf(&d.Firmware, obs.GetFirmware())
		setIf(&d.Hostname, obs.GetHostname())
	}
	setIf(&d.Vendor, obs.GetVendor())
	if t := safety.TierForClass(d.DeviceClass); !d.TierOverridden && (old == nil || !safety.Lowers(d.Tier, t)) {
		d.Tier = t
	}
	if loc := obs.GetLocation(); loc != nil {
		if d.Location == nil {
			d.Location = &medmeshv1.Location{}
		}
		// Sensors fill in where they are; an operator's values win.
		setIfEmpty(&d.Location.Campus, loc.GetCampus())
		setIfEmpty(&d.Location.Building, loc.GetBuilding())
		setIfEmpty(&d.Location.Floor, loc.GetFloor())
		setIfEmpty(&d.Location.Zone, loc.GetZone())
	}
	d.Protocols = union(d.Protocols, obs.GetProtocols())
	for _, sv := range obs.GetServices() {
		if !slices.ContainsFunc(d.Services, func(x *medmeshv1.Service) bool { return proto.Equal(x, sv) }) {
			d.Services = append(d.Services, sv)
		}
	}
	sort.Slice(d.Services, func(i, j int) bool {
		a, b := d.Services[i], d.Services[j]
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.App < b.App
	})
	if id := obs.GetIdentifiers(); id != nil {
		d.Identifiers = mergeIdentifiers(d.Identifiers, id)
	}
	if fs := obs.GetFirstSeen(); fs != nil && d.FirstSeen != nil && fs.AsTime().Before(d.FirstSeen.AsTime()) {
		d.FirstSeen = fs
	}
	ls := obs.GetLastSeen()
	if ls == nil {
		ls = now
	}
	if d.LastSeen == nil || ls.AsTime().After(d.LastSeen.AsTime()) {
		d.LastSeen = ls
	}
	if obs.GetRisk() != nil {
		d.Risk = obs.GetRisk()
	}
	// Seen through flow export: the site is where the exporter says;
	// advisory stays once set (no enforcer was ever on the path), and an
	// observation can only mark a device advisory, never clear it, so its
	// decisions keep reaching the gateway that can act.
	setIf(&d.Site, obs.GetSite())
	d.Advisory = d.Advisory || obs.GetAdvisory()
	if ae := obs.GetAbsentEvidence(); len(ae) > 0 {
		d.AbsentEvidence = slices.Clone(ae)
	}
	setIf(&d.LastSensorId, sensorID)
	d.Revision = index
	actor := "coordinator"
	if sensorID != "" {
		actor = SensorIdentity(sensorID)
	}
	res := &Result{Device: d}
	res.addDecisions(s.storeDevice(index, now, old, d, trigger{id: "i" + uitoa(index), actor: actor, twoPerson: true}))
	return res
}

// storeDevice stores d, which replaces old (nil for a new device), and
// returns the class policy decisions a change of its class calls for (see
// state_classes.go).
func (s *state) storeDevice(index uint64, now *timestamppb.Timestamp, old, d *medmeshv1.Device, t trigger) []*medmeshv1.Decision {
	s.indexDeviceIPs(old, d)
	s.markRisk(d.Mac)
	if old != nil && old.GetDeviceClass() == d.GetDeviceClass() {
		s.devices[d.Mac] = d
		return nil
	}
	before := s.deviceView(d.Mac)
	s.devices[d.Mac] = d
	t.reason = "device classified " + d.GetDeviceClass().String()
	return s.reconcileClasses(index, now, t, before, s.deviceView(d.Mac), "")
}

func mergeIdentifiers(old, n *medmeshv1.Identifiers) *medmeshv1.Identifiers {
	var m *medmeshv1.Identifiers
	if old == nil {
		m = &medmeshv1.Identifiers{}
	} else {
		m = proto.CloneOf(old)
	}
	m.DicomAeTitles = union(m.DicomAeTitles, n.DicomAeTitles)
	m.Hl7Udis = union(m.Hl7Udis, n.Hl7Udis)
	m.Hl7SendingApplications = union(m.Hl7SendingApplications, n.Hl7SendingApplications)
	m.Hl7SendingFacilities = union(m.Hl7SendingFacilities, n.Hl7SendingFacilities)
	setIf(&m.DhcpHostname, n.DhcpHostname)
	setIf(&m.DhcpVendorClass, n.DhcpVendorClass)
	setIf(&m.DhcpFingerprint, n.DhcpFingerprint)
	setIf(&m.DhcpClientId, n.DhcpClientId)
	setIf(&m.DhcpFqdn, n.DhcpFqdn)
	setIf(&m.MudUrl, n.MudUrl)
	m.FriendlyNames = union(m.FriendlyNames, n.FriendlyNames)
	m.DicomImplementations = union(m.DicomImplementations, n.DicomImplementations)
	m.ServerNames = union(m.ServerNames, n.ServerNames)
	m.UserAgents = union(m.UserAgents, n.UserAgents)
	m.HttpServers = union(m.HttpServers, n.HttpServers)
	m.SsdpServers = union(m.SsdpServers, n.SsdpServers)
	setIf(&m.SnmpSysDescr, n.SnmpSysDescr)
	setIf(&m.SnmpSysName, n.SnmpSysName)
	m.Hl7Software = union(m.Hl7Software, n.Hl7Software)
	return m
}

// applyDeviceUpdate changes operator-owned fields, audited: the only way a
// device's class or tier moves down.
func (s *state) applyDeviceUpdate(index uint64, now *timestamppb.Timestamp, c *fsmpb.DeviceUpdate) *Result {
	in := c.GetDevice()
	old := s.devices[in.GetMac()]
	if old == nil {
		return &Result{Err: fmt.Errorf("device %q: %w", in.GetMac(), ErrNotFound)}
	}
	d := proto.CloneOf(old)
	for _, p := range c.GetPaths() {
		switch p {
		case "labels":
			d.Labels = in.GetLabels()
		case "tier":
			if in.GetTier() == medmeshv1.Tier_TIER_UNSPECIFIED {
				d.TierOverridden = false
				d.Tier = safety.TierForClass(d.DeviceClass)
			} else {
				d.TierOverridden = true
				d.Tier = in.GetTier()
			}
		case "location":
			d.Location = in.GetLocation()
		case "device_class":
			d.DeviceClass = in.GetDeviceClass()
			d.ClassConfidence, d.ClassEvidence = 1, []*medmeshv1.Evidence{{Source: "operator", Detail: "set by " + c.GetActor(), Weight: 1}}
		default:
			return &Result{Err: fmt.Errorf("update_mask path %q: %w", p, ErrInvalid)}
		}
	}
	if !d.TierOverridden {
		d.Tier = safety.TierForClass(d.DeviceClass)
	}
	d.Revision = index
	// The audit record of the change comes before those of the decisions
	// it causes.
	s.appendAudit(index, now, c.GetActor(), "device.update", "device/"+d.Mac, c.GetReason(), "", "", c.GetComment())
	res := &Result{Device: d}
	res.addDecisions(s.storeDevice(index, now, old, d, trigger{id: "i" + uitoa(index), actor: c.GetActor(), comment: c.GetComment(), twoPerson: true}))
	return res
}

// Device returns a device, or nil.
func (f *FSM) Device(mac string) *medmeshv1.Device {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.devices[mac]
}

// ListDevices returns up to limit devices with mac > after that match keep,
// ordered by mac, the total number matching, and the applied index.
// A nil keep keeps every one.
func (f *FSM) ListDevices(after string, limit int, keep func(*medmeshv1.Device) bool) (page []*medmeshv1.Device, more bool, total int, index uint64) {
	if keep == nil {
		keep = keepAll[*medmeshv1.Device]
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	keys := sortedKeys(f.st.devices)
	for _, k := range keys {
		d := f.st.devices[k]
		if !keep(d) {
			continue
		}
		total++
		if k <= after {
			continue
		}
		if len(page) < limit {
			page = append(page, d)
		} else {
			more = true
		}
	}
	return page, more, total, f.st.applied
}

// DevicesChanged returns the devices whose last change sorts after
// (afterRev, afterMAC) in (revision, mac) order, and the applied index.
// Many devices can share a revision (one sensor batch), hence the mac.
func (f *FSM) DevicesChanged(afterRev uint64, afterMAC string) ([]*medmeshv1.Device, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*medmeshv1.Device
	for _, d := range f.st.devices {
		if d.Revision > afterRev || (d.Revision == afterRev && d.Mac > afterMAC) {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Revision < out[j].Revision || (out[i].Revision == out[j].Revision && out[i].Mac < out[j].Mac)
	})
	return out, f.st.applied
}

func union(a, b []string) []string {
	for _, x := range b {
		if x != "" && !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	slices.Sort(a)
	return a
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func setIfEmpty(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// keepAll is the filter of a List call given none.
func keepAll[T any](T) bool { return true }

package fsm

import (
	"net/netip"
	"strings"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TrafficView is one consistent read of what the campus map and the
// device page read: devices, their frozen baselines, the rings of recent
// flow summaries and which device holds each address. The values are the
// state's own (immutable: never change them); the containers are copies,
// so later applies do not show through.
type TrafficView struct {
	// Index is the applied index the view was read at.
	Index uint64
	// Devices by MAC.
	Devices map[string]*medmeshv1.Device
	// Baselines of devices by MAC; ClassBaselines by class.
	Baselines      map[string]*medmeshv1.Baseline
	ClassBaselines map[medmeshv1.DeviceClass]*medmeshv1.Baseline
	// Flows are each device's recent flow summaries, oldest first.
	Flows map[string][]*medmeshv1.FlowSummary
	// Holders maps an address (canonical form) to the one device holding
	// it, or to "" when several devices hold it.
	Holders map[string]string
	// Policies (DeviceTraffic only): the device's own policies by name,
	// and the active policy of its class in force (nil for none).
	Policies    []*medmeshv1.Policy
	ClassPolicy *medmeshv1.Policy
}

// Holder returns the one device holding address ip, or "".
func (v *TrafficView) Holder(ip string) string {
	if v == nil {
		return ""
	}
	return v.Holders[canonIP(ip)]
}

// CampusTraffic reads the whole campus: every device, baseline, ring and
// address. It copies the containers (a few milliseconds for 10,000
// devices), not the values.
func (f *FSM) CampusTraffic() *TrafficView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.st
	v := &TrafficView{
		Index:          s.applied,
		Devices:        make(map[string]*medmeshv1.Device, len(s.devices)),
		Baselines:      make(map[string]*medmeshv1.Baseline, len(s.baselines)),
		ClassBaselines: map[medmeshv1.DeviceClass]*medmeshv1.Baseline{},
		Flows:          make(map[string][]*medmeshv1.FlowSummary, len(s.flows)),
		Holders:        make(map[string]string, len(s.deviceIPs)),
	}
	for mac, d := range s.devices {
		v.Devices[mac] = d
	}
	for k, b := range s.baselines {
		if strings.HasPrefix(k, "class/") {
			v.ClassBaselines[b.GetDeviceClass()] = b
			continue
		}
		v.Baselines[k] = b
	}
	for mac, r := range s.flows {
		v.Flows[mac] = r
	}
	for ip, macs := range s.deviceIPs {
		v.Holders[ip] = holder(macs)
	}
	return v
}

// DeviceTraffic reads what one device's page shows: the device, its
// baseline and its class's, its ring, its policies, and each peer address
// of its baseline and ring with the device holding it. Nil if the device
// is unknown.
func (f *FSM) DeviceTraffic(mac string) *TrafficView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.st
	d := s.devices[mac]
	if d == nil {
		return nil
	}
	v := &TrafficView{
		Index:          s.applied,
		Devices:        map[string]*medmeshv1.Device{mac: d},
		Baselines:      map[string]*medmeshv1.Baseline{},
		ClassBaselines: map[medmeshv1.DeviceClass]*medmeshv1.Baseline{},
		Flows:          map[string][]*medmeshv1.FlowSummary{mac: s.flows[mac]},
		Holders:        map[string]string{},
	}
	resolve := func(addr string) {
		ip := canonIP(addr)
		if ip == "" {
			return
		}
		macs, ok := s.deviceIPs[ip]
		if !ok {
			return
		}
		h := holder(macs)
		v.Holders[ip] = h
		if h != "" {
			v.Devices[h] = s.devices[h]
		}
	}
	for _, ip := range d.GetIpAddresses() {
		resolve(ip)
	}
	if b := s.baselines[baselineKey(mac, 0)]; b != nil {
		v.Baselines[mac] = b
	}
	if b := s.baselines[baselineKey("", d.GetDeviceClass())]; b != nil && d.GetDeviceClass() != 0 {
		v.ClassBaselines[d.GetDeviceClass()] = b
	}
	for _, b := range []*medmeshv1.Baseline{v.Baselines[mac], v.ClassBaselines[d.GetDeviceClass()]} {
		for _, e := range b.GetEntries() {
			if p, err := netip.ParsePrefix(e.GetPeerCidr()); err == nil && p.IsSingleIP() {
				resolve(p.Addr().String())
			} else {
				resolve(e.GetPeerCidr())
			}
		}
	}
	for _, fs := range s.flows[mac] {
		resolve(fs.GetPeerIp())
	}
	for _, name := range sortedKeys(s.policies) {
		if p := s.policies[name]; p.GetDeviceMac() == mac {
			v.Policies = append(v.Policies, p)
		}
	}
	if !s.hasOwnPolicy(mac) && d.GetDeviceClass() != medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
		v.ClassPolicy = s.classPolicyInForce(d.GetDeviceClass())
	}
	return v
}

// holder is the one MAC of a sorted list, or "" for several (or none).
func holder(macs []string) string {
	if len(macs) == 1 {
		return macs[0]
	}
	return ""
}

// Package identity keeps the sensor's device inventory: every device seen,
// keyed by MAC address (or by IP address behind a router's MAC), enriched
// with the identifiers detectors extract and classified by weighted
// evidence into a device class and criticality tier.
package identity

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/internal/safety"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/detect"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config bounds the inventory.
type Config struct {
	// RouterMinIPs is the number of distinct local source addresses behind
	// one MAC from which the MAC is taken to be a router's. A MAC seen with
	// a non-local address is a router's at once.
	RouterMinIPs int
	// LocalPrefixes are the campus's own address ranges, besides the
	// private, link-local and unique-local ones.
	LocalPrefixes []netip.Prefix
	// MaxDevices bounds the inventory; further devices are not tracked.
	MaxDevices int
	// MaxIPs, MaxNames and MaxIdentifiers bound each device's lists.
	MaxIPs         int
	MaxNames       int
	MaxIdentifiers int
	// Vendor maps a MAC to its registered organisation (oui.Lookup).
	Vendor func(mac [6]byte) string
}

// DefaultConfig returns bounds suitable for a floor sensor. Vendor is nil:
// the caller passes oui.Lookup.
func DefaultConfig() Config {
	return Config{RouterMinIPs: 4, MaxDevices: 65536, MaxIPs: 8, MaxNames: 256, MaxIdentifiers: 16}
}

func (c Config) validate() error {
	var errs []error
	if c.RouterMinIPs < 2 {
		errs = append(errs, fmt.Errorf("router min ips %d must be at least 2", c.RouterMinIPs))
	}
	if c.MaxDevices <= 0 || c.MaxIPs <= 0 || c.MaxNames <= 0 || c.MaxIdentifiers <= 0 {
		errs = append(errs, errors.New("max devices, ips, names and identifiers must be positive"))
	}
	return errors.Join(errs...)
}

// Key identifies a device: its MAC, or, behind a router, its IP address
// (MAC zero).
type Key struct {
	MAC flow.MAC
	IP  netip.Addr
}

// String is the device's identifier in the API: the MAC, or "ip:ADDR".
func (k Key) String() string {
	if k.IP.IsValid() {
		return "ip:" + k.IP.String()
	}
	return k.MAC.String()
}

type macState struct {
	ips    []netip.Addr   // own addresses seen, bounded by MaxIPs
	v4     int            // distinct local IPv4 addresses
	nets6  []netip.Prefix // distinct IPv6 /64s (not link-local)
	router bool
	dev    *Device // the MAC's device while it is not a router's
}

// routerV6Nets is the number of IPv6 /64s behind one MAC that makes it a
// router's: a host has its link-local and one or two global prefixes.
const routerV6Nets = 3

// Inventory is the set of known devices. Not safe for concurrent use.
type Inventory struct {
	cfg     Config
	devices map[Key]*Device
	macs    map[flow.MAC]*macState
}

// New returns an empty inventory.
func New(cfg Config) (*Inventory, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("identity config: %w", err)
	}
	return &Inventory{cfg: cfg, devices: make(map[Key]*Device), macs: make(map[flow.MAC]*macState)}, nil
}

func (inv *Inventory) local(ip netip.Addr) bool {
	if ip.IsPrivate() || ip.IsLinkLocalUnicast() {
		return true
	}
	for _, p := range inv.cfg.LocalPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Resolve returns the device that sent or received a packet with this MAC
// and IP address, creating it on first sight. It returns nil for group
// addresses and for hosts outside the campus seen behind a router. It does
// not allocate for a known device.
func (inv *Inventory) Resolve(mac flow.MAC, ip netip.Addr, timeNs int64) *Device {
	if mac[0]&1 != 0 || ip.IsMulticast() || (ip.IsLoopback() && !mac.IsZero()) || ip == broadcast4 {
		return nil
	}
	usable := ip.IsValid() && !ip.IsUnspecified()
	var k Key
	if mac.IsZero() {
		// No link layer (a raw-IP or loopback capture): key by address.
		if !usable || !(inv.local(ip) || ip.IsLoopback()) {
			return nil
		}
		k = Key{IP: ip}
	} else {
		ms := inv.macs[mac]
		if ms != nil && ms.dev != nil && (!ip.IsValid() || slices.Contains(ms.ips, ip)) {
			// Fast path: a known device with a known address.
			d := ms.dev
			if timeNs > d.lastNs {
				d.lastNs = timeNs
			}
			return d
		}
		if ms == nil {
			if len(inv.macs) >= inv.cfg.MaxDevices {
				return nil
			}
			ms = &macState{}
			inv.macs[mac] = ms
		}
		local := usable && inv.local(ip)
		if usable && !ms.router {
			inv.noteAddr(mac, ms, ip, local, timeNs)
		}
		k = Key{MAC: mac}
		if ms.router {
			if !local {
				return nil
			}
			k = Key{IP: ip}
		}
	}
	d := inv.devices[k]
	if d == nil {
		if len(inv.devices) >= inv.cfg.MaxDevices {
			return nil
		}
		d = inv.newDevice(k, timeNs)
		if k.IP.IsValid() {
			d.addIP(ip)
		}
	}
	if timeNs > d.lastNs {
		d.lastNs = timeNs
	}
	if usable && !k.IP.IsValid() {
		d.addIP(ip)
	}
	if !k.IP.IsValid() {
		inv.macs[mac].dev = d
	}
	return d
}

// noteAddr records an address seen behind a MAC and decides whether the
// MAC is a router's: an IPv4 address outside the campus, RouterMinIPs local
// IPv4 addresses, or routerV6Nets IPv6 /64s.
func (inv *Inventory) noteAddr(mac flow.MAC, ms *macState, ip netip.Addr, local bool, timeNs int64) {
	if ip.Is4() || ip.Is4In6() {
		if !local && ip.IsGlobalUnicast() {
			inv.markRouter(mac, ms, "traffic", "routes traffic of non-local addresses", timeNs)
			return
		}
		if !slices.Contains(ms.ips, ip) {
			ms.v4++
			if len(ms.ips) < inv.cfg.MaxIPs {
				ms.ips = append(ms.ips, ip)
			}
			if ms.v4 >= inv.cfg.RouterMinIPs {
				inv.markRouter(mac, ms, "traffic", fmt.Sprintf("%d local addresses behind one MAC", ms.v4), timeNs)
			}
		}
		return
	}
	if slices.Contains(ms.ips, ip) {
		return
	}
	if len(ms.ips) < inv.cfg.MaxIPs {
		ms.ips = append(ms.ips, ip)
	}
	if ip.IsLinkLocalUnicast() {
		return
	}
	if n := netip.PrefixFrom(ip, 64).Masked(); !slices.Contains(ms.nets6, n) {
		ms.nets6 = append(ms.nets6, n)
		if len(ms.nets6) >= routerV6Nets {
			inv.markRouter(mac, ms, "traffic", fmt.Sprintf("addresses of %d IPv6 /64s behind one MAC", len(ms.nets6)), timeNs)
		}
	}
}

func (inv *Inventory) markRouter(mac flow.MAC, ms *macState, source, detail string, timeNs int64) {
	ms.router, ms.dev = true, nil
	d := inv.devices[Key{MAC: mac}]
	if d == nil {
		d = inv.newDevice(Key{MAC: mac}, timeNs)
	}
	d.router = true
	d.addEvidence(source, "router: "+detail, classNetwork, 0.6)
}

func (inv *Inventory) newDevice(k Key, timeNs int64) *Device {
	d := &Device{
		inv: inv, key: k, name: k.String(), firstNs: timeNs, lastNs: timeNs,
		services: make(map[serviceKey]string),
		apps:     make(map[appKey]struct{}),
		names:    make(map[netip.Addr]string),
		dirty:    true,
	}
	if !k.MAC.IsZero() && inv.cfg.Vendor != nil {
		d.vendor = inv.cfg.Vendor(k.MAC)
		if d.vendor != "" {
			if r, ok := matchRules(vendorRules, d.vendor); ok {
				d.addEvidence("oui", "vendor "+d.vendor, r.class, r.weight)
			}
		}
	}
	inv.devices[k] = d
	return d
}

// Lookup returns a known device.
func (inv *Inventory) Lookup(k Key) *Device { return inv.devices[k] }

// Len is the number of devices.
func (inv *Inventory) Len() int { return len(inv.devices) }

// Devices returns the devices ordered by their identifier.
func (inv *Inventory) Devices() []*Device {
	out := make([]*Device, 0, len(inv.devices))
	for _, d := range inv.devices {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Device) int { return strings.Compare(a.name, b.name) })
	return out
}

type serviceKey struct {
	proto uint8
	port  uint16
}

type appKey struct {
	app      string
	outbound bool
}

type evidence struct {
	source, detail string
	class          medmeshv1.DeviceClass
	weight         float64
}

// Device is one device of the inventory. Its methods are called with the
// inventory's owner holding whatever lock protects the inventory.
type Device struct {
	inv     *Inventory
	key     Key
	name    string
	router  bool
	firstNs int64
	lastNs  int64

	ips           []netip.Addr
	vendor        string
	model         string
	hostname      string
	ids           medmeshv1.Identifiers
	evidence      []evidence
	services      map[serviceKey]string
	apps          map[appKey]struct{}
	hl7Peers      []netip.Addr
	protocolsList []string
	names         map[netip.Addr]string

	// Attached is state the inventory's owner keeps with the device (the
	// engine's learner, baseline and scoring state), so that it needs no
	// second lookup per packet.
	Attached any

	tier       medmeshv1.Tier // operator override, or unspecified
	dirty      bool
	class      medmeshv1.DeviceClass
	confidence float64
}

// Key is the device's key.
func (d *Device) Key() Key { return d.key }

// Name is the device's identifier string (Key.String, cached).
func (d *Device) Name() string { return d.name }

// Router reports whether the device is a router.
func (d *Device) Router() bool { return d.router }

// LastSeen is the last packet time seen, in ns.
func (d *Device) LastSeen() int64 { return d.lastNs }

func (d *Device) addIP(ip netip.Addr) {
	if slices.Contains(d.ips, ip) || len(d.ips) >= d.inv.cfg.MaxIPs {
		return
	}
	d.ips = append(d.ips, ip)
}

func (d *Device) addEvidence(source, detail string, class medmeshv1.DeviceClass, weight float64) {
	for _, e := range d.evidence {
		if e.source == source && e.detail == detail {
			return
		}
	}
	if len(d.evidence) >= 4*d.inv.cfg.MaxIdentifiers {
		return
	}
	d.evidence = append(d.evidence, evidence{source, detail, class, weight})
	d.dirty = true
}

func (d *Device) addID(list *[]string, v string) bool {
	if v == "" || slices.Contains(*list, v) || len(*list) >= d.inv.cfg.MaxIdentifiers {
		return false
	}
	*list = append(*list, v)
	return true
}

// classifyName adds evidence from a name if it matches a rule.
func (d *Device) classifyName(source, what, v string) {
	if r, ok := matchRules(nameRules, v); ok {
		d.addEvidence(source, what+" "+v, r.class, r.weight)
	}
}

// Class returns the device's class and confidence. Cached between changes
// of evidence; does not allocate.
func (d *Device) Class() (medmeshv1.DeviceClass, float64) {
	if !d.dirty {
		return d.class, d.confidence
	}
	var miss [medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION + 1]float64
	for i := range miss {
		miss[i] = 1
	}
	for _, e := range d.evidence {
		if int(e.class) < len(miss) && e.weight > 0 {
			miss[e.class] *= 1 - min(e.weight, 0.99)
		}
	}
	d.class, d.confidence = classUnknown, 0
	for c := classPump; int(c) < len(miss); c++ {
		if conf := 1 - miss[c]; conf > d.confidence+1e-9 {
			d.class, d.confidence = c, conf
		}
	}
	d.dirty = false
	return d.class, d.confidence
}

// Tier is the operator's override, else derived from the class.
func (d *Device) Tier() medmeshv1.Tier {
	if d.tier != medmeshv1.Tier_TIER_UNSPECIFIED {
		return d.tier
	}
	c, _ := d.Class()
	return safety.TierForClass(c)
}

// SetTier sets an operator override; TIER_UNSPECIFIED removes it.
func (d *Device) SetTier(t medmeshv1.Tier) { d.tier = t }

// PeerName returns the DNS, TLS or HTTP name the device used for a peer
// address, or "".
func (d *Device) PeerName(peer netip.Addr) string { return d.names[peer] }

// NamePeer remembers a name the device resolved or contacted a peer by.
func (d *Device) NamePeer(peer netip.Addr, name string) {
	if name == "" || !peer.IsValid() {
		return
	}
	if old, ok := d.names[peer]; ok && old == name {
		return
	}
	if _, ok := d.names[peer]; !ok && len(d.names) >= d.inv.cfg.MaxNames {
		return
	}
	d.names[peer] = name
}

// Traffic is one flow as seen from a device.
type Traffic struct {
	Peer     netip.Addr
	Proto    uint8
	Port     uint16 // peer's port outbound, own port inbound
	App      string
	Outbound bool
	// Answered is true when the responder sent packets back.
	Answered bool
}

// ObserveTraffic updates services, protocols and traffic evidence. It does
// not allocate for a service and application the device was already seen
// with.
func (d *Device) ObserveTraffic(t *Traffic) {
	if !t.Outbound && t.Answered && (t.Proto == 6 || t.Proto == 17 || t.Proto == 132) {
		sk := serviceKey{t.Proto, t.Port}
		if app, ok := d.services[sk]; !ok || (app == "" && t.App != "") {
			if len(d.services) < 4*d.inv.cfg.MaxIdentifiers {
				d.services[sk] = t.App
				d.serviceEvidence(sk)
			}
		}
	}
	if t.App == "" {
		return
	}
	if t.App == "hl7" && !t.Outbound && len(d.hl7Peers) < 2 && !slices.Contains(d.hl7Peers, t.Peer) {
		d.hl7Peers = append(d.hl7Peers, t.Peer)
		if len(d.hl7Peers) == 2 {
			d.addEvidence("hl7", "receives HL7 from several senders", classHL7, 0.5)
		}
	}
	ak := appKey{t.App, t.Outbound}
	if _, ok := d.apps[ak]; ok {
		return
	}
	d.apps[ak] = struct{}{}
	switch {
	case t.App == "dicom" && t.Outbound:
		d.addEvidence("dicom", "initiates DICOM associations", classImaging, 0.35)
	case t.App == "dicom":
		d.addEvidence("dicom", "accepts DICOM associations", classPACS, 0.45)
	case t.App == "bacnet" || t.App == "modbus":
		d.addEvidence("traffic", "speaks "+t.App, classBuilding, 0.5)
	}
	if _, ok := d.apps[appKey{"hl7", true}]; ok {
		if _, ok := d.apps[appKey{"hl7", false}]; ok {
			d.addEvidence("hl7", "both sends and receives HL7", classHL7, 0.3)
		}
	}
}

func (d *Device) serviceEvidence(sk serviceKey) {
	switch {
	case sk.proto == 17 && sk.port == 67:
		d.addEvidence("traffic", "answers DHCP", classNetwork, 0.4)
	case sk.port == 53:
		d.addEvidence("traffic", "answers DNS", classNetwork, 0.2)
	case sk.proto == 17 && sk.port == 47808:
		d.addEvidence("traffic", "answers BACnet", classBuilding, 0.5)
	case sk.proto == 6 && sk.port == 502:
		d.addEvidence("traffic", "answers Modbus/TCP", classBuilding, 0.4)
	case sk.proto == 6 && (sk.port == 3389 || sk.port == 445):
		d.addEvidence("traffic", fmt.Sprintf("answers on TCP %d", sk.port), classIT, 0.15)
	}
}

// Role says what a detection's fields describe about a device.
type Role uint8

const (
	// Subject: the device is what the fields describe — the sender of an
	// HL7 message, a DHCP request, an HTTP request or a TLS ClientHello,
	// the asker of a DNS query. Everything but DICOM AE titles applies.
	Subject Role = iota
	// Initiator: the device opened a DICOM association; only the calling
	// AE title applies.
	Initiator
	// Responder: the device accepted a DICOM association; only the called
	// AE title applies.
	Responder
)

// ApplyDetection records the named fields of a detection that describe
// this device in the given role. peer is the other end, for peer names.
func (d *Device) ApplyDetection(det *detect.Detection, role Role, peer netip.Addr) {
	switch role {
	case Initiator:
		if v := det.Field(detect.FieldDICOMCallingAE); d.addID(&d.ids.DicomAeTitles, v) {
			d.classifyName("dicom", "AE title", v)
		}
		return
	case Responder:
		if v := det.Field(detect.FieldDICOMCalledAE); d.addID(&d.ids.DicomAeTitles, v) {
			d.classifyName("dicom", "AE title", v)
		}
		return
	}
	if det.App != "" {
		d.addID(&d.protocolsList, det.App)
	}
	for _, f := range det.Fields {
		d.applyField(f, peer)
	}
	for _, a := range det.Answers {
		if ip, err := netip.ParseAddr(a.Addr); err == nil {
			d.NamePeer(ip, a.Name)
		}
	}
}

func (d *Device) applyField(f detect.Field, peer netip.Addr) {
	v := f.Value
	ids := &d.ids
	switch f.Name {
	case detect.FieldHL7SendingApp:
		if d.addID(&ids.Hl7SendingApplications, v) {
			d.classifyName("hl7", "HL7 sending application", v)
		}
	case detect.FieldHL7SendingFacility:
		d.addID(&ids.Hl7SendingFacilities, v)
	case detect.FieldHL7UDI:
		if d.addID(&ids.Hl7Udis, v) {
			d.classifyName("hl7", "UDI", v)
		}
	case detect.FieldDICOMImplClass, detect.FieldDICOMImplVersion:
		if d.addID(&ids.DicomImplementations, v) {
			d.classifyName("dicom", "DICOM implementation", v)
		}
	case detect.FieldDHCPHostname:
		if ids.DhcpHostname != v {
			ids.DhcpHostname, d.hostname = v, v
			d.classifyName("dhcp", "hostname", v)
		}
	case detect.FieldDHCPVendorClass:
		if ids.DhcpVendorClass != v {
			ids.DhcpVendorClass = v
			d.classifyName("dhcp", "vendor class", v)
		}
	case detect.FieldDHCPFingerprint:
		ids.DhcpFingerprint = v
	case detect.FieldDHCPClientID:
		ids.DhcpClientId = v
	case detect.FieldDHCPFQDN:
		if ids.DhcpFqdn != v {
			ids.DhcpFqdn = v
			if d.hostname == "" {
				d.hostname = v
			}
			d.classifyName("dhcp", "FQDN", v)
		}
	case detect.FieldDHCPMUDURL:
		ids.MudUrl = v
	case detect.FieldFriendlyName:
		if d.addID(&ids.FriendlyNames, v) {
			d.classifyName("ssdp", "friendly name", v)
		}
	case detect.FieldModel:
		if d.model == "" {
			d.model = v
			d.classifyName("ssdp", "model", v)
		}
	case detect.FieldHTTPHost, detect.FieldTLSSNI:
		d.NamePeer(peer, v)
		if d.addID(&ids.ServerNames, v) {
			d.siteEvidence(v)
		}
	case detect.FieldDNSQuery:
		d.siteEvidence(v)
	case detect.FieldHTTPUserAgent:
		if d.addID(&ids.UserAgents, v) {
			l := strings.ToLower(v)
			if strings.Contains(l, "windows nt") || strings.Contains(l, "macintosh") || strings.Contains(l, "x11; linux") {
				d.addEvidence("http", "desktop browser user agent", classIT, 0.35)
			}
		}
	}
}

func (d *Device) siteEvidence(name string) {
	if site, ok := consumerSite(name); ok {
		d.addEvidence("traffic", "contacts consumer site "+site, classIT, 0.2)
	}
}

// Proto returns the device as protobuf, with deterministic ordering.
func (d *Device) Proto() *medmeshv1.Device {
	class, conf := d.Class()
	pb := &medmeshv1.Device{
		Mac:             d.name,
		Vendor:          d.vendor,
		Model:           d.model,
		Hostname:        d.hostname,
		DeviceClass:     class,
		ClassConfidence: round3(conf),
		Tier:            d.Tier(),
		TierOverridden:  d.tier != medmeshv1.Tier_TIER_UNSPECIFIED,
		FirstSeen:       timestamppb.New(time.Unix(0, d.firstNs).UTC()),
		LastSeen:        timestamppb.New(time.Unix(0, d.lastNs).UTC()),
		Identifiers:     cloneIDs(&d.ids),
	}
	ips := slices.Clone(d.ips)
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		pb.IpAddresses = append(pb.IpAddresses, ip.String())
	}
	ev := slices.Clone(d.evidence)
	slices.SortStableFunc(ev, func(a, b evidence) int {
		if a.class == class && b.class != class {
			return -1
		}
		if b.class == class && a.class != class {
			return 1
		}
		if a.weight != b.weight {
			if a.weight > b.weight {
				return -1
			}
			return 1
		}
		return strings.Compare(a.source+a.detail, b.source+b.detail)
	})
	for _, e := range ev {
		pb.ClassEvidence = append(pb.ClassEvidence, &medmeshv1.Evidence{Source: e.source, Detail: e.detail + " (" + names.Enum(e.class) + ")", Weight: e.weight})
	}
	protos := map[string]bool{}
	for ak := range d.apps {
		protos[ak.app] = true
	}
	for _, p := range d.protocolsList {
		protos[p] = true
	}
	for p := range protos {
		pb.Protocols = append(pb.Protocols, p)
	}
	slices.Sort(pb.Protocols)
	svcs := make([]serviceKey, 0, len(d.services))
	for sk := range d.services {
		svcs = append(svcs, sk)
	}
	slices.SortFunc(svcs, func(a, b serviceKey) int {
		if a.proto != b.proto {
			return int(a.proto) - int(b.proto)
		}
		return int(a.port) - int(b.port)
	})
	for _, sk := range svcs {
		pb.Services = append(pb.Services, &medmeshv1.Service{Protocol: uint32(sk.proto), Port: uint32(sk.port), App: d.services[sk]})
	}
	return pb
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func cloneIDs(s *medmeshv1.Identifiers) *medmeshv1.Identifiers {
	return &medmeshv1.Identifiers{
		DicomAeTitles:          slices.Clone(s.DicomAeTitles),
		Hl7Udis:                slices.Clone(s.Hl7Udis),
		Hl7SendingApplications: slices.Clone(s.Hl7SendingApplications),
		Hl7SendingFacilities:   slices.Clone(s.Hl7SendingFacilities),
		DhcpHostname:           s.DhcpHostname,
		DhcpVendorClass:        s.DhcpVendorClass,
		DhcpFingerprint:        s.DhcpFingerprint,
		DhcpClientId:           s.DhcpClientId,
		DhcpFqdn:               s.DhcpFqdn,
		MudUrl:                 s.MudUrl,
		FriendlyNames:          slices.Clone(s.FriendlyNames),
		DicomImplementations:   slices.Clone(s.DicomImplementations),
		ServerNames:            slices.Clone(s.ServerNames),
		UserAgents:             slices.Clone(s.UserAgents),
	}
}

// Package identity keeps the sensor's device inventory: every device seen,
// keyed by MAC address, enriched with the identifiers detectors extract,
// classified by weighted evidence into a device class and criticality
// tier, with the model and firmware its identifiers reveal.
//
// What is not a device: a router's MAC carries the addresses it forwards,
// and those are not the router's (a device behind a router is seen, by
// MAC, only by a sensor on its own segment); a MAC seen only with
// link-local addresses (a sensor's own capture link, IPv6 housekeeping)
// is no device either. Routers are recognised by decremented TTLs, many
// addresses behind one MAC, router advertisements, proxy ARP and being
// the router a DHCP server advertises; they are devices of class router
// with their own addresses only. Only a capture without link layer keys
// devices by address ("ip:ADDR").
package identity

import (
	"bytes"
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

// Key identifies a device: its MAC, or, in a capture without link layer,
// its IP address (MAC zero).
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
	ips    []netip.Addr   // source addresses seen behind the MAC, bounded by MaxIPs
	own    []netip.Addr   // addresses the MAC showed are its own (ARP, ND, an undecremented TTL)
	v4     int            // distinct local IPv4 addresses
	nets6  []netip.Prefix // distinct IPv6 /64s (not link-local)
	claims int            // distinct IPv4 addresses the MAC answered ARP for
	router bool
	dev    *Device // the MAC's device, a router's included
}

// maxAdvertised bounds the router addresses DHCP servers advertised.
const maxAdvertised = 64

// routerV6Nets is the number of IPv6 /64s behind one MAC that makes it a
// router's: a host has its link-local and one or two global prefixes.
const routerV6Nets = 3

// Inventory is the set of known devices. Not safe for concurrent use.
type Inventory struct {
	cfg        Config
	devices    map[Key]*Device
	macs       map[flow.MAC]*macState
	advertised []netip.Addr // router addresses DHCP servers advertised (option 3)
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
// addresses, for addresses a router forwards (they are not its own) and
// for a MAC seen only with link-local addresses. An invalid ip stands for
// "this MAC, whatever its address" (a baseline imported by MAC), an
// unspecified one for a host without an address yet (a DHCP client): both
// create the device. It does not allocate for a known device.
func (inv *Inventory) Resolve(mac flow.MAC, ip netip.Addr, timeNs int64) *Device {
	if mac[0]&1 != 0 || ip.IsMulticast() || (ip.IsLoopback() && !mac.IsZero()) || ip == broadcast4 {
		return nil
	}
	if mac.IsZero() {
		// No link layer (a raw-IP or loopback capture): key by address.
		if !ip.IsValid() || ip.IsUnspecified() || !(inv.local(ip) || ip.IsLoopback()) {
			return nil
		}
		k := Key{IP: ip}
		d := inv.devices[k]
		if d == nil {
			if len(inv.devices) >= inv.cfg.MaxDevices {
				return nil
			}
			d = inv.newDevice(k, timeNs)
			d.addIP(ip)
		}
		d.touch(timeNs)
		return d
	}
	ms := inv.macs[mac]
	if ms != nil && ms.dev != nil && (!ip.IsValid() || slices.Contains(ms.ips, ip)) {
		// Fast path: a known device with a known address.
		ms.dev.touch(timeNs)
		return ms.dev
	}
	// IPv6 housekeeping (duplicate address detection, MLD) is sent from
	// the unspecified address: no device by itself, like link-local.
	linkLocal := ip.IsLinkLocalUnicast() || (ip.Is6() && ip.IsUnspecified())
	if ms == nil {
		if linkLocal || len(inv.macs) >= inv.cfg.MaxDevices {
			return nil // a link-local address alone makes no device
		}
		ms = &macState{}
		inv.macs[mac] = ms
	}
	switch {
	case ms.router:
		// A router's own addresses are its; what it forwards is not.
		if ip.IsValid() && !linkLocal && !ip.IsUnspecified() && !slices.Contains(ms.own, ip) {
			return nil
		}
	case linkLocal:
		if ms.dev != nil {
			ms.dev.touch(timeNs)
		}
		return ms.dev
	case ip.IsValid() && !ip.IsUnspecified():
		if inv.noteAddr(mac, ms, ip, inv.local(ip), timeNs) {
			return nil // the address that made the MAC a router's is forwarded
		}
	}
	d := ms.dev
	if d == nil {
		if len(inv.devices) >= inv.cfg.MaxDevices {
			return nil
		}
		d = inv.newDevice(Key{MAC: mac}, timeNs)
		ms.dev = d
	}
	d.touch(timeNs)
	if ip.IsValid() && !ip.IsUnspecified() && !linkLocal {
		d.addIP(ip)
	}
	return d
}

func (d *Device) touch(timeNs int64) {
	if timeNs > d.lastNs {
		d.lastNs = timeNs
	}
}

// noteAddr records a source address seen behind a MAC that is not (yet) a
// router's and reports whether it made the MAC a router's: an IPv4
// address outside the campus, RouterMinIPs local IPv4 addresses, or
// routerV6Nets IPv6 /64s.
func (inv *Inventory) noteAddr(mac flow.MAC, ms *macState, ip netip.Addr, local bool, timeNs int64) bool {
	if ip.Is4() || ip.Is4In6() {
		if !local && ip.IsGlobalUnicast() && !slices.Contains(ms.own, ip) {
			// Unless its TTL said otherwise, an address outside the
			// campus behind a MAC is one the MAC routes for.
			inv.markRouter(mac, ms, "traffic", "sends for "+ip.String()+", outside the campus", timeNs)
			return true
		}
		if !slices.Contains(ms.ips, ip) {
			ms.v4++
			if len(ms.ips) < inv.cfg.MaxIPs {
				ms.ips = append(ms.ips, ip)
			}
			if ms.v4 >= inv.cfg.RouterMinIPs {
				inv.markRouter(mac, ms, "traffic", fmt.Sprintf("%d local addresses behind one MAC", ms.v4), timeNs)
				return !slices.Contains(ms.own, ip)
			}
		}
		return false
	}
	if slices.Contains(ms.ips, ip) {
		return false
	}
	if len(ms.ips) < inv.cfg.MaxIPs {
		ms.ips = append(ms.ips, ip)
	}
	if n := netip.PrefixFrom(ip, 64).Masked(); !slices.Contains(ms.nets6, n) {
		ms.nets6 = append(ms.nets6, n)
		if len(ms.nets6) >= routerV6Nets {
			inv.markRouter(mac, ms, "traffic", fmt.Sprintf("addresses of %d IPv6 /64s behind one MAC", len(ms.nets6)), timeNs)
			return !slices.Contains(ms.own, ip)
		}
	}
	return false
}

// markRouter makes mac a router's. Its device keeps only the campus
// addresses the MAC showed are its own, and forgets everything it learned
// from traffic it may have forwarded (services, applications, identifiers,
// model, host name, peer names); its vendor stays.
func (inv *Inventory) markRouter(mac flow.MAC, ms *macState, source, detail string, timeNs int64) {
	d := ms.dev
	if d == nil {
		if len(inv.devices) >= inv.cfg.MaxDevices {
			ms.router = true
			return
		}
		d = inv.newDevice(Key{MAC: mac}, timeNs)
		ms.dev = d
	}
	if !ms.router {
		ms.router = true
		// An address outside the campus that looked like the MAC's own
		// (an undecremented TTL) was, on a router, most likely forwarded
		// from a host that sets an unusual TTL.
		ms.own = slices.DeleteFunc(ms.own, func(a netip.Addr) bool { return !a.IsLinkLocalUnicast() && !inv.local(a) })
		ms.ips = ms.ips[:0]
		d.ips = d.ips[:0]
		for _, a := range ms.own {
			if !a.IsLinkLocalUnicast() {
				ms.ips = append(ms.ips, a)
				d.addIP(a)
			}
		}
		clear(d.services)
		clear(d.apps)
		clear(d.names)
		d.hl7Peers = d.hl7Peers[:0]
		d.protocolsList = d.protocolsList[:0]
		d.ids = medmeshv1.Identifiers{}
		d.hostname, d.model, d.firmware, d.modelSrc, d.firmwareSrc = "", "", "", 0, 0
		d.evidence = slices.DeleteFunc(d.evidence, func(e evidence) bool { return e.source != "oui" })
		d.dirty = true
	}
	d.router = true
	d.addEvidence(source, "router: "+detail, classRouter, 0.9)
}

// noteOwn records that mac showed ip is its own (ARP, ND, a packet with an
// undecremented TTL). A router's own address is attached to its device.
func (inv *Inventory) noteOwn(mac flow.MAC, ms *macState, ip netip.Addr, timeNs int64) {
	if ms.router && !ip.IsLinkLocalUnicast() && !inv.local(ip) {
		return // see markRouter
	}
	if !slices.Contains(ms.own, ip) && len(ms.own) < inv.cfg.MaxIPs {
		ms.own = append(ms.own, ip)
	}
	if slices.Contains(inv.advertised, ip) {
		inv.markRouter(mac, ms, "dhcp", "the router a DHCP server advertises ("+ip.String()+")", timeNs)
	}
	if ms.router && !ip.IsLinkLocalUnicast() {
		if !slices.Contains(ms.ips, ip) && len(ms.ips) < inv.cfg.MaxIPs {
			ms.ips = append(ms.ips, ip)
		}
		if ms.dev != nil {
			ms.dev.addIP(ip)
		}
	}
}

// initialTTL reports whether ttl is one hosts start packets with: such a
// packet was not forwarded on its way here.
func initialTTL(ttl uint8) bool {
	switch ttl {
	case 32, 60, 64, 128, 255:
		return true
	}
	return false
}

// ObserveTTL looks at one unicast packet's TTL (IPv4) or hop limit (IPv6):
// a decremented one says mac forwarded it, so mac is a router's and src is
// not its address; an initial one says src is mac's own (even outside the
// campus's ranges: a host with a public address on this segment).
func (inv *Inventory) ObserveTTL(mac flow.MAC, src, dst netip.Addr, ttl uint8, timeNs int64) {
	if mac.IsZero() || mac[0]&1 != 0 || ttl <= 1 || !src.IsValid() || src.IsUnspecified() || src.IsLinkLocalUnicast() ||
		src.IsLoopback() || !dst.IsValid() || dst.IsMulticast() || dst == broadcast4 {
		return
	}
	ms := inv.macs[mac]
	if ms != nil && slices.Contains(ms.own, src) {
		return
	}
	if ms == nil {
		if len(inv.macs) >= inv.cfg.MaxDevices {
			return
		}
		ms = &macState{}
		inv.macs[mac] = ms
	}
	if initialTTL(ttl) {
		inv.noteOwn(mac, ms, src, timeNs)
		return
	}
	if !ms.router {
		inv.markRouter(mac, ms, "ttl", fmt.Sprintf("forwards packets of %s (TTL %d)", src, ttl), timeNs)
	}
}

// ObserveARP records what an ARP packet says: its sender owns its sender
// address (a request always says so; a reply from a router may answer for
// another host, proxy ARP, and says nothing then). A MAC that claims
// RouterMinIPs addresses is a router's. The sender becomes a device.
func (inv *Inventory) ObserveARP(a detect.ARP, timeNs int64) {
	mac, ip := a.SenderMAC, a.SenderIP
	if mac.IsZero() || mac[0]&1 != 0 || !ip.IsValid() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip == broadcast4 {
		return // a probe (RFC 5227), or an IPv4 link-local address
	}
	ms := inv.macs[mac]
	if ms != nil && slices.Contains(ms.own, ip) {
		if ms.dev != nil {
			ms.dev.touch(timeNs)
		}
		return
	}
	if ms != nil && ms.router && a.Op == 2 {
		return
	}
	if ms == nil || !ms.router {
		inv.Resolve(mac, ip, timeNs)
		if ms = inv.macs[mac]; ms == nil {
			return
		}
	}
	if ip.Is4() {
		ms.claims++
	}
	inv.noteOwn(mac, ms, ip, timeNs)
	if ms.claims >= inv.cfg.RouterMinIPs && !ms.router {
		inv.markRouter(mac, ms, "arp", fmt.Sprintf("claims %d addresses in ARP", ms.claims), timeNs)
	}
}

// ObserveND records what a neighbour-discovery message from mac (source
// src) says: a router advertisement, a neighbour advertisement with the
// router flag or a redirect makes the link-layer address a router's.
func (inv *Inventory) ObserveND(mac flow.MAC, src netip.Addr, n detect.ND, timeNs int64) {
	if !n.LinkAddr.IsZero() && (n.Type == detect.NDRouterAdvertisement || n.Type == detect.NDNeighborAdvertisement || n.Type == detect.NDRouterSolicitation) {
		mac = n.LinkAddr
	}
	if mac.IsZero() || mac[0]&1 != 0 {
		return
	}
	ms := inv.macs[mac]
	if ms == nil {
		if !n.Router || len(inv.macs) >= inv.cfg.MaxDevices {
			return // a host's ND alone makes no device
		}
		ms = &macState{}
		inv.macs[mac] = ms
	}
	for _, a := range []netip.Addr{src, n.Target} {
		if a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && (a == src || n.Type == detect.NDNeighborAdvertisement) {
			inv.noteOwn(mac, ms, a, timeNs)
		}
	}
	if n.Router && !ms.router {
		what := map[uint8]string{detect.NDRouterAdvertisement: "sends router advertisements",
			detect.NDNeighborAdvertisement: "advertises itself as a router (ND router flag)",
			detect.NDRedirect:              "sends ICMPv6 redirects"}[n.Type]
		inv.markRouter(mac, ms, "nd", what, timeNs)
	}
}

// AdvertisedRouter records a router address a DHCP server handed out
// (option 3): the MAC that owns it is a router's.
func (inv *Inventory) AdvertisedRouter(ip netip.Addr, timeNs int64) {
	if !ip.IsValid() || ip.IsUnspecified() || slices.Contains(inv.advertised, ip) || len(inv.advertised) >= maxAdvertised {
		return
	}
	inv.advertised = append(inv.advertised, ip)
	macs := make([]flow.MAC, 0, 1)
	for mac, ms := range inv.macs {
		if slices.Contains(ms.own, ip) {
			macs = append(macs, mac)
		}
	}
	slices.SortFunc(macs, func(a, b flow.MAC) int { return bytes.Compare(a[:], b[:]) })
	for _, mac := range macs {
		inv.markRouter(mac, inv.macs[mac], "dhcp", "the router a DHCP server advertises ("+ip.String()+")", timeNs)
	}
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
	firmware      string
	modelSrc      int8 // rank of the source of model (product.go)
	firmwareSrc   int8
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
	if ip.IsLinkLocalUnicast() || slices.Contains(d.ips, ip) || len(d.ips) >= d.inv.cfg.MaxIPs {
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
	var miss [maxClass + 1]float64
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
	if !t.Outbound && (t.Answered || oneWay(t)) && (t.Proto == 6 || t.Proto == 17 || t.Proto == 132) {
		sk := serviceKey{t.Proto, t.Port}
		if app, ok := d.services[sk]; !ok || (app == "" && t.App != "") {
			if ok || len(d.services) < 4*d.inv.cfg.MaxIdentifiers {
				d.services[sk] = t.App
				d.serviceEvidence(sk)
			}
		}
	}
	if t.App == "" {
		return
	}
	if t.App == "hl7" && !t.Outbound && t.Answered && len(d.hl7Peers) < 2 && !slices.Contains(d.hl7Peers, t.Peer) {
		d.hl7Peers = append(d.hl7Peers, t.Peer)
		if len(d.hl7Peers) == 2 {
			d.addEvidence("hl7", "receives HL7 from several senders", classHL7, 0.4)
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
	case t.App == "dicom" && t.Answered:
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

// oneWay reports whether t is a use of a service that never answers
// (syslog): receiving it is serving it.
func oneWay(t *Traffic) bool {
	return t.App == "syslog" || (t.App == "" && t.Proto == 17 && t.Port == 514)
}

// serviceEvidence classes a server by what it serves.
func (d *Device) serviceEvidence(sk serviceKey) {
	app := d.services[sk]
	switch {
	case app == "dhcp" || sk.proto == 17 && sk.port == 67:
		d.addEvidence("traffic", "answers DHCP", classDHCPDNS, 0.5)
	case app == "dns" || sk.port == 53:
		d.addEvidence("traffic", "answers DNS", classDHCPDNS, 0.4)
	case app == "ntp" || sk.proto == 17 && sk.port == 123:
		d.addEvidence("traffic", "answers NTP", classNTP, 0.5)
	case app == "syslog" || sk.proto == 17 && sk.port == 514:
		d.addEvidence("traffic", "receives syslog", classSyslog, 0.5)
	case app == "ldap" || sk.proto == 6 && (sk.port == 389 || sk.port == 636 || sk.port == 3268 || sk.port == 3269):
		d.addEvidence("traffic", "answers LDAP", classDir, 0.5)
	case sk.port == 88:
		d.addEvidence("traffic", "answers Kerberos", classDir, 0.4)
	case app == "hl7":
		d.addEvidence("traffic", fmt.Sprintf("answers HL7 on TCP %d", sk.port), classHL7, 0.3)
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
			d.nameProduct(v)
		}
	case detect.FieldHL7SendingFacility:
		d.addID(&ids.Hl7SendingFacilities, v)
	case detect.FieldHL7UDI:
		if d.addID(&ids.Hl7Udis, v) {
			d.classifyName("hl7", "UDI", v)
			d.setModel(udiModel(v), srcHL7)
		}
	case detect.FieldHL7Software:
		if d.addID(&ids.Hl7Software, v) {
			d.classifyName("hl7", "HL7 software", v)
		}
		d.setModel(v, srcHL7)
	case detect.FieldHL7SoftwareVer:
		d.setFirmware(v, srcHL7)
	case detect.FieldDICOMImplClass:
		if d.addID(&ids.DicomImplementations, v) {
			d.classifyName("dicom", "DICOM implementation", v)
		}
	case detect.FieldDICOMImplVersion:
		if d.addID(&ids.DicomImplementations, v) {
			d.classifyName("dicom", "DICOM implementation", v)
			d.setFirmware(v, srcDICOM)
		}
	case detect.FieldDHCPHostname:
		if ids.DhcpHostname != v {
			ids.DhcpHostname, d.hostname = v, v
			d.classifyName("dhcp", "hostname", v)
			d.nameProduct(v)
		}
	case detect.FieldDHCPVendorClass:
		if ids.DhcpVendorClass != v {
			ids.DhcpVendorClass = v
			d.classifyName("dhcp", "vendor class", v)
			model, fw := vendorClassProduct(v)
			d.setModel(model, srcDevice)
			d.setFirmware(fw, srcDevice)
			d.nameProduct(v)
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
			d.nameProduct(v)
		}
	case detect.FieldModel:
		if d.modelSrc < srcDevice {
			d.classifyName("ssdp", "model", v)
		}
		d.setModel(v, srcDevice)
	case detect.FieldSSDPServer:
		if d.addID(&ids.SsdpServers, v) {
			model, fw := serverProduct(v)
			d.setModel(model, srcSSDPServer)
			d.setFirmware(fw, srcSSDPServer)
		}
	case detect.FieldHTTPServer:
		if d.addID(&ids.HttpServers, v) {
			d.setFirmware(httpServerFirmware(v), srcHTTPServer)
		}
	case detect.FieldSNMPSysDescr:
		if ids.SnmpSysDescr != v {
			ids.SnmpSysDescr = v
			d.classifyName("snmp", "sysDescr", v)
			d.setFirmware(sysDescrFirmware(v), srcSNMP)
		}
	case detect.FieldSNMPSysName:
		if ids.SnmpSysName != v {
			ids.SnmpSysName = v
			if d.hostname == "" {
				d.hostname = v
			}
			d.nameProduct(v)
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
		Firmware:        d.firmware,
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
		HttpServers:            slices.Clone(s.HttpServers),
		SsdpServers:            slices.Clone(s.SsdpServers),
		SnmpSysDescr:           s.SnmpSysDescr,
		SnmpSysName:            s.SnmpSysName,
		Hl7Software:            slices.Clone(s.Hl7Software),
	}
}

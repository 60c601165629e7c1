package identity

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/detect"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newInv(t *testing.T, vendors map[[3]byte]string) *Inventory {
	t.Helper()
	c := DefaultConfig()
	c.Vendor = func(m [6]byte) string { return vendors[[3]byte{m[0], m[1], m[2]}] }
	inv, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestClassification(t *testing.T) {
	inv := newInv(t, map[[3]byte]string{{0, 0x0a, 0xf7}: "Becton Dickinson CareFusion", {0, 0x09, 0xfb}: "Philips Medical Systems"})
	pump := inv.Resolve(flow.MAC{0, 0x0a, 0xf7, 1, 2, 3}, ip("10.0.0.5"), 1)
	pump.ApplyDetection(&detect.Detection{App: "dhcp", Fields: []detect.Field{
		{Name: detect.FieldDHCPHostname, Value: "ALARIS-8015-ICU3"}, {Name: detect.FieldDHCPVendorClass, Value: "CareFusion"}}}, Subject, netip.Addr{})
	if c, conf := pump.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP || conf < 0.7 {
		t.Errorf("pump class %v %.2f", c, conf)
	}
	if pump.Tier() != medmeshv1.Tier_TIER_LIFE_CRITICAL {
		t.Errorf("pump tier %v", pump.Tier())
	}
	pump.SetTier(medmeshv1.Tier_TIER_CLINICAL)
	if pb := pump.Proto(); pb.GetTier() != medmeshv1.Tier_TIER_CLINICAL || !pb.GetTierOverridden() {
		t.Errorf("override not applied: %v %v", pb.GetTier(), pb.GetTierOverridden())
	}

	// DICOM: the caller is a modality, the acceptor a PACS.
	ct := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 0x10}, ip("10.0.1.10"), 1)
	arch := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 0x11}, ip("10.0.1.11"), 1)
	det := &detect.Detection{App: "dicom", Fields: []detect.Field{
		{Name: detect.FieldDICOMCallingAE, Value: "CT_SCANNER1"}, {Name: detect.FieldDICOMCalledAE, Value: "PACS_ARCHIVE"}}}
	ct.ApplyDetection(det, Initiator, arch.ips[0])
	arch.ApplyDetection(det, Responder, ct.ips[0])
	ct.ObserveTraffic(&Traffic{Peer: ip("10.0.1.11"), Proto: 6, Port: 104, App: "dicom", Outbound: true, Answered: true})
	arch.ObserveTraffic(&Traffic{Peer: ip("10.0.1.10"), Proto: 6, Port: 104, App: "dicom", Answered: true})
	if c, _ := ct.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY {
		t.Errorf("DICOM caller class %v", c)
	}
	if c, _ := arch.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_PACS {
		t.Errorf("DICOM acceptor class %v", c)
	}
	if pb := arch.Proto(); len(pb.GetServices()) != 1 || pb.GetServices()[0].GetPort() != 104 || pb.GetIdentifiers().GetDicomAeTitles()[0] != "PACS_ARCHIVE" {
		t.Errorf("archive services %v ids %v", pb.GetServices(), pb.GetIdentifiers())
	}

	// BACnet speaker: building automation, non-clinical.
	ahu := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 0x20}, ip("10.0.2.20"), 1)
	ahu.ObserveTraffic(&Traffic{Peer: ip("10.0.2.1"), Proto: 17, Port: 47808, App: "bacnet", Answered: true})
	if c, _ := ahu.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION || ahu.Tier() != medmeshv1.Tier_TIER_NON_CLINICAL {
		t.Errorf("bacnet device %v %v", c, ahu.Tier())
	}

	// A browser to consumer sites: IT workstation.
	ws := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 0x30}, ip("10.0.3.30"), 1)
	ws.ApplyDetection(&detect.Detection{App: "http", Fields: []detect.Field{
		{Name: detect.FieldHTTPHost, Value: "www.youtube.com"},
		{Name: detect.FieldHTTPUserAgent, Value: "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}}}, Subject, ip("142.250.1.1"))
	if c, _ := ws.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION {
		t.Errorf("browser class %v", c)
	}
	if ws.PeerName(ip("142.250.1.1")) != "www.youtube.com" {
		t.Errorf("peer name not kept")
	}

	// HL7 received from two senders: an interface engine.
	eng := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 0x40}, ip("10.0.4.40"), 1)
	eng.ObserveTraffic(&Traffic{Peer: ip("10.0.0.5"), Proto: 6, Port: 2575, App: "hl7", Answered: true})
	eng.ObserveTraffic(&Traffic{Peer: ip("10.0.0.6"), Proto: 6, Port: 2575, App: "hl7", Answered: true})
	if c, _ := eng.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE {
		t.Errorf("hl7 receiver class %v", c)
	}

	unknown := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 0x50}, ip("10.0.5.50"), 1)
	if c, conf := unknown.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN || conf != 0 {
		t.Errorf("device without evidence: %v %v", c, conf)
	}
}

func TestRouter(t *testing.T) {
	inv := newInv(t, nil)
	gw := flow.MAC{0, 0, 0x0c, 9, 9, 9}
	// The gateway asks who has a device's address: 10.0.0.1 is its own.
	inv.ObserveARP(detect.ARP{Op: 1, SenderMAC: gw, SenderIP: ip("10.0.0.1"), TargetIP: ip("10.0.0.5")}, 1)
	// Traffic from the internet arrives with the router's MAC.
	if d := inv.Resolve(gw, ip("198.51.100.7"), 1); d != nil {
		t.Fatalf("external host behind the router became device %s", d.Name())
	}
	r := inv.Lookup(Key{MAC: gw})
	if r == nil || !r.Router() {
		t.Fatal("router MAC not marked")
	}
	if c, _ := r.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER || r.Tier() != medmeshv1.Tier_TIER_NON_CLINICAL {
		t.Errorf("router class %v tier %v", c, r.Tier())
	}
	// Hosts of another subnet behind it are no devices here, and their
	// addresses are not the router's.
	if d := inv.Resolve(gw, ip("10.8.0.4"), 2); d != nil {
		t.Fatalf("routed host became device %s", d.Name())
	}
	if got := r.Proto().GetIpAddresses(); len(got) != 1 || got[0] != "10.0.0.1" {
		t.Errorf("router addresses %v, want its own 10.0.0.1 only", got)
	}
	if d := inv.Resolve(gw, ip("10.0.0.1"), 3); d != r {
		t.Errorf("the router's own address resolved to %v", d)
	}
	// A MAC with many local addresses is a router's as well; the address
	// that tipped it is not attached.
	l3 := flow.MAC{2, 0, 0, 0, 0, 0x99}
	for i := range 4 {
		inv.Resolve(l3, netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}), 3)
	}
	if d := inv.Lookup(Key{MAC: l3}); d == nil || !d.Router() || len(d.Proto().GetIpAddresses()) != 0 {
		t.Errorf("MAC with 4 local addresses: %v", d.Proto())
	}
	// An IPv6 host with global addresses is not a router; its link-local
	// address is not listed. A MAC with addresses of three /64s is.
	h6 := flow.MAC{2, 0, 0, 0, 0, 0x66}
	for _, a := range []string{"2001:db8:1::10", "fe80::1", "2001:db8:1::11"} {
		if d := inv.Resolve(h6, ip(a), 4); d == nil || d.Name() != h6.String() {
			t.Fatalf("IPv6 host address %s resolved to %v", a, d)
		}
	}
	if d := inv.Lookup(Key{MAC: h6}); d.Router() || len(d.Proto().GetIpAddresses()) != 2 {
		t.Errorf("IPv6 host: router %v, addresses %v", d.Router(), d.Proto().GetIpAddresses())
	}
	r6 := flow.MAC{2, 0, 0, 0, 0, 0x67}
	for _, a := range []string{"2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1"} {
		inv.Resolve(r6, ip(a), 5)
	}
	if d := inv.Lookup(Key{MAC: r6}); d == nil || !d.Router() {
		t.Error("MAC with three IPv6 /64s not marked as a router's")
	}
	// Group addresses are never devices.
	if inv.Resolve(flow.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ip("10.0.0.255"), 1) != nil {
		t.Error("broadcast MAC became a device")
	}
}

// TestRouterSignals: each way a router shows itself, from its first
// packet, before any forwarded address is attached to it.
func TestRouterSignals(t *testing.T) {
	gw := flow.MAC{0x5e, 0, 0, 0, 0, 1}
	for _, tc := range []struct {
		name string
		do   func(inv *Inventory)
		own  []string
	}{
		{"decremented TTL", func(inv *Inventory) {
			// A DHCP offer from the server two hops away, TTL 62.
			inv.ObserveTTL(gw, ip("10.98.0.12"), ip("10.101.0.10"), 62, 1)
		}, nil},
		{"router advertisement", func(inv *Inventory) {
			inv.ObserveND(gw, ip("fe80::1"), detect.ND{Type: detect.NDRouterAdvertisement, Router: true, LinkAddr: gw}, 1)
		}, nil},
		{"DHCP-advertised router", func(inv *Inventory) {
			inv.ObserveARP(detect.ARP{Op: 1, SenderMAC: gw, SenderIP: ip("10.101.0.1"), TargetIP: ip("10.101.0.10")}, 1)
			inv.AdvertisedRouter(ip("10.101.0.1"), 2)
		}, []string{"10.101.0.1"}},
		{"DHCP-advertised router, ARP after", func(inv *Inventory) {
			inv.AdvertisedRouter(ip("10.101.0.1"), 1)
			inv.ObserveARP(detect.ARP{Op: 2, SenderMAC: gw, SenderIP: ip("10.101.0.1"), TargetIP: ip("10.101.0.10")}, 2)
		}, []string{"10.101.0.1"}},
		{"proxy ARP", func(inv *Inventory) {
			for i := range 4 {
				inv.ObserveARP(detect.ARP{Op: 2, SenderMAC: gw, SenderIP: netip.AddrFrom4([4]byte{10, 101, 0, byte(100 + i)})}, 1)
			}
		}, []string{"10.101.0.100", "10.101.0.101", "10.101.0.102", "10.101.0.103"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := newInv(t, nil)
			tc.do(inv)
			r := inv.Lookup(Key{MAC: gw})
			if r == nil || !r.Router() {
				t.Fatalf("not a router: %v", r)
			}
			if c, _ := r.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER {
				t.Errorf("class %v", c)
			}
			// Forwarded traffic from then on is nobody's here.
			if d := inv.Resolve(gw, ip("10.98.0.12"), 3); d != nil {
				t.Errorf("forwarded address became %s", d.Name())
			}
			if got := r.Proto().GetIpAddresses(); !slices.Equal(got, tc.own) {
				t.Errorf("addresses %v, want %v", got, tc.own)
			}
		})
	}
	// An undecremented TTL, and a host's ND, make no router.
	inv := newInv(t, nil)
	host := flow.MAC{2, 0, 0, 0, 0, 7}
	inv.Resolve(host, ip("10.101.0.10"), 1)
	inv.ObserveTTL(host, ip("10.101.0.10"), ip("10.98.0.12"), 64, 1)
	inv.ObserveND(host, ip("fe80::7"), detect.ND{Type: detect.NDNeighborAdvertisement, Target: ip("fe80::7"), LinkAddr: host}, 1)
	if d := inv.Lookup(Key{MAC: host}); d == nil || d.Router() {
		t.Errorf("host %v marked as a router", d)
	}
}

// TestNotDevices: link-local-only MACs (a capture link's own IPv6
// housekeeping) are no devices; a device's link-local address is not
// listed among its addresses.
func TestNotDevices(t *testing.T) {
	inv := newInv(t, nil)
	veth := flow.MAC{0x6a, 0x34, 0xfe, 0x53, 0x82, 0x10}
	for _, a := range []string{"fe80::6834:feff:fe53:8210", "::"} {
		if d := inv.Resolve(veth, ip(a), 1); d != nil {
			t.Fatalf("MAC seen only with %s became %s", a, d.Name())
		}
	}
	inv.ObserveND(veth, ip("fe80::6834:feff:fe53:8210"), detect.ND{Type: detect.NDRouterSolicitation, LinkAddr: veth}, 1)
	inv.ObserveARP(detect.ARP{Op: 1, SenderMAC: veth, SenderIP: ip("169.254.7.1")}, 1)
	inv.ObserveARP(detect.ARP{Op: 1, SenderMAC: veth, SenderIP: ip("0.0.0.0"), TargetIP: ip("10.0.0.9")}, 1)
	if inv.Len() != 0 {
		t.Fatalf("%d devices from link-local traffic", inv.Len())
	}
	pump := flow.MAC{0x58, 0x46, 0xe1, 0, 1, 0x0a}
	inv.Resolve(pump, ip("10.101.0.10"), 1)
	if d := inv.Resolve(pump, ip("fe80::5a46:e1ff:fe00:10a"), 2); d == nil {
		t.Fatal("a known device's link-local traffic lost")
	}
	if got := inv.Lookup(Key{MAC: pump}).Proto().GetIpAddresses(); !slices.Equal(got, []string{"10.101.0.10"}) {
		t.Errorf("addresses %v", got)
	}
	// A DHCP client without an address yet is a device.
	if inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 8}, ip("0.0.0.0"), 3) == nil {
		t.Error("DHCP client without an address lost")
	}
}

// TestServersByWhatTheyServe: a server answering requests is classed by
// the service.
func TestServersByWhatTheyServe(t *testing.T) {
	inv := newInv(t, nil)
	for i, tc := range []struct {
		traffic []Traffic
		want    medmeshv1.DeviceClass
	}{
		{[]Traffic{{Proto: 17, Port: 67, App: "dhcp", Answered: true}, {Proto: 17, Port: 53, App: "dns", Answered: true}},
			medmeshv1.DeviceClass_DEVICE_CLASS_DHCP_DNS_SERVER},
		{[]Traffic{{Proto: 17, Port: 123, App: "ntp", Answered: true}}, medmeshv1.DeviceClass_DEVICE_CLASS_NTP_SERVER},
		{[]Traffic{{Proto: 17, Port: 514, App: "syslog"}}, medmeshv1.DeviceClass_DEVICE_CLASS_SYSLOG_SERVER},
		{[]Traffic{{Proto: 6, Port: 389, App: "ldap", Answered: true}, {Proto: 6, Port: 88, Answered: true}},
			medmeshv1.DeviceClass_DEVICE_CLASS_DIRECTORY_SERVER},
		{[]Traffic{{Peer: ip("10.101.0.10"), Proto: 6, Port: 6661, App: "hl7", Answered: true},
			{Peer: ip("10.102.0.15"), Proto: 6, Port: 6661, App: "hl7", Answered: true}}, medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE},
		{[]Traffic{{Proto: 6, Port: 104, App: "dicom", Answered: true}}, medmeshv1.DeviceClass_DEVICE_CLASS_PACS},
		// Refused probes (a scan) say nothing about what a device serves.
		{[]Traffic{{Proto: 6, Port: 389}, {Proto: 17, Port: 123}, {Proto: 6, Port: 104, App: "dicom"}}, medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN},
	} {
		d := inv.Resolve(flow.MAC{2, 0, 0, 0, 1, byte(i)}, netip.AddrFrom4([4]byte{10, 98, 0, byte(10 + i)}), 1)
		for _, tr := range tc.traffic {
			if !tr.Peer.IsValid() {
				tr.Peer = ip("10.101.0.10")
			}
			d.ObserveTraffic(&tr)
		}
		if c, _ := d.Class(); c != tc.want {
			t.Errorf("server %d: class %v, want %v (evidence %v)", i, c, tc.want, d.Proto().GetClassEvidence())
		}
	}
}

func TestResolveKnownDoesNotAllocate(t *testing.T) {
	inv := newInv(t, nil)
	mac := flow.MAC{2, 0, 0, 0, 0, 1}
	inv.Resolve(mac, ip("10.0.0.1"), 1)
	tr := &Traffic{Peer: ip("10.0.0.2"), Proto: 6, Port: 80, App: "http", Outbound: true, Answered: true}
	inv.Resolve(mac, ip("10.0.0.1"), 2).ObserveTraffic(tr)
	if a := testing.AllocsPerRun(1000, func() {
		inv.Resolve(mac, ip("10.0.0.1"), 3).ObserveTraffic(tr)
	}); a != 0 {
		t.Fatalf("Resolve+ObserveTraffic of a known device allocates %v", a)
	}
}

// TestMaxClass: the classifier scores every class the enum has.
func TestMaxClass(t *testing.T) {
	values := medmeshv1.DeviceClass(0).Descriptor().Values()
	last := values.Get(values.Len() - 1).Number()
	if medmeshv1.DeviceClass(last) != maxClass {
		t.Fatalf("maxClass is %v, the enum ends at %v: update rules.go", maxClass, medmeshv1.DeviceClass(last))
	}
}

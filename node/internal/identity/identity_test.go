package identity

import (
	"net/netip"
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
	// Traffic from the internet arrives with the router's MAC.
	if d := inv.Resolve(gw, ip("198.51.100.7"), 1); d != nil {
		t.Fatalf("external host behind the router became device %s", d.Name())
	}
	r := inv.Lookup(Key{MAC: gw})
	if r == nil || !r.Router() {
		t.Fatal("router MAC not marked")
	}
	if c, _ := r.Class(); c != medmeshv1.DeviceClass_DEVICE_CLASS_NETWORK_INFRASTRUCTURE {
		t.Errorf("router class %v", c)
	}
	// Devices of another subnet are keyed by their address.
	d := inv.Resolve(gw, ip("10.8.0.4"), 2)
	if d == nil || d.Name() != "ip:10.8.0.4" {
		t.Fatalf("routed device = %v", d)
	}
	// A MAC with many local addresses is a router's as well.
	l3 := flow.MAC{2, 0, 0, 0, 0, 0x99}
	for i := range 4 {
		inv.Resolve(l3, netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}), 3)
	}
	if d := inv.Lookup(Key{MAC: l3}); d == nil || !d.Router() {
		t.Error("MAC with 4 local addresses not marked as a router's")
	}
	// An IPv6 host with global addresses is not a router; a MAC with
	// addresses of three /64s is.
	h6 := flow.MAC{2, 0, 0, 0, 0, 0x66}
	for _, a := range []string{"fe80::1", "2001:db8:1::10", "2001:db8:1::11"} {
		if d := inv.Resolve(h6, ip(a), 4); d == nil || d.Name() != h6.String() {
			t.Fatalf("IPv6 host address %s resolved to %v", a, d)
		}
	}
	if d := inv.Lookup(Key{MAC: h6}); d.Router() || len(d.Proto().GetIpAddresses()) != 3 {
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

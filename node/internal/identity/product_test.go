package identity

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/detect"
)

// The strings are what real devices and DHCP clients send.
func TestProductStrings(t *testing.T) {
	for _, tc := range []struct{ in, model, fw string }{
		{"MedSim-Infusion-Pump-3.2", "MedSim-Infusion-Pump", "3.2"},
		{"BD Alaris PCU 9.33", "BD Alaris PCU", "9.33"},
		{"Cisco AP c3702", "Cisco AP c3702", ""},
		{"MSFT 5.0", "", ""},
		{"android-dhcp-13", "", ""},
		{"dhcpcd-9.4.1:Linux-6.1.21-v8+:aarch64:BCM2835", "", ""},
		{"udhcp 1.30.1", "", ""},
		{"PXEClient:Arch:00000:UNDI:002001", "", ""},
		{"12345", "", ""},
	} {
		if m, fw := vendorClassProduct(tc.in); m != tc.model || fw != tc.fw {
			t.Errorf("vendor class %q: %q %q, want %q %q", tc.in, m, fw, tc.model, tc.fw)
		}
	}
	for _, tc := range []struct{ in, model, fw string }{
		{"Linux/3.14.0 UPnP/1.0 IpBridge/1.26.0", "IpBridge", "1.26.0"},
		{"Linux/2.6.32 UPnP/1.0 Monitor/2.1", "Monitor", "2.1"},
		{"Linux/2.6.32", "", ""},
	} {
		if m, fw := serverProduct(tc.in); m != tc.model || fw != tc.fw {
			t.Errorf("SSDP server %q: %q %q, want %q %q", tc.in, m, fw, tc.model, tc.fw)
		}
	}
	for in, want := range map[string]string{
		"Allegro-Software-RomPager/4.07 UPnP/1.0": "Allegro-Software-RomPager/4.07",
		"lighttpd/1.4.35":                         "lighttpd/1.4.35",
		"Apache":                                  "",
		"GoAhead-Webs":                            "",
	} {
		if got := httpServerFirmware(in); got != want {
			t.Errorf("HTTP server %q: %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"Cisco IOS Software, C2960 Software (C2960-LANBASEK9-M), Version 12.2(55)SE5, RELEASE SOFTWARE (fc1)": "12.2(55)SE5",
		"HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD153,EEPROM JSI24090012":                           "",
		"Linux pump 4.19.0 #1 SMP armv7l":          "",
		"Draeger Infinity Gateway, firmware 2.3.1": "2.3.1",
	} {
		if got := sysDescrFirmware(in); got != want {
			t.Errorf("sysDescr %q: %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"Hospira Plum A+":              "Hospira Plum A+",
		"(01)00812345000019(21)PUMP1":  "",
		"+H123PUMP0001/$$3220101A1B2C": "",
		"00812345000019^^GS1":          "",
	} {
		if got := udiModel(in); got != want {
			t.Errorf("UDI %q: %q, want %q", in, got, want)
		}
	}
	if got := catalogModel("ALARIS-8015-ICU3"); got != "Alaris" {
		t.Errorf("catalog: %q", got)
	}
}

// TestModelPrecedence: a device's own statement (DHCP vendor class) wins
// over what its web server or DICOM stack says, whatever the order.
func TestModelPrecedence(t *testing.T) {
	inv := newInv(t, nil)
	d := inv.Resolve(flow.MAC{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("10.0.0.5"), 1)
	apply := func(name, v string) {
		d.ApplyDetection(&detect.Detection{App: "x", Fields: []detect.Field{{Name: name, Value: v}}}, Subject, netip.Addr{})
	}
	apply(detect.FieldHTTPServer, "lighttpd/1.4.35")
	apply(detect.FieldDICOMImplVersion, "OFFIS_DCMTK_362")
	if pb := d.Proto(); pb.GetFirmware() != "OFFIS_DCMTK_362" {
		t.Fatalf("firmware %q, want the DICOM implementation over the web server", pb.GetFirmware())
	}
	apply(detect.FieldDHCPVendorClass, "BD Alaris PCU 9.33")
	apply(detect.FieldHTTPServer, "Allegro-Software-RomPager/4.07")
	apply(detect.FieldSSDPServer, "Linux/2.6 UPnP/1.0 Other/1.0")
	pb := d.Proto()
	if pb.GetModel() != "BD Alaris PCU" || pb.GetFirmware() != "9.33" {
		t.Errorf("model %q firmware %q, want the vendor class's", pb.GetModel(), pb.GetFirmware())
	}
	if ids := pb.GetIdentifiers(); len(ids.GetHttpServers()) != 2 || len(ids.GetSsdpServers()) != 1 {
		t.Errorf("identifiers %v", ids)
	}
}

// FuzzProductStrings: the product parsers never panic and only ever
// return parts of their input.
func FuzzProductStrings(f *testing.F) {
	for _, s := range []string{"MedSim-Infusion-Pump-3.2", "Linux/3.14.0 UPnP/1.0 IpBridge/1.26.0",
		"Cisco IOS Software, Version 12.2(55)SE5,", "Hospira Plum A+", "(01)00812345000019(21)X", "a/1", "v", " - "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in := func(what, v string) {
			if v != "" && !strings.Contains(s, v) && !strings.Contains(s, "v"+v) && !strings.Contains(s, "V"+v) {
				t.Fatalf("%s %q is not part of %q", what, v, s)
			}
		}
		m, fw := vendorClassProduct(s)
		in("vendor class model", m)
		in("vendor class firmware", fw)
		m, fw = serverProduct(s)
		in("server model", m)
		in("server firmware", fw)
		in("http firmware", httpServerFirmware(s))
		in("sysDescr firmware", sysDescrFirmware(s))
		in("udi model", udiModel(s))
		_ = catalogModel(s)
	})
}

package identity

import (
	"regexp"
	"strings"
)

// Model and firmware come from identifiers a device sends about itself.
// Sources rank by how directly they name the device; a better source
// replaces what a weaker one gave, never the other way round.
const (
	srcHTTPServer = 1 + iota // an HTTP Server header: the embedded web server
	srcDICOM                 // DICOM implementation version name: the DICOM stack
	srcSSDPServer            // SSDP SERVER product token
	srcSNMP                  // SNMP sysDescr "Version ..."
	srcCatalog               // a known product name in a host or application name
	srcHL7                   // HL7 SFT segment, or a device name in PRT-16 / OBX-18
	srcDevice                // DHCP vendor class, SSDP/mDNS model
)

// genericClients are DHCP vendor classes of operating systems' and
// libraries' DHCP clients: they name the software, not the device.
var genericClients = []string{"msft", "android-dhcp", "dhcpcd", "udhcp", "pxeclient", "anaconda",
	"linux", "windows", "busybox", "systemd", "isc-dhclient", "dhclient", "cisco systems, inc."}

// versionRE matches a version token: digits and dots with an optional
// leading v and a tail of letters, digits, dots, dashes and parentheses.
var versionRE = regexp.MustCompile(`^[vV]?[0-9]+(\.[0-9A-Za-z]+)*[A-Za-z0-9.()_-]*$`)

// splitVersion splits "Product-Name-3.2", "Product Name 3.2" or
// "Product/3.2" into product and version; version is "" when the last
// token is not one.
func splitVersion(s string) (product, version string) {
	s = strings.TrimSpace(s)
	i := strings.LastIndexAny(s, " -_/")
	if i <= 0 || i == len(s)-1 {
		return s, ""
	}
	if v := s[i+1:]; versionRE.MatchString(v) {
		return strings.TrimRight(strings.TrimSpace(s[:i]), " -_/"), strings.TrimPrefix(strings.TrimPrefix(v, "v"), "V")
	}
	return s, ""
}

// vendorClassProduct reads a DHCP vendor class (option 60): a device's own
// name for its product and firmware ("BD Alaris PCU 9.33"), unless it is
// a generic DHCP client's.
func vendorClassProduct(vc string) (model, firmware string) {
	l := strings.ToLower(vc)
	for _, g := range genericClients {
		if strings.HasPrefix(l, g) {
			return "", ""
		}
	}
	if !hasLetter(vc) {
		return "", ""
	}
	return splitVersion(vc)
}

// serverProduct reads an SSDP SERVER header, "OS/version UPnP/1.x
// product/version" (UPnP Device Architecture 1.1, 1.2): the product token.
func serverProduct(h string) (model, firmware string) {
	toks := strings.Fields(h)
	for i, t := range toks {
		if strings.HasPrefix(strings.ToUpper(t), "UPNP/") && i+1 < len(toks) {
			p, v, _ := strings.Cut(toks[i+1], "/")
			if p == "" || !hasLetter(p) {
				return "", ""
			}
			return p, v
		}
	}
	return "", ""
}

// httpServerFirmware is an HTTP Server header worth showing as firmware:
// one naming a version ("Allegro-Software-RomPager/4.07").
func httpServerFirmware(h string) string {
	tok, _, _ := strings.Cut(strings.TrimSpace(h), " ")
	if p, v, ok := strings.Cut(tok, "/"); ok && p != "" && v != "" && versionRE.MatchString(v) {
		return tok
	}
	return ""
}

var sysDescrVersionRE = regexp.MustCompile(`(?i)\b(?:version|ver\.?|firmware|fw|release|rel\.?)[ :]*v?([0-9][0-9A-Za-z.()_-]*[0-9A-Za-z)])`)

// sysDescrFirmware finds the firmware version in an SNMP sysDescr:
// "Cisco IOS Software, C2960 Software (...), Version 12.2(55)SE5, ...".
func sysDescrFirmware(d string) string {
	if m := sysDescrVersionRE.FindStringSubmatch(d); m != nil {
		return m[1]
	}
	return ""
}

// udiModel reads the device identifier an HL7 message carries in PRT-16
// or OBX-18. A UDI in GS1 ("(01)...") or HIBCC ("+...") form is a code, not
// a name; anything else with letters is the device's name for its model
// ("Hospira Plum A+").
func udiModel(v string) string {
	v, _, _ = strings.Cut(v, "^")
	v = strings.TrimSpace(v)
	if v == "" || strings.HasPrefix(v, "(") || strings.HasPrefix(v, "+") || strings.HasPrefix(v, "=") || !hasLetter(v) {
		return ""
	}
	return v
}

// catalogModel finds a known product name in a host, application or
// announced name ("ALARIS-8015-ICU3": Alaris).
func catalogModel(name string) string {
	l := strings.ToLower(name)
	for _, p := range products {
		if strings.Contains(l, p.word) {
			return p.model
		}
	}
	return ""
}

func hasLetter(s string) bool {
	for _, c := range s {
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

// setModel takes v as the model if src ranks at least as high as the
// source of the current one.
func (d *Device) setModel(v string, src int8) {
	if v == "" || src < d.modelSrc || (src == d.modelSrc && v == d.model) {
		return
	}
	d.model, d.modelSrc = v, src
}

// setFirmware takes v as the firmware if src ranks at least as high.
func (d *Device) setFirmware(v string, src int8) {
	if v == "" || src < d.firmwareSrc || (src == d.firmwareSrc && v == d.firmware) {
		return
	}
	d.firmware, d.firmwareSrc = v, src
}

// nameProduct looks a name up in the product catalog.
func (d *Device) nameProduct(name string) {
	d.setModel(catalogModel(name), srcCatalog)
}

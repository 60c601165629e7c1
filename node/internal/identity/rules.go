package identity

import (
	"strings"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// keywordRule maps a lower-case substring to a class and a weight.
type keywordRule struct {
	word   string
	class  medmeshv1.DeviceClass
	weight float64
}

const (
	classPump     = medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP
	classMonitor  = medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR
	classVent     = medmeshv1.DeviceClass_DEVICE_CLASS_VENTILATOR
	classCentral  = medmeshv1.DeviceClass_DEVICE_CLASS_CENTRAL_STATION
	classImaging  = medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY
	classPACS     = medmeshv1.DeviceClass_DEVICE_CLASS_PACS
	classHL7      = medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE
	classNurse    = medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL
	classBuilding = medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION
	classNetwork  = medmeshv1.DeviceClass_DEVICE_CLASS_NETWORK_INFRASTRUCTURE
	classIT       = medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION
	classRouter   = medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER
	classDHCPDNS  = medmeshv1.DeviceClass_DEVICE_CLASS_DHCP_DNS_SERVER
	classNTP      = medmeshv1.DeviceClass_DEVICE_CLASS_NTP_SERVER
	classSyslog   = medmeshv1.DeviceClass_DEVICE_CLASS_SYSLOG_SERVER
	classDir      = medmeshv1.DeviceClass_DEVICE_CLASS_DIRECTORY_SERVER
	classUnknown  = medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN

	// maxClass is the highest class number (TestMaxClass keeps it
	// in step with the enum).
	maxClass = classDir
)

// vendorRules classify by the IEEE registry's organisation name. Vendors
// that make several kinds of device get their most common networked kind at
// a low weight; other evidence decides.
var vendorRules = []keywordRule{
	{"carefusion", classPump, 0.5},
	{"alaris", classPump, 0.5},
	{"becton", classPump, 0.4},
	{"baxter", classPump, 0.5},
	{"b. braun", classPump, 0.5},
	{"b.braun", classPump, 0.5},
	{"braun melsungen", classPump, 0.5},
	{"hospira", classPump, 0.5},
	{"icu medical", classPump, 0.5},
	{"smiths medical", classPump, 0.5},
	{"fresenius", classPump, 0.4},
	{"moog medical", classPump, 0.4},
	{"philips medical", classMonitor, 0.4},
	{"ge healthcare", classMonitor, 0.3},
	{"ge medical", classMonitor, 0.3},
	{"datex", classMonitor, 0.4},
	{"mindray", classMonitor, 0.4},
	{"nihon kohden", classMonitor, 0.4},
	{"spacelabs", classMonitor, 0.4},
	{"masimo", classMonitor, 0.4},
	{"welch allyn", classMonitor, 0.4},
	{"draeger", classVent, 0.3},
	{"drager", classVent, 0.3},
	{"dräger", classVent, 0.3},
	{"hamilton medical", classVent, 0.5},
	{"vyaire", classVent, 0.5},
	{"resmed", classVent, 0.4},
	{"siemens healthcare", classImaging, 0.4},
	{"siemens healthineers", classImaging, 0.4},
	{"siemens medical", classImaging, 0.4},
	{"carestream", classImaging, 0.4},
	{"fujifilm", classImaging, 0.3},
	{"canon medical", classImaging, 0.4},
	{"toshiba medical", classImaging, 0.4},
	{"hologic", classImaging, 0.4},
	{"agfa", classImaging, 0.3},
	{"hill-rom", classNurse, 0.4},
	{"rauland", classNurse, 0.5},
	{"ascom", classNurse, 0.4},
	{"spectralink", classNurse, 0.3},
	{"vocera", classNurse, 0.4},
	{"johnson controls", classBuilding, 0.4},
	{"honeywell", classBuilding, 0.3},
	{"schneider electric", classBuilding, 0.4},
	{"tridium", classBuilding, 0.5},
	{"trane", classBuilding, 0.4},
	{"automated logic", classBuilding, 0.5},
	{"siemens building", classBuilding, 0.5},
	{"distech", classBuilding, 0.5},
	{"cisco", classNetwork, 0.3},
	{"juniper", classNetwork, 0.4},
	{"aruba", classNetwork, 0.4},
	{"arista", classNetwork, 0.4},
	{"ubiquiti", classNetwork, 0.3},
	{"fortinet", classNetwork, 0.4},
	{"palo alto", classNetwork, 0.4},
	{"extreme networks", classNetwork, 0.4},
	{"mikrotik", classNetwork, 0.4},
	{"dell", classIT, 0.2},
	{"lenovo", classIT, 0.25},
	{"hewlett packard", classIT, 0.15},
	{"hp inc", classIT, 0.2},
	{"apple", classIT, 0.2},
	{"microsoft", classIT, 0.2},
	{"intel corporate", classIT, 0.15},
}

// nameRules classify by host names, DHCP vendor classes, HL7 sending
// applications, AE titles and SSDP/mDNS names.
var nameRules = []keywordRule{
	{"alaris", classPump, 0.5},
	{"infus", classPump, 0.5},
	{"pump", classPump, 0.4},
	{"sigma spectrum", classPump, 0.5},
	{"plum", classPump, 0.3},
	{"sapphire", classPump, 0.3},
	{"pic ix", classCentral, 0.5},
	{"pic_ix", classCentral, 0.5},
	{"intellivue", classMonitor, 0.5},
	{"carescape", classMonitor, 0.5},
	{"monitor", classMonitor, 0.3},
	{"bedside", classMonitor, 0.4},
	{"spo2", classMonitor, 0.3},
	{"vent", classVent, 0.4},
	{"servo", classVent, 0.4},
	{"evita", classVent, 0.5},
	{"piccix", classCentral, 0.5},
	{"central", classCentral, 0.4},
	{"cns", classCentral, 0.2},
	{"pacs", classPACS, 0.5},
	{"archive", classPACS, 0.3},
	{"vna", classPACS, 0.3},
	{"modality", classImaging, 0.4},
	{"xray", classImaging, 0.4},
	{"x-ray", classImaging, 0.4},
	{"ultrasound", classImaging, 0.4},
	{"mri", classImaging, 0.3},
	{"scanner", classImaging, 0.2},
	{"storescu", classImaging, 0.3},
	{"findscu", classImaging, 0.2},
	{"mirth", classHL7, 0.5},
	{"rhapsody", classHL7, 0.5},
	{"cloverleaf", classHL7, 0.5},
	{"corepoint", classHL7, 0.5},
	{"interface engine", classHL7, 0.5},
	{"nurse", classNurse, 0.4},
	{"nursecall", classNurse, 0.5},
	{"bacnet", classBuilding, 0.5},
	{"hvac", classBuilding, 0.5},
	{"niagara", classBuilding, 0.4},
	{"msft", classIT, 0.4},
	{"desktop-", classIT, 0.4},
	{"laptop", classIT, 0.4},
	{"workstation", classIT, 0.3},
	{"macbook", classIT, 0.4},
	{"android-dhcp", classIT, 0.2},
	{"switch", classNetwork, 0.2},
	{"router", classRouter, 0.3},
	{"syslog", classSyslog, 0.3},
	{"ldap", classDir, 0.3},
	{"infoblox", classDHCPDNS, 0.5},
	{"printer", classUnknown, 0.0},
}

// products are product names that appear in host names, DHCP vendor
// classes, HL7 applications and announced names, for the model column.
var products = []struct{ word, model string }{
	{"plum a+", "Plum A+"},
	{"plum 360", "Plum 360"},
	{"sigma spectrum", "Sigma Spectrum"},
	{"alaris", "Alaris"},
	{"medfusion", "Medfusion"},
	{"sapphire", "Sapphire"},
	{"intellivue", "IntelliVue"},
	{"carescape", "CARESCAPE"},
	{"pic ix", "PIC iX"},
	{"pic_ix", "PIC iX"},
	{"evita", "Evita"},
	{"servo-u", "Servo-u"},
	{"mirth connect", "Mirth Connect"},
	{"rhapsody", "Rhapsody"},
	{"cloverleaf", "Cloverleaf"},
	{"corepoint", "Corepoint"},
}

// consumerSites are names a workstation visits and a medical device has no
// reason to.
var consumerSites = []string{
	"google.", "googleapis.", "gstatic.", "youtube.", "facebook.", "fbcdn.",
	"microsoft.", "windowsupdate.", "msftncsi.", "msn.", "bing.", "live.com",
	"office.", "outlook.", "apple.com", "icloud.", "amazon.", "netflix.",
	"yahoo.", "twitter.", "instagram.", "wikipedia.", "mozilla.", "firefox.",
}

func matchRules(rules []keywordRule, s string) (keywordRule, bool) {
	l := strings.ToLower(s)
	for _, r := range rules {
		if strings.Contains(l, r.word) && r.weight > 0 {
			return r, true
		}
	}
	return keywordRule{}, false
}

func consumerSite(name string) (string, bool) {
	l := strings.ToLower(name)
	for _, s := range consumerSites {
		if strings.Contains(l, s) {
			return strings.TrimSuffix(s, "."), true
		}
	}
	return "", false
}

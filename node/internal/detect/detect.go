// Package detect identifies application protocols from payload samples and
// extracts named fields from them. Detectors never keep payload bytes: they
// return only the named fields listed here.
package detect

// Field names used in Detection.Fields.
const (
	FieldHL7MessageType     = "hl7.message_type"
	FieldHL7SendingApp      = "hl7.sending_application"
	FieldHL7SendingFacility = "hl7.sending_facility"
	FieldHL7UDI             = "hl7.udi"
	FieldDICOMCallingAE     = "dicom.calling_ae"
	FieldDICOMCalledAE      = "dicom.called_ae"
	FieldDICOMImplClass     = "dicom.implementation_class_uid"
	FieldDICOMImplVersion   = "dicom.implementation_version"
	FieldDHCPHostname       = "dhcp.hostname"
	FieldDHCPFingerprint    = "dhcp.fingerprint" // option 55, "1,3,6,15"
	FieldDHCPVendorClass    = "dhcp.vendor_class"
	FieldDHCPClientID       = "dhcp.client_id" // hex
	FieldDHCPFQDN           = "dhcp.fqdn"
	FieldDHCPMUDURL         = "dhcp.mud_url"
	FieldDNSQuery           = "dns.query"
	FieldHTTPHost           = "http.host"
	FieldHTTPUserAgent      = "http.user_agent"
	FieldTLSSNI             = "tls.sni"
	FieldTLSALPN            = "tls.alpn"
	FieldMQTTClientID       = "mqtt.client_id"
	FieldMQTTUser           = "mqtt.user"
	FieldFriendlyName       = "device.friendly_name" // SSDP / mDNS
	FieldModel              = "device.model"
	FieldSNMPCommunity      = "snmp.community" // reported masked, see Credential
)

// Field is one named value extracted from a sample.
type Field struct {
	Name  string
	Value string
}

// Credential is a login seen in cleartext. Secret is kept only long enough to
// compare it with the default-credential list; it is never logged or stored
// and Credential.String masks it.
type Credential struct {
	Protocol string // "http", "telnet", "ftp", "mqtt", "snmp"
	User     string
	Secret   string
}

// String masks the secret.
func (c Credential) String() string { return c.Protocol + " user " + c.User + " (secret masked)" }

// DNSAnswer maps a name to an address from a DNS response.
type DNSAnswer struct {
	Name string
	Addr string
}

// Detection is what a detector found in one sample or discovery packet.
type Detection struct {
	// App is the lower-case application protocol ("hl7", "dicom", "dhcp",
	// "dns", "http", "tls", "mqtt", "modbus", "bacnet", "ssdp", "mdns",
	// "telnet", "ftp", "snmp"), or "" when nothing matched.
	App         string
	Fields      []Field
	Credentials []Credential
	Answers     []DNSAnswer
}

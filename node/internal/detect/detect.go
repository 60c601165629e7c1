// Package detect identifies application protocols from payload samples and
// extracts named fields from them. Detectors never keep payload bytes: they
// return only the named fields listed here, and a flow's State holds at most
// a few bounded login characters (Telnet, FTP) until the login completes.
//
// Detection is by content. Ports only disambiguate variants of one wire
// format (mDNS versus DNS) and gate the weakest signature (DHCPv6), never
// decide alone.
//
// A sample is the first bytes of a packet (up to 512 from the datapath), so
// a field is reported only when it ends inside the sample; a value cut by
// the sample end is dropped (a cut Basic authorization becomes a Login
// marked Partial). The datapath samples 512 rather than 128 bytes because in
// a single-segment HL7 message the UDI (PRT-16, OBX-18) usually lies near
// byte 400, and a DICOM association's user-information item and a TLS
// ClientHello's SNI often lie past byte 128.
//
// Logins (Telnet, FTP, HTTP Basic and form posts, MQTT CONNECT, SNMP
// community strings, VNC, and SSH banners) are followed to the server's
// answer. A password seen in cleartext is compared with the factory
// defaults (Defaults) while the sample is inspected, and the copies the
// detectors made of it are wiped: a Login carries the protocol, the
// account and what was found, never the password.
package detect

import (
	"strconv"
	"strings"

	"github.com/medmesh/medmesh/node/flow"
)

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
	FieldSNMPCommunity      = "snmp.community" // reported masked: the community is a password

	FieldHTTPServer      = "http.server"       // HTTP response Server header
	FieldSSDPServer      = "ssdp.server"       // SSDP SERVER header (OS, UPnP and product)
	FieldSSDPUSN         = "ssdp.usn"          // SSDP USN header (uuid and device type)
	FieldSSDPSearch      = "ssdp.search"       // SSDP ST / NT header
	FieldMDNSService     = "mdns.service"      // an announced or queried service instance
	FieldTelnetUser      = "telnet.user"       // login name typed at a telnet login: prompt
	FieldFTPUser         = "ftp.user"          // FTP USER argument
	FieldModbusUnit      = "modbus.unit"       // Modbus unit identifier, decimal
	FieldBACnetFunction  = "bacnet.function"   // BVLC function, e.g. "original-unicast-npdu"
	FieldSNMPVersion     = "snmp.version"      // "1", "2c" or "3"
	FieldDHCPMessageType = "dhcp.message_type" // DHCP option 53 / DHCPv6 msg-type, decimal
	FieldTLSVersion      = "tls.version"       // hello version, e.g. "1.2" (1.3 shows as 1.2)

	// Infrastructure and inventory fields.
	FieldDHCPServerID   = "dhcp.server_id"       // option 54 of a server's reply, IPv4
	FieldDHCPRouter     = "dhcp.router"          // option 3 of a server's reply: routers, comma-separated
	FieldDHCPDNSServers = "dhcp.dns_servers"     // option 6 of a server's reply
	FieldDHCPNTPServers = "dhcp.ntp_servers"     // option 42 of a server's reply
	FieldSNMPSysDescr   = "snmp.sys_descr"       // sysDescr.0 in a response
	FieldSNMPSysName    = "snmp.sys_name"        // sysName.0 in a response
	FieldHL7Software    = "hl7.software"         // SFT-3, the sending software's product name
	FieldHL7SoftwareVer = "hl7.software_version" // SFT-2, its version or release
	FieldNTPMode        = "ntp.mode"             // "client", "server", ...
	FieldLDAPOperation  = "ldap.operation"       // e.g. "bind_request", "search_result_done"
	FieldSSHBanner      = "ssh.banner"           // the software line of an SSH identification string
	FieldVNCVersion     = "vnc.version"          // RFB protocol version, e.g. "3.8"
)

// App names returned in Detection.App.
const (
	AppHL7    = "hl7"
	AppDICOM  = "dicom"
	AppDHCP   = "dhcp"
	AppDHCPv6 = "dhcpv6"
	AppDNS    = "dns"
	AppHTTP   = "http"
	AppTLS    = "tls"
	AppMQTT   = "mqtt"
	AppModbus = "modbus"
	AppBACnet = "bacnet"
	AppSSDP   = "ssdp"
	AppMDNS   = "mdns"
	AppTelnet = "telnet"
	AppFTP    = "ftp"
	AppSNMP   = "snmp"
	AppNTP    = "ntp"
	AppSyslog = "syslog"
	AppLDAP   = "ldap"
	AppSSH    = "ssh"
	AppVNC    = "vnc"
)

// Apps returns every application protocol the package detects.
func Apps() []string {
	return []string{AppHL7, AppDICOM, AppDHCP, AppDHCPv6, AppDNS, AppHTTP, AppTLS, AppMQTT,
		AppModbus, AppBACnet, AppSSDP, AppMDNS, AppTelnet, AppFTP, AppSNMP, AppSSH, AppVNC, AppNTP, AppSyslog, AppLDAP}
}

// Field is one named value extracted from a sample.
type Field struct {
	Name  string
	Value string
}

// Outcome is what the server answered to a login.
type Outcome uint8

// Outcomes.
const (
	// NotSeen: no answer was seen (the flow ended, or the answer fell
	// outside the samples).
	NotSeen Outcome = iota
	Accepted
	Refused
	// NoAnswer: a message that asks for no answer (an SNMP notification),
	// so not a login attempt, though it carries the community string.
	NoAnswer
)

var outcomeNames = [...]string{NotSeen: "not_seen", Accepted: "accepted", Refused: "refused", NoAnswer: "no_answer"}

// String is the outcome's stable machine name.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Login is a login seen on the wire and what became of it. It never holds
// the password: a cleartext password is compared with the defaults while
// the sample is inspected, and wiped.
type Login struct {
	Protocol string // "telnet", "ftp", "http", "mqtt", "snmp", "vnc", "ssh"
	// Method is how the login was made where a protocol has several:
	// "basic" and "form" (HTTP), "none" and "vnc-auth" (VNC), "banner"
	// (SSH: only the banner was seen); "" otherwise.
	Method string
	User   string // the account; "" when the login has none (SNMP, VNC)
	// Cleartext: the password crossed the network in clear (not for VNC,
	// whose password check is a DES challenge-response, nor SSH).
	Cleartext bool
	// Default: the password is a factory default of the account, or the
	// service asked for none (VNC security type None, FTP accepting a user
	// without a password). With Inferred (SSH), the server's banner names
	// a model that ships with the account: the login itself is encrypted.
	Default  bool
	Inferred bool
	// NoPassword: the service let the client in without asking for one.
	NoPassword bool
	// Partial is set when the sample ended inside the credential: the
	// account or the password may be cut short, so the password was not
	// compared with the defaults. It was still sent in cleartext.
	Partial bool
	Outcome Outcome
	// Subject is the direction whose sender the login is a finding about:
	// Rev, the responder that accepts the login, except for an SNMP
	// notification, or an SNMP response seen without its request (Fwd, the
	// agent that sent it).
	Subject flow.Dir
}

// String describes the login for people: "telnet user admin (default
// password, accepted)".
func (l Login) String() string {
	s := l.Protocol + " login"
	if l.User != "" {
		s = l.Protocol + " user " + l.User
	} else if l.Protocol == AppSNMP {
		s = "snmp community"
	}
	var notes []string
	switch {
	case l.Inferred:
		notes = append(notes, "model ships with this account; login not visible")
	case l.NoPassword:
		notes = append(notes, "no password asked")
	case l.Default:
		notes = append(notes, "default password")
	case l.Partial:
		notes = append(notes, "cut by the sample")
	}
	if l.Method != "" && l.Method != "banner" && l.Method != "none" {
		notes = append(notes, l.Method)
	}
	if !l.Inferred {
		notes = append(notes, l.Outcome.String())
	}
	return s + " (" + strings.Join(notes, ", ") + ")"
}

// Defaults knows factory-default credentials (node/internal/creds).
type Defaults interface {
	// Password reports whether secret is a factory-default password of
	// account for protocol. It must not keep secret.
	Password(protocol, account string, secret []byte) bool
	// Banner returns the default account of the model a server banner
	// names, for protocols whose login cannot be seen (SSH).
	Banner(protocol, banner string) (account string, ok bool)
}

// isDefault asks def about secret; nil def knows no defaults.
func isDefault(def Defaults, protocol, account string, secret []byte) bool {
	return def != nil && def.Password(protocol, account, secret)
}

// DNSAnswer maps a name to an address from a DNS response.
type DNSAnswer struct {
	Name string
	Addr string
}

// Detection is what a detector found in one sample or discovery packet.
type Detection struct {
	// App is the lower-case application protocol ("hl7", "dicom", "dhcp",
	// "dns", "http", "tls", "mqtt", "modbus", "bacnet", "ssdp", "mdns",
	// "telnet", "ftp", "snmp", "ssh", "vnc", "ntp", "syslog", "ldap"), or "" when
	// nothing matched.
	App    string
	Fields []Field
	// Logins completed by this sample: answered, or given up on.
	Logins  []Login
	Answers []DNSAnswer
}

// Field returns the first value of the named field, or "".
func (d *Detection) Field(name string) string {
	for _, f := range d.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func (d *Detection) add(name string, v string) {
	if v != "" {
		d.Fields = append(d.Fields, Field{Name: name, Value: v})
	}
}

// Bounds on how long a flow keeps asking for samples.
const (
	maxLoginSamples = 48 // telnet and FTP: samples per flow before giving up on a login
	maxHL7Samples   = 16 // HL7: samples per flow while no UDI was seen
)

// State is a flow's detection state. The zero value is ready to use; it is
// small (32 bytes) and holds no payload bytes. A flow that carries a login
// adds a login state: for Telnet and FTP at most the typed user name and
// password, the password wiped once it was compared with the defaults;
// for every protocol the login awaiting the server's answer, without its
// password.
type State struct {
	app  string
	more bool
	n    uint8 // samples inspected, saturating
	// hl7Sep is the HL7 field separator from the flow's last MSH.
	hl7Sep byte
	// ftpBanner is set when the responder greeted with a 220 reply.
	ftpBanner bool
	hl7UDI    bool
	// login is the flow's login state; nil until a login starts.
	login *login
}

// App is the flow's application protocol once detected, else "".
func (s *State) App() string { return s.app }

// WantMore reports whether further payload samples of this flow would help
// (for example a Telnet or FTP login spread over many small packets, or a
// login whose answer is still due). The datapath may raise the flow's
// sample budget when it is true.
func (s *State) WantMore() bool { return s.more }

// End is called when the flow ends: it returns the login still awaiting
// its answer, if any, with Outcome NotSeen.
func (s *State) End() (Login, bool) {
	if s == nil || s.login == nil || !s.login.waiting {
		return Login{}, false
	}
	l := s.login.pending
	s.login.waiting, s.login.pending = false, Login{}
	return l, true
}

// Inspect runs the detectors over one payload sample of a flow and returns
// what it found in this sample. It never retains payload. def, which may
// be nil, says which cleartext passwords are factory defaults.
func Inspect(st *State, s *flow.Sample, def Defaults) Detection {
	var d Detection
	if st == nil || s == nil || len(s.Payload) == 0 {
		return d
	}
	if st.n < 255 {
		st.n++
	}
	in := sample{p: s.Payload, wire: int(s.WireLen), dir: s.Dir, t: s.Flow, def: def}
	if in.wire < len(in.p) {
		in.wire = len(in.p)
	}
	if st.app != "" {
		extract(st, &in, &d)
	} else {
		classify(st, &in, &d)
	}
	if st.app != "" {
		d.App = st.app
	}
	st.more = wantMore(st)
	return d
}

// sample is one payload sample under inspection.
type sample struct {
	p    []byte
	wire int // payload length on the wire, >= len(p)
	dir  flow.Dir
	t    flow.Tuple
	def  Defaults
}

// complete reports whether p holds the whole payload.
func (s *sample) complete() bool { return s.wire <= len(s.p) }

func (s *sample) port(p uint16) bool { return s.t.SrcPort == p || s.t.DstPort == p }

const (
	protoTCP = 6
	protoUDP = 17
)

// classify runs the detectors in order of signature strength.
func classify(st *State, s *sample, d *Detection) {
	switch s.t.Proto {
	case protoTCP:
		switch {
		case hl7(st, s, d, true),
			dicom(s, d),
			tlsHello(s, d),
			ssh(st, s, d),
			vnc(st, s, d),
			mqtt(st, s, d),
			modbus(s, d),
			httpMsg(st, s, d, AppHTTP),
			telnet(st, s, d),
			ftp(st, s, d),
			ldap(s, d),
			dnsTCP(s, d):
			st.app = d.App
		}
	case protoUDP:
		switch {
		case bacnet(s, d),
			snmp(st, s, d),
			httpMsg(st, s, d, AppSSDP),
			dhcp4Sample(s, d),
			dhcp6(s.p, s.complete(), s.port(546) || s.port(547), d),
			ntp(s, d),
			syslog(s, d),
			dns(s.p, s.complete(), s.port(5353) || isMDNSGroup(s.t), d):
			st.app = d.App
		}
	}
}

// extract runs the known app's detector on later samples of the flow.
func extract(st *State, s *sample, d *Detection) {
	var e Detection
	switch st.app {
	case AppHL7:
		hl7(st, s, &e, false)
	case AppDICOM:
		dicom(s, &e)
	case AppTLS:
		tlsHello(s, &e)
	case AppMQTT:
		if !mqtt(st, s, &e) {
			mqttConnack(st, s, &e)
		}
	case AppModbus:
		modbus(s, &e)
	case AppHTTP, AppSSDP:
		if !httpMsg(st, s, &e, st.app) {
			formBody(st, s, &e)
		}
	case AppSSH:
		ssh(st, s, &e)
	case AppVNC:
		vnc(st, s, &e)
	case AppTelnet:
		telnet(st, s, &e)
	case AppFTP:
		ftp(st, s, &e)
	case AppBACnet:
		bacnet(s, &e)
	case AppSNMP:
		snmp(st, s, &e)
	case AppDHCP:
		dhcp4Sample(s, &e)
	case AppDHCPv6:
		dhcp6(s.p, s.complete(), true, &e)
	case AppNTP:
		ntp(s, &e)
	case AppLDAP:
		ldap(s, &e)
	case AppDNS, AppMDNS:
		if s.t.Proto == protoTCP {
			dnsTCP(s, &e)
		} else {
			dns(s.p, s.complete(), st.app == AppMDNS, &e)
		}
	}
	e.App = ""
	*d = e
}

func wantMore(st *State) bool {
	if st.login != nil && st.login.waiting && st.n < maxLoginSamples {
		return true // the server's answer is due
	}
	switch st.app {
	case AppTelnet, AppFTP:
		return st.login != nil && !st.login.done && st.n < maxLoginSamples
	case AppHL7:
		return !st.hl7UDI && st.n < maxHL7Samples
	case "":
		// An FTP greeting without a command yet: the USER line follows.
		return st.ftpBanner && st.n < maxLoginSamples
	}
	return false
}

// Discover decodes a discovery packet (DHCP, DHCPv6, DNS response, ARP, ND).
// ARP and ND carry no application fields: the caller reads their addresses.
func Discover(ev *flow.Discovery) Detection {
	var d Detection
	if ev == nil || len(ev.Data) == 0 {
		return d
	}
	switch ev.Kind {
	case flow.DiscoveryDHCP:
		dhcp4(ev.Data, &d)
	case flow.DiscoveryDHCPv6:
		dhcp6(ev.Data, true, true, &d)
	case flow.DiscoveryDNS:
		mdns := ev.SrcPort == 5353 || ev.DstPort == 5353 || ev.Dst == mdns4 || ev.Dst == mdns6
		dns(ev.Data, true, mdns, &d)
	}
	return d
}

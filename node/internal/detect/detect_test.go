package detect

import (
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/medmesh/medmesh/node/flow"
)

var (
	tcpTuple = flow.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 7777, Proto: protoTCP}
	udpTuple = flow.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 7777, Proto: protoUDP}
)

var (
	ntpTuple    = flow.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 123, Proto: protoUDP}
	syslogTuple = flow.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 514, Proto: protoUDP}
)

// inspect runs one sample cut to the datapath's 128 bytes.
func inspect(st *State, tu flow.Tuple, dir flow.Dir, p []byte) Detection {
	s := flow.Sample{Flow: tu, Dir: dir, WireLen: uint16(len(p)), Payload: p[:min(len(p), datapathSnap)]}
	return Inspect(st, &s, testDefaults)
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStateSmall(t *testing.T) {
	if n := unsafe.Sizeof(State{}); n != 32 {
		t.Fatalf("State is %d bytes, documented as 32", n)
	}
	if n := unsafe.Sizeof(login{}); n > 256 {
		t.Fatalf("login state is %d bytes, want at most 256 (it is allocated per login-carrying flow)", n)
	}
}

func TestInspectTable(t *testing.T) {
	tlsHello := clientHello("example.org", "h2", "http/1.1")
	dhcpv6 := mustHex(t, "01 abcdef 0001000e00010001 1c39cf88 080027fe8f95 0006 0004 0017 0018 0027 0009 00 06 6d6f6e69746f 00")
	mqttConnect := []byte("\x10\x2a\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08pump-007\x00\x05admin\x00\x0bsecret-pass")
	modbusReq := mustHex(t, "0001 0000 0006 11 03 006b 0003")
	bacnetWhoIs := mustHex(t, "810b000c0120ffff00ff1008")
	snmpGet := mustHex(t, "302902010104067075626c6963a01c02045067d65d020100020100300e300c06082b060102010105000500")
	dicomRQ := append(mustHex(t, "01000000004a0001 0000"), []byte("STORESCP        ECHOSCU         ")...)
	dicomRQ = append(dicomRQ, make([]byte, 32)...)
	for _, tc := range []struct {
		name   string
		tu     flow.Tuple
		p      []byte
		app    string
		fields map[string]string
	}{
		{"hl7", tcpTuple, []byte("\x0bMSH|^~\\&|PUMPGW|ICU3|EMR|HOSP|20240101||ORU^R01|1|P|2.6\rPID|1||12345||DOE^JANE\r"), AppHL7,
			map[string]string{FieldHL7SendingApp: "PUMPGW", FieldHL7SendingFacility: "ICU3", FieldHL7MessageType: "ORU^R01"}},
		{"hl7 bare msh", tcpTuple, []byte("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.3\r"), AppHL7, map[string]string{FieldHL7MessageType: "ADT^A01"}},
		{"dicom", tcpTuple, dicomRQ, AppDICOM, map[string]string{FieldDICOMCalledAE: "STORESCP", FieldDICOMCallingAE: "ECHOSCU"}},
		{"tls", tcpTuple, tlsHello, AppTLS, map[string]string{FieldTLSSNI: "example.org", FieldTLSALPN: "h2,http/1.1"}},
		{"http", tcpTuple, []byte("GET /status HTTP/1.1\r\nHost: pump-7.icu\r\nUser-Agent: curl/8.0\r\n\r\n"), AppHTTP,
			map[string]string{FieldHTTPHost: "pump-7.icu", FieldHTTPUserAgent: "curl/8.0"}},
		{"http response", tcpTuple, []byte("HTTP/1.1 200 OK\r\nServer: GoAhead-Webs\r\n\r\n"), AppHTTP, map[string]string{FieldHTTPServer: "GoAhead-Webs"}},
		{"mqtt", tcpTuple, mqttConnect, AppMQTT, map[string]string{FieldMQTTClientID: "pump-007", FieldMQTTUser: "admin"}},
		{"modbus", tcpTuple, modbusReq, AppModbus, map[string]string{FieldModbusUnit: "17"}},
		{"telnet", tcpTuple, []byte{iac, 0xfd, 0x18, iac, 0xfd, 0x20, iac, 0xfb, 0x01}, AppTelnet, nil},
		{"bacnet", udpTuple, bacnetWhoIs, AppBACnet, map[string]string{FieldBACnetFunction: "original-broadcast-npdu"}},
		{"snmp", udpTuple, snmpGet, AppSNMP, map[string]string{FieldSNMPVersion: "2c", FieldSNMPCommunity: "******"}},
		{"ssdp", udpTuple, []byte("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nSERVER: Linux/3.10 UPnP/1.0 Monitor/2.1\r\n\r\n"), AppSSDP,
			map[string]string{FieldSSDPSearch: "upnp:rootdevice"}},
		{"dhcpv6", flow.Tuple{Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::1:2"), SrcPort: 546, DstPort: 547, Proto: protoUDP},
			dhcpv6, AppDHCPv6, map[string]string{FieldDHCPFingerprint: "23,24", FieldDHCPFQDN: "monito", FieldDHCPClientID: "000100011c39cf88080027fe8f95"}},
		{"dns", udpTuple, dnsQuery("infusion.example.org", 1), AppDNS, map[string]string{FieldDNSQuery: "infusion.example.org"}},
		{"dns over tcp", tcpTuple, append([]byte{0, byte(len(dnsQuery("pacs.example.org", 1)))}, dnsQuery("pacs.example.org", 1)...), AppDNS,
			map[string]string{FieldDNSQuery: "pacs.example.org"}},
		{"dicom p-data", tcpTuple, mustHex(t, "04000000000e 0000000a 01 03 0000 0000 0000 0000"), AppDICOM, nil},
		// An NTPv4 server reply (stratum 2) and a client request on port 123.
		{"ntp server", ntpTuple, append([]byte{0x24, 2, 6, 0xec}, make([]byte, 44)...), AppNTP, map[string]string{FieldNTPMode: "server"}},
		{"ntp client", ntpTuple, append([]byte{0x23}, make([]byte, 47)...), AppNTP, map[string]string{FieldNTPMode: "client"}},
		{"syslog rfc3164", syslogTuple, []byte("<34>Oct 11 22:14:15 pump1 su: 'su root' failed on /dev/pts/8"), AppSyslog, nil},
		{"syslog rfc5424", syslogTuple, []byte("<165>1 2003-10-11T22:14:15.003Z host app - ID47 - x"), AppSyslog, nil},
		{"ldap bind", tcpTuple, mustHex(t, "300c020101 6007 020103 0400 8000"), AppLDAP, map[string]string{FieldLDAPOperation: "bind_request"}},
		{"ldap search done", tcpTuple, mustHex(t, "300c020102 6507 0a0100 0400 0400"), AppLDAP, map[string]string{FieldLDAPOperation: "search_result_done"}},
		{"hl7 software", tcpTuple, []byte("\x0bMSH|^~\\&|ENGINE|HOSP|PUMP|WARD|2024||ACK^R40|1|P|2.6\rSFT|Mirth Corp|3.12.0|Mirth Connect|b42\r"), AppHL7,
			map[string]string{FieldHL7Software: "Mirth Connect", FieldHL7SoftwareVer: "3.12.0"}},
		{"ssh", tcpTuple, []byte("SSH-2.0-OpenSSH_9.6\r\n"), AppSSH, map[string]string{FieldSSHBanner: "2.0-OpenSSH_9.6"}},
		// Negatives: text and binary that must not match.
		{"smtp greeting", tcpTuple, []byte("220 mx.example.org ESMTP ready\r\n"), "", nil},
		{"zeros", tcpTuple, make([]byte, 128), "", nil},
		{"udp zeros", udpTuple, make([]byte, 128), "", nil},
		{"dicom p-data even pc id", tcpTuple, mustHex(t, "04000000000e 0000000a 02 03 0000 0000 0000 0000"), "", nil},
		{"nbns", udpTuple, dnsQuery("EOEBFEEFCACACACACACACACACACACAAA", 0x20), "", nil},
		{"http on udp is not ssdp", udpTuple, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", nil},
		{"ntp off its port", udpTuple, append([]byte{0x24, 2, 6, 0xec}, make([]byte, 44)...), "", nil},
		{"ntp server of stratum 0", ntpTuple, append([]byte{0x24, 0}, make([]byte, 46)...), "", nil},
		{"syslog pri too high", syslogTuple, []byte("<192>x"), "", nil},
		{"syslog leading zero", syslogTuple, []byte("<01>x"), "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st State
			d := inspect(&st, tc.tu, flow.Fwd, tc.p)
			if d.App != tc.app || st.App() != tc.app {
				t.Fatalf("app %q (state %q), want %q; fields %v", d.App, st.App(), tc.app, d.Fields)
			}
			for k, v := range tc.fields {
				if got := d.Field(k); got != v {
					t.Errorf("%s = %q, want %q (all %v)", k, got, v, d.Fields)
				}
			}
		})
	}
}

func dnsQuery(name string, qtype byte) []byte {
	b := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	b = appendName(b, name)
	return append(b, 0, qtype, 0, 1)
}

func appendName(b []byte, name string) []byte {
	for _, l := range strings.Split(name, ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

func TestDNSAnswers(t *testing.T) {
	// Query www.example.org, answer: CNAME then A and AAAA for the target.
	b := []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0}
	b = appendName(b, "www.example.org")
	b = append(b, 0, 1, 0, 1)
	b = append(b, 0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, 'c', 'd', 'n', 0xc0, 16)
	cdn := 12 + 17 + 4 + 12
	b = append(b, 0xc0, byte(cdn), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7)
	b = append(b, 0xc0, byte(cdn), 0, 28, 0, 1, 0, 0, 0, 60, 0, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7)
	d := Discover(&flow.Discovery{Kind: flow.DiscoveryDNS, SrcPort: 53, Data: b})
	want := []DNSAnswer{{"www.example.org", "192.0.2.7"}, {"www.example.org", "2001:db8::7"}}
	if d.App != AppDNS || !slices.Equal(d.Answers, want) {
		t.Fatalf("app %q answers %v, want %v", d.App, d.Answers, want)
	}
	// A compression loop must terminate.
	loop := []byte{0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1, 0xc0, 19, 0, 1}
	Discover(&flow.Discovery{Kind: flow.DiscoveryDNS, SrcPort: 53, Data: loop})
}

func TestMDNS(t *testing.T) {
	// Response: PTR _printer._tcp.local -> Ward-3 Monitor._printer._tcp.local,
	// TXT md=IntelliVue MX450 fn=Ward 3.
	b := []byte{0, 0, 0x84, 0, 0, 0, 0, 2, 0, 0, 0, 0}
	b = appendName(b, "_printer._tcp.local")
	b = append(b, 0, 12, 0, 1, 0, 0, 0, 120)
	inst := appendName(nil, "Ward-3 Monitor._printer._tcp.local")
	b = append(b, 0, byte(len(inst)))
	b = append(b, inst...)
	b = appendName(b, "Ward-3 Monitor._printer._tcp.local")
	txtRR := []byte("\x13md=IntelliVue MX450\x09fn=Ward 3")
	b = append(b, 0, 16, 0x80, 1, 0, 0, 0, 120, 0, byte(len(txtRR)))
	b = append(b, txtRR...)
	d := Discover(&flow.Discovery{Kind: flow.DiscoveryDNS, SrcPort: 5353, DstPort: 5353, Data: b})
	if d.App != AppMDNS || d.Field(FieldModel) != "IntelliVue MX450" || d.Field(FieldFriendlyName) != "Ward 3" ||
		d.Field(FieldMDNSService) != "Ward-3 Monitor._printer._tcp.local" {
		t.Fatalf("mdns: %+v", d)
	}
}

func dhcpDiscover(opts ...byte) []byte {
	b := make([]byte, 240)
	b[0], b[1], b[2] = 1, 1, 6
	copy(b[4:], []byte{1, 2, 3, 4})
	copy(b[28:], []byte{0x00, 0x0a, 0x2e, 1, 2, 3})
	copy(b[236:], []byte{0x63, 0x82, 0x53, 0x63})
	b = append(b, opts...)
	return append(b, 255)
}

func TestDHCP(t *testing.T) {
	opts := []byte{53, 1, 1, 12, 5, 'p', 'u', 'm', 'p', '7', 55, 4, 1, 3, 6, 15, 60, 8, 'M', 'S', 'F', 'T', ' ', '5', '.', '0',
		61, 7, 1, 0x00, 0x0a, 0x2e, 1, 2, 3, 81, 11, 0x04, 0, 0, 5, 'p', 'u', 'm', 'p', '7', 0, 0}
	mud := "https://mud.example.com/pump"
	opts = append(opts, 161, byte(len(mud)))
	opts = append(opts, mud...)
	p := dhcpDiscover(opts...)
	d := Discover(&flow.Discovery{Kind: flow.DiscoveryDHCP, SrcPort: 68, DstPort: 67, Data: p})
	for k, v := range map[string]string{
		FieldDHCPHostname: "pump7", FieldDHCPFingerprint: "1,3,6,15", FieldDHCPVendorClass: "MSFT 5.0",
		FieldDHCPClientID: "01000a2e010203", FieldDHCPFQDN: "pump7", FieldDHCPMUDURL: mud, FieldDHCPMessageType: "1",
	} {
		if got := d.Field(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if d.App != AppDHCP {
		t.Fatalf("app %q", d.App)
	}
	// A 128-byte sample of the same datagram is classified from its header.
	var st State
	if got := inspect(&st, udpTuple, flow.Fwd, p); got.App != AppDHCP {
		t.Fatalf("sample app %q", got.App)
	}
}

func TestHL7Continuation(t *testing.T) {
	var st State
	msg := "\x0bMSH|^~\\&|GW|ICU|EMR|H|2024||ORU^R01|1|P|2.6\rPID|1||12345||DOE^JANE||19700101\r" + strings.Repeat("NTE|1||x\r", 10)
	inspect(&st, tcpTuple, flow.Fwd, []byte(msg))
	if !st.WantMore() {
		t.Fatal("no UDI yet: HL7 flow should want more samples")
	}
	d := inspect(&st, tcpTuple, flow.Fwd, []byte("1|x\rOBX|1|ST|x||y|||||||||||||Alaris 8015\r\x1c\r"))
	if d.Field(FieldHL7UDI) != "Alaris 8015" || st.WantMore() {
		t.Fatalf("udi %q want more %v", d.Field(FieldHL7UDI), st.WantMore())
	}
	// A field cut by the sample end is not reported.
	var st2 State
	d = inspect(&st2, tcpTuple, flow.Fwd, []byte("\x0bMSH|^~\\&|GW|ICU|EMR|H|2024||ORU^R01|1|P|2.6\rPRT|1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|Alaris 80"+strings.Repeat(" ", datapathSnap)))
	if d.Field(FieldHL7UDI) != "" {
		t.Fatalf("cut UDI reported: %q", d.Field(FieldHL7UDI))
	}
}

// clientHello builds a TLS 1.2 ClientHello with SNI and ALPN extensions.
func clientHello(sni string, alpn ...string) []byte {
	var ext []byte
	name := append([]byte{0}, byte(len(sni)>>8), byte(len(sni)))
	name = append(name, sni...)
	ext = append(ext, 0, 0, byte((len(name)+2)>>8), byte(len(name)+2), byte(len(name)>>8), byte(len(name)))
	ext = append(ext, name...)
	var list []byte
	for _, a := range alpn {
		list = append(list, byte(len(a)))
		list = append(list, a...)
	}
	ext = append(ext, 0, 16, 0, byte(len(list)+2), 0, byte(len(list)))
	ext = append(ext, list...)
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)          // random
	body = append(body, 0)                            // session id
	body = append(body, 0, 4, 0xc0, 0x2f, 0xc0, 0x30) // cipher suites
	body = append(body, 1, 0)                         // compression
	body = append(body, byte(len(ext)>>8), byte(len(ext)))
	body = append(body, ext...)
	hs := append([]byte{1, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{22, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func TestNeighbor(t *testing.T) {
	// An ARP reply: 10.0.0.1 is at 02:00:00:00:00:01.
	a, ok := ParseARP(mustHex(t, "0001 0800 06 04 0002 020000000001 0a000001 020000000002 0a000002"))
	if !ok || a.Op != 2 || a.SenderMAC != (flow.MAC{2, 0, 0, 0, 0, 1}) || a.SenderIP != netip.MustParseAddr("10.0.0.1") ||
		a.TargetIP != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("arp reply %+v %v", a, ok)
	}
	if _, ok := ParseARP(mustHex(t, "0001 86dd 06 10 0002")); ok {
		t.Error("ARP for IPv6 accepted")
	}
	// A router advertisement (lifetime 1800 s) with its source link-layer
	// address; one with lifetime 0 says the sender is not a default router.
	ra := mustHex(t, "86 00 0000 40 00 0708 00000000 00000000 0101 020000000009")
	if n, ok := ParseND(ra); !ok || !n.Router || n.LinkAddr != (flow.MAC{2, 0, 0, 0, 0, 9}) {
		t.Errorf("router advertisement %+v %v", n, ok)
	}
	if n, ok := ParseND(mustHex(t, "86 00 0000 40 00 0000 00000000 00000000")); !ok || n.Router {
		t.Errorf("advertisement of lifetime 0 %+v %v", n, ok)
	}
	// A neighbour advertisement with the router flag, target fe80::1.
	na := mustHex(t, "88 00 0000 a0000000 fe800000000000000000000000000001 0201 020000000009")
	if n, ok := ParseND(na); !ok || !n.Router || n.Target != netip.MustParseAddr("fe80::1") || n.LinkAddr != (flow.MAC{2, 0, 0, 0, 0, 9}) {
		t.Errorf("neighbour advertisement %+v %v", n, ok)
	}
	// A host's neighbour advertisement: no router flag.
	if n, ok := ParseND(mustHex(t, "88 00 0000 60000000 fe800000000000000000000000000002")); !ok || n.Router {
		t.Errorf("host advertisement %+v %v", n, ok)
	}
	// An option of length 0 would loop forever: rejected.
	if _, ok := ParseND(mustHex(t, "86 00 0000 40 00 0708 00000000 00000000 0100 0000")); ok {
		t.Error("zero-length option accepted")
	}
}

func TestDHCPReplyOptions(t *testing.T) {
	offer := dhcpDiscover(53, 1, 2, 54, 4, 10, 98, 0, 12, 1, 4, 255, 255, 255, 0, 3, 4, 10, 101, 0, 1,
		6, 4, 10, 98, 0, 12, 42, 8, 10, 98, 0, 13, 10, 98, 0, 14)
	offer[0] = 2 // BOOTREPLY
	d := Discover(&flow.Discovery{Kind: flow.DiscoveryDHCP, SrcPort: 67, DstPort: 68, Data: offer})
	for k, v := range map[string]string{FieldDHCPServerID: "10.98.0.12", FieldDHCPRouter: "10.101.0.1",
		FieldDHCPDNSServers: "10.98.0.12", FieldDHCPNTPServers: "10.98.0.13,10.98.0.14", FieldDHCPMessageType: "2"} {
		if got := d.Field(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	// A router option whose length is not a multiple of 4 is dropped.
	bad := dhcpDiscover(53, 1, 2, 3, 3, 10, 0, 0)
	if d := Discover(&flow.Discovery{Kind: flow.DiscoveryDHCP, Data: bad}); d.Field(FieldDHCPRouter) != "" {
		t.Errorf("router from a 3-byte option: %q", d.Field(FieldDHCPRouter))
	}
}

func TestSNMPSystemGroup(t *testing.T) {
	descr := "Cisco IOS Software, C2960 Software (C2960-LANBASEK9-M), Version 12.2(55)SE5, RELEASE SOFTWARE (fc1)"
	for _, tc := range []struct {
		p     []byte
		field string
		want  string
	}{
		{snmpResponse("public", oidSysDescr, descr), FieldSNMPSysDescr, descr},
		{snmpResponse("public", oidSysName, "core-sw-1"), FieldSNMPSysName, "core-sw-1"},
	} {
		var st State
		d := inspect(&st, udpTuple, flow.Rev, tc.p)
		if d.App != AppSNMP || d.Field(tc.field) != tc.want {
			t.Errorf("%s = %q (app %q), want %q", tc.field, d.Field(tc.field), d.App, tc.want)
		}
	}
	// A request names the variables with NULL values: nothing to read.
	var st State
	if d := inspect(&st, udpTuple, flow.Fwd, mustHex(t, "302902010104067075626c6963a01c02045067d65d020100020100300e300c06082b060102010105000500")); d.Field(FieldSNMPSysName) != "" {
		t.Errorf("sysName from a request: %q", d.Field(FieldSNMPSysName))
	}
}

package detect

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/node/flow"
)

// knownFields lists every field name; vocabulary marks those rendered
// from a code (hex, decimal, a fixed name), which may be longer than the
// bytes they come from but stay under maxValue.
var (
	knownFields = setOf(FieldHL7MessageType, FieldHL7SendingApp, FieldHL7SendingFacility, FieldHL7UDI,
		FieldDICOMCallingAE, FieldDICOMCalledAE, FieldDICOMImplClass, FieldDICOMImplVersion, FieldDHCPHostname,
		FieldDHCPFingerprint, FieldDHCPVendorClass, FieldDHCPClientID, FieldDHCPFQDN, FieldDHCPMUDURL, FieldDNSQuery,
		FieldHTTPHost, FieldHTTPUserAgent, FieldTLSSNI, FieldTLSALPN, FieldMQTTClientID, FieldMQTTUser, FieldFriendlyName,
		FieldModel, FieldSNMPCommunity, FieldHTTPServer, FieldSSDPServer, FieldSSDPUSN, FieldSSDPSearch, FieldMDNSService,
		FieldTelnetUser, FieldFTPUser, FieldModbusUnit, FieldBACnetFunction, FieldSNMPVersion, FieldDHCPMessageType, FieldTLSVersion,
		FieldDHCPServerID, FieldDHCPRouter, FieldDHCPDNSServers, FieldDHCPNTPServers, FieldSNMPSysDescr, FieldSNMPSysName,
		FieldHL7Software, FieldHL7SoftwareVer, FieldNTPMode, FieldLDAPOperation, FieldSSHBanner, FieldVNCVersion)
	vocabulary = setOf(FieldDHCPClientID, FieldDHCPFingerprint, FieldDHCPMessageType, FieldSNMPCommunity,
		FieldSNMPVersion, FieldModbusUnit, FieldBACnetFunction, FieldTLSVersion,
		FieldDHCPServerID, FieldDHCPRouter, FieldDHCPDNSServers, FieldDHCPNTPServers, FieldNTPMode, FieldLDAPOperation, FieldVNCVersion)
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// checkDetection asserts the invariants every detector keeps.
func checkDetection(t *testing.T, d Detection, in []byte) {
	t.Helper()
	if d.App != "" && !strings.Contains(" "+strings.Join(Apps(), " ")+" ", " "+d.App+" ") {
		t.Fatalf("unknown app %q", d.App)
	}
	if d.App == "" && (len(d.Fields) > 0 || len(d.Logins) > 0 || len(d.Answers) > 0) {
		t.Fatalf("findings without an app: %+v", d)
	}
	for _, f := range d.Fields {
		if !knownFields[f.Name] {
			t.Fatalf("unknown field %q", f.Name)
		}
		if f.Value == "" || len(f.Value) > maxValue || !printable([]byte(f.Value)) {
			t.Fatalf("field %s = %q: empty, long or not printable", f.Name, f.Value)
		}
		if !vocabulary[f.Name] && len(f.Value) > len(in) {
			t.Fatalf("field %s = %q longer than the %d-byte input", f.Name, f.Value, len(in))
		}
	}
	for _, l := range d.Logins {
		checkLogin(t, l, in)
	}
	if len(d.Answers) > maxAnswers {
		t.Fatalf("%d answers", len(d.Answers))
	}
	for _, a := range d.Answers {
		if _, err := netip.ParseAddr(a.Addr); err != nil {
			t.Fatalf("answer address %q: %v", a.Addr, err)
		}
		if len(a.Name) > maxValue {
			t.Fatalf("answer name %d bytes", len(a.Name))
		}
	}
}

// checkLogin asserts what every reported login keeps to.
func checkLogin(t *testing.T, l Login, in []byte) {
	t.Helper()
	if !strings.Contains(" "+strings.Join(Apps(), " ")+" ", " "+l.Protocol+" ") {
		t.Fatalf("login protocol %q", l.Protocol)
	}
	if len(l.User) > maxValue || !l.Inferred && len(l.User) > len(in) || l.User != "" && !printable([]byte(l.User)) {
		t.Fatalf("login user %q from a %d-byte input", l.User, len(in))
	}
	if l.Outcome > NoAnswer || l.Subject > flow.Rev || l.Partial && l.Default && !l.NoPassword {
		t.Fatalf("login %#v", l)
	}
}

// fuzzExchange feeds data to one flow as a sequence of samples: each
// starts with a byte whose top bit is the direction (set: responder) and
// whose low 7 bits are the sample length; a length past the end takes the
// rest. It checks every detection, and that End leaves no login behind.
func fuzzExchange(t *testing.T, tu flow.Tuple, data []byte) {
	var st State
	all := data
	for len(data) > 0 {
		h := data[0]
		data = data[1:]
		n := min(int(h&0x7f), len(data))
		dir := flow.Fwd
		if h&0x80 != 0 {
			dir = flow.Rev
		}
		p := data[:n]
		data = data[n:]
		s := flow.Sample{Flow: tu, Dir: dir, WireLen: uint16(len(p)), Payload: p}
		d := Inspect(&st, &s, testDefaults)
		checkDetection(t, d, all)
		if st.login != nil && (st.login.nu > maxLogin || st.login.np > maxLogin) {
			t.Fatal("login buffer overflow")
		}
	}
	if l, ok := st.End(); ok {
		checkLogin(t, l, all)
	}
	if _, ok := st.End(); ok {
		t.Fatal("End reported the same login twice")
	}
}

// exchange frames samples for fuzzExchange.
func exchange(steps ...step) []byte {
	var out []byte
	for _, s := range steps {
		for p := []byte(s.p); ; {
			n := min(len(p), 0x7f)
			h := byte(n)
			if s.dir == flow.Rev {
				h |= 0x80
			}
			out = append(out, h)
			out = append(out, p[:n]...)
			if p = p[n:]; len(p) == 0 {
				break
			}
		}
	}
	return out
}

// fuzzInspect feeds data as a first sample, as a later sample of a flow
// already classified as app, in both directions, and cut to 128 bytes.
func fuzzInspect(t *testing.T, tu flow.Tuple, app string, data []byte) {
	for _, cut := range []int{len(data), min(len(data), datapathSnap)} {
		for _, dir := range []flow.Dir{flow.Fwd, flow.Rev} {
			s := flow.Sample{Flow: tu, Dir: dir, WireLen: uint16(min(len(data), 65535)), Payload: data[:cut]}
			var st State
			d := Inspect(&st, &s, testDefaults)
			checkDetection(t, d, data)
			known := State{app: app}
			for range 3 {
				d = Inspect(&known, &s, testDefaults)
				checkDetection(t, d, data)
				if len(data) > 0 && d.App != app {
					t.Fatalf("known flow app %q, want %q", d.App, app)
				}
			}
			if known.login != nil && (known.login.nu > maxLogin || known.login.np > maxLogin) {
				t.Fatal("login buffer overflow")
			}
		}
	}
}

func tuple(proto uint8, sport, dport uint16) flow.Tuple {
	return flow.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: sport, DstPort: dport, Proto: proto}
}

func FuzzHL7(f *testing.F) {
	f.Add([]byte("\x0bMSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.3\rPRT|1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|UDI\r\x1c\r"))
	f.Add([]byte("MSH|^~\\&|A|B"))
	f.Add([]byte("x\rOBX|1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16|17|dev\r"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoTCP, 40000, 6661), AppHL7, b) })
}

func FuzzDICOM(f *testing.F) {
	p := append([]byte{1, 0, 0, 0, 0, 0x4a, 0, 1, 0, 0}, []byte("STORESCP        ECHOSCU         ")...)
	p = append(p, make([]byte, 32)...)
	p = append(p, 0x50, 0, 0, 12, 0x52, 0, 0, 3, '1', '.', '2', 0x55, 0, 0, 1, 'X')
	f.Add(p)
	f.Add([]byte{2, 0, 0, 0, 0, 0x44})
	f.Add([]byte{4, 0, 0, 0, 0, 14, 0, 0, 0, 10, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoTCP, 40000, 104), AppDICOM, b) })
}

func FuzzTLS(f *testing.F) {
	f.Add(clientHello("example.org", "h2"))
	f.Add([]byte{0x17, 3, 3, 0, 3, 1, 2, 3})
	f.Add([]byte{22, 3, 3, 0, 0x40, 2, 0, 0, 0x3c, 3, 3})
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoTCP, 40000, 443), AppTLS, b) })
}

func FuzzHTTP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: b\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 401 Unauthorized\r\nServer: x\r\n"))
	f.Add([]byte("POST /x HTTP/1.0\r\nAuthorization: Basic Zm9v"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoTCP, 40000, 80), AppHTTP, b) })
}

func FuzzSSDP(f *testing.F) {
	f.Add([]byte("M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nMAN: \"ssdp:discover\"\r\n\r\n"))
	f.Add([]byte("NOTIFY * HTTP/1.1\r\nUSN: uuid:1::upnp:rootdevice\r\nSERVER: a\r\nX-Friendly-Name: b\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoUDP, 40000, 1900), AppSSDP, b) })
}

func FuzzMQTT(f *testing.F) {
	f.Add([]byte("\x10\x2a\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08pump-007\x00\x05admin\x00\x0bsecret-pass"))
	f.Add([]byte("\x10\x20\x00\x04MQTT\x05\xc6\x00\x3c\x00\x00\x01a\x00\x00\x01t\x00\x01p\x00\x01u\x00\x01s"))
	f.Add([]byte("\x10\x10\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02id"))
	f.Add(exchange(step{flow.Fwd, "\x10\x2a\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08pump-007\x00\x05admin\x00\x0bsecret-pass"}, step{flow.Rev, "\x20\x02\x00\x05"}))
	f.Add(exchange(step{flow.Fwd, "\x10\x1a\x00\x04MQTT\x05\x82\x00\x3c\x00\x00\x01a\x00\x05admin"}, step{flow.Rev, "\x20\x03\x00\x86\x00"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoTCP, 40000, 1883), AppMQTT, b)
		fuzzExchange(t, tuple(protoTCP, 40000, 1883), b)
	})
}

func FuzzModbus(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 6, 0x11, 3, 0, 0x6b, 0, 3})
	f.Add([]byte{0, 1, 0, 0, 0, 3, 1, 0x83, 2, 0, 2, 0, 0, 0, 2, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoTCP, 40000, 502), AppModbus, b) })
}

func FuzzTelnet(f *testing.F) {
	f.Add([]byte{iac, 0xfd, 0x18, iac, 0xfa, 0x18, 1, iac, se, 'l', 'o', 'g', 'i', 'n', ':', ' '})
	f.Add([]byte("Password: "))
	f.Add([]byte("root\r\n"))
	f.Add(exchange(step{flow.Rev, "\r\nconsole\r\nlogin: "}, step{flow.Fwd, "admin\r\n"}, step{flow.Rev, "Password: "},
		step{flow.Fwd, "admin\r\n"}, step{flow.Rev, "\r\nLogin incorrect\r\nlogin: "}, step{flow.Fwd, "root\r"}, step{flow.Rev, "Password:"},
		step{flow.Fwd, "root\r"}, step{flow.Rev, "Last login: today\r\n$ "}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoTCP, 40000, 23), AppTelnet, b)
		fuzzExchange(t, tuple(protoTCP, 40000, 23), b)
	})
}

func FuzzFTP(f *testing.F) {
	f.Add([]byte("220 (vsFTPd 3.0.3)\r\n"))
	f.Add([]byte("USER anonymous\r\n"))
	f.Add([]byte("PASS x@\r\n"))
	f.Add(exchange(step{flow.Rev, "220 FTP\r\n"}, step{flow.Fwd, "USER anonymous\r\n"}, step{flow.Rev, "331 Password\r\n"},
		step{flow.Fwd, "PASS x@\r\n"}, step{flow.Rev, "530 No\r\n"}, step{flow.Fwd, "USER ftp\r\n"}, step{flow.Rev, "230 OK\r\n"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoTCP, 40000, 21), AppFTP, b)
		fuzzExchange(t, tuple(protoTCP, 40000, 21), b)
	})
}

func FuzzBACnet(f *testing.F) {
	f.Add([]byte{0x81, 0x0b, 0, 12, 1, 0x20, 0xff, 0xff, 0, 0xff, 0x10, 8})
	f.Add([]byte{0x81, 0x04, 0, 16, 10, 0, 0, 1, 0xba, 0xc0, 1, 0, 0x10, 8, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoUDP, 47808, 47808), AppBACnet, b) })
}

func FuzzSNMP(f *testing.F) {
	f.Add([]byte{0x30, 0x29, 2, 1, 1, 4, 6, 'p', 'u', 'b', 'l', 'i', 'c', 0xa0, 0x1c, 2, 4, 0x50, 0x67, 0xd6, 0x5d, 2, 1, 0, 2, 1, 0, 0x30, 0x0e, 0x30, 0x0c, 6, 8, 0x2b, 6, 1, 2, 1, 1, 5, 0, 5, 0})
	f.Add([]byte{0x30, 0x81, 0x05, 2, 1, 3, 0x30, 0})
	f.Add(snmpResponse("public", oidSysDescr, "Linux pump 4.19.0 #1 SMP armv7l, Version 2.4.1"))
	f.Add(snmpResponse("private", oidSysName, "R1.lab.local"))
	f.Add(exchange(step{flow.Fwd, snmpMsg("public", pduGet)}, step{flow.Rev, snmpMsg("public", pduResponse)}, step{flow.Fwd, snmpMsg("x", pduTrapV2)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoUDP, 40000, 161), AppSNMP, b)
		fuzzExchange(t, tuple(protoUDP, 40000, 161), b)
	})
}

// FuzzHTTPForm: request and response sequences with Basic authorizations
// and form posts, through one flow.
func FuzzHTTPForm(f *testing.F) {
	post := "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
	f.Add(exchange(step{flow.Fwd, post + "username=admin&password=admin"}, step{flow.Rev, "HTTP/1.1 302 Found\r\nLocation: /home\r\n\r\n"}))
	f.Add(exchange(step{flow.Fwd, post}, step{flow.Fwd, "user=a%41&pwd=%zz&pass=x+y"}, step{flow.Rev, "HTTP/1.1 303 x\r\nLocation: /login\r\n\r\n"}))
	f.Add(exchange(step{flow.Fwd, "GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n"}, step{flow.Rev, "HTTP/1.1 401 No\r\n\r\n"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzExchange(t, tuple(protoTCP, 40000, 80), b)
		fuzzInspect(t, tuple(protoTCP, 40000, 80), AppHTTP, b)
	})
}

// FuzzVNC: RFB version, security and result exchanges.
func FuzzVNC(f *testing.F) {
	ch := strings.Repeat("c", 16)
	f.Add(exchange(step{flow.Rev, "RFB 003.008\n"}, step{flow.Fwd, "RFB 003.008\n"}, step{flow.Rev, "\x02\x01\x02"}, step{flow.Fwd, "\x01"}, step{flow.Rev, "\x00\x00\x00\x00"}))
	f.Add(exchange(step{flow.Rev, "RFB 003.003\n"}, step{flow.Fwd, "RFB 003.003\n"}, step{flow.Rev, "\x00\x00\x00\x02" + ch}, step{flow.Fwd, ch}, step{flow.Rev, "\x00\x00\x00\x01"}))
	f.Add(exchange(step{flow.Rev, "RFB 003.007\n"}, step{flow.Fwd, "RFB 003.007\n"}, step{flow.Rev, "\x00\x00\x00\x03err"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzExchange(t, tuple(protoTCP, 40000, 5900), b)
		fuzzInspect(t, tuple(protoTCP, 40000, 5900), AppVNC, b)
	})
}

// FuzzSSH: identification strings from either side.
func FuzzSSH(f *testing.F) {
	f.Add(exchange(step{flow.Rev, "SSH-2.0-OpenSSH_7.9p1 Raspbian-10\r\n"}, step{flow.Fwd, "SSH-2.0-x\r\n"}, step{flow.Rev, "\x00\x00\x01\x14"}))
	f.Add([]byte("SSH-1.99-Cisco-1.25\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzExchange(t, tuple(protoTCP, 40000, 22), b)
		fuzzInspect(t, tuple(protoTCP, 40000, 22), AppSSH, b)
	})
}

// FuzzARP: ParseARP never panics and decodes only Ethernet/IPv4 requests
// and replies.
func FuzzARP(f *testing.F) {
	f.Add([]byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x42, 10, 1, 0, 66, 0, 0, 0, 0, 0, 0, 10, 1, 1, 5})
	f.Add([]byte{0, 1, 8, 0, 6, 4, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := ParseARP(b)
		if ok && (len(b) < 28 || !a.SenderIP.Is4() || !a.TargetIP.Is4() || (a.Op == 2) != (b[7] == 2)) {
			t.Fatalf("ParseARP(%x) = %+v", b, a)
		}
	})
}

// fuzzDiscover also runs Discover, which sees whole datagrams.
func fuzzDiscover(t *testing.T, kind flow.DiscoveryKind, sport, dport uint16, b []byte) {
	d := Discover(&flow.Discovery{Kind: kind, SrcPort: sport, DstPort: dport, Data: b})
	checkDetection(t, d, b)
}

func FuzzDHCP(f *testing.F) {
	f.Add(dhcpDiscover(53, 1, 1, 12, 4, 'p', 'u', 'm', 'p', 55, 3, 1, 3, 6, 81, 7, 4, 0, 0, 3, 'a', 'b', 'c'))
	f.Add(dhcpDiscover(61, 7, 1, 0, 1, 2, 3, 4, 5, 161, 3, 'h', 't', 't'))
	f.Add(dhcpDiscover(53, 1, 2, 54, 4, 10, 0, 0, 1, 3, 8, 10, 0, 0, 1, 10, 0, 0, 2, 6, 4, 10, 0, 0, 3, 42, 3, 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoUDP, 68, 67), AppDHCP, b)
		fuzzDiscover(t, flow.DiscoveryDHCP, 68, 67, b)
	})
}

func FuzzDHCPv6(f *testing.F) {
	f.Add([]byte{1, 0xab, 0xcd, 0xef, 0, 1, 0, 4, 0, 3, 0, 1, 0, 6, 0, 4, 0, 0x17, 0, 0x18, 0, 0x27, 0, 4, 0, 2, 'a', 0})
	f.Add([]byte{11, 1, 2, 3, 0, 1, 0, 2, 0, 1, 0, 16, 0, 8, 0, 0, 0, 9, 0, 2, 'x', 'y'})
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoUDP, 546, 547), AppDHCPv6, b)
		fuzzDiscover(t, flow.DiscoveryDHCPv6, 546, 547, b)
	})
}

func FuzzDNS(f *testing.F) {
	f.Add(dnsQuery("pump.example.org", 1))
	f.Add([]byte{0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1, 0xc0, 19, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoUDP, 40000, 53), AppDNS, b)
		fuzzInspect(t, tuple(protoTCP, 40000, 53), AppDNS, append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
		fuzzDiscover(t, flow.DiscoveryDNS, 53, 40000, b)
	})
}

func FuzzMDNS(f *testing.F) {
	f.Add([]byte{0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 16, 0x80, 1, 0, 0, 0, 1, 0, 6, 5, 'm', 'd', '=', 'X', '1'})
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, '_', 'h', 't', 't', 'p', 0, 0, 12, 0x80, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzInspect(t, tuple(protoUDP, 5353, 5353), AppMDNS, b)
		fuzzDiscover(t, flow.DiscoveryDNS, 5353, 5353, b)
	})
}

func FuzzNTP(f *testing.F) {
	client := make([]byte, 48)
	client[0] = 0x23
	server := make([]byte, 48)
	server[0], server[1] = 0x24, 2
	f.Add(client)
	f.Add(server)
	f.Add(append(server, make([]byte, 20)...))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoUDP, 40000, 123), AppNTP, b) })
}

func FuzzSyslog(f *testing.F) {
	f.Add([]byte("<34>Oct 11 22:14:15 pump1 su: 'su root' failed"))
	f.Add([]byte("<165>1 2003-10-11T22:14:15.003Z host app - ID47 - x"))
	f.Add([]byte("<0>"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoUDP, 40000, 514), AppSyslog, b) })
}

func FuzzLDAP(f *testing.F) {
	// bindRequest (simple, empty name and password) and bindResponse.
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00})
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00})
	f.Add([]byte{0x30, 0x05, 0x02, 0x01, 0x02, 0x42, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) { fuzzInspect(t, tuple(protoTCP, 40000, 389), AppLDAP, b) })
}

// FuzzNeighbor: ARP and ND decoding never panics and returns what it
// parsed only from whole headers.
func FuzzNeighbor(f *testing.F) {
	f.Add([]byte{0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 2})
	ra := make([]byte, 24)
	ra[0], ra[6], ra[16], ra[17] = NDRouterAdvertisement, 7, 1, 1
	f.Add(ra)
	na := make([]byte, 32)
	na[0], na[4], na[24], na[25] = NDNeighborAdvertisement, 0x80, 2, 1
	f.Add(na)
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, ok := ParseARP(b); ok && (len(b) < 28 || (a.Op != 1 && a.Op != 2) || !a.SenderIP.Is4()) {
			t.Fatalf("ARP %+v from %d bytes", a, len(b))
		}
		if n, ok := ParseND(b); ok && (len(b) < 8 || n.Type < NDRouterSolicitation || n.Type > NDRedirect) {
			t.Fatalf("ND %+v from %d bytes", n, len(b))
		}
		d := Discover(&flow.Discovery{Kind: flow.DiscoveryARP, Data: b})
		checkDetection(t, d, b)
		d = Discover(&flow.Discovery{Kind: flow.DiscoveryND, Data: b})
		checkDetection(t, d, b)
	})
}

// snmpResponse builds an SNMPv2c GetResponse with one OCTET STRING binding.
func snmpResponse(community string, oid []byte, value string) []byte {
	tlv := func(tag byte, v []byte) []byte {
		if len(v) < 128 {
			return append([]byte{tag, byte(len(v))}, v...)
		}
		return append([]byte{tag, 0x81, byte(len(v))}, v...)
	}
	bind := tlv(0x30, append(tlv(0x06, oid), tlv(0x04, []byte(value))...))
	pdu := tlv(0xa2, append(append(append(tlv(0x02, []byte{0x12, 0x34}), tlv(0x02, []byte{0})...), tlv(0x02, []byte{0})...), tlv(0x30, bind)...))
	msg := append(append(tlv(0x02, []byte{1}), tlv(0x04, []byte(community))...), pdu...)
	return tlv(0x30, msg)
}

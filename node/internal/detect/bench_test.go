package detect

import (
	"testing"

	"github.com/medmesh/medmesh/node/flow"
)

// BenchmarkInspect measures the cost of classifying one first sample of a
// fresh flow, per detector, with the sample cut to 128 bytes as the
// datapath does. "miss" is a payload no detector matches: every detector
// of the transport runs.
func BenchmarkInspect(b *testing.B) {
	dicomRQ := append([]byte{1, 0, 0, 0, 0, 0x4a, 0, 1, 0, 0}, []byte("STORESCP        ECHOSCU         ")...)
	dicomRQ = append(dicomRQ, make([]byte, 40)...)
	hl7 := []byte("\x0bMSH|^~\\&|PUMPGW|ICU3|EMR|HOSP|20240101120000||ORU^R01|123456|P|2.6\rPID|1||12345||DOE^JANE||19700101|F\rOBX|1|NM|x\r")
	miss := make([]byte, 128)
	for i := range miss {
		miss[i] = byte(i*7 + 3)
	}
	cases := []struct {
		name string
		tu   flow.Tuple
		p    []byte
	}{
		{AppHL7, tuple(protoTCP, 40000, 6661), hl7},
		{AppDICOM, tuple(protoTCP, 40000, 104), dicomRQ},
		{AppTLS, tuple(protoTCP, 40000, 443), clientHello("monitor.icu.example.org", "h2", "http/1.1")},
		{AppHTTP, tuple(protoTCP, 40000, 80), []byte("GET /api/v1/status HTTP/1.1\r\nHost: pump-7.icu.example.org\r\nUser-Agent: pump/2.1\r\nAccept: */*\r\n\r\n")},
		{AppMQTT, tuple(protoTCP, 40000, 1883), []byte("\x10\x2a\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08pump-007\x00\x05admin\x00\x0bsecret-pass")},
		{AppModbus, tuple(protoTCP, 40000, 502), []byte{0, 1, 0, 0, 0, 6, 0x11, 3, 0, 0x6b, 0, 3}},
		{AppTelnet, tuple(protoTCP, 40000, 23), []byte{iac, 0xfd, 0x03, iac, 0xfb, 0x18, iac, 0xfb, 0x1f}},
		{AppFTP, tuple(protoTCP, 21, 40000), []byte("220 (vsFTPd 3.0.3)\r\n")},
		{AppBACnet, tuple(protoUDP, 47808, 47808), []byte{0x81, 0x0b, 0, 12, 1, 0x20, 0xff, 0xff, 0, 0xff, 0x10, 8}},
		{AppSNMP, tuple(protoUDP, 40000, 161), []byte{0x30, 0x29, 2, 1, 1, 4, 6, 'p', 'u', 'b', 'l', 'i', 'c', 0xa0, 0x1c, 2, 4, 0x50, 0x67, 0xd6, 0x5d, 2, 1, 0, 2, 1, 0, 0x30, 0x0e, 0x30, 0x0c, 6, 8, 0x2b, 6, 1, 2, 1, 1, 5, 0, 5, 0}},
		{AppSSDP, tuple(protoUDP, 40000, 1900), []byte("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n")},
		{AppDHCP, tuple(protoUDP, 68, 67), dhcpDiscover(53, 1, 1, 12, 4, 'p', 'u', 'm', 'p', 55, 4, 1, 3, 6, 15)},
		{AppDHCPv6, tuple(protoUDP, 546, 547), []byte{1, 0xab, 0xcd, 0xef, 0, 1, 0, 10, 0, 3, 0, 1, 0, 0x0a, 0x2e, 1, 2, 3, 0, 6, 0, 4, 0, 0x17, 0, 0x18}},
		{AppDNS, tuple(protoUDP, 40000, 53), dnsQuery("pacs.radiology.example.org", 1)},
		{AppMDNS, tuple(protoUDP, 5353, 5353), dnsQuery("_ipp._tcp.local", 12)},
		{"miss-tcp", tuple(protoTCP, 40000, 9999), miss},
		{"miss-udp", tuple(protoUDP, 40000, 9999), miss},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dir := flow.Fwd
			if c.name == AppFTP {
				dir = flow.Rev
			}
			s := flow.Sample{Flow: c.tu, Dir: dir, WireLen: uint16(len(c.p)), Payload: c.p[:min(len(c.p), datapathSnap)]}
			var st State
			if d := Inspect(&st, &s, testDefaults); (d.App == "") != (c.name[:min(4, len(c.name))] == "miss") && c.name != AppFTP {
				b.Fatalf("%s: app %q", c.name, d.App)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(s.Payload)))
			for b.Loop() {
				st = State{}
				Inspect(&st, &s, testDefaults)
			}
		})
	}
}

// BenchmarkDiscover measures whole-datagram decoding of discovery events.
func BenchmarkDiscover(b *testing.B) {
	dhcp := dhcpDiscover(53, 1, 1, 12, 4, 'p', 'u', 'm', 'p', 55, 4, 1, 3, 6, 15, 60, 3, 'a', 'b', 'c', 61, 7, 1, 0, 1, 2, 3, 4, 5)
	dnsResp := []byte{0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4}
	for _, c := range []struct {
		name string
		ev   flow.Discovery
	}{
		{AppDHCP, flow.Discovery{Kind: flow.DiscoveryDHCP, SrcPort: 68, DstPort: 67, Data: dhcp}},
		{AppDNS, flow.Discovery{Kind: flow.DiscoveryDNS, SrcPort: 53, DstPort: 40000, Data: dnsResp}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Discover(&c.ev)
			}
		})
	}
}

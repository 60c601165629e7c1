package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/internal/spool"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// outputs runs a capture through the real datapath (the sensor's XDP
// program under BPF_PROG_TEST_RUN) and the sensor engine, as `medmesh
// replay --report` does, with learn (optional) frozen first, and gathers
// everything the sensor would let out of it: the engine's logs at debug
// level, the flow records as JSON, the report as JSON and as a table,
// every alert and device as protobuf JSON, and the bytes of a spool the
// alerts and devices were appended to, as a sensor spools its reports.
func outputs(t *testing.T, file, learn string) (*Analysis, []byte) {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat(file); err != nil {
		t.Skipf("skipped: %s absent (%v)", file, err)
	}
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := Analyze(context.Background(), file, AnalyzeOptions{Replay: DefaultOptions(), SensorID: "s1", Learn: learn}, log)
	if err != nil {
		t.Fatalf("analyze %s: %v", file, err)
	}
	for _, r := range a.Records {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	if err := a.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	cfg := spool.DefaultConfig()
	cfg.Dir = t.TempDir()
	sp, err := spool.Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range a.AlertRecords() {
		out.WriteString(protojson.Format(al))
		if _, err := sp.Append(&medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: al}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range a.DeviceRecords() {
		out.WriteString(protojson.Format(d))
		if _, err := sp.Append(&medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(cfg.Dir, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	return a, out.Bytes()
}

// TestAnalyzeLoginAlerts is issue 17's detector acceptance on the real
// nDPI captures, through the sensor's datapath and engine: the logins they
// carry raise default_credentials where a factory default (anonymous FTP,
// SNMP "public") was accepted, cleartext_credentials where a password of
// another kind crossed in clear; each alert names the protocol and the
// account; no password reaches any output.
func TestAnalyzeLoginAlerts(t *testing.T) {
	type login struct{ kind, protocol, account, outcome string }
	for _, tc := range []struct {
		file string
		want []login
		// Logins whose ends are both off the campus (no device here to
		// carry an alert) appear among the report's detections.
		report []string
		// Passwords to look for in the outputs. Telnet's password "user" is
		// also a word the outputs use: looked for as a whole JSON string.
		// Not looked for: MQTT's "02D5050223D3", also its account name;
		// "public", the SNMP default, a word device names may contain.
		secrets []string
	}{
		{"telnet.pcap", []login{{"cleartext_credentials", "telnet", "fake", "accepted"}}, nil, []string{`"user"`}},
		{"ftp.pcap", []login{{"default_credentials", "ftp", "anonymous", "accepted"}}, nil, []string{"NcFTP@"}},
		{"http_auth.pcap", []login{{"cleartext_credentials", "http", "test", "refused"}}, nil,
			[]string{"fail2", "dGVzdDpmYWlsMg"}},
		// The broker's CONNACK accepts the first client; an Azure IoT Hub
		// CONNECT (a shared access signature as password, answer not
		// captured) goes between two addresses off the campus.
		{"mqtt.pcap", []login{{"cleartext_credentials", "mqtt", "02D5050223D3", "accepted"}},
			[]string{"mqtt user iotazewpmlithub.azure-devices.net/P47775ID170W2120/?api-version=2018-06-30 (not_seen)"},
			[]string{"SharedAccessSignature", "KU4UiBTfWe", "sig="}},
		// "public" answered by a campus agent; "adsl" in responses of
		// another; traps with "public2c" and "public" between addresses
		// off the campus.
		{"snmp.pcap", []login{{"default_credentials", "snmp", "", "accepted"}, {"cleartext_credentials", "snmp", "", "accepted"}},
			[]string{"snmp community (no_answer)", "snmp community (default password, no_answer)"}, []string{"public2c", "adsl"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			a, out := outputs(t, filepath.Join(pcapDir, "ndpi", tc.file), "")
			var got []login
			for _, al := range a.AlertRecords() {
				if l := al.GetLogin(); l != nil {
					got = append(got, login{al.GetKind(), l.GetProtocol(), l.GetAccount(), l.GetOutcome()})
					t.Logf("%s on %s: %s", al.GetKind(), al.GetDeviceMac(), al.GetSummary())
				}
			}
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || g == w
				}
				if !found {
					t.Errorf("no alert %+v among %+v", w, got)
				}
			}
			for _, r := range tc.report {
				if !bytes.Contains(out, []byte(r)) {
					t.Errorf("the report lacks the detection %q", r)
				}
			}
			for _, s := range tc.secrets {
				if i := bytes.Index(out, []byte(s)); i >= 0 {
					lo, hi := max(0, i-80), min(len(out), i+len(s)+80)
					t.Errorf("the password %q reached an output: ...%q...", s, out[lo:hi])
				}
			}
			t.Logf("%d alerts; %d password strings checked against %d bytes of output", len(a.AlertRecords()), len(tc.secrets), len(out))
		})
	}
}

// hl7Device is the sender of the tapirx HL7 captures.
var hl7Device = struct {
	mac  net.HardwareAddr
	ip   netip.Addr
	port uint16
}{net.HardwareAddr{0x00, 0x0c, 0x29, 0xb5, 0xb6, 0x48}, netip.MustParseAddr("10.0.0.155"), 6661}

// learnCapture writes a capture in which the tapirx HL7 sender's normal
// business is another interface engine (10.0.0.200), or, for the DICOM
// captures (made on loopback), in which 127.0.0.1's DICOM peer is
// 127.0.0.2: handshakes only, as a learning week would show them.
func learnCapture(t *testing.T, path string, loopback bool, start time.Time) string {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	link := layers.LinkTypeEthernet
	if loopback {
		link = layers.LinkTypeNull
	}
	if err := w.WriteFileHeader(65535, link); err != nil {
		t.Fatal(err)
	}
	src, dst, dport := hl7Device.ip, netip.MustParseAddr("10.0.0.200"), uint16(6661)
	engineMAC := net.HardwareAddr{0x08, 0x00, 0x27, 0, 0, 0x20}
	if loopback {
		src, dst, dport = netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), 104
	}
	ts := start
	pkt := func(fromClient bool, sport uint16, flags func(*layers.TCP)) {
		ts = ts.Add(time.Millisecond)
		s, d, sp, dp := src, dst, sport, dport
		smac, dmac := hl7Device.mac, engineMAC
		if !fromClient {
			s, d, sp, dp, smac, dmac = dst, src, dport, sport, engineMAC, hl7Device.mac
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Seq: 1, Window: 64240}
		flags(tcp)
		_ = tcp.SetNetworkLayerForChecksum(ip)
		var l2 gopacket.SerializableLayer = &layers.Ethernet{SrcMAC: smac, DstMAC: dmac, EthernetType: layers.EthernetTypeIPv4}
		if loopback {
			l2 = &layers.Loopback{Family: layers.ProtocolFamilyIPv4}
		}
		b := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, l2, ip, tcp); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(b.Bytes()), Length: len(b.Bytes())}, b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		sport := uint16(40000 + i)
		pkt(true, sport, func(t *layers.TCP) { t.SYN = true })
		pkt(false, sport, func(t *layers.TCP) { t.SYN, t.ACK = true, true })
		pkt(true, sport, func(t *layers.TCP) { t.ACK = true })
		pkt(true, sport, func(t *layers.TCP) { t.FIN, t.ACK = true, true })
		pkt(false, sport, func(t *layers.TCP) { t.FIN, t.ACK = true, true })
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAnalyzeCleartextPHI: HL7 and DICOM, which carry patient data
// without TLS, sent to a peer outside the sender's baseline raise
// cleartext_phi (the tapirx captures, scored after a learning capture
// whose peer is another engine); sent to the peer of its baseline (the
// same captures, learned from each other), nothing. Patient data reaches
// no output.
func TestAnalyzeCleartextPHI(t *testing.T) {
	dir := filepath.Join(pcapDir, "tapirx")
	hl7ADT, hl7ORU := filepath.Join(dir, "HL7-ADT.pcap"), filepath.Join(dir, "HL7-ORU.pcap")
	dicom := filepath.Join(dir, "dicom_arq_2_get_testclient.pcap")
	tmp := t.TempDir()
	phi := func(a *Analysis) []*medmeshv1.Alert {
		var out []*medmeshv1.Alert
		for _, al := range a.AlertRecords() {
			if al.GetKind() == "cleartext_phi" {
				out = append(out, al)
			}
		}
		return out
	}
	patient := []string{"MOUSE", "MICKEY", "19281118", "Lake Buena"}
	for _, tc := range []struct {
		name, file, learn string
		device, peer, app string // want one alert; "" wants none
	}{
		{"hl7 to a new engine", hl7ORU, learnCapture(t, filepath.Join(tmp, "hl7-learn.pcap"), false, time.Unix(1517275000, 0)),
			hl7Device.mac.String(), "10.0.0.126", "hl7"},
		{"hl7 to its engine", hl7ORU, hl7ADT, "", "", ""},
		{"dicom to a new peer", dicom, learnCapture(t, filepath.Join(tmp, "dicom-learn.pcap"), true, time.Unix(1542403000, 0)),
			"ip:127.0.0.1", "127.0.0.1", "dicom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, out := outputs(t, tc.file, tc.learn)
			got := phi(a)
			if tc.device == "" {
				if len(got) != 0 {
					t.Fatalf("HL7 to the baseline's own peer raised %v", got)
				}
			} else if len(got) != 1 || got[0].GetDeviceMac() != tc.device || got[0].GetFlow().GetDst() != tc.peer || got[0].GetFlow().GetApp() != tc.app {
				t.Fatalf("cleartext_phi alerts %v, want one about %s to %s (%s); all: %v", got, tc.device, tc.peer, tc.app, a.AlertRecords())
			}
			for _, al := range got {
				t.Logf("%s", al.GetSummary())
			}
			for _, p := range patient {
				if bytes.Contains(out, []byte(p)) {
					t.Errorf("patient data %q reached an output", p)
				}
			}
		})
	}
}

// TestAnalyzeScanKinds: the generator's scan, through the datapath, is one
// scan alert per scanning device with its evidence, and nothing about the
// devices it probed.
func TestAnalyzeScanKinds(t *testing.T) {
	testutil.RequireRoot(t)
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	scanner := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x66}
	ts := time.Unix(1767250800, 0)
	write := func(smac, dmac net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, flags func(*layers.TCP)) {
		ts = ts.Add(time.Millisecond)
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1, Window: 1024}
		flags(tcp)
		_ = tcp.SetNetworkLayerForChecksum(ip)
		b := gopacket.NewSerializeBuffer()
		eth := &layers.Ethernet{SrcMAC: smac, DstMAC: dmac, EthernetType: layers.EthernetTypeIPv4}
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(b.Bytes()), Length: len(b.Bytes())}, b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	src := netip.MustParseAddr("10.5.0.66")
	// A SYN scan of 3 hosts x 30 ports: closed ports reset, port 22 open
	// (SYN-ACK, then the scanner's reset: half-open).
	for h := range 3 {
		dst := netip.AddrFrom4([4]byte{10, 5, 0, byte(10 + h)})
		dmac := net.HardwareAddr{0x02, 0, 0, 0, 0, byte(10 + h)}
		for p := range 30 {
			sport, dport := uint16(61000+h*100+p), uint16(20+p)
			write(scanner, dmac, src, dst, sport, dport, func(t *layers.TCP) { t.SYN = true })
			if dport == 22 {
				write(dmac, scanner, dst, src, dport, sport, func(t *layers.TCP) { t.SYN, t.ACK = true, true })
				write(scanner, dmac, src, dst, sport, dport, func(t *layers.TCP) { t.RST = true })
			} else {
				write(dmac, scanner, dst, src, dport, sport, func(t *layers.TCP) { t.RST, t.ACK = true, true })
			}
		}
	}
	path := filepath.Join(t.TempDir(), "scan.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := Analyze(context.Background(), path, AnalyzeOptions{Replay: DefaultOptions()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var scans []string
	for _, al := range a.AlertRecords() {
		if al.GetDeviceMac() != scanner.String() {
			t.Errorf("an alert about a probed device: %v", al)
		}
		if al.GetKind() == "scan" {
			ev := al.GetScan()
			scans = append(scans, fmt.Sprintf("%v %v probes=%d refused=%d half_open=%d", ev.GetPatterns(), ev.GetMethods(), ev.GetProbes(), ev.GetRefused(), ev.GetHalfOpen()))
		}
	}
	if len(scans) != 1 || !strings.Contains(scans[0], "[vertical] [tcp_syn]") {
		t.Fatalf("scan alerts %v, want one vertical tcp_syn scan", scans)
	}
	t.Logf("%d alerts; scan: %s", len(a.AlertRecords()), scans[0])
}

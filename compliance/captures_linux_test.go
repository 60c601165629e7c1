package compliance

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/replay"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// pcapDir holds the third-party captures (shared by the worktrees).
const pcapDir = "../../shared/testdata/pcap"

// fromCapture replays a capture through the sensor's own datapath and
// engine (as `medmesh replay --report` does) and returns its devices with
// their alerts, named by the capture, as Evaluate takes them.
func fromCapture(t *testing.T, rel string) []Device {
	t.Helper()
	return fromFile(t, filepath.Join(pcapDir, rel))
}

func fromFile(t *testing.T, path string) []Device {
	t.Helper()
	testutil.RequireRoot(t)
	rel := filepath.Base(path)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("skipped: %s absent (%v)", path, err)
	}
	a, err := replay.Analyze(context.Background(), path, replay.AnalyzeOptions{Replay: replay.DefaultOptions(), SensorID: "s1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("analyze %s: %v", rel, err)
	}
	var out []Device
	for _, d := range a.DeviceRecords() {
		dev := Device{Device: d, Source: filepath.Base(rel)}
		for _, al := range a.AlertRecords() {
			if al.GetDeviceMac() == d.GetMac() {
				dev.Alerts = append(dev.Alerts, al)
			}
		}
		out = append(out, dev)
	}
	return out
}

func result(t *testing.T, rep *medmeshv1.ComplianceReport, mac, control string) *medmeshv1.ControlResult {
	t.Helper()
	for _, d := range rep.GetDevices() {
		if d.GetDeviceMac() != mac {
			continue
		}
		for _, r := range d.GetResults() {
			if r.GetControlId() == control {
				return r
			}
		}
	}
	var macs []string
	for _, d := range rep.GetDevices() {
		macs = append(macs, d.GetDeviceMac())
	}
	t.Fatalf("no result for %s on %s (devices %v)", control, mac, macs)
	return nil
}

// adverse returns the result's adverse evidence of a rule.
func adverse(r *medmeshv1.ControlResult, rule string) []*medmeshv1.ComplianceEvidence {
	var out []*medmeshv1.ComplianceEvidence
	for _, e := range r.GetEvidence() {
		if e.GetAdverse() && e.GetRule() == rule {
			out = append(out, e)
		}
	}
	return out
}

// TestControlsOnCaptures: every control whose rule the captures should
// fire does, for the device that did it, with the capture named in the
// evidence; and what the sensor does not extract is "not evidenced" with
// the reason.
func TestControlsOnCaptures(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	type want struct {
		mac, control, rule string
		status             medmeshv1.ControlStatus
		text               string // in the rule's evidence (adverse ones when unmet)
	}
	unmet, met := medmeshv1.ControlStatus_CONTROL_STATUS_UNMET, medmeshv1.ControlStatus_CONTROL_STATUS_MET
	for _, tc := range []struct {
		capture string
		wants   []want
	}{
		{"ndpi/telnet.pcap", []want{
			// The telnet server that accepted user "fake" in clear.
			{"00:00:c0:9f:a0:97", "hipaa-164.312(a)", "cleartext_login", unmet, `telnet login (account "fake")`},
			{"00:00:c0:9f:a0:97", "hipaa-164.312(a)", "cleartext_login", unmet, "telnet seen"},
			{"00:00:c0:9f:a0:97", "hipaa-164.308(a)(5)", "login_monitoring", met, "watches the device's telnet logins"},
		}},
		{"ndpi/ftp.pcap", []want{
			// The workstation whose anonymous login the server accepted.
			{"c4:2c:03:06:49:fe", "hipaa-164.312(a)", "default_credentials", unmet, `factory-default password: ftp login (account "anonymous")`},
			{"c4:2c:03:06:49:fe", "hipaa-164.312(a)", "cleartext_login", unmet, "ftp seen"},
		}},
		{"ndpi/http_auth.pcap", []want{
			{"28:cf:e9:21:3c:2b", "hipaa-164.312(a)", "cleartext_login", unmet, `http login (account "test")`},
			{"28:cf:e9:21:3c:2b", "hipaa-164.312(e)", "cleartext_http", unmet, "HTTP seen in clear"},
		}},
		{"tapirx/HL7-ADT.pcap", []want{
			// Sender and interface engine both carry HL7 in clear.
			{"00:0c:29:b5:b6:48", "hipaa-164.312(e)", "cleartext_phi", unmet, "HL7 seen in clear"},
			{"08:00:27:1d:a6:c2", "hipaa-164.312(e)", "cleartext_phi", unmet, "HL7 seen in clear"},
			{"08:00:27:1d:a6:c2", "hipaa-164.312(d)", "hl7_unauthenticated", unmet, "MLLP carries no authentication"},
			// The sender: no model, so not in the risk analysis.
			{"00:0c:29:b5:b6:48", "hicp-5", "identified", unmet, "not identified"},
			{"08:00:27:1d:a6:c2", "proposed-2025-inventory", "identified", unmet, "not identified: class HL7_INTERFACE_ENGINE"},
		}},
		{"tapirx/dicom_arq_1_find_testclient.pcap", []want{
			{"ip:127.0.0.1", "hipaa-164.312(d)", "dicom_unauthenticated", unmet, "AE title only"},
			{"ip:127.0.0.1", "hipaa-164.312(e)", "cleartext_phi", unmet, "DICOM seen in clear"},
		}},
	} {
		t.Run(filepath.Base(tc.capture), func(t *testing.T) {
			devs := fromCapture(t, tc.capture)
			rep, err := Evaluate(Input{Devices: devs, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.wants {
				r := result(t, rep, w.mac, w.control)
				if r.GetStatus() != w.status {
					t.Errorf("%s on %s: %v, want %v (evidence %v; %s)", w.control, w.mac, r.GetStatus(), w.status, r.GetEvidence(), r.GetDetail())
					continue
				}
				var ev []*medmeshv1.ComplianceEvidence
				for _, e := range r.GetEvidence() {
					if e.GetRule() == w.rule && e.GetAdverse() == (w.status == unmet) {
						ev = append(ev, e)
					}
				}
				i := slices.IndexFunc(ev, func(e *medmeshv1.ComplianceEvidence) bool { return strings.Contains(e.GetText(), w.text) })
				if i < 0 {
					t.Errorf("%s on %s: no %s evidence %q among %v", w.control, w.mac, w.rule, w.text, ev)
					continue
				}
				if src := ev[i].GetSource(); !strings.Contains(src, filepath.Base(tc.capture)) {
					t.Errorf("%s on %s: evidence source %q does not name the capture", w.control, w.mac, src)
				}
				t.Logf("%s %s on %s: %s [%s]", w.control, r.GetStatus(), w.mac, ev[i].GetText(), ev[i].GetSource())
			}
		})
	}
}

// TestNotEvidencedOnCaptures: what the sensor does not extract is never
// invented: TLS versions per device, and (without an MDS2) update
// integrity and audit logging.
func TestNotEvidencedOnCaptures(t *testing.T) {
	devs := fromCapture(t, "tapirx/HL7-ADT.pcap")
	rep, err := Evaluate(Input{Devices: devs, Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	const mac = "08:00:27:1d:a6:c2"
	for control, reason := range map[string]string{
		"hipaa-164.312(c)": "does not show whether updates are signed",
		"hipaa-164.312(b)": "no syslog from the device seen",
	} {
		r := result(t, rep, mac, control)
		if r.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_NOT_EVIDENCED || !strings.Contains(r.GetDetail(), reason) {
			t.Errorf("%s: %v %q, want not evidenced with %q", control, r.GetStatus(), r.GetDetail(), reason)
		}
	}
	if r := result(t, rep, mac, "hipaa-164.312(e)"); !strings.Contains(r.GetDetail(), "tls_version: TLS below 1.2: the sensor reads the TLS hello's version") {
		t.Errorf("164.312(e) does not say TLS versions are not evidenced: %q", r.GetDetail())
	}
}

// TestMDS2ConfirmsCapture: the vendor's MDS2 says the model does not
// encrypt transmissions (TXCF-2 No) and has no node authentication
// (NAUT-1 No); the capture shows HL7 in clear from a device an operator
// labelled with that model: the findings are confirmed, and the MDS2
// answers settle the controls the network cannot see (integrity, audit).
func TestMDS2ConfirmsCapture(t *testing.T) {
	devs := fromCapture(t, "tapirx/HL7-ADT.pcap")
	form, err := ReadMDS2("internal/mds2/testdata/acme-infuser-3000.xlsx")
	if err != nil {
		t.Fatal(err)
	}
	const mac = "00:0c:29:b5:b6:48"
	for _, d := range devs {
		if d.Device.GetMac() == mac {
			d.Device.Labels = map[string]string{"vendor": "Acme Medical", "model": "INFUSER-3000"}
		}
	}
	rep, err := Evaluate(Input{Devices: devs, MDS2: []*MDS2{form}, Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	r := result(t, rep, mac, "hipaa-164.312(e)")
	obs := adverse(r, "cleartext_phi")
	if len(obs) < 2 {
		t.Fatalf("164.312(e) evidence %v", r.GetEvidence())
	}
	for _, e := range obs {
		if !e.GetConfirmed() {
			t.Errorf("not confirmed: %v", e)
		}
	}
	if i := slices.IndexFunc(obs, func(e *medmeshv1.ComplianceEvidence) bool {
		return e.GetKind() == "mds2" && strings.Contains(e.GetText(), "vendor states no transmission encryption") && strings.Contains(e.GetSource(), "acme-infuser-3000.xlsx")
	}); i < 0 {
		t.Errorf("no MDS2 TXCF-2 evidence among %v", obs)
	}
	if i := slices.IndexFunc(obs, func(e *medmeshv1.ComplianceEvidence) bool {
		return e.GetKind() == "observation" && e.GetSource() == "HL7-ADT.pcap"
	}); i < 0 {
		t.Errorf("no observation from the capture among %v", obs)
	}
	if r := result(t, rep, mac, "hipaa-164.312(d)"); len(adverse(r, "hl7_unauthenticated")) != 2 {
		t.Errorf("164.312(d): %v", r.GetEvidence())
	}
	for _, c := range []string{"hipaa-164.312(c)", "hipaa-164.312(b)"} {
		if r := result(t, rep, mac, c); r.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_UNMET {
			t.Errorf("%s with the MDS2: %v %v", c, r.GetStatus(), r.GetEvidence())
		}
	}
	// Labelled with its model, the sender is in the inventory and the
	// network map (the capture's traffic).
	if r := result(t, rep, mac, "proposed-2025-inventory"); r.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_MET ||
		!slices.ContainsFunc(r.GetEvidence(), func(e *medmeshv1.ComplianceEvidence) bool {
			return e.GetRule() == "network_map" && e.GetText() == "traffic mapped: protocols hl7" && e.GetSource() == "HL7-ADT.pcap"
		}) {
		t.Errorf("proposed-2025-inventory: %v %v", r.GetStatus(), r.GetEvidence())
	}
	for _, d := range rep.GetDevices() {
		if d.GetDeviceMac() == mac && (d.GetMds2() != "acme-infuser-3000.xlsx" || d.GetModel() != "INFUSER-3000") {
			t.Errorf("device %v", d)
		}
	}
	if rep.GetCoverage().GetWithMds2() != 1 {
		t.Errorf("coverage %v", rep.GetCoverage())
	}
}

// TestSyslogSentOnCapture: a device that sends syslog (a capture written
// here, as no shared capture holds syslog; replayed through the same
// sensor path) meets the audit-controls control, with the capture named.
func TestSyslogSentOnCapture(t *testing.T) {
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	pump, collector := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x51}, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x05}
	ts := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for i := range 3 {
		ts = ts.Add(time.Second)
		eth := &layers.Ethernet{SrcMAC: pump, DstMAC: collector, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(10, 1, 0, 51), DstIP: net.IPv4(10, 1, 0, 5)}
		udp := &layers.UDP{SrcPort: 40514, DstPort: 514}
		_ = udp.SetNetworkLayerForChecksum(ip)
		b := gopacket.NewSerializeBuffer()
		msg := gopacket.Payload([]byte("<134>Nov 30 08:00:0" + string(rune('1'+i)) + " pump-3a-01 infuser: door opened"))
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, msg); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(b.Bytes()), Length: len(b.Bytes())}, b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "pump-syslog.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(Input{Devices: fromFile(t, path), Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	r := result(t, rep, pump.String(), "hipaa-164.312(b)")
	if r.GetStatus() != medmeshv1.ControlStatus_CONTROL_STATUS_MET || !slices.ContainsFunc(r.GetEvidence(), func(e *medmeshv1.ComplianceEvidence) bool {
		return e.GetRule() == "syslog_sent" && e.GetText() == "sends syslog" && e.GetSource() == "pump-syslog.pcap"
	}) {
		t.Errorf("164.312(b) for the syslog sender: %v %v (%s)", r.GetStatus(), r.GetEvidence(), r.GetDetail())
	}
}

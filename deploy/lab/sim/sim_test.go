package sim

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var anyPort = map[string]int{"hl7": 0, "mllp": 0, "nursecall": 0, "dicom": 0, "dns": 0, "dhcp": 0, "ntp": 0, "http": 0, "https": 0, "sink": 0}

func startService(t *testing.T, kind Kind) *Server {
	t.Helper()
	cfg := DefaultConfig(kind, string(kind))
	cfg.Listen = "127.0.0.1"
	cfg.Ports = anyPort
	cfg.Records = map[string]string{"hl7.hospital.lab": "127.0.0.1", "pacs.hospital.lab": "127.0.0.1", "updates.vendor.example": "127.0.0.1"}
	s, err := StartServer(cfg, quiet())
	if err != nil {
		t.Fatalf("start %s: %v", kind, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s: %v", kind, err)
		}
	})
	return s
}

func TestDeviceRoundsAgainstServices(t *testing.T) {
	engine := startService(t, KindHL7Engine)
	central := startService(t, KindCentral)
	pacs := startService(t, KindPACS)
	dns := startService(t, KindDHCPDNS)
	ntp := startService(t, KindNTP)
	inet := startService(t, KindInternet)

	_, httpsPort, _ := net.SplitHostPort(inet.Addr("https"))
	_, httpPort, _ := net.SplitHostPort(inet.Addr("http"))
	if httpPort == "" || httpsPort == "" {
		t.Fatal("internet host has no http/https listener")
	}

	for _, tc := range []struct {
		kind  Kind
		steps int64
		check func(t errorer)
	}{
		{KindPump, 4, func(t errorer) {
			if engine.Stats.HL7Acks.Load() < 1 || dns.Stats.DHCPOffers.Load() < 1 || ntp.Stats.NTPAnswers.Load() < 1 {
				t.Errorf("pump: engine acks %d, dhcp offers %d, ntp answers %d", engine.Stats.HL7Acks.Load(), dns.Stats.DHCPOffers.Load(), ntp.Stats.NTPAnswers.Load())
			}
		}},
		{KindMonitor, 2, func(t errorer) {
			if central.Stats.HL7Acks.Load() < 1 {
				t.Errorf("monitor: central station acknowledged nothing")
			}
		}},
		{KindModality, 3, func(t errorer) {
			if pacs.Stats.DICOMAssocs.Load() != 1 || pacs.Stats.DICOMBytes.Load() < 8192 {
				t.Errorf("modality: pacs associations %d bytes %d", pacs.Stats.DICOMAssocs.Load(), pacs.Stats.DICOMBytes.Load())
			}
		}},
		{KindNurseCall, 1, func(t errorer) {
			if central.Stats.NurseCalls.Load() != 1 {
				t.Errorf("nurse call: central got %d", central.Stats.NurseCalls.Load())
			}
		}},
		{KindWorkstation, 2, func(t errorer) {
			if got := inet.Stats.HTTPRequests.Load(); got != 2 {
				t.Errorf("internet host served %d requests, want http and https", got)
			}
		}},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			cfg := DefaultConfig(tc.kind, "f1-"+string(tc.kind))
			cfg.DHCPPort = 0
			cfg.HL7 = engine.Addr("hl7")
			cfg.Central = central.Addr("mllp")
			cfg.NurseCall = central.Addr("nursecall")
			cfg.PACS = pacs.Addr("dicom")
			cfg.DHCP = dns.Addr("dhcp")
			cfg.DNS = dns.Addr("dns")
			cfg.NTP = ntp.Addr("ntp")
			cfg.Web = "updates.vendor.example"
			hp, _ := strconv.Atoi(httpPort)
			sp, _ := strconv.Atoi(httpsPort)
			cfg.Ports = map[string]int{"http": hp, "https": sp}
			d, err := NewDevice(cfg, quiet())
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = d.Round(ctx)
			if err != nil {
				t.Fatalf("round: %v", err)
			}
			if got := d.Stats.OK.Load(); got != tc.steps {
				t.Errorf("ok exchanges = %d, want %d", got, tc.steps)
			}
			// Services count an exchange after answering it: give them a moment.
			deadline := time.Now().Add(2 * time.Second)
			for {
				ft := &fakeT{}
				tc.check(ft)
				if !ft.failed || time.Now().After(deadline) {
					tc.check(t)
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestHL7ACKNamesControlID(t *testing.T) {
	msg := pumpMessage("pump1", "(01)00812345000019(21)PUMP1", 7, time.Unix(1e9, 0))
	if got := hl7Field(msg, "PRT", 16); got != "(01)00812345000019(21)PUMP1" {
		t.Fatalf("PRT-16 = %q", got)
	}
	if got := hl7Field(msg, "MSH", 9); got != "ORU^R40^ORU_R40" {
		t.Fatalf("MSH-9 = %q", got)
	}
	ack := ackFor(msg, "IE", "", time.Unix(1e9, 0))
	if hl7Field(ack, "MSA", 1) != "AA" || hl7Field(ack, "MSA", 2) != "pump1-000007" {
		t.Fatalf("ack = %q", ack)
	}
	ack = ackFor(msg, "Mirth Connect", "NextGen Healthcare|4.5.0|Mirth Connect|b1", time.Unix(1e9, 0))
	if hl7Field(ack, "MSH", 3) != "Mirth Connect" || hl7Field(ack, "SFT", 3) != "Mirth Connect" || hl7Field(ack, "SFT", 2) != "4.5.0" ||
		hl7Field(ack, "MSA", 2) != "pump1-000007" {
		t.Fatalf("ack with software = %q", ack)
	}
	var buf bytes.Buffer
	if err := writeMLLP(&buf, msg); err != nil {
		t.Fatal(err)
	}
	got, err := readMLLP(bufio.NewReader(&buf))
	if err != nil || got != msg {
		t.Fatalf("mllp round trip: %q, %v", got, err)
	}
	if _, err := readMLLP(bufio.NewReader(bytes.NewReader([]byte("MSH|")))); err == nil {
		t.Fatal("unframed message accepted")
	}
}

func TestDICOMAssociationCarriesAETitles(t *testing.T) {
	rq := associateRQ("PACS", "f1-modality1")
	if rq[0] != pduAssociateRQ {
		t.Fatalf("pdu type %#x", rq[0])
	}
	if got := string(bytes.TrimSpace(rq[10:26])); got != "PACS" {
		t.Errorf("called AE %q", got)
	}
	if got := string(bytes.TrimSpace(rq[26:42])); got != "F1-MODALITY1" {
		t.Errorf("calling AE %q", got)
	}
	if !bytes.Contains(rq, []byte(uidCTImageStorage)) || !bytes.Contains(rq, []byte(uidSimImplClass)) {
		t.Error("rq lacks abstract syntax or implementation class")
	}
}

func TestDNSAndNTPCodecs(t *testing.T) {
	q := dnsQuery(0x1234, "PACS.hospital.lab")
	id, name, end, err := dnsQuestion(q)
	if err != nil || id != 0x1234 || name != "pacs.hospital.lab" || end != len(q) {
		t.Fatalf("question: %x %q %d %v", id, name, end, err)
	}
	ip, err := parseDNSAnswer(dnsAnswer(q, end, net.IPv4(10, 98, 0, 11)), 0x1234)
	if err != nil || !ip.Equal(net.IPv4(10, 98, 0, 11)) {
		t.Fatalf("answer: %v %v", ip, err)
	}
	if _, err := parseDNSAnswer(dnsAnswer(q, end, nil), 0x1234); err == nil {
		t.Fatal("nxdomain parsed as an answer")
	}
	now := time.Unix(1_800_000_000, 123456000)
	if got := ntpTime(ntpStamp(now)); got.Sub(now).Abs() > time.Microsecond {
		t.Fatalf("ntp time round trip: %v vs %v", got, now)
	}
	if _, err := ntpResponse(make([]byte, 48), now, now); err == nil {
		t.Fatal("mode 0 accepted as a client request")
	}
}

func TestAttackScansLogsInAndExfiltrates(t *testing.T) {
	inet := startService(t, KindInternet)
	modCfg := DefaultConfig(KindModality, "f1-modality1")
	modCfg.Telnet = "127.0.0.1:0"
	mod, err := NewDevice(modCfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	_, consolePort, _ := net.SplitHostPort(mod.ConsoleAddr())
	cp, _ := strconv.Atoi(consolePort)

	cfg := DefaultConfig(KindCompromised, "f1-nursecall1")
	cfg.Scan = []string{"127.0.0.1"}
	cfg.ScanPorts = []int{cp, 1}
	cfg.Login = mod.ConsoleAddr()
	cfg.Exfil = inet.Addr("sink")
	cfg.ExfilFor = 350 * time.Millisecond
	out, err := Attack(context.Background(), cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if out.Probes != 2 || out.OpenPorts != 1 {
		t.Errorf("scan: %d probes, %d open; want 2, 1", out.Probes, out.OpenPorts)
	}
	if !out.LoginOK || mod.Stats.Logins.Load() != 1 {
		t.Errorf("login ok=%v, console logins %d", out.LoginOK, mod.Stats.Logins.Load())
	}
	if out.ExfilOK < 2 || out.FirstExternalNs == 0 || out.FirstExfilFailNs != 0 {
		t.Errorf("exfil: %+v", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for inet.Stats.SinkBytes.Load() < out.ExfilBytes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := inet.Stats.SinkBytes.Load(); got != out.ExfilBytes {
		t.Errorf("sink received %d bytes, device sent %d", got, out.ExfilBytes)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Kind: "toaster", ID: "x", Interval: time.Second},
		{Kind: KindPump, Interval: time.Second},
		{Kind: KindPACS, ID: "p"},
		{Kind: KindCompromised, ID: "c"},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: validate passed", c)
		}
	}
}

type errorer interface{ Errorf(string, ...any) }

type fakeT struct{ failed bool }

func (f *fakeT) Errorf(string, ...any) { f.failed = true }

package engine

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/baseline"
	"github.com/medmesh/medmesh/node/internal/infra"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	macPump  = flow.MAC{0x00, 0x0a, 0xf7, 0, 0, 0x01}
	macPump2 = flow.MAC{0x00, 0x0a, 0xf7, 0, 0, 0x02}
	macHL7   = flow.MAC{0x00, 0x50, 0x56, 0, 0, 0x02}
	macDNS   = flow.MAC{0x00, 0x50, 0x56, 0, 0, 0x35}
	macGW    = flow.MAC{0x00, 0x00, 0x0c, 0, 0, 0xfe}
	macSrv   = flow.MAC{0x00, 0x50, 0x56, 0, 0, 0x14}

	ipPump  = netip.MustParseAddr("10.1.0.10")
	ipPump2 = netip.MustParseAddr("10.1.0.11")
	ipHL7   = netip.MustParseAddr("10.1.0.2")
	ipDNS   = netip.MustParseAddr("10.1.0.53")
	ipSrv   = netip.MustParseAddr("10.1.0.20")
	ipExfil = netip.MustParseAddr("203.0.113.9")
)

// testVendor stands in for the OUI table: the pumps' prefix is CareFusion's.
func testVendor(mac [6]byte) string {
	if mac[0] == 0x00 && mac[1] == 0x0a && mac[2] == 0xf7 {
		return "CareFusion"
	}
	return ""
}

func testConfig() Config {
	c := DefaultConfig()
	c.SensorID = "s1"
	c.Identity.Vendor = testVendor
	c.Baseline.Window = 10 * time.Second
	c.Baseline.Slot = time.Second
	c.Scan.Window = time.Second
	return c
}

func newEngine(t testing.TB, c Config) *Engine {
	t.Helper()
	e, err := New(c, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var t0 = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC).UnixNano()

func at(d time.Duration) int64 { return t0 + int64(d) }

func record(smac, dmac flow.MAC, src, dst netip.Addr, sport, dport uint16, proto uint8, bytes uint64, ts int64) *flow.Record {
	return &flow.Record{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: proto,
		FwdPackets: 3, FwdBytes: bytes, RevPackets: 2, RevBytes: bytes / 2, FirstNs: ts - int64(time.Millisecond), LastNs: ts,
		SrcMAC: smac, DstMAC: dmac, EndReason: "fin"}
}

// TCP flags as flow records carry them.
const (
	synFlag = 0x02
	rstFlag = 0x04
	ackFlag = 0x10
)

// refused is a TCP connection attempt answered by a reset: a probe of a
// closed port.
func refused(smac, dmac flow.MAC, src, dst netip.Addr, sport, dport uint16, ts int64) *flow.Record {
	return &flow.Record{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: 6,
		FwdPackets: 1, FwdBytes: 60, RevPackets: 1, RevBytes: 40, FirstNs: ts - int64(time.Millisecond), LastNs: ts,
		SrcMAC: smac, DstMAC: dmac, EndReason: "rst", FwdTCPFlags: synFlag, RevTCPFlags: rstFlag | ackFlag}
}

// pumpDay is the pump's normal behaviour from..to: an HL7 message to the
// interface engine every 100 ms and a DNS query every second.
func pumpDay(e *Engine, mac flow.MAC, ip netip.Addr, from, to time.Duration) {
	sport := uint16(40000)
	for d := from; d < to; d += 100 * time.Millisecond {
		sport++
		e.HandleFlow(record(mac, macHL7, ip, ipHL7, sport, 2575, 6, 1200, at(d)))
		if d%time.Second == 0 {
			e.HandleFlow(record(mac, macDNS, ip, ipDNS, sport, 53, 17, 120, at(d)))
		}
	}
}

// dnsAnswer builds a DNS response naming addr.
func dnsAnswer(t testing.TB, name string, addr netip.Addr) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true, RecursionAvailable: true})
	b.EnableCompression()
	n := dnsmessage.MustNewName(name + ".")
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if err := b.StartAnswers(); err != nil {
		t.Fatal(err)
	}
	if err := b.AResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: addr.As4()}); err != nil {
		t.Fatal(err)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func factorNames(a *medmeshv1.Alert) []string {
	var n []string
	for _, f := range a.GetRisk().GetFactors() {
		n = append(n, f.GetName())
	}
	return n
}

func alertsOf(e *Engine, device string) []*medmeshv1.Alert {
	var out []*medmeshv1.Alert
	for _, a := range e.Alerts() {
		if a.GetDeviceMac() == device {
			out = append(out, a)
		}
	}
	return out
}

// TestBaselineInjectedBehaviour is issue 4 acceptance 4: learn one
// device's traffic, then play another device's behaviour under its MAC.
func TestBaselineInjectedBehaviour(t *testing.T) {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 12*time.Second) // window 10 s: freezes itself
	bs := e.Baselines()
	if len(bs) == 0 || bs[0].GetDeviceMac() != macPump.String() {
		t.Fatalf("pump baseline not frozen: %v", bs)
	}
	if got := len(bs[0].GetEntries()); got != 2 {
		t.Fatalf("pump baseline has %d entries, want 2 (hl7 engine, dns): %v", got, bs[0].GetEntries())
	}
	e.FreezeAll()
	e.SetMode(Score)

	// The pump's own later traffic raises nothing.
	pumpDay(e, macPump, ipPump, 12*time.Second, 30*time.Second)
	if a := e.Alerts(); len(a) != 0 {
		t.Fatalf("own traffic raised %d alerts, first: %v", len(a), a[0])
	}

	// A workstation's behaviour under the pump's MAC: it resolves and
	// contacts an external site, browses a file server and scans.
	e.HandleDiscovery(&flow.Discovery{Kind: flow.DiscoveryDNS, SrcMAC: macDNS, DstMAC: macPump, Src: ipDNS, Dst: ipPump,
		SrcPort: 53, DstPort: 41000, TimeNs: at(31 * time.Second), Data: dnsAnswer(t, "exfil.example", ipExfil)})
	e.HandleFlow(record(macPump, macGW, ipPump, ipExfil, 41001, 443, 6, 90000, at(31*time.Second)))
	e.HandleFlow(record(macPump, macSrv, ipPump, ipSrv, 41002, 445, 6, 9000, at(32*time.Second)))
	for i := range 40 {
		peer := netip.AddrFrom4([4]byte{10, 1, 9, byte(i + 1)})
		e.HandleFlow(refused(macPump, macGW, ipPump, peer, uint16(42000+i), 22, at(33*time.Second+time.Duration(i)*time.Millisecond)))
	}

	alerts := alertsOf(e, macPump.String())
	want := []struct {
		dst     string
		kind    string
		factors []string
	}{
		{ipExfil.String(), "external_destination", []string{"external_destination", "new_peer", "new_port"}},
		{ipSrv.String(), "new_peer", []string{"new_peer", "new_port"}},
		{"", "scan", []string{"scan"}},
	}
	for _, w := range want {
		var found *medmeshv1.Alert
		for _, a := range alerts {
			if a.GetKind() == w.kind && (w.dst == "" || a.GetFlow().GetDst() == w.dst) {
				found = a
				break
			}
		}
		if found == nil {
			t.Errorf("no %s alert for %s; alerts: %v", w.kind, w.dst, alerts)
			continue
		}
		if got := factorNames(found); !slices.Equal(got, w.factors) {
			t.Errorf("%s alert factors = %v, want %v", w.kind, got, w.factors)
		}
		if found.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || found.GetDeviceClass() != medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP {
			t.Errorf("%s alert class/tier = %v/%v, want infusion pump/life-critical", w.kind, found.GetDeviceClass(), found.GetTier())
		}
		if !strings.HasPrefix(found.GetId(), "s1/") || found.GetDetectTime().AsTime().UnixNano() < at(31*time.Second) {
			t.Errorf("alert id %q / detect time %v not from the sensor and the records", found.GetId(), found.GetDetectTime().AsTime())
		}
	}
	for _, a := range alerts {
		if a.GetFlow().GetDst() == ipExfil.String() {
			if a.GetPeerName() != "exfil.example" || !strings.Contains(a.GetSummary(), "exfil.example") {
				t.Errorf("external alert lacks the peer's DNS name: peer_name %q, summary %q", a.GetPeerName(), a.GetSummary())
			}
		}
	}
}

// TestClassBaseline: a device that never learned is compared with its
// class's baseline (peer group).
func TestClassBaseline(t *testing.T) {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 11*time.Second)
	e.FreezeAll()
	e.SetMode(Score)
	// A second pump of the same make behaves like the first: no alert.
	pumpDay(e, macPump2, ipPump2, 11*time.Second, 15*time.Second)
	if a := e.Alerts(); len(a) != 0 {
		t.Fatalf("peer-group-conform traffic raised alerts: %v", a)
	}
	e.HandleFlow(record(macPump2, macGW, ipPump2, ipExfil, 41001, 8443, 6, 500, at(16*time.Second)))
	a := alertsOf(e, macPump2.String())
	if len(a) != 1 {
		t.Fatalf("got %d alerts for the second pump, want 1: %v", len(a), a)
	}
	if got := factorNames(a[0]); !slices.Equal(got, []string{"external_destination", "new_peer", "new_port"}) {
		t.Errorf("factors = %v", got)
	}
	if d := a[0].GetRisk().GetFactors()[0].GetDetail(); !strings.Contains(d, "class baseline") {
		t.Errorf("detail %q does not say it compared with the class baseline", d)
	}
}

// httpAnswer is the server's response to a request of t.
func httpAnswer(t flow.Tuple, smac, dmac flow.MAC, ts int64, status int) *flow.Sample {
	p := []byte(fmt.Sprintf("HTTP/1.1 %d X\r\nServer: pumpd\r\n\r\n", status))
	return &flow.Sample{Flow: t, Dir: flow.Rev, SrcMAC: smac, DstMAC: dmac, TimeNs: ts, WireLen: uint16(len(p)), Payload: p}
}

func httpSample(t flow.Tuple, smac, dmac flow.MAC, ts int64, user, pass string) *flow.Sample {
	p := []byte("GET /config HTTP/1.1\r\nHost: " + t.Dst.String() + "\r\nAuthorization: Basic " +
		base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + "\r\n\r\n")
	return &flow.Sample{Flow: t, Dir: flow.Fwd, SrcMAC: smac, DstMAC: dmac, TimeNs: ts, WireLen: uint16(len(p)), Payload: p}
}

// TestCredentials is issue 4 acceptance 3 with samples built here: an HTTP
// Basic and a Telnet login raise cleartext-credential findings; a factory
// login raises the default-credential factor. Secrets never surface.
func TestCredentials(t *testing.T) {
	e := newEngine(t, testConfig())
	ws := netip.MustParseAddr("10.1.0.77")
	wsMAC := flow.MAC{0x00, 0x50, 0x56, 0, 0, 0x77}

	// HTTP Basic with a personal password: cleartext only.
	t1 := flow.Tuple{Src: ws, Dst: ipSrv, SrcPort: 50000, DstPort: 80, Proto: 6}
	e.HandleSample(httpSample(t1, wsMAC, macSrv, at(0), "alice", "Tr0ub4dor&3"))
	e.HandleSample(httpAnswer(t1, macSrv, wsMAC, at(0)+1, 401))
	// HTTP Basic admin:admin to the pump's web server, accepted: default
	// credentials.
	t2 := flow.Tuple{Src: ws, Dst: ipPump, SrcPort: 50001, DstPort: 80, Proto: 6}
	e.HandleSample(httpSample(t2, wsMAC, macPump, at(time.Second), "admin", "admin"))
	e.HandleSample(httpAnswer(t2, macPump, wsMAC, at(time.Second)+1, 200))
	// Telnet root:root: the server negotiates, prompts, the client types.
	t3 := flow.Tuple{Src: ws, Dst: ipHL7, SrcPort: 50002, DstPort: 23, Proto: 6}
	steps := []struct {
		dir flow.Dir
		p   string
	}{
		{flow.Rev, "\xff\xfd\x18\xff\xfd\x20"},
		{flow.Fwd, "\xff\xfc\x18\xff\xfc\x20"},
		{flow.Rev, "\r\nengine login: "},
		{flow.Fwd, "root\r\n"},
		{flow.Rev, "Password: "},
		{flow.Fwd, "root\r\n"},
		{flow.Rev, "\r\n$ "},
	}
	for i, s := range steps {
		smac, dmac := wsMAC, macHL7
		if s.dir == flow.Rev {
			smac, dmac = dmac, smac
		}
		e.HandleSample(&flow.Sample{Flow: t3, Dir: s.dir, Index: uint8(i), SrcMAC: smac, DstMAC: dmac,
			TimeNs: at(2*time.Second + time.Duration(i)*time.Millisecond), WireLen: uint16(len(s.p)), Payload: []byte(s.p)})
	}

	byDst := map[string]*medmeshv1.Alert{}
	for _, a := range e.Alerts() {
		byDst[a.GetFlow().GetDst()] = a
	}
	cases := []struct {
		dst, app string
		factors  []string
	}{
		{ipSrv.String(), "http", []string{"cleartext_credentials"}},
		{ipPump.String(), "http", []string{"default_credentials", "cleartext_credentials"}},
		{ipHL7.String(), "telnet", []string{"default_credentials", "cleartext_credentials"}},
	}
	for _, c := range cases {
		a := byDst[c.dst]
		if a == nil {
			t.Errorf("no credential alert for %s login to %s; alerts %v", c.app, c.dst, e.Alerts())
			continue
		}
		if got := factorNames(a); !slices.Equal(got, c.factors) || a.GetFlow().GetApp() != c.app {
			t.Errorf("%s alert: factors %v app %q, want %v %q", c.dst, got, a.GetFlow().GetApp(), c.factors, c.app)
		}
	}
	if a := byDst[ipPump.String()]; a != nil && a.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL {
		t.Errorf("default-credential alert on the pump has tier %v", a.GetTier())
	}
	var out bytes.Buffer
	r := e.Report()
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"Tr0ub4dor", base64.StdEncoding.EncodeToString([]byte("alice:Tr0ub4dor&3"))} {
		if bytes.Contains(out.Bytes(), []byte(secret)) {
			t.Errorf("report contains the secret %q", secret)
		}
	}
	if !bytes.Contains(out.Bytes(), []byte("http user alice")) {
		t.Errorf("report lacks the login finding for alice")
	}
}

// scenario drives a fixed mixed input; used by the determinism test.
func scenario(t testing.TB) []byte {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 11*time.Second)
	e.FreezeAll()
	e.SetMode(Score)
	pumpDay(e, macPump2, ipPump2, 11*time.Second, 13*time.Second)
	e.HandleDiscovery(&flow.Discovery{Kind: flow.DiscoveryDNS, SrcMAC: macDNS, DstMAC: macPump, Src: ipDNS, Dst: ipPump,
		SrcPort: 53, DstPort: 41000, TimeNs: at(14 * time.Second), Data: dnsAnswer(t, "exfil.example", ipExfil)})
	for i := range 30 {
		e.HandleFlow(record(macPump, macGW, ipPump, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(43000+i), 443, 6, uint64(100*i), at(15*time.Second+time.Duration(i)*time.Millisecond)))
	}
	ws := netip.MustParseAddr("10.1.0.77")
	web := flow.Tuple{Src: ws, Dst: ipPump, SrcPort: 50001, DstPort: 80, Proto: 6}
	e.HandleSample(httpSample(web, flow.MAC{0, 0x50, 0x56, 0, 0, 0x77}, macPump, at(16*time.Second), "admin", "admin"))
	e.HandleSample(httpAnswer(web, macPump, flow.MAC{0, 0x50, 0x56, 0, 0, 0x77}, at(16*time.Second)+1, 200))
	var out bytes.Buffer
	if err := e.Report().WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	for _, a := range e.Alerts() {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	for _, b := range e.Baselines() {
		m, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(m)
	}
	return out.Bytes()
}

// TestDeterminism is issue 4 acceptance 5: the same input gives the same
// devices, scores, alerts and baselines, byte for byte.
func TestDeterminism(t *testing.T) {
	a, b := scenario(t), scenario(t)
	if !bytes.Equal(a, b) {
		t.Fatalf("two runs differ (%d vs %d bytes)", len(a), len(b))
	}
	if !bytes.Contains(a, []byte(`"kind": "default_credentials"`)) && !bytes.Contains(a, []byte(`"kind":"default_credentials"`)) {
		t.Fatalf("scenario raised no default-credential alert")
	}
}

func TestConfigValidate(t *testing.T) {
	c := testConfig()
	c.SensorID = "a/b"
	if _, err := New(c, nil, nil); err == nil {
		t.Error("sensor id with '/' accepted")
	}
	c = testConfig()
	c.Score.Weights = map[string]float64{"no_such_factor": 5}
	if _, err := New(c, nil, nil); err == nil {
		t.Error("unknown factor weight accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(testConfig(), nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(testConfig(), nil, reg); err == nil {
		t.Error("second engine on the same registry: duplicate registration not reported")
	}
}

// fakeInstaller records what the engine installs into the datapath.
type fakeInstaller struct{ got map[flow.MAC][]string }

func (f *fakeInstaller) SetBaseline(mac flow.MAC, rules []baseline.Rule) error {
	for _, r := range rules {
		f.got[mac] = append(f.got[mac], fmt.Sprintf("%s/%d/%d", r.Prefix, r.Proto, r.Port))
	}
	return nil
}

func TestInstallerAndBaselineMiss(t *testing.T) {
	inst := &fakeInstaller{got: map[flow.MAC][]string{}}
	c := testConfig()
	c.Installer = inst
	e := newEngine(t, c)
	pumpDay(e, macPump, ipPump, 0, 11*time.Second)
	want := []string{"10.1.0.2/32/6/2575", "10.1.0.53/32/17/53"}
	if got := inst.got[macPump]; !slices.Equal(got, want) {
		t.Fatalf("installed rules %v, want %v", got, want)
	}
	// A device that fell silent freezes when its window has passed.
	e.HandleFlow(record(macPump2, macHL7, ipPump2, ipHL7, 40001, 2575, 6, 1200, at(11*time.Second)))
	if n := e.FreezeDue(); n != 0 {
		t.Fatalf("FreezeDue froze %d devices before their window passed", n)
	}
	e.HandleFlow(record(macPump, macHL7, ipPump, ipHL7, 40002, 2575, 6, 1200, at(21*time.Second+time.Millisecond)))
	if n := e.FreezeDue(); n != 1 { // the second pump
		t.Fatalf("FreezeDue froze %d devices, want 1", n)
	}
	if _, ok := inst.got[macPump2]; !ok {
		t.Fatal("second pump's baseline not installed")
	}
	// The datapath reports a miss as the flow starts: scored at once.
	e.HandleBaselineMiss(&flow.BaselineMiss{Flow: flow.Tuple{Src: ipPump, Dst: ipExfil, SrcPort: 40999, DstPort: 443, Proto: 6},
		DeviceMAC: macPump, DeviceIsSrc: true, Reason: "peer", TimeNs: at(22 * time.Second)})
	a := e.Alerts()
	if len(a) != 1 || a[0].GetKind() != "external_destination" {
		t.Fatalf("baseline miss: alerts %v", a)
	}
	// The record of the same flow at its end does not alert twice.
	e.HandleFlow(record(macPump, macGW, ipPump, ipExfil, 40999, 443, 6, 800, at(23*time.Second)))
	if n := len(e.Alerts()); n != 1 {
		t.Fatalf("the flow's record raised a duplicate alert: %d alerts", n)
	}
}

// TestConcurrentUseAndSink: the datapath calls the handler from its
// goroutine while operators read the inventory; alerts reach the live sink
// in order.
func TestConcurrentUseAndSink(t *testing.T) {
	sink := make(chan *medmeshv1.Alert, 64)
	c := testConfig()
	c.OnAlert = func(a *medmeshv1.Alert) {
		select {
		case sink <- a:
		default:
		}
	}
	e := newEngine(t, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pumpDay(e, macPump, ipPump, 0, 11*time.Second)
		e.FreezeAll()
		e.SetMode(Score)
		for i := range 5 {
			e.HandleFlow(record(macPump, macGW, ipPump, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 41000, 443, 6, 100, at(12*time.Second)))
		}
	}()
	for {
		select {
		case <-done:
			got := 0
			for len(sink) > 0 {
				a := <-sink
				got++
				if a.GetSensorSeq() != uint64(got) {
					t.Errorf("sink alert %d has seq %d", got, a.GetSensorSeq())
				}
			}
			if got != 5 || len(e.Alerts()) != 5 {
				t.Fatalf("sink got %d alerts, engine holds %d, want 5", got, len(e.Alerts()))
			}
			return
		default:
			_ = e.Devices()
			_ = e.Report()
			_ = e.Baselines()
		}
	}
}

// TestAlertSeqBase: a restarted sensor's alert ids continue past the base
// (its spool's last sequence number), never reusing an id of an earlier
// life that the coordinators would drop as a retry.
func TestAlertSeqBase(t *testing.T) {
	c := testConfig()
	c.AlertSeqBase = 100
	e := newEngine(t, c)
	pumpDay(e, macPump, ipPump, 0, 12*time.Second)
	e.FreezeAll()
	e.SetMode(Score)
	e.HandleFlow(record(macPump, macSrv, ipPump, ipSrv, 41002, 445, 6, 9000, at(32*time.Second)))
	al := e.Alerts()
	if len(al) == 0 {
		t.Fatal("no alert")
	}
	if al[0].GetSensorSeq() != 101 || al[0].GetId() != "s1/101" {
		t.Fatalf("first alert %q seq %d, want s1/101", al[0].GetId(), al[0].GetSensorSeq())
	}
}

// TestScanFoldsIntoScan is issue 16 point 2 and issue 17 point 2: a scan
// raises one scan alert per device and window, carrying what it touched,
// instead of one new_peer alert per probed peer and port at the scanner
// and its victims; an isolated new peer is still reported at once.
func TestScanFoldsIntoScan(t *testing.T) {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 12*time.Second)
	pumpDay(e, macPump2, ipPump2, 0, 12*time.Second)
	e.FreezeAll()
	e.SetMode(Score)

	// The pump probes 40 ports of the other pump within 400 ms (scan
	// window 1 s; 24 ports of one host is a vertical scan); each is
	// refused.
	for i := range 40 {
		e.HandleFlow(refused(macPump, macPump2, ipPump, ipPump2, uint16(50000+i), uint16(i+1),
			at(20*time.Second+time.Duration(i)*10*time.Millisecond)))
	}
	pumpDay(e, macPump, ipPump, 21*time.Second, 23*time.Second) // the window ends
	scanner, victim := alertsOf(e, macPump.String()), alertsOf(e, macPump2.String())
	if len(scanner) != 2 || scanner[0].GetKind() != "new_peer" || scanner[1].GetKind() != "scan" {
		t.Fatalf("scanner alerts = %v, want the first probe's new_peer, then one scan", scanner)
	}
	sc := scanner[1]
	for _, w := range []string{"vertical scan (tcp_syn): 24 probes of 1 host on 24 services", "24 refused", "services of " + ipPump2.String(),
		"hosts " + ipPump2.String(), "services tcp/1, tcp/2,", "22 new_peer/new_port alerts folded in"} {
		if !strings.Contains(sc.GetSummary(), w) {
			t.Errorf("scan summary %q lacks %q", sc.GetSummary(), w)
		}
	}
	ev := sc.GetScan()
	if ev == nil || !slices.Equal(ev.GetPatterns(), []string{"vertical"}) || ev.GetProbes() != 24 || ev.GetRefused() != 24 ||
		ev.GetHosts() != 1 || ev.GetServices() != 24 || ev.GetFoldedAlerts() != 22 || ev.GetWindowSeconds() != 1 {
		t.Errorf("scan evidence %v", ev)
	}
	if len(victim) != 0 {
		t.Fatalf("the scanned pump raised %d alerts, want none: %v", len(victim), victim)
	}
	if r := e.Devices(); len(r) > 0 {
		for _, d := range r {
			if d.GetMac() == macPump2.String() && d.GetRisk().GetScore() != 0 {
				t.Errorf("the scanned pump carries risk %d, want 0: a victim is not an attacker", d.GetRisk().GetScore())
			}
		}
	}
	// The same, structured, for the coordinator's incidents: the victim
	// and the ports, and the scanner as the flow's initiator.
	if a := scanner[1]; a.GetDirection() != medmeshv1.Direction_DIRECTION_OUTBOUND ||
		len(a.GetPeers()) != 1 || a.GetPeers()[0] != ipPump2.String() || a.GetPeerCount() != 1 ||
		a.GetServiceCount() != 24 || len(a.GetServices()) != 24 || a.GetServices()[0].GetPort() != 1 || a.GetServices()[0].GetProtocol() != 6 {
		t.Errorf("scan lists direction %v, peers %v (%d), %d services (%d listed, first %v)", a.GetDirection(),
			a.GetPeers(), a.GetPeerCount(), a.GetServiceCount(), len(a.GetServices()), a.GetServices()[:min(1, len(a.GetServices()))])
	}

	// Later, the second pump contacts a new peer: raised at once. A
	// second one in the same window is held and raised once it ends.
	e.HandleFlow(record(macPump2, macSrv, ipPump2, ipSrv, 41000, 445, 6, 900, at(30*time.Second)))
	if a := alertsOf(e, macPump2.String()); len(a) != 1 || a[0].GetKind() != "new_peer" || a[0].GetFlow().GetDst() != ipSrv.String() {
		t.Fatalf("isolated new peer: alerts %v, want one new_peer to %s at once", a, ipSrv)
	}
	other := netip.MustParseAddr("10.1.0.99")
	e.HandleFlow(record(macPump2, macGW, ipPump2, other, 41001, 8443, 6, 900, at(30*time.Second+200*time.Millisecond)))
	if a := alertsOf(e, macPump2.String()); len(a) != 1 {
		t.Fatalf("second new peer in the window raised at once: %v", a)
	}
	pumpDay(e, macPump2, ipPump2, 31*time.Second, 32*time.Second)
	a := alertsOf(e, macPump2.String())
	if len(a) != 2 || a[1].GetKind() != "new_peer" || !strings.Contains(a[1].GetSummary(), "1 alerts folded") ||
		!strings.Contains(a[1].GetSummary(), other.String()) {
		t.Fatalf("held new peer after the window: %v", a)
	}
	ids := map[string]bool{}
	for i, al := range e.Alerts() {
		if ids[al.GetId()] || al.GetSensorSeq() != uint64(i+1) {
			t.Fatalf("alert %d id %s seq %d: ids must be unique and in raise order", i, al.GetId(), al.GetSensorSeq())
		}
		ids[al.GetId()] = true
	}

	// At the end of a capture, held alerts are raised.
	e.HandleFlow(record(macPump2, macGW, ipPump2, netip.MustParseAddr("10.1.0.98"), 41002, 8443, 6, 900, at(40*time.Second)))
	e.HandleFlow(record(macPump2, macGW, ipPump2, netip.MustParseAddr("10.1.0.97"), 41003, 8443, 6, 900, at(40*time.Second+time.Millisecond)))
	n := len(e.Alerts())
	e.FlushAlerts()
	if got := len(e.Alerts()); got != n+1 {
		t.Fatalf("FlushAlerts raised %d alerts, want 1", got-n)
	}
}

// TestInfrastructureIsNotAnAnomaly: after its baseline froze, a pump asks
// the campus DHCP server (learned: it answered two other devices), the
// NTP server the operator declared, and the DNS server a DHCP reply
// advertised, none of which it did while learning: no alert. The same
// flow to a local address that serves nobody is a new peer.
func TestInfrastructureIsNotAnAnomaly(t *testing.T) {
	c := testConfig()
	ntp, err := infra.ParseDeclared("ntp=10.1.0.123")
	if err != nil {
		t.Fatal(err)
	}
	c.Infra.Declared = []infra.Declared{ntp}
	e := newEngine(t, c)
	dhcpSrv, dnsSrv, stranger := netip.MustParseAddr("10.1.0.67"), netip.MustParseAddr("10.1.0.54"), netip.MustParseAddr("10.1.0.99")
	others := []netip.Addr{netip.MustParseAddr("10.1.0.30"), netip.MustParseAddr("10.1.0.31")}
	for i, o := range others {
		r := record(flow.MAC{2, 0, 0, 0, 0, byte(i + 1)}, macSrv, o, dhcpSrv, 68, 67, 17, 300, at(time.Second))
		r.App = "dhcp"
		e.HandleFlow(r)
	}
	offer := dhcpOffer(t, dhcpSrv, dnsSrv)
	e.HandleDiscovery(&flow.Discovery{Kind: flow.DiscoveryDHCP, SrcMAC: macSrv, DstMAC: macPump, Src: dhcpSrv, Dst: ipPump,
		SrcPort: 67, DstPort: 68, TimeNs: at(time.Second), TTL: 64, Data: offer})
	pumpDay(e, macPump, ipPump, 0, 12*time.Second)
	if n := len(alertsOf(e, macPump.String())); n != 0 {
		t.Fatalf("pump alerted while learning: %v", e.Alerts())
	}
	for i, f := range []struct {
		dst   netip.Addr
		port  uint16
		app   string
		alert bool
	}{
		{dhcpSrv, 67, "dhcp", false},
		{netip.MustParseAddr("10.1.0.123"), 123, "ntp", false},
		{dnsSrv, 53, "dns", false},
		{stranger, 123, "ntp", true},
	} {
		r := record(macPump, macSrv, ipPump, f.dst, uint16(50000+i), f.port, 17, 200, at(13*time.Second+time.Duration(i)*time.Second))
		r.App = f.app
		e.HandleFlow(r)
		got := false
		for _, a := range alertsOf(e, macPump.String()) {
			got = got || strings.Contains(a.GetSummary(), f.dst.String())
		}
		if got != f.alert {
			t.Errorf("pump to %s/%d (%s): alert %v, want %v; alerts %v", f.dst, f.port, f.app, got, f.alert, e.Alerts())
		}
	}
	// Its IPv6 stack's router solicitations after a link flap are the
	// link's housekeeping; a ping to all nodes is not.
	ll := netip.MustParseAddr("fe80::20a:f7ff:fe00:1")
	for i, dst := range []string{"ff02::2", "ff02::1"} {
		r := record(macPump, flow.MAC{0x33, 0x33, 0, 0, 0, byte(i + 1)}, ll, netip.MustParseAddr(dst), 0, 0, 58, 56, at(20*time.Second+time.Duration(i)*time.Second))
		r.RevPackets = 0
		e.HandleFlow(r)
	}
	e.FlushAlerts() // deviations are held for the scan window
	var ff02 []string
	for _, a := range alertsOf(e, macPump.String()) {
		if strings.Contains(a.GetSummary(), "ff02::") {
			ff02 = append(ff02, a.GetSummary())
		}
	}
	if len(ff02) != 1 || !strings.Contains(ff02[0], "ff02::1 ") {
		t.Errorf("alerts on link-scope multicast %q, want the all-nodes ping only", ff02)
	}
}

// dhcpOffer builds a DHCPOFFER from server naming dns as the DNS server.
func dhcpOffer(t testing.TB, server, dns netip.Addr) []byte {
	t.Helper()
	b := make([]byte, 240)
	b[0], b[1], b[2] = 2, 1, 6
	copy(b[236:], []byte{0x63, 0x82, 0x53, 0x63})
	s, d := server.As4(), dns.As4()
	b = append(b, 53, 1, 2, 54, 4)
	b = append(b, s[:]...)
	b = append(b, 6, 4)
	b = append(b, d[:]...)
	return append(b, 255)
}

// TestScanVictimNotScored: a device probes a pump's ports; the pump
// refuses them all. The pump did nothing unusual: no alert, no risk.
func TestScanVictimNotScored(t *testing.T) {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 12*time.Second)
	scanner := netip.MustParseAddr("10.1.0.66")
	for i := range 40 {
		r := record(flow.MAC{2, 0, 0, 0, 0, 0x66}, macPump, scanner, ipPump, uint16(41000+i), uint16(20+i), 6, 60, at(13*time.Second))
		r.FwdTCPFlags, r.RevTCPFlags, r.RevPackets = 0x02, 0x14, 1 // SYN, then RST-ACK
		e.HandleFlow(r)
	}
	if a := alertsOf(e, macPump.String()); len(a) != 0 {
		t.Errorf("the scan's victim alerted: %v", a)
	}
	for _, d := range e.Devices() {
		if d.GetMac() == macPump.String() && (d.GetRisk().GetScore() != 0 || len(d.GetServices()) != 0) {
			t.Errorf("victim risk %d services %v", d.GetRisk().GetScore(), d.GetServices())
		}
	}
}

// TestGatewayIsARouterNotTheServers: a floor gateway forwards the DHCP
// server's offer (TTL 62) and HL7 ACKs from the interface engine; the
// inventory has the gateway as a router with its own address (from ARP)
// and no device for the servers behind it.
func TestGatewayIsARouterNotTheServers(t *testing.T) {
	e := newEngine(t, testConfig())
	gwIP, srv, engine := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.98.0.12"), netip.MustParseAddr("10.98.0.10")
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	arp = append(arp, macGW[:]...)
	arp = append(arp, gwIP.AsSlice()...)
	arp = append(arp, make([]byte, 6)...)
	arp = append(arp, ipPump.AsSlice()...)
	e.HandleDiscovery(&flow.Discovery{Kind: flow.DiscoveryARP, SrcMAC: macGW, DstMAC: flow.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, TimeNs: at(0), Data: arp})
	e.HandleDiscovery(&flow.Discovery{Kind: flow.DiscoveryDHCP, SrcMAC: macGW, DstMAC: macPump, Src: srv, Dst: ipPump,
		SrcPort: 67, DstPort: 68, TimeNs: at(time.Second), TTL: 62, Data: dhcpOffer(t, srv, srv)})
	tu := flow.Tuple{Src: ipPump, Dst: engine, SrcPort: 40001, DstPort: 6661, Proto: 6}
	e.HandleSample(&flow.Sample{Flow: tu, Dir: flow.Rev, SrcMAC: macGW, DstMAC: macPump, TimeNs: at(2 * time.Second), TTL: 62,
		WireLen: 60, Payload: []byte("\x0bMSH|^~\\&|ENGINE|HOSP|PUMP|WARD|2024||ACK^R40|1|P|2.6\rMSA|AA|1\r\x1c\r")})
	r := record(macPump, macGW, ipPump, engine, 40001, 6661, 6, 900, at(2*time.Second))
	r.RevTCPFlags = 0x12
	e.HandleFlow(r)
	var got []string
	for _, d := range e.Devices() {
		got = append(got, fmt.Sprintf("%s %v %s", d.GetMac(), d.GetIpAddresses(), names.Enum(d.GetDeviceClass())))
	}
	want := []string{
		macGW.String() + " [10.1.0.1] router",
		macPump.String() + " [10.1.0.10] infusion-pump",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("inventory\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

package engine

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node/flow"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// exchange plays a scripted payload exchange of flow t (client smac,
// server dmac) as samples from ts on, one millisecond apart.
func exchange(e *Engine, t flow.Tuple, cmac, smac flow.MAC, ts int64, steps ...string) int64 {
	for i, p := range steps {
		dir, src, dst := flow.Fwd, cmac, smac
		if i%2 == 1 {
			dir, src, dst = flow.Rev, smac, cmac
		}
		if p == "" {
			continue
		}
		e.HandleSample(&flow.Sample{Flow: t, Dir: dir, Index: uint8(min(i/2, 255)), SrcMAC: src, DstMAC: dst, TimeNs: ts,
			WireLen: uint16(len(p)), Payload: []byte(p)})
		ts += int64(time.Millisecond)
	}
	return ts
}

func kinds(as []*medmeshv1.Alert) []string {
	var k []string
	for _, a := range as {
		k = append(k, a.GetKind())
	}
	return k
}

// TestFailedLoginBurst: five refused Telnet logins from one workstation to
// one console within the window raise one failed_login_burst about the
// workstation, naming the accounts tried; the console carries the
// cleartext finding once.
func TestFailedLoginBurst(t *testing.T) {
	e := newEngine(t, testConfig())
	ws, wsMAC := netip.MustParseAddr("10.1.0.77"), flow.MAC{0x00, 0x50, 0x56, 0, 0, 0x77}
	ts := at(0)
	for i, user := range []string{"admin", "root", "admin", "service", "biomed", "admin", "root"} {
		tu := flow.Tuple{Src: ws, Dst: ipSrv, SrcPort: uint16(51000 + i), DstPort: 23, Proto: 6}
		ts = exchange(e, tu, wsMAC, macSrv, ts, "", "\r\nconsole\r\nlogin: ", user+"\r\n", "Password: ", fmt.Sprintf("guess-%d\r\n", i), "\r\nLogin incorrect\r\n")
	}
	burst := alertsOf(e, wsMAC.String())
	if len(burst) != 1 || burst[0].GetKind() != "failed_login_burst" {
		t.Fatalf("workstation alerts %v, want one failed_login_burst", kinds(burst))
	}
	ev := burst[0].GetLogin()
	if ev.GetAttempts() != 5 || !slices.Equal(ev.GetAccounts(), []string{"admin", "root", "service", "biomed"}) || ev.GetOutcome() != "refused" ||
		ev.GetProtocol() != "telnet" || ev.GetWindowSeconds() != 60 {
		t.Fatalf("burst evidence %v", ev)
	}
	if s := burst[0].GetSummary(); !strings.Contains(s, "5 refused telnet logins from 10.1.0.77 to 10.1.0.20 tcp/23") {
		t.Errorf("summary %q", s)
	}
	srv := alertsOf(e, macSrv.String())
	if len(srv) != 1 || srv[0].GetKind() != "cleartext_credentials" || srv[0].GetLogin().GetOutcome() != "refused" {
		t.Fatalf("console alerts %v, want one cleartext_credentials", srv)
	}
	for _, a := range e.Alerts() {
		if strings.Contains(a.String(), "guess-") {
			t.Fatalf("a password reached an alert: %v", a)
		}
	}
}

// TestDefaultLoginsByProtocol: the accepted factory logins of each
// protocol raise default_credentials about the service, with the protocol
// and the account; a VNC server without a password too; an SSH server
// whose banner names such a model is reported at the alert threshold.
func TestDefaultLoginsByProtocol(t *testing.T) {
	e := newEngine(t, testConfig())
	ws, wsMAC := netip.MustParseAddr("10.1.0.77"), flow.MAC{0x00, 0x50, 0x56, 0, 0, 0x77}
	server := func(i byte) (netip.Addr, flow.MAC) {
		return netip.AddrFrom4([4]byte{10, 1, 2, i}), flow.MAC{0x02, 0, 0, 0, 2, i}
	}
	mqttConnect := "\x10\x1d\x00\x04MQTT\x04\xc2\x00\x3c\x00\x03dev\x00\x05admin\x00\x05admin"
	snmpGet := "0)\x02\x01\x01\x04\x06public\xa0\x1c\x02\x04Pg\xd6]\x02\x01\x00\x02\x01\x000\x0e0\x0c\x06\x08+\x06\x01\x02\x01\x01\x05\x00\x05\x00"
	snmpResp := "0)\x02\x01\x01\x04\x06public\xa2\x1c\x02\x04Pg\xd6]\x02\x01\x00\x02\x01\x000\x0e0\x0c\x06\x08+\x06\x01\x02\x01\x01\x05\x00\x05\x00"
	cases := []struct {
		proto   uint8
		port    uint16
		steps   []string
		account string
		score   uint32
	}{
		{6, 1883, []string{mqttConnect, "\x20\x02\x00\x00"}, "admin", 100},
		{17, 161, []string{snmpGet, snmpResp}, "", 100},
		{6, 21, []string{"", "220 FTP server ready\r\n", "USER admin\r\n", "331 Password\r\n", "PASS admin\r\n", "230 OK\r\n"}, "admin", 100},
		{6, 80, []string{"POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nusername=admin&password=admin",
			"HTTP/1.1 302 Found\r\nLocation: /home\r\n\r\n"}, "admin", 100},
		{6, 5900, []string{"", "RFB 003.008\n", "RFB 003.008\n", "\x01\x01", "\x01", "\x00\x00\x00\x00"}, "", 60},
		{6, 22, []string{"", "SSH-2.0-OpenSSH_7.9p1 Raspbian-10+deb10u2\r\n"}, "pi", 50},
	}
	for i, c := range cases {
		ip, mac := server(byte(i + 1))
		tu := flow.Tuple{Src: ws, Dst: ip, SrcPort: uint16(52000 + i), DstPort: c.port, Proto: c.proto}
		exchange(e, tu, wsMAC, mac, at(time.Duration(i)*time.Second), c.steps...)
		a := alertsOf(e, mac.String())
		if len(a) != 1 || a[0].GetKind() != "default_credentials" || a[0].GetRisk().GetScore() != c.score ||
			a[0].GetLogin().GetAccount() != c.account || !a[0].GetLogin().GetDefaultPassword() {
			t.Errorf("port %d: alerts %v, want one default_credentials scored %d for account %q", c.port, a, c.score, c.account)
			continue
		}
		t.Logf("%s", a[0].GetSummary())
	}
	if len(alertsOf(e, wsMAC.String())) != 0 {
		t.Errorf("the client that logged in carries alerts: %v", alertsOf(e, wsMAC.String()))
	}
}

// TestCleartextPHI: HL7 to a peer outside the device's baseline raises
// cleartext_phi as soon as a sample shows HL7; HL7 to its interface engine
// does not.
func TestCleartextPHI(t *testing.T) {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 12*time.Second)
	e.FreezeAll()
	e.SetMode(Score)
	msg := "\x0bMSH|^~\\&|PUMP|ICU|EMR|H|2026||ORU^R01|1|P|2.6\rPID|1||12345||DOE^JANE\r\x1c\r"
	known := flow.Tuple{Src: ipPump, Dst: ipHL7, SrcPort: 45000, DstPort: 2575, Proto: 6}
	exchange(e, known, macPump, macHL7, at(20*time.Second), msg)
	if a := e.Alerts(); len(a) != 0 {
		t.Fatalf("HL7 to the baseline's engine raised %v", a)
	}
	other := netip.MustParseAddr("10.1.0.99")
	leak := flow.Tuple{Src: ipPump, Dst: other, SrcPort: 45001, DstPort: 2575, Proto: 6}
	exchange(e, leak, macPump, macGW, at(21*time.Second), msg)
	a := e.Alerts()
	if len(a) != 1 || a[0].GetKind() != "cleartext_phi" || a[0].GetFlow().GetDst() != other.String() || a[0].GetFlow().GetApp() != "hl7" {
		t.Fatalf("alerts %v, want one cleartext_phi to %s", a, other)
	}
	// The flow's record at its end raises nothing more.
	e.HandleFlow(record(macPump, macGW, ipPump, other, 45001, 2575, 6, 900, at(22*time.Second)))
	if n := len(e.Alerts()); n != 1 {
		t.Fatalf("%d alerts after the record, want 1: %v", n, e.Alerts())
	}
	for _, al := range e.Alerts() {
		if strings.Contains(al.String(), "DOE") || strings.Contains(al.String(), "12345") {
			t.Fatalf("patient data in an alert: %v", al)
		}
	}
}

// TestARPSweep: a device asking for 40 addresses nobody answers is
// scanning; its one scan alert names the sweep.
func TestARPSweep(t *testing.T) {
	e := newEngine(t, testConfig())
	arp := func(op byte, smac flow.MAC, spa, tpa netip.Addr) []byte {
		b := []byte{0, 1, 8, 0, 6, 4, 0, op}
		b = append(b, smac[:]...)
		b = append(b, spa.AsSlice()...)
		b = append(b, 0, 0, 0, 0, 0, 0)
		return append(b, tpa.AsSlice()...)
	}
	for i := range 40 {
		tpa := netip.AddrFrom4([4]byte{10, 1, 3, byte(i + 1)})
		e.HandleDiscovery(&flow.Discovery{Kind: flow.DiscoveryARP, SrcMAC: macPump, DstMAC: flow.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			TimeNs: at(time.Duration(i) * time.Millisecond), Data: arp(1, macPump, ipPump, tpa)})
	}
	a := e.Alerts()
	if len(a) != 1 || a[0].GetKind() != "scan" || !slices.Equal(a[0].GetScan().GetPatterns(), []string{"arp_sweep"}) ||
		a[0].GetScan().GetArpAsked() != 32 || a[0].GetDeviceMac() != macPump.String() {
		t.Fatalf("alerts %v, want one arp_sweep scan", a)
	}
}

// TestUDPScanVictimsNotScored: a UDP scan whose closed ports answer with
// ICMP port unreachable: the scanner gets its scan alert; the probed
// device, whose stack sent the ICMP errors, gets nothing.
func TestUDPScanVictimsNotScored(t *testing.T) {
	e := newEngine(t, testConfig())
	pumpDay(e, macPump, ipPump, 0, 12*time.Second)
	pumpDay(e, macPump2, ipPump2, 0, 12*time.Second)
	e.FreezeAll()
	e.SetMode(Score)
	for i := range 70 {
		ts := at(20*time.Second + time.Duration(i)*5*time.Millisecond)
		e.HandleFlow(&flow.Record{Src: ipPump, Dst: ipPump2, SrcPort: 53000, DstPort: uint16(100 + i), Proto: 17,
			FwdPackets: 1, FwdBytes: 28, FirstNs: ts, LastNs: ts, SrcMAC: macPump, DstMAC: macPump2, EndReason: "idle"})
		if i%10 == 0 { // the victim's ICMP errors, one flow by addresses
			e.HandleFlow(&flow.Record{Src: ipPump2, Dst: ipPump, Proto: 1, FwdPackets: 10, FwdBytes: 560, FirstNs: ts, LastNs: ts,
				SrcMAC: macPump2, DstMAC: macPump, EndReason: "idle"})
		}
	}
	e.FlushAlerts() // held alerts too: the pump's ICMP errors to the scanner are answers
	if v := alertsOf(e, macPump2.String()); len(v) != 0 {
		t.Fatalf("the scanned pump raised %v", kinds(v))
	}
	s := alertsOf(e, macPump.String())
	if !slices.Contains(kinds(s), "scan") || !slices.Equal(s[len(s)-1].GetScan().GetMethods(), []string{"udp"}) {
		t.Fatalf("scanner alerts %v, want a udp scan", kinds(s))
	}
}

package scan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node/flow"
)

var (
	scanner = netip.MustParseAddr("10.1.0.66")
	t0      = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC).UnixNano()
)

func host(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 1, byte(i)}) }

func ms(n int) int64 { return t0 + int64(n)*int64(time.Millisecond) }

func newDetector(t *testing.T) *Detector {
	t.Helper()
	d, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestClassify(t *testing.T) {
	const syn, ack, rst, fin = tcpSYN, tcpACK, tcpRST, tcpFIN
	for _, c := range []struct {
		name     string
		proto    uint8
		fwd, rev uint8
		revPkts  uint64
		payload  bool
		want     Outcome
		method   string
		ok       bool
	}{
		{"closed port", 6, syn, rst | ack, 1, false, Refused, "tcp_syn", true},
		{"connect scan, closed", 6, syn | ack | fin, rst | ack, 1, false, Refused, "tcp_connect", true},
		{"filtered", 6, syn, 0, 0, false, Unanswered, "tcp_syn", true},
		{"syn scan, open", 6, syn | rst, syn | ack, 1, false, HalfOpen, "tcp_syn", true},
		{"connect scan, open", 6, syn | ack | fin, syn | ack | fin, 2, false, Open, "tcp_connect", true},
		{"session", 6, syn | ack | fin, syn | ack | fin, 5, true, Session, "tcp_connect", true},
		{"mid-flow", 6, ack, ack, 3, true, 0, "", false},
		{"udp unanswered", 17, 0, 0, 0, false, Unanswered, "udp", true},
		{"udp answered", 17, 0, 0, 1, true, Session, "udp", true},
		{"ping unanswered", 1, 0, 0, 0, false, Unanswered, "icmp", true},
		{"ping answered", 1, 0, 0, 1, false, Session, "icmp", true},
		{"gre", 47, 0, 0, 0, false, 0, "", false},
	} {
		r := flow.Record{Proto: c.proto, FwdTCPFlags: c.fwd, RevTCPFlags: c.rev, FwdPackets: 1, FwdBytes: 60, RevPackets: c.revPkts, RevBytes: 52 * c.revPkts}
		o, m, ok := Classify(&r, c.payload)
		if o != c.want || m != c.method || ok != c.ok {
			t.Errorf("%s: %v %q %v, want %v %q %v", c.name, o, m, ok, c.want, c.method, c.ok)
		}
	}
	// Without samples (the flow table was full), a TCP direction whose
	// packets are bigger than headers carried payload.
	r := flow.Record{Src: scanner, Proto: 6, FwdTCPFlags: tcpSYN | tcpACK | tcpFIN, RevTCPFlags: tcpSYN | tcpACK | tcpFIN,
		FwdPackets: 4, FwdBytes: 900, RevPackets: 3, RevBytes: 180}
	if o, _, _ := Classify(&r, false); o != Session {
		t.Errorf("a connection of 900 bytes in 4 packets: %v, want session", o)
	}
}

// TestVertical: one host probed on many ports. Flow starts outside the
// baseline name the scan before the records come back.
func TestVertical(t *testing.T) {
	d := newDetector(t)
	var f *Finding
	for p := range 40 {
		if got := d.Observe(Probe{Src: scanner, Dst: host(5), Proto: 6, Port: uint16(p + 1), Outcome: Pending, TimeNs: ms(p)}); got != nil {
			if f != nil {
				t.Fatalf("second finding in the window at port %d", p+1)
			}
			f = got
			if p+1 != DefaultConfig().Ports {
				t.Errorf("vertical scan found at port %d, want %d", p+1, DefaultConfig().Ports)
			}
		}
	}
	if f == nil {
		t.Fatal("no finding")
	}
	if !slices.Equal(f.Patterns, []string{"vertical"}) || f.Hosts != 1 || f.Ports != 24 || f.Pending != 24 || f.TopHost != host(5) {
		t.Fatalf("finding %+v", f)
	}
	// The records complete it; nothing more is reported in the window.
	for p := range 40 {
		if got := d.Observe(Probe{Src: scanner, Dst: host(5), Proto: 6, Port: uint16(p + 1), Outcome: Refused, Method: "tcp_connect", TimeNs: ms(500 + p)}); got != nil {
			t.Fatalf("reported twice: %v", got)
		}
	}
	if !d.Probing(scanner, ms(600)) || d.Probing(host(5), ms(600)) {
		t.Error("Probing: the scanner is probing, its victim is not")
	}
	// After its window, a reported scanner stays suspect for two windows.
	if d.Probing(scanner, ms(0)+int64(90*time.Second)) || !d.Suspect(scanner, ms(0)+int64(90*time.Second)) ||
		d.Suspect(scanner, ms(0)+int64(3*time.Minute)) || d.Suspect(host(5), ms(600)) {
		t.Error("Suspect: reported scanners stay suspect two windows, victims never")
	}
	// A new window: reported again when it crosses again.
	later := ms(0) + int64(time.Minute)
	n := 0
	for p := range 30 {
		if d.Observe(Probe{Src: scanner, Dst: host(6), Proto: 6, Port: uint16(p + 1), Outcome: Refused, Method: "tcp_syn", TimeNs: later + int64(p)}) != nil {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d findings in the second window, want 1", n)
	}
}

// TestHorizontalAndSessions: refused probes of one port across hosts are a
// scan; a client with sessions to as many hosts is not.
func TestHorizontalAndSessions(t *testing.T) {
	d := newDetector(t)
	client := netip.MustParseAddr("10.1.0.77")
	for i := range 100 {
		if f := d.Observe(Probe{Src: client, Dst: host(i), Proto: 6, Port: 443, Outcome: Session, Method: "tcp_connect", TimeNs: ms(i)}); f != nil {
			t.Fatalf("sessions reported as a scan: %v", f)
		}
		// Flow starts outside a baseline do not make a horizontal scan
		// before their outcome is known.
		if f := d.Observe(Probe{Src: client, Dst: host(i), Proto: 6, Port: 8443, Outcome: Pending, TimeNs: ms(i)}); f != nil {
			t.Fatalf("pending flow starts reported as a horizontal scan: %v", f)
		}
	}
	if d.Probing(client, ms(100)) {
		// 100 pending starts to distinct hosts are probes until their
		// records say otherwise.
		for i := range 100 {
			d.Observe(Probe{Src: client, Dst: host(i), Proto: 6, Port: 8443, Outcome: Session, TimeNs: ms(200 + i)})
		}
		if d.Probing(client, ms(300)) {
			t.Error("a client whose flows all carried payload is still probing")
		}
	}
	var f *Finding
	for i := range 30 {
		if got := d.Observe(Probe{Src: scanner, Dst: host(i), Proto: 6, Port: 23, Outcome: Refused, Method: "tcp_syn", TimeNs: ms(i)}); got != nil {
			f = got
		}
	}
	if f == nil || !slices.Equal(f.Patterns, []string{"horizontal"}) || f.TopService != "tcp/23" || f.TopServiceHosts != 24 || f.Refused != 24 {
		t.Fatalf("horizontal finding %+v", f)
	}
	if len(f.Peers) != 24 || f.Peers[0] != host(0) || len(f.PeerNames(SummaryMax)) != SummaryMax || !strings.Contains(f.String(), ", +12") {
		t.Errorf("peers %v / %q", f.Peers, f.String())
	}
}

func TestUDPAndMixed(t *testing.T) {
	d := newDetector(t)
	var f *Finding
	for h := range 8 {
		for p := range 10 {
			if got := d.Observe(Probe{Src: scanner, Dst: host(h), Proto: 17, Port: uint16(100 + p), Outcome: Unanswered, Method: "udp", TimeNs: ms(h*10 + p)}); got != nil {
				f = got
			}
		}
	}
	if f == nil || !slices.Equal(f.Patterns, []string{"mixed"}) || f.Probes != 64 || f.Unanswered != 64 || !slices.Equal(f.Methods, []string{"udp"}) {
		t.Fatalf("mixed finding %+v", f)
	}
	if s := f.String(); !strings.Contains(s, "mixed scan (udp): 64 probes of 7 hosts on 10 services") || !strings.Contains(s, "udp/100") {
		t.Errorf("summary %q", s)
	}
	// Broadcast and multicast destinations are not probes.
	d2 := newDetector(t)
	for i := range 200 {
		if d2.Observe(Probe{Src: scanner, Dst: netip.MustParseAddr("239.255.255.250"), Proto: 17, Port: uint16(i), Outcome: Unanswered, TimeNs: ms(i)}) != nil {
			t.Fatal("multicast reported as a scan")
		}
	}
}

// TestARPSweep: a sweep asks for many addresses that do not answer; a
// router resolving its busy hosts is answered.
func TestARPSweep(t *testing.T) {
	d := newDetector(t)
	router := netip.MustParseAddr("10.1.0.1")
	for i := range 100 {
		d.ARP(false, router, host(i), ms(i))
		d.ARP(true, host(i), router, ms(i)+1)
	}
	if d.Probing(router, ms(200)) {
		t.Error("a router whose requests are answered is probing")
	}
	var f *Finding
	for i := range 60 {
		if got := d.ARP(false, scanner, host(i), ms(i)); got != nil {
			f = got
		}
		if i%5 == 0 {
			d.ARP(true, host(i), scanner, ms(i)+1) // a few answer
		}
	}
	if f == nil || !slices.Equal(f.Patterns, []string{"arp_sweep"}) || f.ARPAsked != 32 || f.ARPAnswered != 7 || f.Hosts != 32 {
		t.Fatalf("ARP sweep finding %+v", f)
	}
	if s := f.String(); !strings.HasPrefix(s, "arp_sweep scan (arp): ARP requests for 32 addresses, 7 answered") {
		t.Errorf("summary %q", s)
	}
	// Address probes (RFC 5227, sender 0.0.0.0) and gratuitous ARP say nothing.
	d2 := newDetector(t)
	for i := range 100 {
		if d2.ARP(false, netip.IPv4Unspecified(), host(i), ms(i)) != nil || d2.ARP(false, host(i), host(i), ms(i)) != nil {
			t.Fatal("probe or gratuitous ARP counted")
		}
	}
}

func TestMaxSources(t *testing.T) {
	c := DefaultConfig()
	c.MaxSources = 4
	d, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		d.Observe(Probe{Src: host(i), Dst: host(200), Proto: 6, Port: 1, Outcome: Refused, TimeNs: ms(0)})
	}
	if len(d.src) != 4 || d.Dropped() != 6 {
		t.Fatalf("%d sources followed, %d dropped", len(d.src), d.Dropped())
	}
	// Expired windows make room.
	d.Observe(Probe{Src: host(50), Dst: host(200), Proto: 6, Port: 1, Outcome: Refused, TimeNs: ms(0) + int64(2*time.Minute)})
	if len(d.src) != 1 {
		t.Fatalf("%d sources after expiry, want 1", len(d.src))
	}
	if err := (Config{}).Validate(); err == nil {
		t.Error("zero config accepted")
	}
}

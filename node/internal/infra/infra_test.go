package infra

import (
	"net/netip"
	"testing"
)

var (
	dhcpSrv = netip.MustParseAddr("10.98.0.12")
	ntpSrv  = netip.MustParseAddr("10.98.0.13")
	engine  = netip.MustParseAddr("10.98.0.10")
	pump    = netip.MustParseAddr("10.101.0.10")
	monitor = netip.MustParseAddr("10.101.0.11")
	outside = netip.MustParseAddr("203.0.113.10")
)

func newMap(t *testing.T, cfg Config) *Map {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		proto uint8
		port  uint16
		app   string
		want  Service
	}{
		{17, 67, "dhcp", DHCP},
		{17, 67, "", DHCP},
		{17, 53, "", DNS},
		{6, 53, "dns", DNS},
		{17, 123, "", NTP},
		{17, 514, "", Syslog},
		{6, 389, "", Directory},
		{6, 88, "", Directory},
		{6, 6661, "hl7", HL7},
		{6, 104, "dicom", DICOM},
		{6, 104, "", None},    // DICOM has no fixed port
		{17, 123, "dns", DNS}, // the application decides
		{6, 53, "http", None}, // HTTP on the DNS port is not DNS
		{6, 80, "", None},
	} {
		if got := Classify(tc.proto, tc.port, tc.app); got != tc.want {
			t.Errorf("Classify(%d, %d, %q) = %v, want %v", tc.proto, tc.port, tc.app, got, tc.want)
		}
	}
}

func TestLearnedFromClients(t *testing.T) {
	m := newMap(t, DefaultConfig())
	m.Served(dhcpSrv, pump, DHCP, 17, 67)
	if m.Serves(dhcpSrv, DHCP, 17, 67) {
		t.Fatal("one client made a server")
	}
	m.Served(dhcpSrv, pump, DHCP, 17, 67) // the same client again
	if m.Serves(dhcpSrv, DHCP, 17, 67) {
		t.Fatal("one client counted twice")
	}
	m.Served(dhcpSrv, monitor, DHCP, 17, 67)
	if !m.Serves(dhcpSrv, DHCP, 17, 67) {
		t.Fatal("two clients did not make a server")
	}
	if m.Serves(dhcpSrv, DNS, 17, 53) {
		t.Fatal("serving DHCP made a DNS server")
	}
	// HL7 counts on the port it was served on only.
	m.Served(engine, pump, HL7, 6, 6661)
	m.Served(engine, monitor, HL7, 6, 6661)
	if !m.Serves(engine, HL7, 6, 6661) || m.Serves(engine, HL7, 6, 2575) {
		t.Fatal("HL7 engine ports")
	}
	// Outside the campus nothing is infrastructure.
	m.Served(outside, pump, DNS, 17, 53)
	m.Served(outside, monitor, DNS, 17, 53)
	if m.Serves(outside, DNS, 17, 53) {
		t.Fatal("an internet host became campus DNS")
	}
	got := m.Servers()
	if len(got) != 2 || got[0].Addr != engine || got[1].Addr != dhcpSrv {
		t.Fatalf("servers %v", got)
	}
}

func TestAdvertisedAndDeclared(t *testing.T) {
	d, err := ParseDeclared("ntp=10.98.0.13")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseDeclared("syslog=10.98.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Declared = []Declared{d, p}
	m := newMap(t, cfg)
	if !m.Serves(ntpSrv, NTP, 17, 123) || !m.Serves(netip.MustParseAddr("10.98.1.7"), Syslog, 17, 514) {
		t.Fatal("declared servers")
	}
	if m.Serves(ntpSrv, DNS, 17, 53) {
		t.Fatal("declared NTP serves DNS")
	}
	m.Advertised(dhcpSrv, DNS)
	if !m.Serves(dhcpSrv, DNS, 17, 53) {
		t.Fatal("DHCP-advertised DNS server")
	}
	for _, bad := range []string{"ntp", "time=10.0.0.1", "ntp=ten"} {
		if _, err := ParseDeclared(bad); err == nil {
			t.Errorf("ParseDeclared(%q) accepted", bad)
		}
	}
}

func TestBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxServers = 2
	m := newMap(t, cfg)
	for i := range 5 {
		m.Served(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), pump, DNS, 17, 53)
	}
	if len(m.servers) != 2 {
		t.Fatalf("%d servers kept, bound 2", len(m.servers))
	}
	m = newMap(t, DefaultConfig())
	for i := range 20 {
		m.Served(engine, pump, HL7, 6, uint16(2000+i))
	}
	if n := len(m.servers[engine].svc[HL7].ports); n > maxPorts {
		t.Fatalf("%d ports", n)
	}
}

func TestServesDoesNotAllocate(t *testing.T) {
	m := newMap(t, DefaultConfig())
	m.Served(dhcpSrv, pump, DHCP, 17, 67)
	m.Served(dhcpSrv, monitor, DHCP, 17, 67)
	if n := testing.AllocsPerRun(100, func() {
		m.Served(dhcpSrv, pump, DHCP, 17, 67)
		_ = m.Serves(dhcpSrv, DHCP, 17, 67)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestLinkControl(t *testing.T) {
	for _, tc := range []struct {
		proto uint8
		dst   string
		want  bool
	}{
		{58, "ff02::2", true},          // router solicitation
		{58, "ff02::16", true},         // MLDv2 report
		{58, "ff02::1:ff00:10a", true}, // neighbour solicitation, DAD
		{2, "224.0.0.22", true},        // IGMPv3 report
		{58, "ff02::1", false},         // an all-nodes ping: a sweep
		{17, "ff02::16", false},        // not ICMPv6
		{58, "2001:db8::1", false},
		{17, "239.255.255.250", false}, // SSDP is an application
	} {
		if got := LinkControl(tc.proto, netip.MustParseAddr(tc.dst)); got != tc.want {
			t.Errorf("LinkControl(%d, %s) = %v", tc.proto, tc.dst, got)
		}
	}
}

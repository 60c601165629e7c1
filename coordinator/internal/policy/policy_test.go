package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const mac = "00:1b:44:11:3a:b7"

func cidr(name, c string, proto, lo, hi uint32, dir medmeshv1.Direction) *medmeshv1.Rule {
	return &medmeshv1.Rule{Name: name, Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: c}, Protocol: proto, PortMin: lo, PortMax: hi, Direction: dir}
}

var (
	out  = medmeshv1.Direction_DIRECTION_OUTBOUND
	in   = medmeshv1.Direction_DIRECTION_INBOUND
	both = medmeshv1.Direction_DIRECTION_BOTH
)

func devicePolicy(rules ...*medmeshv1.Rule) *medmeshv1.Policy {
	return &medmeshv1.Policy{Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Rules: rules, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE}
}

func TestValidate(t *testing.T) {
	ok := devicePolicy(cidr("hl7", "10.2.0.0/16", 6, 2575, 2575, out))
	if err := Validate(ok); err != nil {
		t.Fatalf("valid policy: %v", err)
	}
	bad := map[string]func(p *medmeshv1.Policy){
		"bad name":        func(p *medmeshv1.Policy) { p.Name = "a b" },
		"no subject":      func(p *medmeshv1.Policy) { p.Subject = nil },
		"upper-case mac":  func(p *medmeshv1.Policy) { p.Subject = &medmeshv1.Policy_DeviceMac{DeviceMac: "00:1B:44:11:3A:B7"} },
		"bad class":       func(p *medmeshv1.Policy) { p.Subject = &medmeshv1.Policy_DeviceClass{DeviceClass: 0} },
		"bad cidr":        func(p *medmeshv1.Policy) { p.Rules[0].Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: "10.2.0.0/33"} },
		"bad dns":         func(p *medmeshv1.Policy) { p.Rules[0].Peer = &medmeshv1.Rule_PeerDnsName{PeerDnsName: "a..b"} },
		"port order":      func(p *medmeshv1.Policy) { p.Rules[0].PortMin = 3000 },
		"port range":      func(p *medmeshv1.Policy) { p.Rules[0].PortMax = 70000 },
		"ports on icmp":   func(p *medmeshv1.Policy) { p.Rules[0].Protocol = 1 },
		"protocol":        func(p *medmeshv1.Policy) { p.Rules[0].Protocol = 256 },
		"duplicate names": func(p *medmeshv1.Policy) { p.Rules = append(p.Rules, proto.Clone(p.Rules[0]).(*medmeshv1.Rule)) },
		"too many rules": func(p *medmeshv1.Policy) {
			for i := range MaxRules {
				p.Rules = append(p.Rules, cidr(fmt.Sprint("r", i), "10.0.0.1", 6, 1, 1, out))
			}
		},
		"mode": func(p *medmeshv1.Policy) { p.Mode = 9 },
	}
	for name, mutate := range bad {
		p := proto.Clone(ok).(*medmeshv1.Policy)
		mutate(p)
		if err := Validate(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
	class := &medmeshv1.Policy{Name: "class/infusion-pump", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP}}
	if err := Validate(class); err != nil {
		t.Fatalf("class policy: %v", err)
	}
}

func pumpBaseline() *medmeshv1.Baseline {
	e := func(peer, name string, proto, port uint32, app string, dir medmeshv1.Direction) *medmeshv1.BaselineEntry {
		return &medmeshv1.BaselineEntry{PeerCidr: peer, PeerName: name, Protocol: proto, Port: port, App: app, Direction: dir}
	}
	return &medmeshv1.Baseline{
		DeviceMac: mac, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Version: 3,
		Entries: []*medmeshv1.BaselineEntry{
			e("10.20.0.5/32", "", 6, 2575, "hl7", out),        // HL7 interface engine
			e("10.20.0.5/32", "", 6, 2575, "hl7", out),        // duplicate
			e("10.30.1.9/32", "", 6, 443, "tls", out),         // drug library server
			e("", "pumps.vendor.example", 6, 443, "tls", out), // vendor cloud by name
			e("10.0.0.53/32", "", 17, 53, "dns", out),         // covered by the DNS default
			e("10.40.0.0/24", "", 6, 8443, "", in),            // management console connects in
			e("2001:db8:20::5/128", "", 6, 2575, "hl7", out),
		},
	}
}

func TestGenerateFromBaseline(t *testing.T) {
	p, err := Generate(pumpBaseline(), 0, DefaultDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if p.GetDeviceMac() != mac || p.GetMode() != medmeshv1.PolicyMode_POLICY_MODE_MONITOR || p.GetName() != "device/"+mac {
		t.Fatalf("policy header %v", p)
	}
	var got []string
	for _, r := range p.GetRules() {
		peer := r.GetPeerCidr() + r.GetPeerDnsName()
		got = append(got, fmt.Sprintf("%s %s %d/%d-%d %v", r.GetName(), peer, r.GetProtocol(), r.GetPortMin(), r.GetPortMax(), r.GetDirection()))
	}
	want := []string{
		"dhcp  17/67-67 DIRECTION_OUTBOUND",
		"dns  17/53-53 DIRECTION_OUTBOUND",
		"dns-tcp  6/53-53 DIRECTION_OUTBOUND",
		"ntp  17/123-123 DIRECTION_OUTBOUND",
		"tls-443-1 pumps.vendor.example 6/443-443 DIRECTION_OUTBOUND",
		"tls-443-2 10.30.1.9/32 6/443-443 DIRECTION_OUTBOUND",
		"hl7-2575-1 10.20.0.5/32 6/2575-2575 DIRECTION_OUTBOUND",
		"hl7-2575-2 2001:db8:20::5/128 6/2575-2575 DIRECTION_OUTBOUND",
		"tcp-8443-1 10.40.0.0/24 6/8443-8443 DIRECTION_INBOUND",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Restricting DNS and NTP to configured servers makes them peer rules.
	d := Defaults{DHCP: true, DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")}, NTPServers: []netip.Addr{netip.MustParseAddr("10.0.0.123")}}
	p2, err := Generate(pumpBaseline(), 0, d)
	if err != nil {
		t.Fatal(err)
	}
	if r := p2.GetRules()[1]; r.GetPeerCidr() != "10.0.0.53/32" {
		t.Fatalf("dns rule %v", r)
	}
	// The learned DNS flow to 10.0.0.53 is covered by the restricted DNS rule only
	// through simulation: it still must be allowed.
	sim := Simulate(p2, []*medmeshv1.FlowSummary{{PeerIp: "10.0.0.53", Protocol: 17, Port: 53, Direction: out}})
	if sim.GetFlowsDropped() != 0 {
		t.Fatalf("dns to configured server dropped: %v", sim)
	}
}

func TestGenerateWidensToFit(t *testing.T) {
	b := &medmeshv1.Baseline{DeviceMac: mac}
	for i := range 200 { // 200 peers in 4 /24s on one service
		b.Entries = append(b.Entries, &medmeshv1.BaselineEntry{PeerCidr: fmt.Sprintf("10.9.%d.%d/32", i%4, i), Protocol: 6, Port: 104, App: "dicom", Direction: out})
	}
	p, err := Generate(b, medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, DefaultDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.GetRules()); n != 4+4 {
		t.Fatalf("%d rules, want 4 defaults + 4 /24 rules", n)
	}
	sim := Simulate(p, []*medmeshv1.FlowSummary{{PeerIp: "10.9.2.77", Protocol: 6, Port: 104, Direction: out}})
	if sim.GetFlowsAllowed() != 1 {
		t.Fatal("widened rule does not cover a learned peer")
	}
	for i := range 300 { // 300 services: any-peer rules cannot fit either
		b.Entries = append(b.Entries, &medmeshv1.BaselineEntry{PeerCidr: "10.1.1.1/32", Protocol: 6, Port: uint32(1000 + i), Direction: out})
	}
	if _, err := Generate(b, 0, DefaultDefaults()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized baseline: err %v", err)
	}
}

func TestSimulate(t *testing.T) {
	p, err := Generate(pumpBaseline(), 0, DefaultDefaults())
	if err != nil {
		t.Fatal(err)
	}
	flows := []*medmeshv1.FlowSummary{
		{PeerIp: "10.20.0.5", Protocol: 6, Port: 2575, Direction: out, Flows: 10},
		{PeerIp: "2001:db8:20::5", Protocol: 6, Port: 2575, Direction: out, Flows: 2},
		{PeerIp: "203.0.113.9", PeerName: "pumps.vendor.example.", Protocol: 6, Port: 443, Direction: out, Flows: 3},
		{PeerIp: "10.40.0.77", Protocol: 6, Port: 8443, Direction: in, Flows: 1},
		{PeerIp: "10.40.0.77", Protocol: 6, Port: 8443, Direction: out, Flows: 1}, // wrong direction
		{PeerIp: "203.0.113.66", PeerName: "exfil.example", Protocol: 6, Port: 443, Direction: out, Flows: 4},
		{PeerIp: "10.20.0.5", Protocol: 6, Port: 22, Direction: out},             // counts as one flow
		{PeerIp: "192.0.2.1", Protocol: 17, Port: 123, Direction: out, Flows: 5}, // NTP default
	}
	sim := Simulate(p, flows)
	if sim.GetFlowsTotal() != 27 || sim.GetFlowsAllowed() != 21 || sim.GetFlowsDropped() != 6 || len(sim.GetDropped()) != 3 {
		t.Fatalf("simulation total %d allowed %d dropped %d (%d listed)", sim.GetFlowsTotal(), sim.GetFlowsAllowed(), sim.GetFlowsDropped(), len(sim.GetDropped()))
	}
	for _, d := range sim.GetDropped() {
		if d.GetVerdict() != "drop" {
			t.Fatalf("verdict %q", d.GetVerdict())
		}
	}
	if sim.GetDropped()[1].GetFlow().GetPeerName() != "exfil.example" {
		t.Fatalf("dropped %v", sim.GetDropped())
	}
	if r, ok := Match(p, flows[0]); !ok || r != "hl7-2575-1" {
		t.Fatalf("match %q %v", r, ok)
	}
	p.Quarantine = true
	q := Simulate(p, flows)
	if q.GetFlowsAllowed() != 0 {
		t.Fatalf("quarantine allowed %d flows of non-infra traffic", q.GetFlowsAllowed())
	}
	if q := Simulate(p, []*medmeshv1.FlowSummary{{PeerIp: "10.0.0.53", Protocol: 17, Port: 53, Direction: out}}); q.GetFlowsAllowed() != 1 {
		t.Fatal("quarantine dropped DNS")
	}
}

func TestMUDRoundTrip(t *testing.T) {
	p := devicePolicy(
		cidr("hl7", "10.20.0.5/32", 6, 2575, 2575, out),
		cidr("hl7-v6", "2001:db8:20::/64", 6, 2575, 2575, out),
		cidr("console", "10.40.0.0/24", 6, 8443, 8443, in),
		cidr("syslog", "10.50.0.1/32", 17, 514, 514, out),
		cidr("dyn", "10.60.0.0/16", 17, 5000, 5100, both),
		cidr("icmp", "10.20.0.1/32", 1, 0, 0, out),
		&medmeshv1.Rule{Name: "vendor", Peer: &medmeshv1.Rule_PeerDnsName{PeerDnsName: "pumps.vendor.example"}, Protocol: 6, PortMin: 443, PortMax: 443, Direction: out},
		&medmeshv1.Rule{Name: "ntp", Protocol: 17, PortMin: 123, PortMax: 123, Direction: out},
	)
	p.Description = "Infusion pump, ward 3"
	data, err := ExportMUD(p, "https://mud.example.org/pump")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"ietf-mud:mud"`, `"mud-url": "https://mud.example.org/pump"`, `"ietf-access-control-list:acls"`, `"ietf-acldns:dst-dnsname": "pumps.vendor.example"`, `"ietf-mud:direction-initiated": "to-device"`} {
		if !strings.Contains(string(data), s) {
			t.Fatalf("export lacks %s:\n%s", s, data)
		}
	}
	got, warnings, err := ImportMUD(mac, data)
	if err != nil {
		t.Fatalf("import own export: %v\n%s", err, data)
	}
	if len(warnings) != 0 {
		t.Fatalf("warnings on own export: %v", warnings)
	}
	want := Canonical(p)
	want.Mode = medmeshv1.PolicyMode_POLICY_MODE_MONITOR // imports are never enforced directly
	if !proto.Equal(got, want) {
		t.Fatalf("round trip differs:\n got %v\nwant %v", got, want)
	}
}

func mudFile(t *testing.T, name string) []byte {
	t.Helper()
	path := filepath.Join("..", "..", "..", "..", "shared", "testdata", "mud", name)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		t.Skipf("skipped: third-party MUD file %s absent", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestImportCiscoLuminaireRFC(t *testing.T) {
	p, warnings, err := ImportMUD(mac, mudFile(t, "cisco-luminaire-rfc8520.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.GetRules()) != 1 {
		t.Fatalf("rules %v", p.GetRules())
	}
	r := p.GetRules()[0]
	if r.GetName() != "cl0" || r.GetPeerDnsName() != "fw-update.luminaire.example.com" || r.GetProtocol() != 6 ||
		r.GetPortMin() != 443 || r.GetPortMax() != 443 || r.GetDirection() != out {
		t.Fatalf("rule %v", r)
	}
	if p.GetDescription() != "MUD-enabled Luminaire" {
		t.Fatalf("description %q", p.GetDescription())
	}
	// my-controller and local-networks need site configuration.
	joined := strings.Join(warnings, "\n")
	for _, s := range []string{"myctl0-frdev: ietf-mud:mud my-controller", "loc0-frdev: ietf-mud:mud local-networks"} {
		if !strings.Contains(joined, s) {
			t.Errorf("warnings lack %q:\n%s", s, joined)
		}
	}
}

func TestImportOsmudDraft(t *testing.T) {
	p, warnings, err := ImportMUD(mac, mudFile(t, "osmud-lightbulb2000-draft.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Fatalf("warnings %v", warnings)
	}
	if len(p.GetRules()) != 1 {
		t.Fatalf("rules %v", p.GetRules())
	}
	r := p.GetRules()[0]
	if r.GetName() != "cl0" || r.GetPeerDnsName() != "service.bms.example.com" || r.GetProtocol() != 6 || r.GetPortMin() != 443 || r.GetDirection() != out {
		t.Fatalf("rule %v", r)
	}
}

func TestImportRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":  "{",
		"no mud":    `{"x":1}`,
		"no acls":   `{"ietf-mud:mud":{}}`,
		"oversized": `{"ietf-mud:mud":{},"pad":"` + strings.Repeat("x", MaxMUDBytes) + `"}`,
	} {
		if _, _, err := ImportMUD(mac, []byte(doc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

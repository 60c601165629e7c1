package api

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"00:1B:44:11:3A:B7": "00:1b:44:11:3a:b7",
		"00-1b-44-11-3a-b7": "00:1b:44:11:3a:b7",
		"001b.4411.3ab7":    "00:1b:44:11:3a:b7",
		"ip:10.1.2.3":       "ip:10.1.2.3",
		"ip:2001:DB8::1":    "ip:2001:db8::1",
	} {
		if got, err := normalizeMAC("mac", in); err != nil || got != want {
			t.Errorf("normalizeMAC(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "zz:1b:44:11:3a:b7", "00:1b:44:11:3a", "ip:10.1.2", "00:00:5e:10:00:00:00:01"} {
		if _, err := normalizeMAC("device.mac", in); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "device.mac") {
			t.Errorf("normalizeMAC(%q): %v, want INVALID_ARGUMENT naming device.mac", in, err)
		}
	}
}

func TestValidatePolicy(t *testing.T) {
	good := func() *medmeshv1.Policy {
		return &medmeshv1.Policy{
			Name:    "device/00:1b:44:11:3a:b7",
			Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: "00-1B-44-11-3A-B7"},
			Rules: []*medmeshv1.Rule{
				{Name: "pacs", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.2.0.0/16"}, Protocol: 6, PortMin: 104, PortMax: 104},
				{Name: "dns", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "2001:db8::53"}, Protocol: 17, PortMin: 53, PortMax: 53},
				{Peer: &medmeshv1.Rule_PeerDnsName{PeerDnsName: "ntp.example.org"}},
			},
		}
	}
	p := good()
	if err := validatePolicy(p); err != nil {
		t.Fatalf("good policy: %v", err)
	}
	if p.GetDeviceMac() != "00:1b:44:11:3a:b7" {
		t.Errorf("device_mac not normalised: %s", p.GetDeviceMac())
	}
	cases := map[string]func(*medmeshv1.Policy){
		"policy.name":               func(p *medmeshv1.Policy) { p.Name = "" },
		"policy.name ":              func(p *medmeshv1.Policy) { p.Name = "bad name!" },
		"policy.subject":            func(p *medmeshv1.Policy) { p.Subject = nil },
		"policy.device_class":       func(p *medmeshv1.Policy) { p.Subject = &medmeshv1.Policy_DeviceClass{DeviceClass: 999} },
		"policy.rules[0].peer_cidr": func(p *medmeshv1.Policy) { p.Rules[0].Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: "10.2.0.0/33"} },
		"policy.rules[0].peer_cidr ": func(p *medmeshv1.Policy) {
			p.Rules[0].Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: "10.2.0.1/16"} // host bits set
		},
		"policy.rules[1].peer_cidr": func(p *medmeshv1.Policy) { p.Rules[1].Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: "not-an-ip"} },
		"policy.rules[0].port_min":  func(p *medmeshv1.Policy) { p.Rules[0].PortMin, p.Rules[0].PortMax = 200, 100 },
		"policy.rules[0].protocol":  func(p *medmeshv1.Policy) { p.Rules[0].Protocol = 300 },
		"policy.rules[1].name":      func(p *medmeshv1.Policy) { p.Rules[1].Name = "pacs" },
		"policy.rules[2].peer_dns_name": func(p *medmeshv1.Policy) {
			p.Rules[2].Peer = &medmeshv1.Rule_PeerDnsName{PeerDnsName: strings.Repeat("a", 300)}
		},
		"policy.description": func(p *medmeshv1.Policy) { p.Description = strings.Repeat("x", maxDescription+1) },
		"policy.mode":        func(p *medmeshv1.Policy) { p.Mode = 42 },
	}
	for field, mutate := range cases {
		p := good()
		mutate(p)
		err := validatePolicy(p)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), strings.TrimSpace(field)) {
			t.Errorf("%s: got %v, want INVALID_ARGUMENT naming the field", field, err)
		}
	}
}

func TestPageTokens(t *testing.T) {
	if k, err := decodeToken(encodeToken("device/a")); err != nil || k != "device/a" {
		t.Fatalf("round trip: %q %v", k, err)
	}
	if i, err := decodeIndexToken("page_token", indexToken(42)); err != nil || i != 42 {
		t.Fatalf("index round trip: %d %v", i, err)
	}
	for _, bad := range []string{"%%%", encodeToken("x")} {
		if _, err := decodeIndexToken("page_token", bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("token %q: %v", bad, err)
		}
	}
	if _, err := pageSize(-1); status.Code(err) != codes.InvalidArgument {
		t.Errorf("negative page size: %v", err)
	}
	if n, _ := pageSize(5000); n != maxPageSize {
		t.Errorf("page size not capped: %d", n)
	}
}

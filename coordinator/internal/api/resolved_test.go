package api

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/policy"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// FuzzValidateResolvedPeers: an enforcer's status report decoded from
// arbitrary bytes never panics the validation, and whatever passes is
// bounded and holds policy names, DNS names and addresses that parse, each
// (policy, name) once.
func FuzzValidateResolvedPeers(f *testing.F) {
	good, err := proto.Marshal(&medmeshv1.ReportMemberStatusRequest{
		Member: &medmeshv1.Member{Id: "e1", Role: "enforcer"},
		ResolvedPeers: []*medmeshv1.ResolvedPeer{{Policy: "class/luminaire", DnsName: "fw-update.luminaire.example.com",
			Addresses: []string{"192.0.2.10", "2001:db8::10"}, TtlSeconds: 300, Devices: 3}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &medmeshv1.ReportMemberStatusRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		peers := req.GetResolvedPeers()
		if validateResolvedPeers(peers) != nil {
			return
		}
		if len(peers) > maxResolvedPeers {
			t.Fatalf("%d entries accepted", len(peers))
		}
		seen := map[[2]string]bool{}
		for _, p := range peers {
			if !policyNameRE.MatchString(p.GetPolicy()) || !policy.ValidDNSName(p.GetDnsName()) || seen[[2]string{p.GetPolicy(), p.GetDnsName()}] {
				t.Fatalf("accepted %v", p)
			}
			seen[[2]string{p.GetPolicy(), p.GetDnsName()}] = true
			if len(p.GetAddresses()) > maxResolvedAddrs || len(p.GetError()) > maxTextField {
				t.Fatalf("accepted %d addresses, %d bytes of error", len(p.GetAddresses()), len(p.GetError()))
			}
			for _, a := range p.GetAddresses() {
				if _, err := netip.ParseAddr(a); err != nil {
					t.Fatalf("accepted address %q", a)
				}
			}
		}
	})
}

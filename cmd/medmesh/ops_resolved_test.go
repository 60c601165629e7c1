package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// `policies get` prints what each enforcer reported installing for the
// policy's DNS-named peers, after the rules; -o json carries the same.
func TestPoliciesGetShowsResolvedPeers(t *testing.T) {
	addr, conn := devClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pol := &medmeshv1.Policy{Name: "class/luminaire", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION},
		Rules: []*medmeshv1.Rule{{Name: "cl0", Peer: &medmeshv1.Rule_PeerDnsName{PeerDnsName: "fw-update.luminaire.example.com"}, Protocol: 6, PortMin: 443, PortMax: 443}}}
	if _, err := medmeshv1.NewPolicyServiceClient(conn).PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: pol}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for id, p := range map[string]*medmeshv1.ResolvedPeer{
		"e1": {Policy: pol.Name, DnsName: "fw-update.luminaire.example.com", Addresses: []string{"192.0.2.10", "2001:db8::10"}, ResolveTime: timestamppb.New(at),
			TtlSeconds: 300, RefreshTime: timestamppb.New(at.Add(5 * time.Minute)), Devices: 4},
		"e2": {Policy: pol.Name, DnsName: "fw-update.luminaire.example.com", Addresses: []string{"192.0.2.9"}, Error: "SERVFAIL", AddressesLeftOut: 3},
	} {
		if _, err := medmeshv1.NewClusterServiceClient(conn).ReportMemberStatus(ctx, &medmeshv1.ReportMemberStatusRequest{
			Member: &medmeshv1.Member{Id: id, Role: "enforcer"}, ResolvedPeers: []*medmeshv1.ResolvedPeer{p}}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, stderr := runCLI(t, "policies", "get", pol.Name, "--addr", addr)
	t.Logf("policies get:\n%s", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rules := strings.Index(out, "fw-update.luminaire.example.com")
	peers := strings.Index(out, "DNS-named peers, as the enforcers installed them")
	if rules < 0 || peers < rules {
		t.Fatalf("policies get:\n%s", out)
	}
	lines := strings.Split(out[peers:], "\n")
	if len(lines) < 4 {
		t.Fatalf("policies get:\n%s", out)
	}
	e1, e2 := strings.Fields(lines[2]), lines[3]
	want := []string{"e1", "fw-update.luminaire.example.com", "192.0.2.10,2001:db8::10", "5m0s", "2026-03-01T10:00:00Z", "2026-03-01T10:05:00Z", "4", "-"}
	if len(e1) < len(want) || strings.Join(e1[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("e1's row %q, want it to start %q", e1, want)
	}
	for _, s := range []string{"e2", "192.0.2.9 (+3 left out)", "SERVFAIL"} {
		if !strings.Contains(e2, s) {
			t.Fatalf("e2's row %q lacks %q", e2, s)
		}
	}
	if code, out, _ := runCLI(t, "policies", "get", pol.Name, "--addr", addr, "-o", "json"); code != 0 || !strings.Contains(out, `"resolved_peers"`) || !strings.Contains(out, `"ttl_seconds": 300`) {
		t.Fatalf("json: %s", out)
	}
}

package coordinator

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// An enforcer's report of what it installed for a policy's DNS-named
// peers, over mutual TLS, is what `policies get` shows, per enforcer; each
// report replaces the enforcer's last one. An enforcer speaks only for
// itself, a sensor has nothing to report, and malformed reports are
// refused.
func TestResolvedPeersReportedAndShown(t *testing.T) {
	cp := newCampus(t)
	ctx := ctxT(t, 20*time.Second)
	ap := medmeshv1.NewPolicyServiceClient(cp.as(pki.RoleApprover, "carol"))
	pol := &medmeshv1.Policy{Name: "class/luminaire", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION},
		Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, Rules: []*medmeshv1.Rule{{Name: "fw-update", Peer: &medmeshv1.Rule_PeerDnsName{PeerDnsName: "fw-update.luminaire.example.com"}, Protocol: 6, PortMin: 443, PortMax: 443}}}
	if _, err := ap.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: pol, Reason: "MUD"}); err != nil {
		t.Fatal(err)
	}
	resolvedAt := time.Now().Add(-10 * time.Second).Truncate(time.Second)
	peer := &medmeshv1.ResolvedPeer{Policy: pol.Name, DnsName: "fw-update.luminaire.example.com", Addresses: []string{"192.0.2.10", "2001:db8::10"},
		ResolveTime: timestamppb.New(resolvedAt), TtlSeconds: 300, RefreshTime: timestamppb.New(resolvedAt.Add(300 * time.Second)), Devices: 2,
		EnforcerId: "forged", ReportTime: timestamppb.New(time.Unix(0, 0))}
	report := func(role pki.Role, cert, id string, peers ...*medmeshv1.ResolvedPeer) error {
		_, err := medmeshv1.NewClusterServiceClient(cp.as(role, cert)).ReportMemberStatus(ctx, &medmeshv1.ReportMemberStatusRequest{
			Member: &medmeshv1.Member{Id: id, Role: string(role)}, ResolvedPeers: peers})
		return err
	}
	if err := report(pki.RoleEnforcer, "e1", "e1", peer); err != nil {
		t.Fatal(err)
	}
	other := &medmeshv1.ResolvedPeer{Policy: pol.Name, DnsName: "fw-update.luminaire.example.com", Error: "SERVFAIL", Addresses: []string{"192.0.2.9"}}
	if err := report(pki.RoleEnforcer, "e2", "e2", other); err != nil {
		t.Fatal(err)
	}
	got, err := ap.GetPolicy(ctx, &medmeshv1.GetPolicyRequest{Name: pol.Name})
	if err != nil {
		t.Fatal(err)
	}
	rp := got.GetResolvedPeers()
	if len(rp) != 2 || rp[0].GetEnforcerId() != "e1" || rp[1].GetEnforcerId() != "e2" {
		t.Fatalf("resolved peers %v", rp)
	}
	if a := rp[0].GetAddresses(); len(a) != 2 || a[0] != "192.0.2.10" || rp[0].GetTtlSeconds() != 300 || !rp[0].GetResolveTime().AsTime().Equal(resolvedAt) ||
		rp[0].GetDevices() != 2 || time.Since(rp[0].GetReportTime().AsTime()) > time.Minute {
		t.Fatalf("e1's entry %v", rp[0])
	}
	if rp[1].GetError() != "SERVFAIL" {
		t.Fatalf("e2's entry %v", rp[1])
	}
	// Another policy shows none of them.
	if got, err := ap.GetPolicy(ctx, &medmeshv1.GetPolicyRequest{Name: "class/luminaire-2"}); err == nil && len(got.GetResolvedPeers()) > 0 {
		t.Fatalf("another policy: %v", got)
	}
	// A report without entries replaces the last one.
	if err := report(pki.RoleEnforcer, "e2", "e2"); err != nil {
		t.Fatal(err)
	}
	if got, err := ap.GetPolicy(ctx, &medmeshv1.GetPolicyRequest{Name: pol.Name}); err != nil || len(got.GetResolvedPeers()) != 1 {
		t.Fatalf("after e2's empty report: %v %v", got.GetResolvedPeers(), err)
	}

	wantCode(t, "enforcer reporting as another", report(pki.RoleEnforcer, "e1", "e2", peer), codes.PermissionDenied)
	wantCode(t, "sensor reporting resolved peers", report(pki.RoleSensor, "s1", "s1", peer), codes.InvalidArgument)
	wantCode(t, "viewer reporting", report(pki.RoleViewer, "v", "e1", peer), codes.PermissionDenied)
	for what, bad := range map[string]*medmeshv1.ResolvedPeer{
		"address":  {Policy: pol.Name, DnsName: "a.example.com", Addresses: []string{"not-an-ip"}},
		"dns name": {Policy: pol.Name, DnsName: "bad name!"},
		"policy":   {Policy: "", DnsName: "a.example.com"},
	} {
		wantCode(t, "malformed "+what, report(pki.RoleEnforcer, "e1", "e1", bad), codes.InvalidArgument)
	}
	wantCode(t, "a name twice", report(pki.RoleEnforcer, "e1", "e1", peer, peer), codes.InvalidArgument)
	if got, err := ap.GetPolicy(ctx, &medmeshv1.GetPolicyRequest{Name: pol.Name}); err != nil || len(got.GetResolvedPeers()) != 1 || got.GetResolvedPeers()[0].GetEnforcerId() != "e1" {
		t.Fatalf("after refused reports: %v %v", got.GetResolvedPeers(), err)
	}
}

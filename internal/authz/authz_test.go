package authz

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/pki"
)

func TestTableDefaultDeny(t *testing.T) {
	tab := Table{
		"/s/Read":   {pki.RoleViewer, pki.RoleOperator},
		"/s/Health": {Anyone},
	}
	cases := []struct {
		method string
		role   pki.Role
		want   bool
	}{
		{"/s/Read", pki.RoleViewer, true},
		{"/s/Read", pki.RoleSensor, false},
		{"/s/Write", pki.RoleOperator, false}, // no row: denied to all
		{"/s/Health", pki.RoleSensor, true},
	}
	for _, c := range cases {
		if got := tab.Allows(c.method, c.role); got != c.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", c.method, c.role, got, c.want)
		}
	}
}

func TestOnBehalfOnlyFromCoordinators(t *testing.T) {
	alice := pki.Identity{Role: pki.RoleOperator, Name: "alice"}
	fwd := metadata.NewIncomingContext(context.Background(), metadata.Pairs(OnBehalfKey, alice.String()))

	got, err := effective(fwd, pki.Identity{Role: pki.RoleCoordinator, Name: "c2"})
	if err != nil || got != alice {
		t.Fatalf("coordinator forwarding for alice: %+v, %v", got, err)
	}
	for _, peer := range []pki.Role{pki.RoleSensor, pki.RoleOperator, pki.RoleApprover, pki.RoleViewer, pki.RoleEnforcer} {
		_, err := effective(fwd, pki.Identity{Role: peer, Name: "x"})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s claiming to act for alice: err = %v, want PermissionDenied", peer, err)
		}
	}
	bad := metadata.NewIncomingContext(context.Background(), metadata.Pairs(OnBehalfKey, "local/x"))
	if _, err := effective(bad, pki.Identity{Role: pki.RoleCoordinator, Name: "c2"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("TLS coordinator forwarding for a local caller: %v, want PermissionDenied", err)
	}
	out := ForwardContext(WithIdentity(context.Background(), alice))
	md, _ := metadata.FromOutgoingContext(out)
	if v := md.Get(OnBehalfKey); len(v) != 1 || v[0] != "operator/alice" {
		t.Fatalf("ForwardContext metadata = %v", v)
	}
}

package coordinator

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Accounts are an approver's to manage, over real mutual TLS: an operator
// is refused by the table, the hash never comes back, and every change is
// audited with the approver's certificate identity.
func TestAccountsManagedByApprovers(t *testing.T) {
	cp := newCampus(t)
	ctx := ctxT(t, 30*time.Second)
	approver := medmeshv1.NewAccountServiceClient(cp.as(pki.RoleApprover, "ann"))
	operator := medmeshv1.NewAccountServiceClient(cp.as(pki.RoleOperator, "otto"))

	add := &medmeshv1.PutAccountRequest{Account: &medmeshv1.Account{Name: "nina", Role: "operator"}, Password: "a long enough password", RequestId: "add-nina"}
	if _, err := operator.PutAccount(ctx, add); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("operator creating an account: %v", err)
	}
	if _, err := operator.ListAccounts(ctx, &medmeshv1.ListAccountsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("operator listing accounts: %v", err)
	}
	short := &medmeshv1.PutAccountRequest{Account: &medmeshv1.Account{Name: "nina", Role: "operator"}, Password: "short"}
	if _, err := approver.PutAccount(ctx, short); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("5-byte password: %v", err)
	}
	resp, err := approver.PutAccount(ctx, add)
	if err != nil {
		t.Fatal(err)
	}
	// A retry with the same request id applies once.
	again, err := approver.PutAccount(ctx, add)
	if err != nil || again.GetIndex() != resp.GetIndex() {
		t.Fatalf("retry: %v, index %d want %d", err, again.GetIndex(), resp.GetIndex())
	}
	if _, hash := cp.c.FSM().AccountHash("nina"); hash == "" || hash[:10] != "$argon2id$" {
		t.Fatalf("stored hash %q is not argon2id", hash)
	}
	list, err := approver.ListAccounts(ctx, &medmeshv1.ListAccountsRequest{})
	if err != nil || len(list.GetAccounts()) != 1 || list.GetAccounts()[0].GetUpdatedBy() != "approver/ann" {
		t.Fatalf("list: %v %v", list, err)
	}
	// Authenticate is the coordinators' (their web listeners'), not a person's.
	h := sha256.Sum256([]byte("token"))
	if _, err := medmeshv1.NewAccountServiceClient(cp.as(pki.RoleApprover, "ann")).Authenticate(ctx, &medmeshv1.AuthenticateRequest{Name: "nina", Password: "a long enough password", SessionHash: h[:]}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("approver calling Authenticate: %v", err)
	}
	web := medmeshv1.NewAccountServiceClient(cp.as(pki.RoleCoordinator, "c1"))
	a, err := web.Authenticate(ctx, &medmeshv1.AuthenticateRequest{Name: "nina", Password: "a long enough password", SessionHash: h[:], Source: "192.0.2.1"})
	if err != nil || a.GetIdentity() != "operator/nina" {
		t.Fatalf("authenticate: %v %v", a, err)
	}
	if _, err := approver.DeleteAccount(ctx, &medmeshv1.DeleteAccountRequest{Name: "nina", Reason: "left"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := cp.c.FSM().Session(h[:], time.Now()); ok {
		t.Fatal("deleting the account left its session open")
	}
	recs, _, _, _ := cp.c.FSM().ListAudit(0, 1000, "account/nina")
	var got []string
	for _, r := range recs {
		got = append(got, r.GetActor()+" "+r.GetAction())
	}
	want := fmt.Sprint([]string{"approver/ann account.create", "operator/nina account.login", "approver/ann account.delete"})
	if fmt.Sprint(got) != want {
		t.Fatalf("audit of account/nina: %v, want %v", got, want)
	}
}

// A lock-out is replicated: failures through different coordinators add
// up, and the right password is then refused through any of them.
func TestLockoutHoldsAcrossCoordinators(t *testing.T) {
	cl := newCluster(t, 3, nil)
	ctx := ctxT(t, 60*time.Second)
	leader := cl.leader()
	if _, err := medmeshv1.NewAccountServiceClient(leader.conn).PutAccount(ctx, &medmeshv1.PutAccountRequest{
		Account: &medmeshv1.Account{Name: "vic", Role: "viewer"}, Password: "another long password"}); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("t"))
	for i := range fsm.MaxLoginFailures {
		n := cl.nodes[i%len(cl.nodes)]
		_, err := medmeshv1.NewAccountServiceClient(n.conn).Authenticate(ctx, &medmeshv1.AuthenticateRequest{Name: "vic", Password: "wrong password here", SessionHash: h[:]})
		if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "login refused" {
			t.Fatalf("wrong password %d through %s: %v", i, n.cfg.ID, err)
		}
	}
	for _, n := range cl.nodes {
		_, err := medmeshv1.NewAccountServiceClient(n.conn).Authenticate(ctx, &medmeshv1.AuthenticateRequest{Name: "vic", Password: "another long password", SessionHash: h[:]})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("right password through %s while locked out: %v", n.cfg.ID, err)
		}
	}
	// The refusal of an unknown name reads the same.
	_, err := medmeshv1.NewAccountServiceClient(cl.nodes[1].conn).Authenticate(ctx, &medmeshv1.AuthenticateRequest{Name: "nobody", Password: "whatever it is", SessionHash: h[:]})
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "login refused" {
		t.Fatalf("unknown account: %v", err)
	}
	for _, n := range cl.nodes {
		testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool {
			for _, a := range n.c.FSM().Accounts() {
				if a.GetName() == "vic" && a.GetLockedUntil() != nil {
					return true
				}
			}
			return false
		}, "%s does not hold the lock-out", n.cfg.ID)
	}
}

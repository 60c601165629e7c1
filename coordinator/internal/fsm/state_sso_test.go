package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
)

func ssoLogin(role, subject, token, refused string) *fsmpb.Command {
	h := sha256.Sum256([]byte(token))
	c := &fsmpb.ExternalLogin{Role: role, Name: ExternalNamePrefix + subject, Issuer: "https://idp.hospital.example", Subject: subject,
		Username: subject + "@hospital.example", Actor: "coordinator/c1", Source: "192.0.2.9", Refused: refused}
	if token != "" {
		c.SessionHash = h[:]
	}
	return &fsmpb.Command{Command: &fsmpb.Command_ExternalLogin{ExternalLogin: c}}
}

// TestExternalLoginSessions: a single sign-on login opens a session with
// no account, as the identity ROLE/oidc.SUBJECT with its provider; it is
// audited (a refusal as the coordinator), bounded per person, ended by
// logout and by its lifetime, kept by snapshots, and never takes an
// account's name or a component's role.
func TestExternalLoginSessions(t *testing.T) {
	l := newLog(t)
	l.ok(at(ssoLogin("approver", "u1", "tok1", ""), time.Minute))
	h1 := sha256.Sum256([]byte("tok1"))
	s, ok := l.f.Session(h1[:], t0.Add(2*time.Minute))
	if !ok || s.GetIdentity() != "approver/oidc.u1" || s.GetIssuer() != "https://idp.hospital.example" || s.GetSubject() != "u1" || s.GetAccount() != "" {
		t.Fatalf("session after single sign-on: %v %v", s, ok)
	}
	if _, ok := l.f.Session(h1[:], t0.Add(time.Minute+SessionLifetime)); ok {
		t.Fatal("session outlived its lifetime")
	}
	if r := l.apply(at(ssoLogin("approver", "u1", "tok1", ""), 2*time.Minute)); !errors.Is(r.Err, ErrFailedPrecondition) {
		t.Fatalf("a replayed session hash: %v", r.Err)
	}
	for _, bad := range []*fsmpb.Command{
		ssoLogin("coordinator", "u2", "t2", ""), ssoLogin("", "u2", "t2", ""), ssoLogin("sensor", "u2", "t2", ""),
		{Command: &fsmpb.Command_ExternalLogin{ExternalLogin: &fsmpb.ExternalLogin{Role: "viewer", Name: "alice", Issuer: "i", Subject: "s", SessionHash: h1[:]}}},
		{Command: &fsmpb.Command_ExternalLogin{ExternalLogin: &fsmpb.ExternalLogin{Role: "viewer", Name: "oidc.s", Subject: "s", SessionHash: h1[:]}}},
	} {
		if r := l.apply(bad); !errors.Is(r.Err, ErrInvalid) {
			t.Errorf("%v: %v", bad, r.Err)
		}
	}
	// A refused login is audited and opens nothing.
	if r := l.apply(at(ssoLogin("", "u3", "", "none of the person's 2 groups is mapped"), 3*time.Minute)); !errors.Is(r.Err, ErrPermissionDenied) {
		t.Fatalf("refused login: %v", r.Err)
	}
	// An account's name is never a single sign-on identity.
	l.ok(accountPut("oidc.u4", "viewer", "$argon2id$x"))
	if r := l.apply(at(ssoLogin("approver", "u4", "tok4", ""), 4*time.Minute)); !errors.Is(r.Err, ErrPermissionDenied) {
		t.Fatalf("single sign-on as an account's name: %v", r.Err)
	}
	// One person's sessions are bounded; the oldest goes first.
	for i := range MaxSessionsPerAccount + 1 {
		l.ok(at(ssoLogin("viewer", "u5", fmt.Sprint("u5-", i), ""), 5*time.Minute+time.Duration(i)*time.Second))
	}
	first := sha256.Sum256([]byte("u5-0"))
	last := sha256.Sum256([]byte(fmt.Sprint("u5-", MaxSessionsPerAccount)))
	if _, ok := l.f.Session(first[:], t0.Add(10*time.Minute)); ok {
		t.Error("the oldest of too many sessions is still open")
	}
	if _, ok := l.f.Session(last[:], t0.Add(10*time.Minute)); !ok {
		t.Error("the newest session is not open")
	}
	// Deleting an account does not end single sign-on sessions.
	l.ok(at(&fsmpb.Command{Command: &fsmpb.Command_AccountDelete{AccountDelete: &fsmpb.AccountDelete{Name: "oidc.u4", Actor: "approver/root"}}}, 11*time.Minute))
	if _, ok := l.f.Session(h1[:], t0.Add(12*time.Minute)); !ok {
		t.Error("an account's delete ended a single sign-on session")
	}

	// Snapshots keep the sessions with their provider.
	before, _ := l.f.Hash()
	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if after, _ := g.Hash(); after != before {
		t.Fatal("single sign-on sessions did not round-trip the snapshot")
	}
	if s, ok := g.Session(h1[:], t0.Add(time.Hour)); !ok || s.GetIssuer() != "https://idp.hospital.example" {
		t.Fatalf("restored session: %v %v", s, ok)
	}

	// Logout ends it, audited as the person.
	l.ok(at(&fsmpb.Command{Command: &fsmpb.Command_SessionEnd{SessionEnd: &fsmpb.SessionEnd{SessionHash: h1[:], Actor: "coordinator/c1"}}}, 13*time.Minute))
	if _, ok := l.f.Session(h1[:], t0.Add(14*time.Minute)); ok {
		t.Fatal("logout left the session open")
	}
	recs, _, _, _ := l.f.ListAudit(0, 1000, "")
	var got []string
	for _, r := range recs {
		if r.GetResource() == "account/oidc.u1" || r.GetResource() == "account/oidc.u3" || r.GetResource() == "account/oidc.u4" && r.GetAction() == "account.login_failed" {
			got = append(got, r.GetActor()+" "+r.GetAction()+" "+r.GetResource())
		}
	}
	want := []string{"approver/oidc.u1 account.login account/oidc.u1", "coordinator/c1 account.login_failed account/oidc.u3",
		"coordinator/c1 account.login_failed account/oidc.u4", "approver/oidc.u1 account.logout account/oidc.u1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audit:\n%q\nwant\n%q", got, want)
	}
}

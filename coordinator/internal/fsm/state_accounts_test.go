package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func accountPut(name, role, hash string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_AccountPut{AccountPut: &fsmpb.AccountPut{
		Account: &medmeshv1.Account{Name: name, Role: role}, PasswordHash: hash, Actor: "approver/root"}}}
}

func login(name string, ok bool, token string) *fsmpb.Command {
	h := sha256.Sum256([]byte(token))
	return &fsmpb.Command{Command: &fsmpb.Command_AccountLogin{AccountLogin: &fsmpb.AccountLogin{
		Name: name, Success: ok, SessionHash: h[:], Actor: "coordinator/c1", Source: "192.0.2.7"}}}
}

func at(cmd *fsmpb.Command, d time.Duration) *fsmpb.Command {
	cmd.Time = timestamppb.New(t0.Add(d))
	return cmd
}

func TestAccountsLockoutSessionsAndAudit(t *testing.T) {
	l := newLog(t)
	if r := l.apply(accountPut("alice", "operator", "")); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("account without a password: %v", r.Err)
	}
	if r := l.apply(accountPut("alice", "sensor", "$argon2id$x")); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("account with a component's role: %v", r.Err)
	}
	l.ok(accountPut("alice", "operator", "$argon2id$hash1"))

	// A success opens a session under the account's identity.
	l.ok(at(login("alice", true, "tok1"), time.Minute))
	h1 := sha256.Sum256([]byte("tok1"))
	s, ok := l.f.Session(h1[:], t0.Add(2*time.Minute))
	if !ok || s.GetIdentity() != "operator/alice" {
		t.Fatalf("session after login: %v %v", s, ok)
	}
	if _, ok := l.f.Session(h1[:], t0.Add(time.Minute+SessionLifetime)); ok {
		t.Fatal("session outlived its lifetime")
	}

	// MaxLoginFailures failures lock the account; the lock-out refuses
	// even the right password and ends the open sessions.
	for i := range MaxLoginFailures {
		r := l.apply(at(login("alice", false, ""), 2*time.Minute+time.Duration(i)*time.Second))
		if !errors.Is(r.Err, ErrPermissionDenied) {
			t.Fatalf("failure %d: %v", i, r.Err)
		}
	}
	if _, ok := l.f.Session(h1[:], t0.Add(3*time.Minute)); ok {
		t.Fatal("a lock-out left the account's session open")
	}
	if r := l.apply(at(login("alice", true, "tok2"), 3*time.Minute)); !errors.Is(r.Err, ErrPermissionDenied) {
		t.Fatalf("login while locked out: %v", r.Err)
	}
	h2 := sha256.Sum256([]byte("tok2"))
	if _, ok := l.f.Session(h2[:], t0.Add(3*time.Minute)); ok {
		t.Fatal("locked-out login opened a session")
	}
	// After the lock-out a success works again.
	l.ok(at(login("alice", true, "tok3"), 3*time.Minute+LockoutDuration))

	// A password change ends sessions; a delete removes the account.
	h3 := sha256.Sum256([]byte("tok3"))
	l.ok(at(accountPut("alice", "operator", "$argon2id$hash2"), 20*time.Minute))
	if _, ok := l.f.Session(h3[:], t0.Add(21*time.Minute)); ok {
		t.Fatal("password change left a session open")
	}
	if _, hash := l.f.AccountHash("alice"); hash != "$argon2id$hash2" {
		t.Fatalf("hash after passwd: %q", hash)
	}

	// Every write is audited; the login as the account's identity, the
	// failures as the coordinator that checked them.
	recs, _, _, _ := l.f.ListAudit(0, 1000, "")
	var actions []string
	for _, r := range recs {
		actions = append(actions, r.GetActor()+" "+r.GetAction())
	}
	want := []string{"approver/root account.create", "operator/alice account.login"}
	for range MaxLoginFailures {
		want = append(want, "coordinator/c1 account.login_failed")
	}
	want = append(want, "coordinator/c1 account.login_failed", "operator/alice account.login", "approver/root account.passwd")
	if len(actions) != len(want) {
		t.Fatalf("audit: %q\nwant %q", actions, want)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Fatalf("audit[%d] = %q, want %q (all: %q)", i, actions[i], want[i], actions)
		}
	}
}

func TestAccountsInSnapshotAndHash(t *testing.T) {
	l := newLog(t)
	l.ok(accountPut("bob", "approver", "$argon2id$b"))
	l.ok(login("bob", true, "t"))
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
		t.Fatal("accounts or sessions did not round-trip the snapshot")
	}
	h := sha256.Sum256([]byte("t"))
	if s, ok := g.Session(h[:], t0.Add(time.Hour)); !ok || s.GetIdentity() != "approver/bob" {
		t.Fatalf("restored session: %v %v", s, ok)
	}
	// The hash covers the accounts: a failed login changes it.
	l.apply(login("bob", false, ""))
	if h2, _ := l.f.Hash(); h2 == before {
		t.Fatal("state hash does not cover the accounts")
	}
}

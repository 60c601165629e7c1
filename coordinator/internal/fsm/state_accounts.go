package fsm

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Console accounts and sessions (issue 21) are replicated state, so a
// lock-out holds on every coordinator and a session opened through one is
// honoured by all. Passwords never enter the log: the leader checks a
// password against the stored argon2id hash and proposes only the outcome
// (AccountLogin). Sessions are keyed by the SHA-256 of their token; the
// token itself stays in the person's cookie.
const (
	// MaxLoginFailures failed logins in a row lock an account out.
	MaxLoginFailures = 5
	// LockoutDuration is how long (leader time) a lock-out lasts.
	LockoutDuration = 15 * time.Minute
	// SessionLifetime bounds a session from its login (leader time).
	SessionLifetime = 8 * time.Hour
	// MaxSessionsPerAccount bounds one account's open sessions: a new
	// login ends the oldest beyond it.
	MaxSessionsPerAccount = 8
)

// AccountRoles are the roles a console account may hold: people's roles,
// never a component's.
var AccountRoles = []pki.Role{pki.RoleViewer, pki.RoleOperator, pki.RoleApprover}

type accountState struct {
	byName   map[string]*fsmpb.AccountRecord
	sessions map[string]*fsmpb.Session // by string(hash)
}

func newAccountState() accountState {
	return accountState{byName: map[string]*fsmpb.AccountRecord{}, sessions: map[string]*fsmpb.Session{}}
}

func (a accountState) copy() accountState {
	c := accountState{byName: make(map[string]*fsmpb.AccountRecord, len(a.byName)), sessions: make(map[string]*fsmpb.Session, len(a.sessions))}
	for k, v := range a.byName {
		c.byName[k] = v
	}
	for k, v := range a.sessions {
		c.sessions[k] = v
	}
	return c
}

func (a accountState) write(put func(*fsmpb.SnapshotItem) error) error {
	for _, k := range sortedKeys(a.byName) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Account{Account: a.byName[k]}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(a.sessions) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Session{Session: a.sessions[k]}}); err != nil {
			return err
		}
	}
	return nil
}

// ValidateAccount checks an account's name and role.
func ValidateAccount(a *medmeshv1.Account) error {
	if err := pki.ValidName(a.GetName()); err != nil {
		return fmt.Errorf("account name: %v: %w", err, ErrInvalid)
	}
	if !slices.Contains(AccountRoles, pki.Role(a.GetRole())) {
		return fmt.Errorf("account role %q: want viewer, operator or approver: %w", a.GetRole(), ErrInvalid)
	}
	return nil
}

func accountIdentity(a *medmeshv1.Account) string { return a.GetRole() + "/" + a.GetName() }

// endSessions ends every session of the account name.
func (s *state) endSessions(name string) {
	for _, k := range sortedKeys(s.accounts.sessions) {
		if v := s.accounts.sessions[k]; v.GetIssuer() == "" && v.GetAccount() == name {
			delete(s.accounts.sessions, k)
		}
	}
}

func (s *state) applyAccountPut(index uint64, now *timestamppb.Timestamp, c *fsmpb.AccountPut) *Result {
	in := c.GetAccount()
	if err := ValidateAccount(in); err != nil {
		return &Result{Err: err}
	}
	old := s.accounts.byName[in.GetName()]
	if ev := c.ExpectedVersion; ev != nil && *ev != old.GetAccount().GetVersion() {
		return &Result{Err: fmt.Errorf("account %q is at version %d, not %d: %w", in.GetName(), old.GetAccount().GetVersion(), *ev, ErrVersionMismatch)}
	}
	if old == nil && c.GetPasswordHash() == "" {
		return &Result{Err: fmt.Errorf("account %q: a new account needs a password: %w", in.GetName(), ErrInvalid)}
	}
	a := &medmeshv1.Account{Name: in.GetName(), Role: in.GetRole(), Version: old.GetAccount().GetVersion() + 1,
		CreateTime: old.GetAccount().GetCreateTime(), UpdateTime: now, UpdatedBy: c.GetActor(),
		FailedLogins: old.GetAccount().GetFailedLogins(), LockedUntil: old.GetAccount().GetLockedUntil(), LastLogin: old.GetAccount().GetLastLogin()}
	if old == nil {
		a.CreateTime = now
	}
	hash := old.GetPasswordHash()
	action := "account.create"
	if old != nil {
		action = "account.update"
	}
	if c.GetPasswordHash() != "" {
		hash = c.GetPasswordHash()
		// A new password ends the sessions opened with the old one and
		// lifts a lock-out (an approver reset it).
		a.FailedLogins, a.LockedUntil = 0, nil
		s.endSessions(a.Name)
		if old != nil {
			action = "account.passwd"
		}
	}
	if old != nil && old.GetAccount().GetRole() != a.Role {
		s.endSessions(a.Name) // sessions carry the identity they opened with
	}
	s.accounts.byName[a.Name] = &fsmpb.AccountRecord{Account: a, PasswordHash: hash}
	s.appendAudit(index, now, c.GetActor(), action, "account/"+a.Name, c.GetReason(), "", "", "role "+a.Role)
	return &Result{Account: a}
}

func (s *state) applyAccountDelete(index uint64, now *timestamppb.Timestamp, c *fsmpb.AccountDelete) *Result {
	old := s.accounts.byName[c.GetName()]
	if old == nil {
		return &Result{Err: fmt.Errorf("account %q: %w", c.GetName(), ErrNotFound)}
	}
	delete(s.accounts.byName, c.GetName())
	s.endSessions(c.GetName())
	s.appendAudit(index, now, c.GetActor(), "account.delete", "account/"+c.GetName(), c.GetReason(), "", "", "")
	return &Result{Account: old.GetAccount()}
}

// applyAccountLogin records a login attempt. A locked-out account is
// refused whatever the password; MaxLoginFailures failures in a row lock
// it for LockoutDuration. Every attempt is audited: a success as the
// account's identity, a failure as the coordinator that checked it (no
// identity was proven).
func (s *state) applyAccountLogin(index uint64, now *timestamppb.Timestamp, c *fsmpb.AccountLogin) *Result {
	rec := s.accounts.byName[c.GetName()]
	from := "from " + c.GetSource()
	if rec == nil {
		s.appendAudit(index, now, c.GetActor(), "account.login_failed", "account/"+c.GetName(), "no such account", "", "", from)
		return &Result{Err: fmt.Errorf("login refused: %w", ErrPermissionDenied)}
	}
	a := proto.CloneOf(rec.GetAccount())
	t := now.AsTime()
	if lu := a.GetLockedUntil(); lu != nil && t.Before(lu.AsTime()) {
		s.appendAudit(index, now, c.GetActor(), "account.login_failed", "account/"+a.Name, "locked out until "+lu.AsTime().UTC().Format(time.RFC3339), "", "", from)
		return &Result{Err: fmt.Errorf("login refused: the account is locked out: %w", ErrPermissionDenied)}
	}
	if !c.GetSuccess() {
		a.FailedLogins++
		reason := fmt.Sprintf("wrong password (%d of %d)", a.FailedLogins, MaxLoginFailures)
		if a.FailedLogins >= MaxLoginFailures {
			a.FailedLogins, a.LockedUntil = 0, timestamppb.New(t.Add(LockoutDuration))
			reason += "; locked out for " + LockoutDuration.String()
			s.endSessions(a.Name)
		}
		s.accounts.byName[a.Name] = &fsmpb.AccountRecord{Account: a, PasswordHash: rec.GetPasswordHash()}
		s.appendAudit(index, now, c.GetActor(), "account.login_failed", "account/"+a.Name, reason, "", "", from)
		return &Result{Account: a, Err: fmt.Errorf("login refused: %w", ErrPermissionDenied)}
	}
	if len(c.GetSessionHash()) != 32 {
		return &Result{Err: fmt.Errorf("session hash: want 32 bytes: %w", ErrInvalid)}
	}
	key := string(c.GetSessionHash())
	if _, taken := s.accounts.sessions[key]; taken {
		// A token is random: a taken hash is a replay, never a new login.
		return &Result{Err: fmt.Errorf("session already open: %w", ErrFailedPrecondition)}
	}
	a.FailedLogins, a.LockedUntil, a.LastLogin = 0, nil, now
	s.accounts.byName[a.Name] = &fsmpb.AccountRecord{Account: a, PasswordHash: rec.GetPasswordHash()}
	s.accounts.sessions[key] = &fsmpb.Session{Hash: c.GetSessionHash(), Identity: accountIdentity(a), Account: a.Name,
		CreateTime: now, ExpireTime: timestamppb.New(t.Add(SessionLifetime))}
	s.trimSessionsOf(a.Name)
	s.appendAudit(index, now, accountIdentity(a), "account.login", "account/"+a.Name, "", "", "", from+", session "+sessionRef(c.GetSessionHash()))
	return &Result{Account: a}
}

// trimSessionsOf ends the oldest sessions of one owner (an account, or a
// single sign-on person: sessionOwner) beyond the bound.
func (s *state) trimSessionsOf(owner string) {
	var mine []*fsmpb.Session
	for _, k := range sortedKeys(s.accounts.sessions) {
		if v := s.accounts.sessions[k]; sessionOwner(v) == owner {
			mine = append(mine, v)
		}
	}
	slices.SortStableFunc(mine, func(x, y *fsmpb.Session) int { return x.GetCreateTime().AsTime().Compare(y.GetCreateTime().AsTime()) })
	for len(mine) > MaxSessionsPerAccount {
		delete(s.accounts.sessions, string(mine[0].GetHash()))
		mine = mine[1:]
	}
}

// sessionRef names a session in the audit trail without revealing
// anything that opens it: a prefix of its token's hash.
func sessionRef(hash []byte) string { return hex.EncodeToString(hash[:min(len(hash), 6)]) }

func (s *state) applySessionEnd(index uint64, now *timestamppb.Timestamp, c *fsmpb.SessionEnd) *Result {
	v := s.accounts.sessions[string(c.GetSessionHash())]
	if v == nil {
		return &Result{Err: fmt.Errorf("session: %w", ErrNotFound)}
	}
	delete(s.accounts.sessions, string(c.GetSessionHash()))
	target := v.GetAccount()
	if v.GetIssuer() != "" {
		_, target, _ = strings.Cut(v.GetIdentity(), "/")
	}
	s.appendAudit(index, now, v.GetIdentity(), "account.logout", "account/"+target, "", "", "", "session "+sessionRef(c.GetSessionHash()))
	return &Result{}
}

// pruneSessions forgets sessions past their lifetime (leader time).
func (s *state) pruneSessions(now *timestamppb.Timestamp) {
	t := now.AsTime()
	for _, k := range sortedKeys(s.accounts.sessions) {
		if !t.Before(s.accounts.sessions[k].GetExpireTime().AsTime()) {
			delete(s.accounts.sessions, k)
		}
	}
}

// Accounts returns the accounts by name, without their hashes.
func (f *FSM) Accounts() []*medmeshv1.Account {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*medmeshv1.Account, 0, len(f.st.accounts.byName))
	for _, k := range sortedKeys(f.st.accounts.byName) {
		out = append(out, f.st.accounts.byName[k].GetAccount())
	}
	return out
}

// AccountHash returns an account and its password hash (for the leader
// to check a password), or nil.
func (f *FSM) AccountHash(name string) (*medmeshv1.Account, string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.st.accounts.byName[name]
	return r.GetAccount(), r.GetPasswordHash()
}

// Session returns the open session whose token hashes to hash, if it has
// not expired by now and its account still exists (a single sign-on
// session has no account: its provider vouched for it at login).
func (f *FSM) Session(hash []byte, now time.Time) (*fsmpb.Session, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.st.accounts.sessions[string(hash)]
	if !ok || !now.Before(v.GetExpireTime().AsTime()) {
		return nil, false
	}
	if _, live := f.st.accounts.byName[v.GetAccount()]; !live && v.GetIssuer() == "" {
		return nil, false
	}
	return v, true
}

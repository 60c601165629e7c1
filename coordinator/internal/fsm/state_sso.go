package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Single sign-on (OpenID Connect) sessions. A coordinator verifies the
// ID token and maps the person's groups to a role; the FSM records only
// the outcome (ExternalLogin), as it does for a password. The person has
// no account: the session itself carries the identity, the provider
// (issuer) and the subject, and ends at logout or after SessionLifetime.

// ExternalNamePrefix starts the identity name of every single sign-on
// person, so that it never names an account (the API refuses accounts
// whose name starts with it).
const ExternalNamePrefix = "oidc."

// maxExternalField bounds the issuer, subject and username of an
// external login (the OpenID Connect spec bounds a subject to 255 ASCII
// characters; an issuer is a URL).
const maxExternalField = 512

// ValidateExternalLogin checks an external login's identity and provider.
func ValidateExternalLogin(c *fsmpb.ExternalLogin) error {
	if c.GetRefused() == "" && !slices.Contains(AccountRoles, pki.Role(c.GetRole())) {
		return fmt.Errorf("single sign-on role %q: want viewer, operator or approver: %w", c.GetRole(), ErrInvalid)
	}
	if err := pki.ValidName(c.GetName()); err != nil || !strings.HasPrefix(c.GetName(), ExternalNamePrefix) {
		return fmt.Errorf("single sign-on name %q: want %s followed by a name of A-Z a-z 0-9 . _ @ -: %w", c.GetName(), ExternalNamePrefix, ErrInvalid)
	}
	if c.GetIssuer() == "" || c.GetSubject() == "" {
		return fmt.Errorf("single sign-on: issuer and subject are required: %w", ErrInvalid)
	}
	for _, f := range []string{c.GetIssuer(), c.GetSubject(), c.GetUsername(), c.GetSource(), c.GetRefused()} {
		if len(f) > maxExternalField {
			return fmt.Errorf("single sign-on: a field longer than %d bytes: %w", maxExternalField, ErrInvalid)
		}
	}
	return nil
}

// externalOwner keys the sessions of one single sign-on person (one
// subject at one provider) for trimSessionsOf.
func externalOwner(issuer, subject string) string { return "\x00" + issuer + "\x00" + subject }

// sessionOwner is whose session v is: its account, or its provider and
// subject.
func sessionOwner(v *fsmpb.Session) string {
	if v.GetIssuer() != "" {
		return externalOwner(v.GetIssuer(), v.GetSubject())
	}
	return v.GetAccount()
}

// applyExternalLogin records a single sign-on login. A refused one is
// audited as the coordinator that refused it (no identity was granted);
// a success opens a session as ROLE/NAME, audited as that identity with
// the provider, the subject and the provider's name of the person.
func (s *state) applyExternalLogin(index uint64, now *timestamppb.Timestamp, c *fsmpb.ExternalLogin) *Result {
	if err := ValidateExternalLogin(c); err != nil {
		return &Result{Err: err}
	}
	who := fmt.Sprintf("single sign-on by %s, subject %s", c.GetIssuer(), c.GetSubject())
	if c.GetUsername() != "" {
		who += ", username " + c.GetUsername()
	}
	from := who + ", from " + c.GetSource()
	if c.GetRefused() != "" {
		s.appendAudit(index, now, c.GetActor(), "account.login_failed", "account/"+c.GetName(), c.GetRefused(), "", "", from)
		return &Result{Err: fmt.Errorf("login refused: %s: %w", c.GetRefused(), ErrPermissionDenied)}
	}
	if _, taken := s.accounts.byName[c.GetName()]; taken {
		s.appendAudit(index, now, c.GetActor(), "account.login_failed", "account/"+c.GetName(), "the name is an account's", "", "", from)
		return &Result{Err: fmt.Errorf("login refused: %q names an account: %w", c.GetName(), ErrPermissionDenied)}
	}
	if len(c.GetSessionHash()) != 32 {
		return &Result{Err: fmt.Errorf("session hash: want 32 bytes: %w", ErrInvalid)}
	}
	key := string(c.GetSessionHash())
	if _, taken := s.accounts.sessions[key]; taken {
		return &Result{Err: fmt.Errorf("session already open: %w", ErrFailedPrecondition)}
	}
	id := c.GetRole() + "/" + c.GetName()
	s.accounts.sessions[key] = &fsmpb.Session{Hash: c.GetSessionHash(), Identity: id,
		CreateTime: now, ExpireTime: timestamppb.New(now.AsTime().Add(SessionLifetime)),
		Issuer: c.GetIssuer(), Subject: c.GetSubject()}
	s.trimSessionsOf(externalOwner(c.GetIssuer(), c.GetSubject()))
	s.appendAudit(index, now, id, "account.login", "account/"+c.GetName(), "", "", "", from+", session "+sessionRef(c.GetSessionHash()))
	return &Result{Account: &medmeshv1.Account{Name: c.GetName(), Role: c.GetRole(), LastLogin: now}}
}

// Package pki issues and verifies medmesh's certificates: a campus CA, leaf
// certificates that carry a role and a name as a SPIFFE URI SAN, and the TLS
// configurations every medmesh server and client is built from.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// TrustDomain is the SPIFFE trust domain of medmesh identities: a
// certificate names spiffe://medmesh/<role>/<name>.
const TrustDomain = "medmesh"

// Role is what a certificate's holder may do. The roles are fixed; which RPC
// each role may call is the coordinator's authorization table.
type Role string

// The roles, from the design card.
const (
	RoleCoordinator Role = "coordinator"
	RoleSensor      Role = "sensor"
	RoleEnforcer    Role = "enforcer"
	RoleOperator    Role = "operator"
	RoleApprover    Role = "approver"
	RoleViewer      Role = "viewer"
)

// Roles lists every role, in the order the documentation gives them.
func Roles() []Role {
	return []Role{RoleCoordinator, RoleSensor, RoleEnforcer, RoleOperator, RoleApprover, RoleViewer}
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles() {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (want one of %s)", s, roleList())
}

func roleList() string {
	var b strings.Builder
	for i, r := range Roles() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(r))
	}
	return b.String()
}

// Identity is who a verified peer is: its role and its name within the role
// (a sensor's id, an operator's user name).
type Identity struct {
	Role Role
	Name string
}

// String is role/name, the form the audit trail records.
func (i Identity) String() string { return string(i.Role) + "/" + i.Name }

// URI is the identity as a SPIFFE ID: spiffe://medmesh/<role>/<name>.
func (i Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + string(i.Role) + "/" + i.Name}
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidName reports whether s can name an identity: 1 to 64 letters,
// digits, '.', '_', '@' or '-', starting with a letter or digit. Names end
// up in file names and audit records, so nothing else is allowed.
func ValidName(s string) error {
	if !namePattern.MatchString(s) {
		return fmt.Errorf("name %q: want 1-64 characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit", s)
	}
	return nil
}

// Validate checks the role and the name.
func (i Identity) Validate() error {
	if _, err := ParseRole(string(i.Role)); err != nil {
		return err
	}
	return ValidName(i.Name)
}

// ErrNoIdentity means a certificate carries no medmesh SPIFFE ID.
var ErrNoIdentity = errors.New("certificate has no spiffe://medmesh/<role>/<name> URI SAN")

// IdentityFromCert reads the identity from a certificate's URI SANs. Exactly
// one URI SAN in the medmesh trust domain must be present; other URIs are
// ignored, so a hospital CA may add its own.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" || u.Host != TrustDomain {
			continue
		}
		id, err := parseSPIFFEPath(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, ErrNoIdentity
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("certificate has %d medmesh SPIFFE IDs; want exactly one", len(found))
	}
}

// ParseSPIFFE parses spiffe://medmesh/<role>/<name>.
func ParseSPIFFE(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	if u.Scheme != "spiffe" || u.Host != TrustDomain {
		return Identity{}, fmt.Errorf("spiffe id %q: want spiffe://%s/<role>/<name>", s, TrustDomain)
	}
	return parseSPIFFEPath(u)
}

func parseSPIFFEPath(u *url.URL) (Identity, error) {
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		return Identity{}, fmt.Errorf("spiffe id %q: no port, user, query or fragment allowed", u.String())
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 {
		return Identity{}, fmt.Errorf("spiffe id %q: want spiffe://%s/<role>/<name>", u.String(), TrustDomain)
	}
	id := Identity{Role: Role(parts[0]), Name: parts[1]}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("spiffe id %q: %w", u.String(), err)
	}
	return id, nil
}

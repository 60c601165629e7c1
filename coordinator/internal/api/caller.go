package api

import (
	"context"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/pki"
)

// caller is the verified identity of the request's caller, which the
// authorization interceptor put in ctx (for a forwarded call: the original
// caller). It is the only actor the audit trail records. Audit fails
// closed: without an identity nothing is written.
func caller(ctx context.Context) (pki.Identity, error) {
	id, ok := authz.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no verified caller identity: an unaudited write is not made")
	}
	return id, nil
}

// author is who a write is audited as (caller) and the comment its
// request's actor field adds (actorComment).
func author(ctx context.Context, actorField string) (pki.Identity, string, error) {
	comment, err := actorComment(actorField)
	if err != nil {
		return pki.Identity{}, "", err
	}
	id, err := caller(ctx)
	return id, comment, err
}

// actorComment turns a request's free-text actor field into the audit
// record's comment: what the caller says about itself, never its identity.
func actorComment(field string) (string, error) {
	if len(field) > maxTextField {
		return "", invalid("actor", "longer than %d bytes", maxTextField)
	}
	if field == "" {
		return "", nil
	}
	return "actor field: " + field, nil
}

// mayEnforce reports whether id may put enforcement into effect: approvers,
// and the local caller of a plaintext loopback server (--dev).
func mayEnforce(id pki.Identity) bool {
	return id.Role == pki.RoleApprover || id.Role == authz.Local
}

// speaksFor checks that a sensor or enforcer acts only as the member its
// certificate names. Other roles the table let through (the local caller)
// may name any member.
func speaksFor(id pki.Identity, role pki.Role, name, field string) error {
	if id.Role != pki.RoleSensor && id.Role != pki.RoleEnforcer {
		return nil
	}
	if id.Role != role || id.Name != name {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("%s: %s may only act as %s, not as %s/%s", field, id, id, role, name))
	}
	return nil
}

// clientRequest is the request id a client gave a write, scoped by its
// verified identity, for the FSM to apply the write once however often it
// is retried; nil without an id. Local callers (plaintext loopback) are one
// scope: their identity names an ephemeral port, which a retry over a new
// connection would not share, and any of them may do anything anyway.
func clientRequest(who pki.Identity, id string) (*fsmpb.ClientRequest, error) {
	if id == "" {
		return nil, nil
	}
	if len(id) > fsm.MaxRequestIDLength || !utf8.ValidString(id) {
		return nil, invalid("request_id", "want UTF-8 of at most %d bytes, a UUID for example", fsm.MaxRequestIDLength)
	}
	scope := who.String()
	if who.Role == authz.Local {
		scope = string(authz.Local)
	}
	return &fsmpb.ClientRequest{Identity: scope, Id: id}, nil
}

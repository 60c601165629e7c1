// Package authz decides which verified identity may call which gRPC method:
// one table read top to bottom, default deny, enforced by one interceptor.
package authz

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/pki"
)

// Anyone marks a method every authenticated identity may call (health
// checks, reflection). It is not a role a certificate can carry.
const Anyone pki.Role = "*"

// Local is the identity of a caller on a plaintext loopback server (--dev,
// or a single host with no certificates): no certificate says who it is, so
// it may do everything, and the audit trail says "local/<addr>".
const Local pki.Role = "local"

// Table maps full gRPC method names ("/pkg.Service/Method") to the roles
// allowed to call them. A method missing from the table is denied to all.
type Table map[string][]pki.Role

// Allows reports whether role may call method.
func (t Table) Allows(method string, role pki.Role) bool {
	roles, ok := t[method]
	if !ok {
		return false
	}
	return slices.Contains(roles, role) || slices.Contains(roles, Anyone)
}

// Missing returns the methods of a server's services that have no row,
// sorted. A server must not start with any: the test and the server both
// use it.
func (t Table) Missing(info map[string]grpc.ServiceInfo) []string {
	var out []string
	for svc, si := range info {
		for _, m := range si.Methods {
			full := "/" + svc + "/" + m.Name
			if _, ok := t[full]; !ok {
				out = append(out, full)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Methods lists the table's methods, sorted.
func (t Table) Methods() []string {
	out := make([]string, 0, len(t))
	for m := range t {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id (the interceptor does this; tests of
// handlers may too).
func WithIdentity(ctx context.Context, id pki.Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller's identity, set by the interceptor.
func FromContext(ctx context.Context) (pki.Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(pki.Identity)
	return id, ok
}

// Authorizer is the interceptor pair built from a table.
type Authorizer struct {
	table Table
	// plaintext: no TLS on this server (loopback only): every caller is
	// Local and allowed.
	plaintext bool
}

// New builds an authorizer. plaintext must be true only for a server
// without TLS, which grpcx allows on loopback addresses alone.
func New(t Table, plaintext bool) *Authorizer {
	return &Authorizer{table: t, plaintext: plaintext}
}

// Table returns the table the authorizer enforces.
func (a *Authorizer) Table() Table { return a.table }

// Identify reads the caller's identity from the connection: the verified
// client certificate, or Local on a plaintext server.
func (a *Authorizer) Identify(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		if a.plaintext {
			name := "unknown"
			if p.Addr != nil {
				name = strings.ReplaceAll(p.Addr.String(), ":", "_")
			}
			return pki.Identity{Role: Local, Name: name}, nil
		}
		return pki.Identity{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	return identifyTLS(ti.State)
}

func identifyTLS(cs tls.ConnectionState) (pki.Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "a client certificate from the campus CA is required")
	}
	id, err := pki.IdentityFromCert(cs.VerifiedChains[0][0])
	if err != nil {
		return pki.Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

// OnBehalfKey is the metadata key with which a coordinator forwarding a
// call to its leader names the identity it forwards for. It is believed only
// from a peer whose certificate says coordinator.
const OnBehalfKey = "x-medmesh-on-behalf-of"

// ForwardContext returns an outgoing context for forwarding the call in ctx
// to another coordinator on behalf of its caller.
func ForwardContext(ctx context.Context) context.Context {
	id, ok := FromContext(ctx)
	if !ok {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, OnBehalfKey, id.String())
}

// effective is the identity a call is checked and audited as: the peer's,
// or, from a coordinator forwarding a call, the one it forwards for.
func effective(ctx context.Context, peerID pki.Identity) (pki.Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(OnBehalfKey)
	if len(vals) == 0 {
		return peerID, nil
	}
	if peerID.Role != pki.RoleCoordinator && peerID.Role != Local {
		return pki.Identity{}, status.Error(codes.PermissionDenied, fmt.Sprintf("%s may not act on behalf of another identity", peerID))
	}
	if len(vals) != 1 {
		return pki.Identity{}, status.Error(codes.InvalidArgument, "more than one "+OnBehalfKey)
	}
	role, name, ok := strings.Cut(vals[0], "/")
	if !ok {
		return pki.Identity{}, status.Error(codes.InvalidArgument, OnBehalfKey+": want role/name")
	}
	id := pki.Identity{Role: pki.Role(role), Name: name}
	if id.Role == Local {
		if peerID.Role != Local {
			return pki.Identity{}, status.Error(codes.PermissionDenied, "a TLS peer cannot forward for a local caller")
		}
		return id, nil
	}
	if err := id.Validate(); err != nil {
		return pki.Identity{}, status.Error(codes.InvalidArgument, OnBehalfKey+": "+err.Error())
	}
	return id, nil
}

// Authorize returns ctx with the caller's identity if it may call method,
// or Unauthenticated/PermissionDenied.
func (a *Authorizer) Authorize(ctx context.Context, method string) (context.Context, error) {
	peerID, err := a.Identify(ctx)
	if err != nil {
		return nil, err
	}
	id, err := effective(ctx, peerID)
	if err != nil {
		return nil, err
	}
	if id.Role != Local && !a.table.Allows(method, id.Role) {
		return nil, status.Error(codes.PermissionDenied, fmt.Sprintf("%s may not call %s", id, method))
	}
	return WithIdentity(ctx, id), nil
}

// Unary is the unary server interceptor.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.Authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream server interceptor.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.Authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &identified{ServerStream: ss, ctx: ctx})
}

type identified struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identified) Context() context.Context { return s.ctx }

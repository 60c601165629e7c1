package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/medmesh/medmesh/internal/pki"
)

// TestAuthorizationMatrix is issue 15's matrix: every RPC of every service
// the coordinator serves × {no client certificate, a certificate from
// another CA, an expired certificate, each of the six roles}, called with
// an empty request over real mutual TLS against a real coordinator. A call
// refused with Unauthenticated or PermissionDenied by the interceptor, or
// whose handshake fails, is denied; anything else means the handler ran.
// The outcome must be what AuthzTable says: no unexpected allow, and every
// role a row names actually gets through. The methods are the union of the
// table and the server's registered services, so an RPC without a row
// fails the test.
func TestAuthorizationMatrix(t *testing.T) {
	cp := newCampus(t)
	table := AuthzTable()
	info := cp.srv.GRPC().GetServiceInfo()
	if missing := table.Missing(info); len(missing) > 0 {
		t.Errorf("registered methods without an authorization row: %v", missing)
	}
	type method struct {
		full   string
		desc   protoreflect.MethodDescriptor
		client bool // client-streaming
		server bool // server-streaming
	}
	var methods []method
	registered := map[string]bool{}
	for svc, si := range info {
		for _, m := range si.Methods {
			full := "/" + svc + "/" + m.Name
			registered[full] = true
			d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
			if err != nil {
				t.Fatalf("%s: %v", svc, err)
			}
			md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(m.Name))
			methods = append(methods, method{full: full, desc: md, client: m.IsClientStream, server: m.IsServerStream})
		}
	}
	for _, m := range table.Methods() {
		if !registered[m] {
			t.Errorf("table row %s names no method the server serves", m)
		}
	}
	sort.Slice(methods, func(i, j int) bool { return methods[i].full < methods[j].full })

	type caller struct {
		name string
		role pki.Role // "" for the three that must be refused outright
		conn *grpc.ClientConn
	}
	callers := []caller{
		{name: "no-cert", conn: cp.anonymous()},
		{name: "other-CA", conn: cp.foreign(pki.RoleApprover, "mallory")},
		{name: "expired", conn: cp.expired(pki.RoleApprover, "olivia")},
	}
	for _, r := range pki.Roles() {
		callers = append(callers, caller{name: string(r), role: r, conn: cp.as(r, "m-"+string(r))})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n%-62s", "method")
	for _, c := range callers {
		fmt.Fprintf(&b, " %-11s", c.name)
	}
	b.WriteString("\n")
	var calls, allowed, denied, unexpectedAllow, wrongDeny int
	for _, m := range methods {
		short := strings.TrimPrefix(m.full, "/")
		fmt.Fprintf(&b, "%-62s", short)
		for _, c := range callers {
			code, msg := callOnce(cp.t, c.conn, m.full, m.desc, m.client, m.server)
			calls++
			isDenied := code == codes.Unauthenticated || code == codes.PermissionDenied ||
				(c.role == "" && code == codes.Unavailable)
			want := c.role != "" && table.Allows(m.full, c.role)
			cell := "allow"
			if isDenied {
				cell = "deny"
				denied++
			} else {
				allowed++
			}
			switch {
			case !isDenied && !want:
				unexpectedAllow++
				cell = "ALLOW!"
				t.Errorf("%s as %s: allowed (%v: %s); the table denies it", m.full, c.name, code, msg)
			case isDenied && want:
				wrongDeny++
				cell = "DENY!"
				t.Errorf("%s as %s: denied (%v: %s); the table allows it", m.full, c.name, code, msg)
			case c.role != "" && code == codes.Unavailable:
				t.Errorf("%s as %s: %v: %s", m.full, c.name, code, msg)
			}
			fmt.Fprintf(&b, " %-11s", cell)
		}
		b.WriteString("\n")
	}
	t.Log(b.String())
	t.Logf("authorization matrix: %d methods x %d callers = %d calls: %d allowed, %d denied, %d unexpected allows, %d allowed roles denied",
		len(methods), len(callers), calls, allowed, denied, unexpectedAllow, wrongDeny)
}

// callOnce calls method with an empty request and returns the status code
// (OK when the handler answered, or a stream stayed open until the short
// deadline: the handler is running).
func callOnce(t *testing.T, conn *grpc.ClientConn, full string, md protoreflect.MethodDescriptor, clientStream, serverStream bool) (codes.Code, string) {
	t.Helper()
	newMsg := func(d protoreflect.MessageDescriptor) proto.Message {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
		if err != nil {
			t.Fatalf("%s: %v", d.FullName(), err)
		}
		return mt.New().Interface()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if !clientStream && !serverStream {
		err := conn.Invoke(ctx, full, newMsg(md.Input()), newMsg(md.Output()))
		st := status.Convert(err)
		return st.Code(), st.Message()
	}
	sctx, scancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer scancel()
	s, err := conn.NewStream(sctx, &grpc.StreamDesc{ClientStreams: clientStream, ServerStreams: serverStream}, full)
	if err != nil {
		st := status.Convert(err)
		return st.Code(), st.Message()
	}
	if err := s.SendMsg(newMsg(md.Input())); err != nil && !errors.Is(err, io.EOF) {
		st := status.Convert(err)
		return st.Code(), st.Message()
	}
	if !clientStream {
		_ = s.CloseSend()
	}
	err = s.RecvMsg(newMsg(md.Output()))
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return codes.OK, "first message received"
	case sctx.Err() != nil && ctx.Err() == nil && status.Code(err) == codes.DeadlineExceeded:
		return codes.OK, "stream open, nothing sent before the deadline"
	}
	st := status.Convert(err)
	return st.Code(), st.Message()
}

package grpcx

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	refpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// policies is a PolicyService whose handlers exercise the interceptors.
type policies struct {
	medmeshv1.UnimplementedPolicyServiceServer
	block chan struct{}
}

func (p *policies) PutPolicy(_ context.Context, req *medmeshv1.PutPolicyRequest) (*medmeshv1.PutPolicyResponse, error) {
	if req.GetPolicy().GetName() == "panic" {
		panic("boom")
	}
	return &medmeshv1.PutPolicyResponse{Policy: req.GetPolicy(), Index: 7}, nil
}

// GetPolicy reports the deadline it sees in the description (ms left, or
// "none"); name "block" waits for ctx or p.block.
func (p *policies) GetPolicy(ctx context.Context, req *medmeshv1.GetPolicyRequest) (*medmeshv1.GetPolicyResponse, error) {
	if req.GetName() == "block" {
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-p.block:
		}
	}
	desc := "none"
	if dl, ok := ctx.Deadline(); ok {
		desc = strconv.FormatInt(time.Until(dl).Milliseconds(), 10)
	}
	return &medmeshv1.GetPolicyResponse{Policy: &medmeshv1.Policy{Name: req.GetName(), Description: desc}}, nil
}

type harness struct {
	srv  *Server
	reg  *prometheus.Registry
	errc chan error
}

func start(t *testing.T, cfg ServerConfig) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Authz == nil {
		cfg.Authz = testTable()
	}
	s, err := NewServer(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	medmeshv1.RegisterPolicyServiceServer(s.GRPC(), &policies{block: make(chan struct{})})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: s, reg: reg, errc: make(chan error, 1)}
	go func() { h.errc <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
		if err := <-h.errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

func loopbackConfig() ServerConfig {
	c := DefaultServerConfig()
	c.Addr = "127.0.0.1:0"
	c.Authz = testTable()
	return c
}

// testTable: operators may call every PolicyService method, viewers only
// GetPolicy.
func testTable() authz.Table {
	t := BuiltinMethods()
	for _, m := range medmeshv1.PolicyService_ServiceDesc.Methods {
		t["/"+medmeshv1.PolicyService_ServiceDesc.ServiceName+"/"+m.MethodName] = []pki.Role{pki.RoleOperator}
	}
	t[medmeshv1.PolicyService_GetPolicy_FullMethodName] = []pki.Role{pki.RoleOperator, pki.RoleViewer}
	return t
}

func dial(t *testing.T, target string, cfg ClientConfig) *grpc.ClientConn {
	t.Helper()
	conn, err := Dial(target, cfg, nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHealthAndReflection(t *testing.T) {
	h := start(t, loopbackConfig())
	conn := dial(t, h.srv.Addr().String(), DefaultClientConfig())
	hc := healthpb.NewHealthClient(conn)

	resp, err := hc.Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("overall health = %v, want SERVING", resp.GetStatus())
	}
	const svc = "medmesh.v1.PolicyService"
	h.srv.SetServing(svc, false)
	resp, err = hc.Check(ctxT(t), &healthpb.HealthCheckRequest{Service: svc})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("service health = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	h.srv.SetServing(svc, true)
	resp, err = hc.Check(ctxT(t), &healthpb.HealthCheckRequest{Service: svc})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("service health = %v, %v; want SERVING", resp.GetStatus(), err)
	}

	// What `grpcurl list` does.
	stream, err := refpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&refpb.ServerReflectionRequest{MessageRequest: &refpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	got := strings.Join(names, ",")
	for _, want := range []string{svc, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(got, want) {
			t.Errorf("reflection services %q lack %q", got, want)
		}
	}
}

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "10.1.2.3:7400", "[::]:0", "example.org:7400"} {
		cfg := DefaultServerConfig()
		cfg.Addr = addr
		if _, err := NewServer(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "plaintext") {
			t.Errorf("NewServer(%q) without TLS: err = %v, want plaintext refusal", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "127.3.4.5:0"} {
		cfg := DefaultServerConfig()
		cfg.Addr = addr
		s, err := NewServer(cfg, nil, nil)
		if err != nil {
			t.Errorf("NewServer(%q): %v", addr, err)
			continue
		}
		s.Stop(context.Background())
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	h := start(t, loopbackConfig())
	pc := medmeshv1.NewPolicyServiceClient(dial(t, h.srv.Addr().String(), DefaultClientConfig()))
	_, err := pc.PutPolicy(ctxT(t), &medmeshv1.PutPolicyRequest{Policy: &medmeshv1.Policy{Name: "panic"}})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panic: err = %v, want Internal", err)
	}
	// The server survives and keeps serving.
	resp, err := pc.PutPolicy(ctxT(t), &medmeshv1.PutPolicyRequest{Policy: &medmeshv1.Policy{Name: "ok"}})
	if err != nil || resp.GetIndex() != 7 {
		t.Fatalf("after panic: %v, %v", resp, err)
	}
	internal := counterValue(t, h.reg, "grpc_server_handled_total", "Internal")
	if internal != 1 {
		t.Fatalf("grpc_server_handled_total{code=Internal} = %v, want 1", internal)
	}
}

// counterValue reads the PutPolicy series of a counter family by code.
func counterValue(t *testing.T, reg *prometheus.Registry, name, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["grpc_method"] == "PutPolicy" && labels["grpc_code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{grpc_method=PutPolicy,grpc_code=%s}", name, code)
	return 0
}

func TestMessageSizeLimit(t *testing.T) {
	cfg := loopbackConfig()
	cfg.MaxRecvMsgBytes = 4096
	h := start(t, cfg)
	pc := medmeshv1.NewPolicyServiceClient(dial(t, h.srv.Addr().String(), DefaultClientConfig()))
	big := strings.Repeat("x", 8192)
	_, err := pc.PutPolicy(ctxT(t), &medmeshv1.PutPolicyRequest{Policy: &medmeshv1.Policy{Name: "big", Description: big}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized: err = %v, want ResourceExhausted", err)
	}
	if _, err := pc.PutPolicy(ctxT(t), &medmeshv1.PutPolicyRequest{Policy: &medmeshv1.Policy{Name: "small", Description: big[:1000]}}); err != nil {
		t.Fatalf("small message: %v", err)
	}
}

func TestDefaultDeadline(t *testing.T) {
	cfg := loopbackConfig()
	cfg.DefaultTimeout = 300 * time.Millisecond
	h := start(t, cfg)
	pc := medmeshv1.NewPolicyServiceClient(dial(t, h.srv.Addr().String(), DefaultClientConfig()))

	// No client deadline: the server applies its default.
	resp, err := pc.GetPolicy(context.Background(), &medmeshv1.GetPolicyRequest{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := strconv.Atoi(resp.GetPolicy().GetDescription())
	if err != nil || ms <= 0 || ms > 300 {
		t.Fatalf("deadline seen by handler = %q ms, want in (0,300]", resp.GetPolicy().GetDescription())
	}
	// A handler that waits for its context ends with DeadlineExceeded.
	startT := time.Now()
	_, err = pc.GetPolicy(context.Background(), &medmeshv1.GetPolicyRequest{Name: "block"})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("blocked call: err = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(startT); el > 3*time.Second {
		t.Fatalf("blocked call took %v", el)
	}
	// A client deadline is kept as is.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	resp, err = pc.GetPolicy(ctx, &medmeshv1.GetPolicyRequest{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if ms, _ := strconv.Atoi(resp.GetPolicy().GetDescription()); ms > 100 {
		t.Fatalf("client deadline replaced: %d ms", ms)
	}
}

func TestDialSeveralAddresses(t *testing.T) {
	h := start(t, loopbackConfig())
	dead := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	conn := dial(t, dead+", "+h.srv.Addr().String(), DefaultClientConfig())
	resp, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health via list with a dead first address: %v, %v", resp, err)
	}
	if _, err := Dial(" , ", DefaultClientConfig(), nil); err == nil {
		t.Fatal("Dial with an empty list succeeded")
	}
	if _, err := Dial("nocolon", DefaultClientConfig(), nil); err == nil {
		t.Fatal("Dial without a port succeeded")
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	dead := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	conn := dial(t, dead, DefaultClientConfig())
	_, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("unreachable: err = %v, want Unavailable connection refused", err)
	}
}

func TestStopHardAtDeadline(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := NewServer(loopbackConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	p := &policies{block: make(chan struct{})}
	medmeshv1.RegisterPolicyServiceServer(s.GRPC(), p)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	conn := dial(t, s.Addr().String(), DefaultClientConfig())
	callErr := make(chan error, 1)
	go func() {
		_, err := medmeshv1.NewPolicyServiceClient(conn).GetPolicy(context.Background(), &medmeshv1.GetPolicyRequest{Name: "block"})
		callErr <- err
	}()
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "grpc_server_started_total" {
				return true
			}
		}
		return false
	}, "call never started")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	s.Stop(ctx)
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("Stop took %v with a 200ms deadline", el)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := <-callErr; status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Fatalf("blocked call after hard stop: %v", err)
	}
}

// testPKI is a campus CA with leaf certificates for a coordinator (the
// server), an operator and a viewer, plus an operator from another CA.
type testPKI struct {
	dir                         string
	server, operator, viewer    TLSFiles
	otherCA, expired, sensorSrv TLSFiles
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.CreateCA(dir, "test campus", 1, now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, caDir, file string, role pki.Role, at time.Time) TLSFiles {
		t.Helper()
		c, k, err := ca.IssueFiles(dir, file, pki.CertRequest{Identity: pki.Identity{Role: role, Name: file}, Days: 1, Now: at})
		if err != nil {
			t.Fatal(err)
		}
		return TLSFiles{CAFile: filepath.Join(caDir, pki.CAFile), CertFile: c, KeyFile: k}
	}
	p := testPKI{dir: dir}
	p.server = issue(ca, dir, "c1", pki.RoleCoordinator, now)
	p.operator = issue(ca, dir, "alice", pki.RoleOperator, now)
	p.viewer = issue(ca, dir, "bob", pki.RoleViewer, now)
	p.sensorSrv = issue(ca, dir, "s1", pki.RoleSensor, now)
	p.expired = issue(ca, dir, "old", pki.RoleOperator, now.Add(-72*time.Hour))
	otherDir := filepath.Join(dir, "other")
	other, err := pki.CreateCA(otherDir, "another campus", 1, now)
	if err != nil {
		t.Fatal(err)
	}
	p.otherCA = issue(other, otherDir, "mallory", pki.RoleOperator, now)
	// The other CA's operator presents its certificate to our server, which
	// trusts only our CA.
	p.otherCA.CAFile = filepath.Join(dir, pki.CAFile)
	return p
}

func put(t *testing.T, conn *grpc.ClientConn) error {
	_, err := medmeshv1.NewPolicyServiceClient(conn).PutPolicy(ctxT(t), &medmeshv1.PutPolicyRequest{Policy: &medmeshv1.Policy{Name: "p"}})
	return err
}

func get(t *testing.T, conn *grpc.ClientConn) error {
	_, err := medmeshv1.NewPolicyServiceClient(conn).GetPolicy(ctxT(t), &medmeshv1.GetPolicyRequest{Name: "p"})
	return err
}

func TestMutualTLSRoles(t *testing.T) {
	p := newTestPKI(t)
	cfg := DefaultServerConfig()
	cfg.Addr = "0.0.0.0:0" // TLS makes a non-loopback address acceptable
	cfg.TLS = p.server
	h := start(t, cfg)
	target := "127.0.0.1:" + strconv.Itoa(h.srv.Addr().(*net.TCPAddr).Port)
	withTLS := func(f TLSFiles) *grpc.ClientConn {
		cc := DefaultClientConfig()
		cc.TLS = f
		return dial(t, target, cc)
	}

	op := withTLS(p.operator)
	if err := put(t, op); err != nil {
		t.Fatalf("operator PutPolicy: %v", err)
	}
	if err := check(t, target, ClientConfig{TLS: p.viewer}); err != nil {
		t.Fatalf("viewer health check: %v", err)
	}
	vw := withTLS(p.viewer)
	if err := get(t, vw); err != nil {
		t.Fatalf("viewer GetPolicy: %v", err)
	}
	if err := put(t, vw); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer PutPolicy: err = %v, want PermissionDenied", err)
	}
	// Refused at the handshake: a certificate of another CA, an expired one.
	for name, f := range map[string]TLSFiles{"other CA": p.otherCA, "expired": p.expired} {
		if err := get(t, withTLS(f)); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: err = %v, want Unavailable (handshake refused)", name, err)
		}
	}
	// No client certificate: the handshake completes, every call is
	// Unauthenticated.
	tc, err := pki.ClientConfig(p.operator, pki.RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	anon, err := grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if err := get(t, anon); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no client certificate: err = %v, want Unauthenticated", err)
	}
	// Plaintext to a TLS server fails.
	if err := check(t, target, DefaultClientConfig()); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client to TLS server: err = %v, want Unavailable", err)
	}
}

func TestClientRefusesNonCoordinatorServer(t *testing.T) {
	p := newTestPKI(t)
	cfg := loopbackConfig()
	cfg.TLS = p.sensorSrv // a sensor's certificate posing as a coordinator
	h := start(t, cfg)
	err := check(t, h.srv.Addr().String(), ClientConfig{TLS: p.operator})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "role sensor not accepted") {
		t.Fatalf("server with a sensor certificate: err = %v, want Unavailable naming the role", err)
	}
}

func TestTLSFilesGoTogether(t *testing.T) {
	p := newTestPKI(t)
	if _, err := Dial("127.0.0.1:1", ClientConfig{TLS: TLSFiles{CertFile: p.operator.CertFile}}, nil); err == nil {
		t.Fatal("client certificate without CA and key accepted")
	}
	bad := loopbackConfig()
	bad.TLS = TLSFiles{CAFile: p.operator.CAFile}
	if _, err := NewServer(bad, nil, nil); err == nil {
		t.Fatal("server TLS without certificate accepted")
	}
}

func TestMissingRowRefusesToServe(t *testing.T) {
	cfg := loopbackConfig()
	cfg.Authz = BuiltinMethods() // no PolicyService rows
	s, err := NewServer(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	medmeshv1.RegisterPolicyServiceServer(s.GRPC(), &policies{})
	err = s.Serve()
	s.Stop(context.Background())
	if err == nil || !strings.Contains(err.Error(), medmeshv1.PolicyService_PutPolicy_FullMethodName) {
		t.Fatalf("Serve with a method missing from the table: err = %v, want refusal naming it", err)
	}
}

func TestPlaintextCallerIsLocal(t *testing.T) {
	var seen pki.Identity
	cfg := loopbackConfig()
	s, err := NewServer(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	medmeshv1.RegisterPolicyServiceServer(s.GRPC(), &whoami{seen: &seen})
	errc := make(chan error, 1)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { errc <- s.Serve() }()
	defer func() { s.Stop(context.Background()); <-errc }()
	if err := get(t, dial(t, s.Addr().String(), DefaultClientConfig())); err != nil {
		t.Fatal(err)
	}
	if seen.Role != authz.Local || seen.Name == "" {
		t.Fatalf("identity on a plaintext loopback server = %+v, want role local with the peer address", seen)
	}
}

type whoami struct {
	medmeshv1.UnimplementedPolicyServiceServer
	seen *pki.Identity
}

func (w *whoami) GetPolicy(ctx context.Context, _ *medmeshv1.GetPolicyRequest) (*medmeshv1.GetPolicyResponse, error) {
	*w.seen, _ = authz.FromContext(ctx)
	return &medmeshv1.GetPolicyResponse{}, nil
}

func check(t *testing.T, target string, cfg ClientConfig) error {
	t.Helper()
	conn := dial(t, target, cfg)
	resp, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", resp.GetStatus())
	}
	return err
}

package grpcx

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	refpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

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
	return c
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

// pki writes a CA, a server certificate for 127.0.0.1/localhost and a
// client certificate, all signed by the CA.
type pki struct{ dir, ca, srvCert, srvKey, cliCert, cliKey, otherCA string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	p := pki{dir: dir}
	caKey, caCert, caDER := selfSigned(t, "medmesh test ca")
	p.ca = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	p.srvCert, p.srvKey = leaf(t, dir, "server", caCert, caKey, x509.ExtKeyUsageServerAuth)
	p.cliCert, p.cliKey = leaf(t, dir, "client", caCert, caKey, x509.ExtKeyUsageClientAuth)
	_, _, otherDER := selfSigned(t, "other ca")
	p.otherCA = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherDER)
	return p
}

func selfSigned(t *testing.T, cn string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func leaf(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kder)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
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

func TestTLS(t *testing.T) {
	p := newPKI(t)
	cfg := DefaultServerConfig()
	cfg.Addr = "0.0.0.0:0" // TLS makes a non-loopback address acceptable
	cfg.TLS = TLSFiles{CertFile: p.srvCert, KeyFile: p.srvKey}
	h := start(t, cfg)
	target := "127.0.0.1:" + strconv.Itoa(h.srv.Addr().(*net.TCPAddr).Port)

	cc := DefaultClientConfig()
	cc.TLS = TLSFiles{CAFile: p.ca}
	if err := check(t, target, cc); err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	cc.TLS = TLSFiles{CAFile: p.otherCA}
	if err := check(t, target, cc); status.Code(err) != codes.Unavailable {
		t.Fatalf("TLS client trusting another CA: err = %v, want Unavailable", err)
	}
	if err := check(t, target, DefaultClientConfig()); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client to TLS server: err = %v, want Unavailable", err)
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	cfg := loopbackConfig()
	cfg.TLS = TLSFiles{CertFile: p.srvCert, KeyFile: p.srvKey, CAFile: p.ca}
	h := start(t, cfg)
	target := h.srv.Addr().String()

	cc := DefaultClientConfig()
	cc.TLS = TLSFiles{CAFile: p.ca}
	if err := check(t, target, cc); status.Code(err) != codes.Unavailable {
		t.Fatalf("mTLS without a client certificate: err = %v, want Unavailable", err)
	}
	cc.TLS = TLSFiles{CAFile: p.ca, CertFile: p.cliCert, KeyFile: p.cliKey}
	cc.ServerName = "localhost"
	if err := check(t, target, cc); err != nil {
		t.Fatalf("mTLS with a client certificate: %v", err)
	}
	if _, err := Dial(target, ClientConfig{TLS: TLSFiles{CertFile: p.cliCert}}, nil); err == nil {
		t.Fatal("client certificate without key accepted")
	}
	bad := loopbackConfig()
	bad.TLS = TLSFiles{CAFile: p.ca}
	if _, err := NewServer(bad, nil, nil); err == nil {
		t.Fatal("server TLS without certificate accepted")
	}
}

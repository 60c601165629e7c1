package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
)

// campus is a test hospital: a campus CA, certificates issued on demand and
// one coordinator served over mutual TLS by grpcx, as `medmesh coordinator
// --tls-*` serves it.
type campus struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caFile string
	other  *pki.CA // a CA the coordinator does not trust
	cfg    Config
	tls    grpcx.TLSFiles
	c      *Coordinator
	srv    *grpcxServer
	certs  map[string]grpcx.TLSFiles
}

// newCampus starts a single-node coordinator (bootstrapping itself, data
// kept in a directory so it can restart) over mutual TLS on 127.0.0.1.
func newCampus(t *testing.T) *campus { t.Helper(); return newCampusWith(t, nil) }

// newCampusWith is newCampus with tweak applied to the configuration
// before the coordinator starts.
func newCampusWith(t *testing.T, tweak func(*Config)) *campus {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.CreateCA(filepath.Join(dir, "ca"), "test campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.CreateCA(filepath.Join(dir, "other"), "another campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cp := &campus{t: t, dir: dir, ca: ca, caFile: filepath.Join(dir, "ca", pki.CAFile), other: other, certs: map[string]grpcx.TLSFiles{}}
	cp.tls = cp.files(pki.RoleCoordinator, "c1")
	cp.cfg = testConfig("c1", filepath.Join(dir, "c1"), fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	cp.cfg.BootstrapExpect = 1
	cp.cfg.Dial = func(addr string) (*grpc.ClientConn, error) {
		cc := grpcx.DefaultClientConfig()
		cc.TLS = cp.tls
		return grpcx.Dial(addr, cc, nil)
	}
	if tweak != nil {
		tweak(&cp.cfg)
	}
	cp.start()
	t.Cleanup(cp.stop)
	return cp
}

func (cp *campus) start() {
	cp.t.Helper()
	c, err := New(cp.cfg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		cp.t.Fatal(err)
	}
	srv := newGRPCXServer(cp.t, cp.cfg.APIAddr, cp.tls)
	c.Register(srv.GRPC())
	testutil.Eventually(cp.t, 5*time.Second, 20*time.Millisecond, func() bool { err = srv.Listen(); return err == nil }, "listen %s: %v", cp.cfg.APIAddr, err)
	go srv.Serve()
	if err := c.Start(context.Background()); err != nil {
		cp.t.Fatal(err)
	}
	cp.c, cp.srv = c, srv
	testutil.Eventually(cp.t, 10*time.Second, 10*time.Millisecond, func() bool { return c.Ready() == nil }, "coordinator not ready")
}

func (cp *campus) stop() {
	if cp.c == nil {
		return
	}
	if err := cp.c.Close(); err != nil {
		cp.t.Logf("close: %v", err)
	}
	cp.srv.Stop()
	cp.c, cp.srv = nil, nil
}

// files issues (once) a certificate for role/name from the campus CA.
func (cp *campus) files(role pki.Role, name string) grpcx.TLSFiles {
	cp.t.Helper()
	return cp.issue(cp.ca, "", role, name, time.Time{})
}

func (cp *campus) issue(ca *pki.CA, prefix string, role pki.Role, name string, now time.Time) grpcx.TLSFiles {
	cp.t.Helper()
	file := prefix + string(role) + "-" + name
	if f, ok := cp.certs[file]; ok {
		return f
	}
	certFile, keyFile, err := ca.IssueFiles(cp.dir, file, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, Days: 1, Now: now})
	if err != nil {
		cp.t.Fatal(err)
	}
	f := grpcx.TLSFiles{CAFile: cp.caFile, CertFile: certFile, KeyFile: keyFile}
	cp.certs[file] = f
	return f
}

// dialFiles connects with a client certificate (the server is verified
// against the campus CA). No retries: each call's outcome is its own.
func (cp *campus) dialFiles(f grpcx.TLSFiles) *grpc.ClientConn {
	cp.t.Helper()
	tc, err := pki.ClientConfig(f, pki.RoleCoordinator)
	if err != nil {
		cp.t.Fatal(err)
	}
	return cp.dialTLS(tc)
}

func (cp *campus) dialTLS(tc *tls.Config) *grpc.ClientConn {
	cp.t.Helper()
	cc, err := grpc.NewClient(cp.cfg.APIAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		cp.t.Fatal(err)
	}
	cp.t.Cleanup(func() { cc.Close() })
	return cc
}

// as connects as role/name.
func (cp *campus) as(role pki.Role, name string) *grpc.ClientConn {
	return cp.dialFiles(cp.files(role, name))
}

// anonymous connects over TLS without a client certificate.
func (cp *campus) anonymous() *grpc.ClientConn {
	return cp.dialTLS(&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}) // the attacker does not care who answers
}

// foreign connects with a certificate from a CA the campus does not trust.
func (cp *campus) foreign(role pki.Role, name string) *grpc.ClientConn {
	f := cp.issue(cp.other, "other-", role, name, time.Time{})
	f.CAFile = cp.caFile
	return cp.dialFiles(f)
}

// expired connects with a campus certificate that expired yesterday.
func (cp *campus) expired(role pki.Role, name string) *grpc.ClientConn {
	return cp.dialFiles(cp.issue(cp.ca, "expired-", role, name, time.Now().Add(-72*time.Hour)))
}

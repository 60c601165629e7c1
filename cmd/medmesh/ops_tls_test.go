package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/grpcx"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// writeCert writes a certificate signed by parent (self-signed when parent
// is nil) and its key; it returns the files, the certificate and the key.
func writeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (string, string, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cf, kf, cert, key
}

func TestClusterStatusMutualTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, _, ca, caKey := writeCert(t, dir, "ca", nil, nil)
	srvCert, srvKey, _, _ := writeCert(t, dir, "server", ca, caKey)
	cliCert, cliKey, _, _ := writeCert(t, dir, "client", ca, caKey)

	cfg := grpcx.DefaultServerConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.TLS = grpcx.TLSFiles{CertFile: srvCert, KeyFile: srvKey, CAFile: caFile}
	s, err := grpcx.NewServer(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	medmeshv1.RegisterClusterServiceServer(s.GRPC(), &fakeAPI{})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
		<-done
	}()
	addr := s.Addr().String()

	code, stdout, stderr := runCLI(t, "cluster", "status", "--addr", addr, "-o", "json",
		"--tls-ca", caFile, "--tls-cert", cliCert, "--tls-key", cliKey)
	if code != 0 || !strings.Contains(stdout, `"leader": "c2"`) {
		t.Fatalf("mTLS: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "cluster", "status", "--addr", addr, "--tls-ca", caFile)
	if code != exitFailure || !strings.HasPrefix(oneLine(t, stderr), "medmesh: cannot reach coordinator at "+addr+": ") {
		t.Fatalf("no client certificate: exit %d, stderr %q", code, stderr)
	}
	t.Logf("without a client certificate: %s", strings.TrimSpace(stderr))
	if code, _, stderr := runCLI(t, "cluster", "status", "--addr", addr, "--tls-cert", cliCert); code != exitUsage {
		t.Fatalf("--tls-cert without --tls-key: exit %d, stderr %q", code, stderr)
	}
}

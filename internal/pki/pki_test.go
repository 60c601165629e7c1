package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityRoundTrip(t *testing.T) {
	for _, r := range Roles() {
		id := Identity{Role: r, Name: "dr.grey@icu-3"}
		got, err := ParseSPIFFE(id.URI().String())
		if err != nil || got != id {
			t.Fatalf("ParseSPIFFE(%s) = %+v, %v", id.URI(), got, err)
		}
	}
	for _, bad := range []string{
		"spiffe://medmesh/operator",           // no name
		"spiffe://medmesh/nurse/x",            // unknown role
		"spiffe://medmesh/operator/a/b",       // too deep
		"spiffe://medmesh/operator/..",        // not a name
		"spiffe://other/operator/alice",       // other trust domain
		"spiffe://medmesh:1/operator/alice",   // port
		"spiffe://medmesh/operator/alice?x=1", // query
		"https://medmesh/operator/alice",
		"spiffe://medmesh/operator/" + strings.Repeat("a", 65),
	} {
		if id, err := ParseSPIFFE(bad); err == nil {
			t.Errorf("ParseSPIFFE(%q) = %+v, want an error", bad, id)
		}
	}
}

func TestIssueAndVerify(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := CreateCA(dir, "", 10, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateCA(dir, "", 10, now); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second CreateCA in the same directory: %v, want a refusal", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", fi.Mode(), err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Role: RoleSensor, Name: "s-icu"}
	certPath, keyPath, err := loaded.IssueFiles(dir, "s-icu", CertRequest{Identity: id, Days: 400, IPs: []net.IP{net.IPv4(10, 0, 0, 5)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := loaded.IssueFiles(dir, "s-icu", CertRequest{Identity: id, Days: 1}); err == nil {
		t.Fatal("IssueFiles overwrote an existing certificate")
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := IdentityFromCert(pair.Leaf)
	if err != nil || got != id {
		t.Fatalf("IdentityFromCert = %+v, %v; want %+v", got, err, id)
	}
	// Validity is capped at the CA's.
	if pair.Leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("leaf outlives its CA: %v > %v", pair.Leaf.NotAfter, ca.Cert.NotAfter)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify against its CA: %v", err)
	}
	if _, _, err := loaded.IssueFiles(dir, "../escape", CertRequest{Identity: Identity{Role: RoleSensor, Name: "x"}, Days: 1}); err == nil {
		t.Fatal("IssueFiles accepted a file name with a path")
	}
}

func TestCertificateWithoutIdentityRefused(t *testing.T) {
	dir := t.TempDir()
	ca, err := CreateCA(dir, "", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The CA certificate itself has no SPIFFE ID: it is no identity.
	if _, err := IdentityFromCert(ca.Cert); err != ErrNoIdentity {
		t.Fatalf("IdentityFromCert(CA) = %v, want ErrNoIdentity", err)
	}
	f := Files{CAFile: filepath.Join(dir, CAFile), CertFile: filepath.Join(dir, CAFile), KeyFile: filepath.Join(dir, CAKeyFile)}
	if _, err := ServerConfig(f, ServerOptions{}); err == nil {
		t.Fatal("ServerConfig accepted a certificate without a medmesh identity")
	}
}

func TestKeyPairReload(t *testing.T) {
	dir := t.TempDir()
	ca, err := CreateCA(dir, "", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) (string, string) {
		c, k, err := ca.IssueFiles(dir, name, CertRequest{Identity: Identity{Role: RoleCoordinator, Name: name}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	c1, k1 := issue("c1")
	kp, err := newKeyPair(c1, k1)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.get()
	// Rotate: the new pair replaces the files; the next handshake uses it.
	c2, k2 := issue("c2")
	for _, mv := range [][2]string{{c2, c1}, {k2, k1}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	later := time.Now().Add(2 * time.Second)
	for _, f := range []string{c1, k1} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	second, err := kp.get()
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := IdentityFromCert(second.Leaf); id.Name != "c2" || second == first {
		t.Fatalf("after rotation the pair is %v, want c2", id)
	}
	// A broken file keeps the pair that worked.
	if err := os.WriteFile(c1, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := kp.get()
	if err != nil || third != second {
		t.Fatalf("broken rotation: %v, %v; want the previous pair", third, err)
	}
}

func TestFilesGoTogether(t *testing.T) {
	for _, f := range []Files{{CAFile: "a"}, {CertFile: "b", KeyFile: "c"}, {CAFile: "a", KeyFile: "c"}} {
		if err := f.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", f)
		}
	}
	if err := (Files{}).Validate(); err != nil {
		t.Errorf("no TLS: %v", err)
	}
}

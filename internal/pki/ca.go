package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names inside a certificate directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// CertFile and KeyFile name a leaf's files in a directory: NAME.pem and
// NAME-key.pem.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".pem") }

// KeyFile is the key that goes with CertFile.
func KeyFile(dir, name string) string { return filepath.Join(dir, name+"-key.pem") }

// CA is a certificate authority that can sign leaf certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CreateCA makes a new CA valid for days from now, writes ca.pem and
// ca-key.pem (0600) into dir, and refuses to overwrite an existing CA.
func CreateCA(dir, commonName string, days int, now time.Time) (*CA, error) {
	if days <= 0 {
		return nil, fmt.Errorf("ca: days must be positive, got %d", days)
	}
	if commonName == "" {
		commonName = "medmesh CA"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	for _, f := range []string{CAFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("ca: %s exists; remove it first to make a new CA", filepath.Join(dir, f))
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key: %w", err)
	}
	ski, err := keyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"medmesh"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if err := writePair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile), der, key); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads ca.pem and ca-key.pem from dir.
func LoadCA(dir string) (*CA, error) {
	certs, err := readCerts(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("ca: %s is not a CA certificate", filepath.Join(dir, CAFile))
	}
	return &CA{Cert: certs[0], Key: key}, nil
}

// CertRequest describes a leaf certificate.
type CertRequest struct {
	Identity Identity
	// DNS and IPs are extra SANs for tools that check host names (openssl,
	// grpcurl); medmesh itself verifies the SPIFFE ID.
	DNS  []string
	IPs  []net.IP
	Days int
	Now  time.Time
}

// Issue signs a leaf certificate for req and returns it with its new key.
// Every leaf may serve and dial (coordinators do both).
func (ca *CA) Issue(req CertRequest) (*x509.Certificate, crypto.Signer, error) {
	if err := req.Identity.Validate(); err != nil {
		return nil, nil, fmt.Errorf("issue: %w", err)
	}
	if req.Days <= 0 {
		return nil, nil, fmt.Errorf("issue: days must be positive, got %d", req.Days)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	notAfter := now.Add(time.Duration(req.Days) * 24 * time.Hour)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   newSerial(),
		Subject:        pkix.Name{CommonName: req.Identity.String(), Organization: []string{"medmesh"}, OrganizationalUnit: []string{string(req.Identity.Role)}},
		NotBefore:      now.Add(-5 * time.Minute),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:           []*url.URL{req.Identity.URI()},
		DNSNames:       req.DNS,
		IPAddresses:    req.IPs,
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("issue: %w", err)
	}
	return cert, key, nil
}

// IssueFiles signs a leaf and writes dir/NAME.pem and dir/NAME-key.pem
// (0600), refusing to overwrite. file names the pair (usually the
// identity's name); it must be a valid name.
func (ca *CA) IssueFiles(dir, file string, req CertRequest) (certPath, keyPath string, err error) {
	if err := ValidName(file); err != nil {
		return "", "", fmt.Errorf("issue: file %w", err)
	}
	certPath, keyPath = CertFile(dir, file), KeyFile(dir, file)
	for _, f := range []string{certPath, keyPath} {
		if _, err := os.Stat(f); err == nil {
			return "", "", fmt.Errorf("issue: %s exists; remove it first", f)
		}
	}
	cert, key, err := ca.Issue(req)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("issue: %w", err)
	}
	if err := writePair(certPath, keyPath, cert.Raw, key); err != nil {
		return "", "", fmt.Errorf("issue: %w", err)
	}
	return certPath, keyPath, nil
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would be unsafe.
		panic(fmt.Sprintf("pki: random serial: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// writePair writes a certificate (0644) and its key (0600) atomically
// enough for a tool: the key is written first, with O_EXCL.
func writePair(certPath, keyPath string, der []byte, key crypto.Signer) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	if err := writeExcl(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	if err := writeExcl(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return errors.Join(err, os.Remove(keyPath))
	}
	return nil
}

func writeExcl(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return out, nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	var k any
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("%s: unsupported PEM block %q", path, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key cannot sign", path)
	}
	return s, nil
}

// ReadCertificate reads the first certificate of a PEM file.
func ReadCertificate(path string) (*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// VerifyLeaf checks a leaf as medmesh's TLS does, at now: signed by the CA
// in caFile, valid, usable both to serve and to dial, with one identity.
func VerifyLeaf(caFile string, leaf *x509.Certificate, now time.Time) error {
	pool, err := loadPool(caFile)
	if err != nil {
		return err
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	_, err = IdentityFromCert(leaf)
	return err
}

package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// Files names the PEM files of a process's TLS identity: the CA that
// verifies peers, and this process's certificate and key. All three are set
// (mutual TLS) or none (plaintext, loopback or --dev only).
type Files struct {
	CAFile, CertFile, KeyFile string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// Validate checks that the files come as a set.
func (f Files) Validate() error {
	if !f.Enabled() {
		return nil
	}
	var missing []string
	for _, x := range []struct{ flag, v string }{{"--tls-ca", f.CAFile}, {"--tls-cert", f.CertFile}, {"--tls-key", f.KeyFile}} {
		if x.v == "" {
			missing = append(missing, x.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("tls: --tls-ca, --tls-cert and --tls-key go together (missing %v)", missing)
	}
	return nil
}

// MinVersion is the oldest TLS version medmesh speaks.
const MinVersion = tls.VersionTLS12

// ServerOptions says whom a server accepts.
type ServerOptions struct {
	// RequireClientCert refuses a handshake without a client certificate
	// (the Raft transport). Without it, a client may connect anonymously
	// and the authorization interceptor answers Unauthenticated (the API).
	RequireClientCert bool
	// Roles, when not empty, are the only roles whose certificates complete
	// the handshake.
	Roles []Role
}

// ServerConfig builds the TLS configuration of a medmesh server. Client
// certificates are verified against the CA and must carry a medmesh
// identity; a certificate file replaced on disk is used from the next
// handshake on.
func ServerConfig(f Files, opts ServerOptions) (*tls.Config, error) {
	if err := needAll(f); err != nil {
		return nil, err
	}
	pool, err := loadPool(f.CAFile)
	if err != nil {
		return nil, err
	}
	kp, err := newKeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, err
	}
	auth := tls.VerifyClientCertIfGiven
	if opts.RequireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:     MinVersion,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
		ClientCAs:      pool,
		ClientAuth:     auth,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // anonymous: the caller decides (Unauthenticated)
			}
			return checkRole(cs, opts.Roles)
		},
	}, nil
}

// ClientConfig builds the TLS configuration of a medmesh client. The server
// must present a certificate from the CA whose identity has one of roles
// (every medmesh client dials coordinators: pass RoleCoordinator). Host
// names are not checked: the identity is the SPIFFE ID, as in SPIFFE.
func ClientConfig(f Files, roles ...Role) (*tls.Config, error) {
	if err := needAll(f); err != nil {
		return nil, err
	}
	if len(roles) == 0 {
		return nil, errors.New("tls: a client must say which roles it accepts as its server")
	}
	pool, err := loadPool(f.CAFile)
	if err != nil {
		return nil, err
	}
	kp, err := newKeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:           MinVersion,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() },
		// Go's verification checks host names; medmesh checks the chain and
		// the SPIFFE ID itself in VerifyConnection, which always runs.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("tls: server certificate: %w", err)
			}
			return checkRole(cs, roles)
		},
	}, nil
}

// PeerIdentity is the identity of a verified peer certificate in cs.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("no peer certificate")
	}
	return IdentityFromCert(cs.PeerCertificates[0])
}

func checkRole(cs tls.ConnectionState, roles []Role) error {
	id, err := PeerIdentity(cs)
	if err != nil {
		return fmt.Errorf("tls: peer: %w", err)
	}
	if len(roles) > 0 && !slices.Contains(roles, id.Role) {
		return fmt.Errorf("tls: peer %s: role %s not accepted here (want %v)", id, id.Role, roles)
	}
	return nil
}

func needAll(f Files) error {
	if !f.Enabled() {
		return errors.New("tls: no certificate files configured")
	}
	return f.Validate()
}

func loadPool(file string) (*x509.CertPool, error) {
	certs, err := readCerts(file)
	if err != nil {
		return nil, fmt.Errorf("tls: ca: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// keyPair serves a certificate and key from files, reloading them when
// either file's modification time changes (certificate rotation without a
// restart). A reload that fails keeps the pair that worked.
type keyPair struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	certMod time.Time
	keyMod  time.Time
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

func (kp *keyPair) get() (*tls.Certificate, error) {
	cs, cerr := os.Stat(kp.certFile)
	ks, kerr := os.Stat(kp.keyFile)
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if cerr == nil && kerr == nil && kp.cert != nil && cs.ModTime().Equal(kp.certMod) && ks.ModTime().Equal(kp.keyMod) {
		return kp.cert, nil
	}
	c, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err == nil && c.Leaf != nil {
		_, err = IdentityFromCert(c.Leaf)
	}
	if err != nil {
		if kp.cert != nil {
			return kp.cert, nil // keep the pair that worked
		}
		return nil, fmt.Errorf("tls: key pair %s: %w", kp.certFile, err)
	}
	kp.cert = &c
	if cerr == nil && kerr == nil {
		kp.certMod, kp.keyMod = cs.ModTime(), ks.ModTime()
	}
	return kp.cert, nil
}

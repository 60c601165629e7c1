package risk

import (
	"crypto/ed25519"
	"io"
	"time"

	"github.com/medmesh/medmesh/risk/internal/bundle"
)

// GenerateKey makes an ed25519 key pair for signing bundles, PEM-encoded
// (PKCS #8 private key, PKIX public key).
func GenerateKey() (priv, pub []byte, err error) { return bundle.GenerateKey() }

// ReadPrivateKey reads a PEM PKCS #8 ed25519 private key file.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) { return bundle.ReadPrivateKey(path) }

// ReadPublicKey reads a PEM PKIX ed25519 public key file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) { return bundle.ReadPublicKey(path) }

// WriteBundle builds a bundle from source directories (see Build) and
// writes it to w as a reproducible .tar.gz. It returns the number of files.
func WriteBundle(w io.Writer, dirs []string, created time.Time, key ed25519.PrivateKey) (int, error) {
	m, raw, sig, files, err := Build(dirs, created, key)
	if err != nil {
		return 0, err
	}
	return len(m.Files), bundle.Write(w, m, raw, sig, files)
}

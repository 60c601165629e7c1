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

// WriteArchive writes the loaded bundle as a .tar.gz that loads to the
// same digest: its manifest.json as it was read (or as computed for a
// plain directory), its signature when it has one, and every listed file.
// Coordinators keep and pass bundles between them in this form.
func (in *Intel) WriteArchive(w io.Writer) error {
	return bundle.Write(w, in.b.Manifest, in.b.Raw, in.b.Sig, in.filesByPath())
}

func (in *Intel) filesByPath() map[string][]byte {
	out := make(map[string][]byte, len(in.b.Manifest.Files))
	for _, f := range in.b.Manifest.Files {
		out[f.Path] = in.b.Read(f.Path)
	}
	return out
}

// Created is when the bundle's manifest says it was made (zero when it
// does not say, as for a plain directory).
func (in *Intel) Created() time.Time {
	t, _ := parseDate(in.b.Manifest.Created)
	return t
}

// FileCount is the number of files the manifest lists.
func (in *Intel) FileCount() int { return len(in.b.Manifest.Files) }

package risk

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WriteArchive keeps a bundle's identity: a plain directory's computed
// manifest, and a signed bundle's manifest and signature, load back to the
// same digest (coordinators keep and pass bundles in this form).
func TestWriteArchiveKeepsTheDigest(t *testing.T) {
	dir := "testdata/intel"
	in, err := Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "a.tar.gz")
	var buf bytes.Buffer
	if err := in.WriteArchive(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != in.Digest() || back.FileCount() != in.FileCount() {
		t.Fatalf("directory: digest %s files %d, archive: %s %d", in.Digest(), in.FileCount(), back.Digest(), back.FileCount())
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var signed bytes.Buffer
	if _, err := WriteBundle(&signed, []string{dir}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), priv); err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(t.TempDir(), "s.tar.gz")
	os.WriteFile(sp, signed.Bytes(), 0o600)
	s1, err := Load(sp, pub)
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := s1.WriteArchive(&again); err != nil {
		t.Fatal(err)
	}
	ap := filepath.Join(t.TempDir(), "again.tar.gz")
	os.WriteFile(ap, again.Bytes(), 0o600)
	s2, err := Load(ap, pub)
	if err != nil {
		t.Fatalf("re-archived signed bundle: %v", err)
	}
	if !s2.Signed() || s2.Digest() != s1.Digest() || !s2.Created().Equal(s1.Created()) || s1.Created().IsZero() {
		t.Fatalf("signed %v digest %s created %v; want %s %v", s2.Signed(), s2.Digest(), s2.Created(), s1.Digest(), s1.Created())
	}
}

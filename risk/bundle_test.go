package risk

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/risk/internal/bundle"
)

// copyTree copies the fixtures and a few real advisories into a fresh
// source directory laid out by kind.
func sourceDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyFile := func(from, to string) {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, to)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	filepath.WalkDir("testdata/intel", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel("testdata/intel", p)
			copyFile(p, rel)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(sharedIntel, "csaf")); err == nil {
		copyFile(filepath.Join(sharedIntel, "csaf", "icsma-17-255-01.json"), "csaf/icsma-17-255-01.json")
		copyFile(filepath.Join(sharedIntel, "kev", "known_exploited_vulnerabilities.json"), "kev/known_exploited_vulnerabilities.json")
	}
	return dir
}

func writeBundle(t *testing.T, src string, key ed25519.PrivateKey) string {
	t.Helper()
	var buf bytes.Buffer
	if _, err := WriteBundle(&buf, []string{src}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), key); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "intel.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// unpack writes a bundle's files into a directory (a bundle directory, with
// its manifest and signature).
func unpack(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, err := bundle.ReadTarGz(f, p)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func refused(t *testing.T, p string, key ed25519.PublicKey, wants ...string) {
	t.Helper()
	_, err := Load(p, key)
	if err == nil {
		t.Fatalf("%s loaded, want refused (%s)", p, strings.Join(wants, ", "))
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
	t.Logf("refused: %v", err)
}

// TestBadBundlesAreRefused builds a good signed bundle, checks it loads,
// then breaks it every way the issue lists and checks each is refused with
// the file and the reason.
func TestBadBundlesAreRefused(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	src := sourceDir(t)
	good := writeBundle(t, src, priv)
	in, err := Load(good, pub)
	if err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	if !in.Signed() || len(in.Digest()) != 64 {
		t.Fatalf("signed %v digest %q", in.Signed(), in.Digest())
	}
	again, _ := Load(good, pub)
	if again.Digest() != in.Digest() {
		t.Fatal("digest of one bundle differs between loads")
	}

	t.Run("bad signature", func(t *testing.T) { refused(t, good, otherPub, "manifest.json.sig", "bad signature") })
	t.Run("signed by another key", func(t *testing.T) {
		refused(t, writeBundle(t, src, otherPriv), pub, "bad signature")
	})
	t.Run("unsigned with a key configured", func(t *testing.T) {
		refused(t, writeBundle(t, src, nil), pub, "not signed")
		refused(t, src, pub, "not signed") // a plain directory has no signature
	})
	t.Run("missing file", func(t *testing.T) {
		dir := unpack(t, good)
		os.Remove(filepath.Join(dir, "epss", "epss_scores-2026-11-30.csv.gz"))
		refused(t, dir, pub, "epss/epss_scores-2026-11-30.csv.gz", "missing")
	})
	t.Run("wrong sha256", func(t *testing.T) {
		dir := unpack(t, good)
		p := filepath.Join(dir, "gudid", "productCodes.txt")
		data, _ := os.ReadFile(p)
		data[len(data)-2] ^= 1 // same size, other content
		os.WriteFile(p, data, 0o644)
		refused(t, dir, pub, "gudid/productCodes.txt", "wrong sha256")
	})
	t.Run("file not in the manifest", func(t *testing.T) {
		dir := unpack(t, good)
		os.WriteFile(filepath.Join(dir, "csaf", "extra.json"), []byte("{}"), 0o644)
		refused(t, dir, pub, "csaf/extra.json", "not in the manifest")
	})
	t.Run("truncated tar.gz", func(t *testing.T) {
		data, _ := os.ReadFile(good)
		for _, n := range []int{len(data) / 2, len(data) - 9, 5} {
			p := filepath.Join(t.TempDir(), "cut.tar.gz")
			os.WriteFile(p, data[:n], 0o644)
			refused(t, p, pub, "cut.tar.gz")
		}
	})
	t.Run("truncated zip", func(t *testing.T) {
		dir := sourceDir(t)
		json, _ := os.ReadFile(filepath.Join(dir, "openfda", "device-recall-0001-of-0001.json"))
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("device-recall-0001-of-0001.json")
		w.Write(json)
		zw.Close()
		os.Remove(filepath.Join(dir, "openfda", "device-recall-0001-of-0001.json"))
		zp := filepath.Join(dir, "openfda", "device-recall-0001-of-0001.json.zip")
		os.WriteFile(zp, buf.Bytes(), 0o644)
		if _, err := Load(dir, nil); err != nil {
			t.Fatalf("whole zip: %v", err)
		}
		os.WriteFile(zp, buf.Bytes()[:buf.Len()-30], 0o644)
		refused(t, dir, nil, "openfda/device-recall-0001-of-0001.json.zip", "zip")
		var out bytes.Buffer
		if _, err := WriteBundle(&out, []string{dir}, time.Now(), nil); err == nil || !strings.Contains(err.Error(), "device-recall-0001-of-0001.json.zip") {
			t.Fatalf("bundle of a truncated zip: %v", err)
		}
	})
	t.Run("CSAF failing its schema", func(t *testing.T) {
		dir := sourceDir(t)
		p := filepath.Join(dir, "csaf", "medmesh-vex-2026-0001.json")
		data, _ := os.ReadFile(p)
		data = bytes.Replace(data, []byte(`"csaf_version": "2.0"`), []byte(`"csaf_version": "1.2"`), 1)
		os.WriteFile(p, data, 0o644)
		refused(t, dir, nil, "csaf/medmesh-vex-2026-0001.json", "fails the CSAF 2.0 schema", "csaf_version")
	})
	t.Run("CSAF that is not JSON", func(t *testing.T) {
		dir := sourceDir(t)
		p := filepath.Join(dir, "csaf", "medmesh-vex-2026-0001.json")
		data, _ := os.ReadFile(p)
		os.WriteFile(p, data[:len(data)/2], 0o644)
		refused(t, dir, nil, "csaf/medmesh-vex-2026-0001.json")
	})
	t.Run("bad EPSS line", func(t *testing.T) {
		dir := sourceDir(t)
		os.WriteFile(filepath.Join(dir, "epss", "epss_scores-2026-12-01.csv"), []byte("#model_version:v2025.03.14,score_date:2026-12-01T00:00:00+0000\ncve,epss,percentile\nCVE-2017-0144,1.7,0.9\n"), 0o644)
		refused(t, dir, nil, "epss/epss_scores-2026-12-01.csv", "line 3")
	})
	t.Run("manifest tampered after signing", func(t *testing.T) {
		dir := unpack(t, good)
		p := filepath.Join(dir, "manifest.json")
		data, _ := os.ReadFile(p)
		os.WriteFile(p, bytes.Replace(data, []byte(`"format": 1`), []byte(`"format": 1 `), 1), 0o644)
		refused(t, dir, pub, "bad signature")
	})
}

func TestStatusWarnsButNeverRefuses(t *testing.T) {
	in, err := Load(sourceDir(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	st := in.Status(now, 30*24*time.Hour)
	var stale, fresh int
	for _, s := range st {
		if s.Stale {
			stale++
		} else if !s.Date.IsZero() {
			fresh++
		}
		if !s.Date.IsZero() && s.AgeDays != int(now.Sub(s.Date).Hours()/24) {
			t.Errorf("%s: age %d days", s.Source, s.AgeDays)
		}
	}
	if stale == 0 {
		t.Fatalf("no stale source at %s: %+v", now, st)
	}
	if fs, err := in.Assess(Device{Vendor: "B. Braun", Model: "Space Infusion Pump", Version: "1.2.5"}, now); err != nil || len(fs) == 0 {
		t.Fatalf("stale data must still assess: %v %v", fs, err)
	}
	if st := in.Status(now, 0); st[0].Stale {
		t.Fatal("max age 0 marks nothing stale")
	}
}

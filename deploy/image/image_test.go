package main

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/medmesh/medmesh/internal/testutil"
)

// staticBinary builds a static medmesh (as make image does), or uses
// MEDMESH_IMAGE_BIN.
func staticBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MEDMESH_IMAGE_BIN"); p != "" {
		return p
	}
	if testing.Short() {
		t.Skip("-short: building medmesh takes a minute")
	}
	out := filepath.Join(t.TempDir(), "medmesh")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=0.0.0-test", "-o", out, "../../cmd/medmesh")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestImage writes the OCI layout tar, reads it back as an OCI layout,
// and checks the index, the config and the one layer; then it unpacks the
// layer and, as root, runs the binary chrooted in it: the image needs
// nothing the layer lacks.
func TestImage(t *testing.T) {
	bin := staticBinary(t)
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err != nil {
		t.Skipf("no CA bundle (Debian's ca-certificates): %v", err)
	}
	dir := t.TempDir()
	s := spec{Version: "0.0.0-test", Binaries: map[string]string{"amd64": bin}, CABundle: "/etc/ssl/certs/ca-certificates.crt",
		Out: filepath.Join(dir, "medmesh.oci.tar"), Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	if err := build(s); err != nil {
		t.Fatal(err)
	}
	// Building twice gives the same bytes.
	first, _ := os.ReadFile(s.Out)
	if err := build(s); err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(s.Out); string(first) != string(second) {
		t.Error("two builds of one binary differ")
	}

	lay := filepath.Join(dir, "layout")
	untar(t, s.Out, lay)
	for _, f := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(lay, f)); err != nil {
			t.Fatalf("not an OCI layout: %v", err)
		}
	}
	outer, err := layout.ImageIndexFromPath(lay)
	if err != nil {
		t.Fatal(err)
	}
	// index.json is the image index: one image per architecture.
	im, err := outer.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("image index: %+v %v", im, err)
	}
	img, err := outer.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint[0] != "/usr/bin/medmesh" || cf.Config.User != "65532:65532" || cf.OS != "linux" {
		t.Errorf("config: entrypoint %v user %q os %q", cf.Config.Entrypoint, cf.Config.User, cf.OS)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	files := extract(t, rc, root)
	rc.Close()
	for _, want := range []string{"usr/bin/medmesh", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "var/lib/medmesh/"} {
		if _, ok := files[want]; !ok {
			t.Errorf("the layer lacks %s", want)
		}
	}
	if files["usr/bin/medmesh"] != 0o755 {
		t.Errorf("usr/bin/medmesh mode %o", files["usr/bin/medmesh"])
	}

	if !testutil.IsRoot() {
		t.Log("not root: the binary is not run chrooted in the image's file system")
		return
	}
	out, err := exec.Command("chroot", "--userspec=65532:65532", root, "/usr/bin/medmesh", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "medmesh ") {
		t.Fatalf("medmesh version in the image's root: %v: %s", err, out)
	}
	t.Logf("in the image, as nonroot: %s", strings.TrimSpace(string(out)))
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	extract(t, f, dir)
}

// extract unpacks a tar stream into dir and returns name -> mode.
func extract(t *testing.T, r io.Reader, dir string) map[string]os.FileMode {
	t.Helper()
	files := map[string]os.FileMode{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(h.Name, "..") {
			t.Fatalf("tar entry %q", h.Name)
		}
		files[h.Name] = os.FileMode(h.Mode).Perm()
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, os.FileMode(h.Mode).Perm()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// spec is one image build.
type spec struct {
	Version  string
	Binaries map[string]string // GOARCH -> static medmesh binary
	CABundle string
	Out      string
	Created  time.Time
}

// nonroot is the default user, as distroless's.
const nonroot = 65532

// rootfs is the one layer: every file with a fixed time and owner, so two
// builds of one binary give one digest.
func rootfs(bin, ca []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		name      string
		mode      int64
		uid       int
		body      []byte
		directory bool
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, directory: true},
		{name: "etc/passwd", mode: 0o644, body: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot))},
		{name: "etc/group", mode: 0o644, body: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonroot))},
		{name: "etc/medmesh/", mode: 0o755, directory: true},
		{name: "etc/ssl/", mode: 0o755, directory: true},
		{name: "etc/ssl/certs/", mode: 0o755, directory: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: ca},
		{name: "home/", mode: 0o755, directory: true},
		{name: "home/nonroot/", mode: 0o700, uid: nonroot, directory: true},
		{name: "tmp/", mode: 0o1777, directory: true},
		{name: "usr/", mode: 0o755, directory: true},
		{name: "usr/bin/", mode: 0o755, directory: true},
		{name: "usr/bin/medmesh", mode: 0o755, body: bin},
		{name: "var/", mode: 0o755, directory: true},
		{name: "var/lib/", mode: 0o755, directory: true},
		{name: "var/lib/medmesh/", mode: 0o750, uid: nonroot, directory: true},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: mtime, Format: tar.FormatPAX}
		if e.directory {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// image builds the image of one architecture.
func image(arch, binPath string, ca []byte, s spec) (v1.Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(bin); err != nil {
		return nil, fmt.Errorf("%s: %w", binPath, err)
	}
	fsTar, err := rootfs(bin, ca, s.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(fsTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: s.Created}, CreatedBy: "deploy/image: medmesh binary, CA bundle, passwd", Comment: "medmesh " + s.Version,
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", arch, v1.Time{Time: s.Created}
	cf.Config.Entrypoint = []string{"/usr/bin/medmesh"}
	cf.Config.Cmd = []string{"--help"}
	cf.Config.User = fmt.Sprintf("%d:%d", nonroot, nonroot)
	cf.Config.WorkingDir = "/var/lib/medmesh"
	cf.Config.Env = []string{"PATH=/usr/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.ExposedPorts = map[string]struct{}{"7400/tcp": {}, "7401/tcp": {}, "7402/tcp": {}, "7402/udp": {}, "7403/tcp": {}, "7404/tcp": {}, "7405/tcp": {}}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    "medmesh",
		"org.opencontainers.image.version":  s.Version,
		"org.opencontainers.image.source":   "https://github.com/medmesh/medmesh",
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
	return mutate.ConfigFile(img, cf)
}

// checkStatic refuses a dynamically linked binary: the image has no
// loader and no libc (build with CGO_ENABLED=0 and no -buildmode=pie).
func checkStatic(bin []byte) error {
	if bytes.Contains(bin[:min(len(bin), 4096)], []byte("/lib64/ld-linux")) || bytes.Contains(bin[:min(len(bin), 4096)], []byte("/lib/ld-linux")) {
		return errors.New("the binary asks for a dynamic loader; the image has none (build with CGO_ENABLED=0, without -buildmode=pie)")
	}
	return nil
}

// build writes the multi-architecture OCI layout as a tar file.
func build(s spec) error {
	if len(s.Binaries) == 0 {
		return errors.New("no -bin")
	}
	if s.Out == "" {
		return errors.New("-out is required")
	}
	ca, err := os.ReadFile(s.CABundle)
	if err != nil {
		return fmt.Errorf("CA bundle (Debian's ca-certificates): %w", err)
	}
	arches := make([]string, 0, len(s.Binaries))
	for a := range s.Binaries {
		arches = append(arches, a)
	}
	sort.Strings(arches)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range arches {
		img, err := image(arch, s.Binaries[arch], ca, s)
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "linux", Architecture: arch},
			Annotations: map[string]string{"org.opencontainers.image.ref.name": s.Version},
		}})
	}
	dir, err := os.MkdirTemp("", "medmesh-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := layout.Write(dir, idx); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.Out), 0o755); err != nil {
		return err
	}
	return tarDir(dir, s.Out, s.Created)
}

// tarDir writes dir's tree as a tar file (an oci-archive).
func tarDir(dir, out string, mtime time.Time) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}
		if d.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			return tw.WriteHeader(h)
		}
		h.Typeflag, h.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	return errors.Join(err, tw.Close(), f.Close())
}

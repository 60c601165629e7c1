package main

import (
	"bytes"
	"compress/gzip"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// The files of the package that live in this directory.
//
//go:embed systemd/*.service etc/*.toml scripts/* copyright lintian/medmesh
var assets embed.FS

const defaultMaintainer = "medmesh developers <medmesh-maintainers@users.noreply.github.com>"

// units are the systemd units the package installs.
var units = []string{"medmesh-coordinator.service", "medmesh-node@.service", "medmesh-enforcer@.service"}

// configs are the example configuration files, conffiles in /etc/medmesh.
var configs = []string{"coordinator.toml", "node.toml", "enforcer.toml"}

// spec is one package to build.
type spec struct {
	Version    string    // as given; debVersion turns it into a Debian one
	Arch       string    // amd64 or arm64
	Binary     string    // medmesh built for Arch
	DocsFrom   string    // a medmesh this machine runs
	OutDir     string    // where the .deb goes
	Maintainer string    // the Maintainer field
	MTime      time.Time // every file's time, so builds of one commit are equal
}

var (
	debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	bareCommitRE = regexp.MustCompile(`^[0-9a-f]{7,40}(-dirty)?$`)
)

// debVersion turns a git describe ("v1.2.0", "v1.2.0-3-gabc123",
// "29e0321-dirty") into a Debian version: a leading v goes, hyphens
// (Debian's revision separator) become +, and a bare commit becomes
// 0.0.0~git<commit>, which sorts before any release.
func debVersion(v string) (string, error) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if v == "" {
		return "", errors.New("-version is empty")
	}
	bare := bareCommitRE.MatchString(v) || v[0] < '0' || v[0] > '9'
	v = strings.ReplaceAll(v, "-", "+")
	if bare {
		v = "0.0.0~git" + v
	}
	if !debVersionRE.MatchString(v) {
		return "", fmt.Errorf("version %q: want digits, letters and . + ~ only", v)
	}
	return v, nil
}

// fileName is the Debian file name of the package.
func fileName(version, arch string) string {
	return fmt.Sprintf("medmesh_%s_%s.deb", version, arch)
}

// build writes the package into s.OutDir and returns its path.
func build(s spec) (string, error) {
	version, err := debVersion(s.Version)
	if err != nil {
		return "", err
	}
	if s.Arch != "amd64" && s.Arch != "arm64" {
		return "", fmt.Errorf("-arch %q: want amd64 or arm64", s.Arch)
	}
	if s.Binary == "" {
		return "", errors.New("-bin is required")
	}
	if _, err := os.Stat(s.Binary); err != nil {
		return "", err
	}
	if s.Maintainer == "" {
		s.Maintainer = defaultMaintainer
	}
	if s.MTime.IsZero() {
		s.MTime = time.Now().UTC().Truncate(time.Second)
	}
	stage, err := os.MkdirTemp("", "medmesh-package-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)

	contents := files.Contents{
		file(s.Binary, "/usr/bin/medmesh", 0o755),
	}
	// Man pages and completions, from the command tree of a binary this
	// machine runs.
	man, err := manPages(s.DocsFrom, stage, s.MTime)
	if err != nil {
		return "", err
	}
	for _, m := range man {
		contents = append(contents, file(m, "/usr/share/man/man1/"+filepath.Base(m), 0o644))
	}
	for shell, dst := range map[string]string{
		"bash": "/usr/share/bash-completion/completions/medmesh",
		"zsh":  "/usr/share/zsh/vendor-completions/_medmesh",
		"fish": "/usr/share/fish/vendor_completions.d/medmesh.fish",
	} {
		out, err := run(s.DocsFrom, nil, "completion", shell)
		if err != nil {
			return "", err
		}
		p := filepath.Join(stage, "completion."+shell)
		if err := os.WriteFile(p, out, 0o644); err != nil {
			return "", err
		}
		contents = append(contents, file(p, dst, 0o644))
	}
	// The units, the example configuration and the documentation.
	for _, u := range units {
		p, err := extract(stage, "systemd/"+u)
		if err != nil {
			return "", err
		}
		contents = append(contents, file(p, "/lib/systemd/system/"+u, 0o644))
	}
	contents = append(contents, &files.Content{Destination: "/etc/medmesh", Type: files.TypeDir,
		FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: s.MTime}})
	for _, c := range configs {
		p, err := extract(stage, "etc/"+c)
		if err != nil {
			return "", err
		}
		cf := file(p, "/etc/medmesh/"+c, 0o644)
		cf.Type = files.TypeConfigNoReplace
		contents = append(contents, cf)
	}
	cp, err := extract(stage, "copyright")
	if err != nil {
		return "", err
	}
	contents = append(contents, file(cp, "/usr/share/doc/medmesh/copyright", 0o644))
	lo, err := extract(stage, "lintian/medmesh")
	if err != nil {
		return "", err
	}
	contents = append(contents, file(lo, "/usr/share/lintian/overrides/medmesh", 0o644))
	cl, err := changelog(stage, version, s.Maintainer, s.MTime)
	if err != nil {
		return "", err
	}
	contents = append(contents, file(cl, "/usr/share/doc/medmesh/changelog.gz", 0o644))
	scripts := map[string]string{}
	for _, name := range []string{"postinst", "prerm", "postrm"} {
		p, err := extract(stage, "scripts/"+name)
		if err != nil {
			return "", err
		}
		scripts[name] = p
	}
	for _, c := range contents {
		if c.FileInfo != nil && c.FileInfo.MTime.IsZero() {
			c.FileInfo.MTime = s.MTime
		}
	}

	info := &nfpm.Info{
		Name:          "medmesh",
		Arch:          s.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    s.Maintainer,
		Homepage:      "https://github.com/medmesh/medmesh",
		License:       "Apache-2.0",
		MTime:         s.MTime,
		Description: "network security for hospital medical devices\n" +
			"medmesh protects the networked medical devices of a hospital campus\n" +
			"(infusion pumps, patient monitors, imaging modalities) from the network,\n" +
			"without agents on the devices: XDP sensors identify devices and learn\n" +
			"their behaviour, a Raft-replicated coordinator cluster turns findings\n" +
			"into least-privilege policies, and inline XDP enforcers apply them. A\n" +
			"life-critical device is never blocked without an operator's approval.\n" +
			"This package holds the one binary, systemd units for the coordinator,\n" +
			"sensors and enforcers, and example configuration in /etc/medmesh.",
		Overridables: nfpm.Overridables{
			Depends:    []string{"adduser"},
			Recommends: []string{"ca-certificates"},
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: scripts["postinst"],
				PreRemove:   scripts["prerm"],
				PostRemove:  scripts["postrm"],
			},
			Deb: nfpm.Deb{Compression: "xz"},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("nfpm: %w", err)
	}
	if err := os.MkdirAll(s.OutDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(s.OutDir, fileName(version, s.Arch))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("nfpm deb: %w", err)
	}
	return path, f.Close()
}

func file(src, dst string, mode fs.FileMode) *files.Content {
	return &files.Content{Source: src, Destination: dst, Type: files.TypeFile,
		FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode}}
}

// extract writes an embedded asset into the stage directory.
func extract(stage, name string) (string, error) {
	b, err := assets.ReadFile(name)
	if err != nil {
		return "", err
	}
	p := filepath.Join(stage, "assets", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, b, 0o644)
}

// run runs the medmesh binary bin with args and returns its output.
func run(bin string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// manPages generates the man pages with `medmesh gen-man` and gzips them
// as Debian wants (-9, no name or time in the header).
func manPages(bin, stage string, mtime time.Time) ([]string, error) {
	dir := filepath.Join(stage, "man")
	if _, err := run(bin, []string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(mtime.Unix(), 10)}, "gen-man", "--dir", dir); err != nil {
		return nil, err
	}
	pages, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		return nil, err
	}
	if len(pages) == 0 {
		return nil, fmt.Errorf("%s gen-man wrote no pages", bin)
	}
	sort.Strings(pages)
	var out []string
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		gz, err := gzipBytes(b)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(p+".gz", gz, 0o644); err != nil {
			return nil, err
		}
		out = append(out, p+".gz")
	}
	return out, nil
}

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// changelog writes the package's changelog.gz: one entry for this build.
func changelog(stage, version, maintainer string, mtime time.Time) (string, error) {
	body := fmt.Sprintf("medmesh (%s) unstable; urgency=medium\n\n"+
		"  * Built by make package (deploy/package) from the medmesh repository.\n"+
		"    The history is the repository's git log.\n\n"+
		" -- %s  %s\n", version, maintainer, mtime.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	gz, err := gzipBytes([]byte(body))
	if err != nil {
		return "", err
	}
	p := filepath.Join(stage, "changelog.gz")
	return p, os.WriteFile(p, gz, 0o644)
}

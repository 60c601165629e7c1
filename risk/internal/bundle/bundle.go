// Package bundle reads, checks and writes offline intelligence bundles: a
// directory or a .tar.gz holding source files laid out by kind (csaf/,
// osv/, kev/, epss/, endoflife/, openfda/, gudid/, credentials/) and a
// manifest.json that lists every file with its kind, size, SHA-256, source
// and date. A bundle may be signed: manifest.json.sig holds the base64
// ed25519 signature of manifest.json's exact bytes, so the signature
// covers every file through its digest.
//
// Loading refuses, naming the file and the reason, a bundle whose files do
// not match the manifest (missing, extra, wrong size or SHA-256), a
// truncated or corrupt archive, and, when a public key is given, an
// unsigned bundle or a signature that does not verify. A plain directory
// without a manifest loads as an unsigned bundle whose manifest is computed
// on the spot. What the files mean is the caller's business.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside a bundle.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.json.sig"
)

// Kinds are the source directories a bundle may hold.
var Kinds = []string{"csaf", "osv", "kev", "epss", "endoflife", "openfda", "gudid", "credentials"}

// KindOther is the kind of a file outside the kind directories (a README,
// a licence): listed and checked, never parsed.
const KindOther = "other"

// Limits on what a bundle may make this process read.
const (
	MaxFileSize  = 1 << 30
	MaxTotalSize = 4 << 30
	MaxFiles     = 200_000
)

// Manifest lists every file of a bundle.
type Manifest struct {
	Format  int    `json:"format"`
	Created string `json:"created"`
	Files   []File `json:"files"`
}

// File is one manifest entry. Date is when the source published the data
// (YYYY-MM-DD or RFC 3339), empty when unknown.
type File struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Source string `json:"source,omitempty"`
	Date   string `json:"date,omitempty"`
}

// Bundle is a loaded, checked bundle.
type Bundle struct {
	Manifest Manifest
	// Raw is manifest.json as stored (computed for a plain directory).
	Raw    []byte
	Signed bool
	// Sig is manifest.json.sig as stored (nil when unsigned).
	Sig []byte
	// Computed is true when the manifest was computed from a plain
	// directory rather than read from the bundle.
	Computed bool
	files    map[string][]byte
}

// Error is a refused bundle: the file at fault (empty for the bundle as a
// whole) and why.
type Error struct {
	File   string
	Reason string
}

func (e *Error) Error() string {
	if e.File == "" {
		return e.Reason
	}
	return e.File + ": " + e.Reason
}

func refuse(file, format string, args ...any) error {
	return &Error{File: file, Reason: fmt.Sprintf(format, args...)}
}

// ErrUnsigned is the reason an unsigned bundle is refused when a key is
// configured.
var ErrUnsigned = errors.New("the bundle is not signed and an intel key is configured")

// Digest is the SHA-256 of the manifest, the bundle's identity.
func (b *Bundle) Digest() string {
	sum := sha256.Sum256(b.Raw)
	return hex.EncodeToString(sum[:])
}

// Read returns the content of a listed file.
func (b *Bundle) Read(p string) []byte { return b.files[p] }

// Load reads a bundle from a directory or a .tar.gz and checks it. With a
// non-nil key, the manifest must carry a valid signature by it.
func Load(p string, key ed25519.PublicKey) (*Bundle, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	var files map[string][]byte
	if st.IsDir() {
		files, err = readDir(p)
	} else {
		files, err = readTarGz(p)
	}
	if err != nil {
		return nil, err
	}
	return check(files, key)
}

// check verifies the manifest and signature against the files.
func check(files map[string][]byte, key ed25519.PublicKey) (*Bundle, error) {
	raw, ok := files[ManifestName]
	sig, signed := files[SignatureName]
	delete(files, ManifestName)
	delete(files, SignatureName)
	b := &Bundle{files: files, Signed: signed}
	if signed {
		b.Sig = sig
	}
	if !ok {
		if signed {
			return nil, refuse(ManifestName, "missing, but %s is there", SignatureName)
		}
		if key != nil {
			return nil, &Error{Reason: ErrUnsigned.Error() + " (a plain directory has no manifest to sign)"}
		}
		b.Manifest, b.Computed = Compute(files, time.Time{}), true
		b.Raw, _ = Marshal(b.Manifest)
		return b, nil
	}
	b.Raw = raw
	if key != nil {
		if !signed {
			return nil, &Error{File: SignatureName, Reason: ErrUnsigned.Error()}
		}
		s, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
		if err != nil || len(s) != ed25519.SignatureSize {
			return nil, refuse(SignatureName, "not a base64 ed25519 signature")
		}
		if !ed25519.Verify(key, raw, s) {
			return nil, refuse(SignatureName, "bad signature: manifest.json was not signed by the configured intel key, or was changed after signing")
		}
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, refuse(ManifestName, "%v", err)
	}
	b.Manifest = m
	listed := map[string]bool{}
	for _, f := range m.Files {
		data, ok := files[f.Path]
		if !ok {
			return nil, refuse(f.Path, "listed in the manifest, missing from the bundle")
		}
		if int64(len(data)) != f.Size {
			return nil, refuse(f.Path, "size %d, the manifest says %d (truncated or replaced)", len(data), f.Size)
		}
		if got := sha256Hex(data); got != f.SHA256 {
			return nil, refuse(f.Path, "wrong sha256: %s, the manifest says %s", got, f.SHA256)
		}
		listed[f.Path] = true
	}
	for _, p := range sortedKeys(files) {
		if !listed[p] {
			return nil, refuse(p, "in the bundle but not in the manifest")
		}
	}
	return b, nil
}

// ParseManifest reads and checks manifest.json.
func ParseManifest(raw []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("not a manifest: %w", err)
	}
	if m.Format != 1 {
		return m, fmt.Errorf("format %d, this medmesh reads format 1", m.Format)
	}
	seen := map[string]bool{}
	for i, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return m, fmt.Errorf("files[%d]: %w", i, err)
		}
		if seen[f.Path] {
			return m, fmt.Errorf("files[%d]: %s listed twice", i, f.Path)
		}
		seen[f.Path] = true
		if f.Kind != KindOf(f.Path) {
			return m, fmt.Errorf("files[%d]: %s has kind %q, its directory says %q", i, f.Path, f.Kind, KindOf(f.Path))
		}
		if len(f.SHA256) != 64 || strings.Trim(f.SHA256, "0123456789abcdef") != "" {
			return m, fmt.Errorf("files[%d]: %s: sha256 %q is not 64 lower-case hex digits", i, f.Path, f.SHA256)
		}
		if f.Size < 0 {
			return m, fmt.Errorf("files[%d]: %s: negative size", i, f.Path)
		}
	}
	return m, nil
}

// checkPath accepts clean, relative, slash-separated paths only.
func checkPath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." || strings.Contains(p, "\\") {
		return fmt.Errorf("path %q is not a clean relative path", p)
	}
	if p == ManifestName || p == SignatureName {
		return fmt.Errorf("path %q is reserved", p)
	}
	return nil
}

// KindOf is the kind of a bundle path: its first directory when that is a
// known kind.
func KindOf(p string) string {
	dir, _, ok := strings.Cut(p, "/")
	if ok && slices.Contains(Kinds, dir) {
		return dir
	}
	return KindOther
}

// Compute lists files as a manifest (no sources or dates; the caller adds
// them).
func Compute(files map[string][]byte, created time.Time) Manifest {
	m := Manifest{Format: 1}
	if !created.IsZero() {
		m.Created = created.UTC().Format(time.RFC3339)
	}
	for _, p := range sortedKeys(files) {
		m.Files = append(m.Files, File{Path: p, Kind: KindOf(p), Size: int64(len(files[p])), SHA256: sha256Hex(files[p])})
	}
	return m
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// readDir reads every regular file under dir (dot files and directories
// skipped).
func readDir(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			return refuse(rel, "not a regular file")
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxFileSize {
			return refuse(rel, "larger than %d bytes", MaxFileSize)
		}
		if total += info.Size(); total > MaxTotalSize || len(files) >= MaxFiles {
			return refuse(rel, "the bundle is larger than %d bytes or %d files", MaxTotalSize, MaxFiles)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[rel] = data
		return nil
	})
	return files, err
}

// readTarGz reads every regular file of a gzip-compressed tar archive.
func readTarGz(p string) (map[string][]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadTarGz(f, filepath.Base(p))
}

// ReadTarGz reads a .tar.gz from r; name is the archive's name for errors.
func ReadTarGz(r io.Reader, name string) (map[string][]byte, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, refuse(name, "not a gzip file: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	var total int64
	last := "(start)"
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, refuse(name, "truncated or corrupt after %s: %v", last, err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, refuse(name, "%s: not a regular file (tar type %q)", h.Name, h.Typeflag)
		}
		p := strings.TrimPrefix(h.Name, "./")
		if p != ManifestName && p != SignatureName {
			if err := checkPath(p); err != nil {
				return nil, refuse(name, "%v", err)
			}
		}
		if _, dup := files[p]; dup {
			return nil, refuse(name, "%s appears twice", p)
		}
		if h.Size > MaxFileSize {
			return nil, refuse(p, "larger than %d bytes", MaxFileSize)
		}
		if total += h.Size; total > MaxTotalSize || len(files) >= MaxFiles {
			return nil, refuse(p, "the bundle is larger than %d bytes or %d files", MaxTotalSize, MaxFiles)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			return nil, refuse(name, "truncated in %s: %v", p, err)
		}
		files[p] = data
		last = p
	}
	// The gzip trailer (CRC and length) is checked only at EOF.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, refuse(name, "corrupt gzip stream: %v", err)
	}
	return files, nil
}

// Write writes a bundle as a .tar.gz: manifest.json, the signature when
// sig is not nil, then every listed file in manifest order. The archive is
// byte-for-byte reproducible from the same inputs.
func Write(w io.Writer, m Manifest, raw, sig []byte, files map[string][]byte) error {
	mtime, _ := time.Parse(time.RFC3339, m.Created)
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	put := func(name string, data []byte) error {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(ManifestName, raw); err != nil {
		return err
	}
	if sig != nil {
		if err := put(SignatureName, sig); err != nil {
			return err
		}
	}
	for _, f := range m.Files {
		data, ok := files[f.Path]
		if !ok {
			return fmt.Errorf("%s: listed but not given", f.Path)
		}
		if err := put(f.Path, data); err != nil {
			return err
		}
	}
	return errors.Join(tw.Close(), zw.Close())
}

// ReadSources reads the files of one or more source directories laid out
// by kind into one set; the same path in two directories is an error.
// Manifest and signature files in them are ignored (a bundle directory can
// be re-bundled).
func ReadSources(dirs ...string) (map[string][]byte, error) {
	all := map[string][]byte{}
	for _, d := range dirs {
		files, err := readDir(d)
		if err != nil {
			return nil, err
		}
		for p, data := range files {
			if p == ManifestName || p == SignatureName {
				continue
			}
			if _, dup := all[p]; dup {
				return nil, refuse(p, "in more than one source directory")
			}
			all[p] = data
		}
	}
	return all, nil
}

// FromFiles wraps files already in memory, listed by m, as a bundle (to
// check them with their loaders before writing).
func FromFiles(files map[string][]byte, m Manifest) (*Bundle, error) {
	raw, err := Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Bundle{Manifest: m, Raw: raw, Computed: true, files: files}, nil
}

// Marshal writes a manifest as manifest.json.
func Marshal(m Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

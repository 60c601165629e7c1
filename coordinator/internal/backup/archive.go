// Package backup is the archive format of `medmesh snapshot save|restore`:
// a gzip-compressed tar of regular files whose last member, SHA256SUMS,
// lists the SHA-256 of every other member (the sha256sum(1) format, so an
// archive unpacked by hand can be checked with `sha256sum -c`). Extract
// refuses an archive whose members do not match it, naming the member.
package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ManifestName is the last member: the SHA-256 of every other member.
const ManifestName = "SHA256SUMS"

// Limits on what Extract accepts from an archive.
const (
	MaxFiles     = 1 << 20
	maxNameLen   = 512
	maxManifest  = 64 << 20
	manifestLine = 64 + 2 // hex digest and two spaces, then the name
)

// ErrCorrupt: the archive does not match its manifest, or is not one.
var ErrCorrupt = errors.New("snapshot archive is corrupt")

// Writer writes an archive.
type Writer struct {
	now   time.Time
	gz    *gzip.Writer
	tw    *tar.Writer
	names map[string]bool
	sums  []string
}

// NewWriter starts an archive on w.
func NewWriter(w io.Writer) *Writer {
	gz := gzip.NewWriter(w)
	return &Writer{now: time.Now().UTC().Truncate(time.Second), gz: gz, tw: tar.NewWriter(gz), names: map[string]bool{}}
}

// Add writes the member name of exactly size bytes read from r.
func (w *Writer) Add(name string, size int64, r io.Reader) error {
	if err := checkName(name); err != nil {
		return err
	}
	if name == ManifestName || w.names[name] {
		return fmt.Errorf("archive member %s: written twice", name)
	}
	w.names[name] = true
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: w.now, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("archive member %s: %w", name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w.tw, h), io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("%d of %d bytes: the file changed while it was saved", n, size)
	}
	if err != nil {
		return fmt.Errorf("archive member %s: %w", name, err)
	}
	w.sums = append(w.sums, fmt.Sprintf("%x  %s\n", h.Sum(nil), name))
	return nil
}

// AddBytes writes the member name holding b.
func (w *Writer) AddBytes(name string, b []byte) error {
	return w.Add(name, int64(len(b)), bytes.NewReader(b))
}

// AddFile writes the member name from the file at p.
func (w *Writer) AddFile(name, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return w.Add(name, fi.Size(), f)
}

// Files is how many members were written so far (without the manifest).
func (w *Writer) Files() int { return len(w.sums) }

// Close writes the manifest and ends the archive.
func (w *Writer) Close() error {
	m := []byte(strings.Join(w.sums, ""))
	err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(m)), Mode: 0o600, ModTime: w.now, Format: tar.FormatPAX})
	if err == nil {
		_, err = w.tw.Write(m)
	}
	return errors.Join(err, w.tw.Close(), w.gz.Close())
}

// checkName accepts a clean relative slash path without "..".
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen || path.Clean(name) != name || path.IsAbs(name) ||
		name == "." || strings.HasPrefix(name, "../") || name == ".." || strings.ContainsAny(name, "\\\x00\n") {
		return fmt.Errorf("archive member name %q: not a clean relative path: %w", name, ErrCorrupt)
	}
	return nil
}

// Extract unpacks the archive read from r into dir (which must exist),
// checking every member against the manifest. It returns the member names
// in archive order. On error dir may hold part of the archive: unpack into
// a directory of its own and remove it on failure.
func Extract(r io.Reader, dir string) ([]string, error) {
	gz, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return nil, fmt.Errorf("not a snapshot archive (gzip): %v: %w", err, ErrCorrupt)
	}
	tr := tar.NewReader(gz)
	got := map[string][32]byte{}
	var names []string
	var manifest []byte
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(names) == 0 {
				return nil, fmt.Errorf("reading the archive's first member: %v: %w", err, ErrCorrupt)
			}
			return nil, fmt.Errorf("reading the archive after member %s: %v: %w", names[len(names)-1], err, ErrCorrupt)
		}
		if manifest != nil {
			return nil, fmt.Errorf("archive member %s follows %s: %w", hdr.Name, ManifestName, ErrCorrupt)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("archive member %s: not a regular file: %w", hdr.Name, ErrCorrupt)
		}
		if err := checkName(hdr.Name); err != nil {
			return nil, err
		}
		if hdr.Name == ManifestName {
			if hdr.Size > maxManifest {
				return nil, fmt.Errorf("archive member %s: %d bytes: %w", ManifestName, hdr.Size, ErrCorrupt)
			}
			if manifest, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("archive member %s: %v: %w", ManifestName, err, ErrCorrupt)
			}
			continue
		}
		if _, dup := got[hdr.Name]; dup {
			return nil, fmt.Errorf("archive member %s: twice: %w", hdr.Name, ErrCorrupt)
		}
		if len(names) >= MaxFiles {
			return nil, fmt.Errorf("archive holds more than %d members: %w", MaxFiles, ErrCorrupt)
		}
		sum, err := extractOne(tr, filepath.Join(dir, filepath.FromSlash(hdr.Name)))
		if err != nil {
			return nil, fmt.Errorf("archive member %s: %w", hdr.Name, err)
		}
		got[hdr.Name] = sum
		names = append(names, hdr.Name)
	}
	if manifest == nil {
		return nil, fmt.Errorf("archive has no %s (truncated?): %w", ManifestName, ErrCorrupt)
	}
	want, err := ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		w, ok := want[n]
		if !ok {
			return nil, fmt.Errorf("archive member %s: not in %s: %w", n, ManifestName, ErrCorrupt)
		}
		if g := got[n]; g != w {
			return nil, fmt.Errorf("archive member %s: SHA-256 %x, %s says %x: %w", n, g, ManifestName, w, ErrCorrupt)
		}
	}
	keys := make([]string, 0, len(want))
	for n := range want {
		keys = append(keys, n)
	}
	slices.Sort(keys)
	for _, n := range keys {
		if _, ok := got[n]; !ok {
			return nil, fmt.Errorf("archive member %s: listed in %s but missing: %w", n, ManifestName, ErrCorrupt)
		}
	}
	return names, nil
}

// extractOne writes one member to p, returning its SHA-256.
func extractOne(r io.Reader, p string) ([32]byte, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return [32]byte{}, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		err = fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	err = errors.Join(err, f.Close()) // the caller syncs what it keeps
	return sum(h), err
}

func sum(h hash.Hash) [32]byte { return [32]byte(h.Sum(nil)) }

// ParseManifest reads SHA256SUMS: "<64 hex digits>  <name>" per line.
func ParseManifest(b []byte) (map[string][32]byte, error) {
	out := map[string][32]byte{}
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" && len(b) == 0 {
			break
		}
		if len(l) <= manifestLine || l[64:66] != "  " {
			return nil, fmt.Errorf("%s line %d: want \"<sha256>  <name>\": %w", ManifestName, i+1, ErrCorrupt)
		}
		d, err := hex.DecodeString(l[:64])
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %v: %w", ManifestName, i+1, err, ErrCorrupt)
		}
		name := l[66:]
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", ManifestName, i+1, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s line %d: %s listed twice: %w", ManifestName, i+1, name, ErrCorrupt)
		}
		out[name] = [32]byte(d)
	}
	return out, nil
}

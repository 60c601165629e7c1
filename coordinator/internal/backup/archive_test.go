package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func archive(t testing.TB, files map[string]string, order []string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, n := range order {
		if err := w.AddBytes(n, []byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var sample = map[string]string{
	"raft/state.bin":        "state bytes",
	"meta.json":             `{"format":1}`,
	"audit/00000001.seg":    `{"seq":1}` + "\n",
	"data/intel/bundles/a1": "bundle",
}
var sampleOrder = []string{"raft/state.bin", "meta.json", "audit/00000001.seg", "data/intel/bundles/a1"}

// rewrite re-packs an archive, changing members with edit (nil drops one).
func rewrite(t *testing.T, in []byte, edit func(name string, body []byte) []byte) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	gw := gzip.NewWriter(&out)
	tw := tar.NewWriter(gw)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body = edit(h.Name, body)
		if body == nil {
			continue
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	gw.Close()
	return out.Bytes()
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	names, err := Extract(bytes.NewReader(archive(t, sample, sampleOrder)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != strings.Join(sampleOrder, ",") {
		t.Fatalf("names %v", names)
	}
	for n, body := range sample {
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || string(got) != body {
			t.Fatalf("%s: %q, %v", n, got, err)
		}
	}
}

// TestCorruptArchiveNamesMember: every way an archive can be damaged is
// refused with ErrCorrupt, naming the member where one is at fault.
func TestCorruptArchiveNamesMember(t *testing.T) {
	good := archive(t, sample, sampleOrder)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"changed member": {rewrite(t, good, func(n string, b []byte) []byte {
			if n == "audit/00000001.seg" {
				return []byte(`{"seq":2}` + "\n")
			}
			return b
		}), "archive member audit/00000001.seg: SHA-256"},
		"missing member": {rewrite(t, good, func(n string, b []byte) []byte {
			if n == "data/intel/bundles/a1" {
				return nil
			}
			return b
		}), "archive member data/intel/bundles/a1: listed in SHA256SUMS but missing"},
		"unlisted member": {rewrite(t, good, func(n string, b []byte) []byte {
			if n == ManifestName {
				return bytes.Join(bytes.SplitAfter(b, []byte("\n"))[1:], nil)
			}
			return b
		}), "archive member raft/state.bin: not in SHA256SUMS"},
		"no manifest": {rewrite(t, good, func(n string, b []byte) []byte {
			if n == ManifestName {
				return nil
			}
			return b
		}), "no SHA256SUMS"},
		"truncated":   {good[:len(good)/2], "reading the archive"},
		"not gzip":    {[]byte("plain text"), "not a snapshot archive"},
		"flipped bit": {func() []byte { b := bytes.Clone(good); b[len(b)/2] ^= 0x40; return b }(), ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Extract(bytes.NewReader(c.data), t.TempDir())
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want ErrCorrupt naming %q", err, c.want)
			}
		})
	}
}

func TestUnsafeNamesRefused(t *testing.T) {
	for _, n := range []string{"../x", "/etc/passwd", "a/../../b", "a//b", "./a", ""} {
		var b bytes.Buffer
		gw := gzip.NewWriter(&b)
		tw := tar.NewWriter(gw)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Size: 1, Mode: 0o600})
		tw.Write([]byte("x"))
		tw.Close()
		gw.Close()
		dir := t.TempDir()
		if _, err := Extract(&b, filepath.Join(dir, "in")); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%q: %v", n, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
			t.Fatalf("%q escaped the directory", n)
		}
	}
}

// FuzzExtract: any input is refused or unpacked inside the directory,
// never a panic, and an accepted archive matches its manifest.
func FuzzExtract(f *testing.F) {
	f.Add(archive(f, sample, sampleOrder))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		names, err := Extract(bytes.NewReader(data), dir)
		if err != nil {
			return
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				t.Fatalf("accepted member %s not in %s: %v", n, dir, err)
			}
		}
	})
}

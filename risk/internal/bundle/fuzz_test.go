package bundle

import (
	"bytes"
	"testing"
	"time"
)

// FuzzManifest feeds the manifest parser and the archive reader hostile
// bytes: errors, never a panic, and never a path that escapes the bundle.
func FuzzManifest(f *testing.F) {
	files := map[string][]byte{"csaf/a.json": []byte("{}"), "kev/k.json": []byte("[]"), "README.md": []byte("x")}
	m := Compute(files, mustTime())
	raw, _ := Marshal(m)
	f.Add(raw)
	var tgz bytes.Buffer
	if err := Write(&tgz, m, raw, nil, files); err == nil {
		f.Add(tgz.Bytes())
	}
	f.Add([]byte(`{"format":1,"files":[{"path":"../x","kind":"other","size":1,"sha256":"00"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := ParseManifest(data); err == nil {
			for _, fl := range m.Files {
				if checkPath(fl.Path) != nil {
					t.Fatalf("accepted path %q", fl.Path)
				}
			}
		}
		got, err := ReadTarGz(bytes.NewReader(data), "fuzz.tar.gz")
		if err != nil {
			return
		}
		for p := range got {
			if p != ManifestName && p != SignatureName && checkPath(p) != nil {
				t.Fatalf("archive path %q accepted", p)
			}
		}
		if _, err := check(got, nil); err != nil {
			return
		}
	})
}

func mustTime() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }

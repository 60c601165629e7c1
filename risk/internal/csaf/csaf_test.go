package csaf

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

const shared = "../../../../shared/testdata/intel/csaf"

// TestRealAdvisories reads every CISA medical advisory of the shared data.
func TestRealAdvisories(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(shared, "*.json"))
	if len(files) == 0 {
		t.Skipf("skipped: no advisories in %s (the shared test data is absent)", shared)
	}
	start := time.Now()
	var products, vulns int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		a, err := Parse(data)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		if a.ID == "" || len(a.Products) == 0 || len(a.Vulns) == 0 {
			t.Errorf("%s: id %q, %d products, %d vulnerabilities", filepath.Base(f), a.ID, len(a.Products), len(a.Vulns))
		}
		for _, v := range a.Vulns {
			for _, id := range v.Affected {
				if a.Products[id] == nil {
					t.Errorf("%s: %s affects unknown product %s", a.ID, v.CVE, id)
				}
			}
		}
		products += len(a.Products)
		vulns += len(a.Vulns)
	}
	t.Logf("%d advisories, %d products, %d vulnerabilities in %v", len(files), products, vulns, time.Since(start))
}

package kev

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestRealCatalog(t *testing.T) {
	data, err := os.ReadFile("../../../../shared/testdata/intel/kev/known_exploited_vulnerabilities.json")
	if err != nil {
		t.Skipf("skipped: the shared KEV catalog is absent: %v", err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Entries) != 1404 || c.Version != "2025.08.25" {
		t.Fatalf("%d entries, version %s", len(c.Entries), c.Version)
	}
	if _, ok := c.Entries["CVE-2017-0144"]; !ok {
		t.Error("EternalBlue (CVE-2017-0144) is not in the catalog")
	}
	// A catalog cut short says so, by its count or by the JSON line.
	cut := bytes.Replace(data, []byte(`"count": 1404`), []byte(`"count": 1405`), 1)
	if _, err := Parse(cut); err == nil || !strings.Contains(err.Error(), "count says 1405") {
		t.Errorf("count mismatch: %v", err)
	}
	if _, err := Parse(data[:len(data)/2]); err == nil {
		t.Error("half a catalog parsed")
	}
}

package gudid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFixtureRelease(t *testing.T) {
	db := NewDB()
	for _, f := range Files {
		data, err := os.ReadFile(filepath.Join("../../testdata/intel/gudid", f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Add(f, data); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	db.Index()
	d, ok := db.Lookup("50885403801510") // a package-level DI
	if !ok || d.Model != "8015" || d.Premarket[0] != "K193012" || d.ProductCodes[0] != "FRN" {
		t.Fatalf("lookup by package DI: %+v %v", d, ok)
	}
	if _, err := NewDB().Add("device.txt", []byte("PrimaryDI|BrandName|VersionModelNumber|CompanyName\n1|a|b\n")); err == nil || !strings.Contains(err.Error(), "line 2: 3 fields") {
		t.Errorf("short row: %v", err)
	}
	if _, err := db.Add("productCodes.txt", []byte("PrimaryDI|ProductCode\n999|FRN\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("unknown DI: %v", err)
	}
}

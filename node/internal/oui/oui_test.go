package oui

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, tc := range []struct {
		mac  [6]byte
		want string
	}{
		{[6]byte{0x00, 0x00, 0x0c, 0x12, 0x34, 0x56}, "Cisco Systems, Inc"},
		{[6]byte{0xf4, 0xf5, 0xd8, 0, 0, 1}, "Google, Inc."},
		{[6]byte{0x02, 0x00, 0x0c, 0x12, 0x34, 0x56}, ""}, // locally administered
		{[6]byte{0x0a, 0x1b, 0x2c, 0, 0, 0}, ""},          // locally administered
		{[6]byte{0xff, 0xff, 0xfc, 0, 0, 0}, ""},          // locally administered bit set
		{[6]byte{}, "XEROX CORPORATION"},
	} {
		if got := Lookup(tc.mac); got != tc.want {
			t.Errorf("Lookup(% x) = %q, want %q", tc.mac, got, tc.want)
		}
	}
	if Len() < 30000 {
		t.Fatalf("table has %d prefixes, want the full MA-L registry (>30000)", Len())
	}
}

func TestTableSorted(t *testing.T) {
	for i := 1; i < len(prefixes); i++ {
		if prefixes[i-1] >= prefixes[i] {
			t.Fatalf("prefixes not strictly sorted at %d: %06x >= %06x", i, prefixes[i-1], prefixes[i])
		}
	}
	if len(vendorOf) != len(prefixes) {
		t.Fatalf("vendorOf has %d entries, prefixes %d", len(vendorOf), len(prefixes))
	}
	if int(nameEnd[len(nameEnd)-1]) != len(names) {
		t.Fatalf("last name ends at %d, names is %d bytes", nameEnd[len(nameEnd)-1], len(names))
	}
	// Every prefix resolves to a non-empty vendor.
	for i, p := range prefixes {
		mac := [6]byte{byte(p >> 16), byte(p >> 8), byte(p)}
		if mac[0]&2 != 0 {
			continue
		}
		if Lookup(mac) == "" {
			t.Fatalf("prefix %d (%06x) has no vendor", i, p)
		}
	}
}

// TestGenerateDeterministic regenerates the table from the registry and
// compares it with the committed one.
func TestGenerateDeterministic(t *testing.T) {
	const registry = "/usr/share/ieee-data/oui.csv"
	if _, err := os.Stat(registry); err != nil {
		t.Skipf("%s absent (Debian package ieee-data): %v", registry, err)
	}
	if testing.Short() {
		t.Skip("regenerating the table compiles gen.go; skipped in -short")
	}
	out := filepath.Join(t.TempDir(), "table.go")
	cmd := exec.Command("go", "run", "gen.go", "-in", registry, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("table.go")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("regenerated table.go differs from the committed one: run go generate ./node/internal/oui")
	}
}

func BenchmarkLookup(b *testing.B) {
	macs := [][6]byte{{0x00, 0x00, 0x0c, 1, 2, 3}, {0xf4, 0xf5, 0xd8, 0, 0, 1}, {0x00, 0x11, 0x22, 0, 0, 0}, {0x3c, 0xff, 0xee, 1, 1, 1}}
	b.ReportAllocs()
	n := 0
	for i := 0; b.Loop(); i++ {
		n += len(Lookup(macs[i&3]))
	}
	if n == 0 {
		b.Fatal("no vendor found")
	}
}

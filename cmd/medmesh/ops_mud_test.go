package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sharedMUD reads a third-party MUD file of ../shared/testdata/mud, and
// skips the test where it is absent.
func sharedMUD(t *testing.T, name string) []byte {
	t.Helper()
	path := filepath.Join("..", "..", "..", "shared", "testdata", "mud", name)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		t.Skipf("skipped: third-party MUD file %s absent", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestImportMUDWarningsInEveryFormat: `policies import-mud` against a real
// coordinator shows every warning in table and JSON output (JSON used to
// drop them all), the JSON goes into `policies put` as is, and a hostile
// file (a port written as a string) is refused with the value's path and
// prints no policy.
func TestImportMUDWarningsInEveryFormat(t *testing.T) {
	addr := startDevCoordinator(t)
	dir := t.TempDir()
	mud := filepath.Join(dir, "luminaire.json")
	if err := os.WriteFile(mud, sharedMUD(t, "cisco-luminaire-rfc8520.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	const mac = "00:1b:44:11:3a:b7"
	wantWarn := []string{
		"ace myctl0-frdev: ietf-mud:mud my-controller not representable; skipped",
		"ace loc0-frdev: ietf-mud:mud local-networks not representable; skipped",
	}

	code, stdout, stderr := runCLI(t, "policies", "import-mud", "--device", mac, mud, "--addr", addr, "-o", "json")
	if code != 0 {
		t.Fatalf("json: exit %d: %s", code, stderr)
	}
	var doc struct {
		Policy struct {
			Rules []struct {
				Name    string `json:"name"`
				PortMin uint32 `json:"port_min"`
			} `json:"rules"`
		} `json:"policy"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("json output: %v\n%s", err, stdout)
	}
	if len(doc.Policy.Rules) != 1 || doc.Policy.Rules[0].Name != "cl0" || doc.Policy.Rules[0].PortMin != 443 {
		t.Fatalf("json policy: %s", stdout)
	}
	for _, w := range wantWarn {
		if !strings.Contains(strings.Join(doc.Warnings, "\n"), w) {
			t.Errorf("json warnings %q lack %q", doc.Warnings, w)
		}
		if !strings.Contains(stderr, "warning: "+w) {
			t.Errorf("stderr of -o json lacks %q:\n%s", w, stderr)
		}
	}

	code, table, stderr := runCLI(t, "policies", "import-mud", "--device", mac, mud, "--addr", addr)
	if code != 0 {
		t.Fatalf("table: exit %d: %s", code, stderr)
	}
	for _, w := range wantWarn {
		if !strings.Contains(table, w) {
			t.Errorf("table output lacks %q:\n%s", w, table)
		}
	}
	if !strings.Contains(table, fmt.Sprintf("%d warnings", len(doc.Warnings))) {
		t.Errorf("table output lacks the warning count:\n%s", table)
	}

	// The JSON output is what `policies put` takes (the device is unknown
	// to this coordinator: the fake API records the request).
	imported := filepath.Join(dir, "imported.json")
	if err := os.WriteFile(imported, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	f, fakeAddr := startFake(t)
	if code, _, stderr := runCLI(t, "policies", "put", imported, "--addr", fakeAddr, "--reason", "mud import"); code != 0 {
		t.Fatalf("put the imported json: exit %d: %s", code, stderr)
	}
	f.mu.Lock()
	put := f.puts[0].GetPolicy()
	f.mu.Unlock()
	if put.GetDeviceMac() != mac || len(put.GetRules()) != 1 || put.GetRules()[0].GetPeerDnsName() != "fw-update.luminaire.example.com" {
		t.Fatalf("put policy: %v", put)
	}

	// A port written as a string used to become any port, both ways.
	hostile := strings.Replace(string(sharedMUD(t, "cisco-luminaire-rfc8520.json")), `"port": 443`, `"port": "2575"`, 1)
	if err := os.WriteFile(mud, []byte(hostile), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"json", "table"} {
		code, stdout, stderr := runCLI(t, "policies", "import-mud", "--device", mac, mud, "--addr", addr, "-o", format)
		if code == 0 || stdout != "" {
			t.Fatalf("%s: hostile MUD file: exit %d, stdout %q", format, code, stdout)
		}
		want := `ietf-access-control-list:acls/acl[0]/aces/ace[0]/matches/tcp/source-port/port: "2575" is not an integer 0..65535`
		if !strings.Contains(stderr, want) {
			t.Fatalf("%s: stderr lacks %q:\n%s", format, want, stderr)
		}
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fixtures = "../../risk/testdata/intel"

func TestRiskAssessInventory(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "inv.jsonl")
	os.WriteFile(inv, []byte(`{"name":"p1","vendor":"B. Braun","model":"Space Infusion Pump","version":"1.2.0"}
{"name":"p2","vendor":"B. Braun Medical","model":"Space Infusion Pump","version":"1.2.5","sbom":"p2.cdx.json"}
{"name":"p3","vendor":"CareFusion","udi_di":"10885403801512"}
`), 0o644)
	code, out, stderr := runCLI(t, "risk", "assess", "--intel", fixtures, "--inventory", inv, "-o", "json", "--at", "2026-12-01")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want one object per device:\n%s", len(lines), out)
	}
	var got []deviceAssessment
	for _, l := range lines {
		var a deviceAssessment
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if f := got[0].Findings; len(f) != 1 || f[0].ID != "CVE-2021-33909" || f[0].Suppressed == "" {
		t.Errorf("p1: want CVE-2021-33909 suppressed by VEX, got %+v", f)
	}
	if f := got[1].Findings; len(f) != 1 || f[0].Suppressed != "" || len(got[1].Notes) != 1 || !strings.Contains(got[1].Notes[0], "not assessed") {
		t.Errorf("p2: want the CVE and a note that the SBOM was not assessed, got %+v %v", f, got[1].Notes)
	}
	if f := got[2].Findings; len(f) == 0 || f[0].ID != "Z-0901-2026" || f[0].Confidence != "exact" {
		t.Errorf("p3: want recall Z-0901-2026 exact via GUDID, got %+v", f)
	}
	code, out, _ = runCLI(t, "risk", "assess", "--intel", fixtures, "--inventory", inv)
	if code != 0 || !strings.Contains(out, "SUPPRESSED VEX known_not_affected") || !strings.Contains(out, "CONFIDENCE") {
		t.Errorf("table: exit %d\n%s", code, out)
	}

	os.WriteFile(inv, []byte("{\"vendor\":\"BD\"}\n{\"vendr\":\"BD\"}\n"), 0o644)
	code, _, stderr = runCLI(t, "risk", "assess", "--intel", fixtures, "--inventory", inv)
	if code != exitUsage || !strings.Contains(stderr, "line 2") {
		t.Errorf("bad line: exit %d, stderr %q; want 2 and the line number", code, stderr)
	}
}

func TestIntelBundleSignVerify(t *testing.T) {
	dir := t.TempDir()
	key, other, b := filepath.Join(dir, "k"), filepath.Join(dir, "o"), filepath.Join(dir, "intel.tar.gz")
	for _, k := range []string{key, other} {
		if code, _, stderr := runCLI(t, "intel", "keygen", "--out", k); code != 0 {
			t.Fatalf("keygen: %s", stderr)
		}
	}
	if code, _, _ := runCLI(t, "intel", "keygen", "--out", key); code != exitUsage {
		t.Errorf("keygen over an existing key: exit %d, want 2", code)
	}
	if st, _ := os.Stat(key + ".key"); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode().Perm())
	}
	if code, out, stderr := runCLI(t, "intel", "bundle", fixtures, "--out", b, "--sign", key+".key"); code != 0 || !strings.Contains(out, "signed") {
		t.Fatalf("bundle: exit %d %s %s", code, out, stderr)
	}
	if code, out, stderr := runCLI(t, "intel", "verify", b, "--intel-key", key+".pub"); code != 0 || !strings.Contains(out, "signature verified") {
		t.Fatalf("verify: exit %d %s %s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, "intel", "verify", b, "--intel-key", other+".pub"); code != exitFailure || !strings.Contains(stderr, "bad signature") {
		t.Errorf("verify with another key: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "intel", "verify", fixtures, "--intel-key", key+".pub"); code != exitFailure || !strings.Contains(stderr, "not signed") {
		t.Errorf("plain directory with a key: exit %d, stderr %q", code, stderr)
	}
	code, out, stderr := runCLI(t, "intel", "status", "--intel", b, "-o", "json")
	var st struct {
		Digest  string `json:"digest"`
		Sources []struct {
			Kind  string `json:"kind"`
			Stale bool   `json:"stale"`
		} `json:"sources"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Digest) != 64 || len(st.Sources) < 5 {
		t.Fatalf("status: exit %d %s %s", code, out, stderr)
	}
}

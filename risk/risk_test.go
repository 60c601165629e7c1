package risk

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// loadAll builds a bundle of the shared public data and this package's
// fixtures (testdata/intel) and loads it, as an operator would.
var (
	allOnce  sync.Once
	allIntel *Intel
	allErr   error
)

func loadAll(t testing.TB) *Intel {
	t.Helper()
	if _, err := os.Stat(filepath.Join(sharedIntel, "csaf")); err != nil {
		t.Skipf("skipped: %s is absent (the shared test data)", sharedIntel)
	}
	allOnce.Do(func() { allIntel, allErr = buildAll(t) })
	if allErr != nil {
		t.Fatal(allErr)
	}
	return allIntel
}

func buildAll(t testing.TB) (*Intel, error) {
	if _, err := os.Stat(filepath.Join(sharedIntel, "csaf")); err != nil {
		t.Skipf("skipped: %s is absent (the shared test data)", sharedIntel)
	}
	var buf bytes.Buffer
	if _, err := WriteBundle(&buf, []string{sharedIntel, "testdata/intel"}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), nil); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "medmesh-intel")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "intel.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return Load(p, nil)
}

var at = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func find(fs []Finding, kind Kind, id string) (Finding, bool) {
	i := slices.IndexFunc(fs, func(f Finding) bool { return f.Kind == kind && f.ID == id })
	if i < 0 {
		return Finding{}, false
	}
	return fs[i], true
}

func assess(t *testing.T, in *Intel, d Device) []Finding {
	t.Helper()
	fs, err := in.Assess(d, at)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestVEXSuppresses(t *testing.T) {
	in := loadAll(t)
	// The VEX fixture's vendor is "B. Braun Melsungen AG " (trailing space).
	fs := assess(t, in, Device{Vendor: "B. Braun", Model: "Space Infusion Pump", Version: "1.2.0"})
	f, ok := find(fs, KindVulnerability, "CVE-2021-33909")
	if !ok || f.Suppressed == "" || !strings.Contains(f.Suppressed, "component_not_present") {
		t.Fatalf("1.2.0: want CVE-2021-33909 suppressed by the VEX flag, got %+v (found %v)", f, ok)
	}
	fs = assess(t, in, Device{Vendor: "B. Braun Medical", Model: "Space Infusion Pump", Version: "1.2.5"})
	f, ok = find(fs, KindVulnerability, "CVE-2021-33909")
	if !ok || f.Suppressed != "" || f.Confidence != ConfidenceRange || f.FixedVersion != "1.3.3" || f.CVSS != 7.8 ||
		!strings.Contains(f.Remediation, "Update the pump software to 1.3.3") {
		t.Fatalf("1.2.5: want CVE-2021-33909 at range, fixed 1.3.3, CVSS 7.8, remediation; got %+v (found %v)", f, ok)
	}
	if fs := assess(t, in, Device{Vendor: "B. Braun", Model: "Space Infusion Pump", Version: "1.3.3"}); len(fs) != 0 {
		t.Fatalf("1.3.3 (fixed): want no findings, got %+v", fs)
	}
	// The model number of the product identification helper finds it too.
	fs = assess(t, in, Device{Vendor: "B. Braun", Model: "8713030", Version: "1.1"})
	if f, ok := find(fs, KindVulnerability, "CVE-2021-33909"); !ok || f.Confidence != ConfidenceRange {
		t.Fatalf("model number 8713030: got %+v", fs)
	}
}

func TestRecallsEPSSKEV(t *testing.T) {
	in := loadAll(t)
	// Only a UDI-DI: GUDID gives the model and the 510(k) number.
	fs := assess(t, in, Device{Vendor: "CareFusion", UDIDI: "50885403801510", Version: "9.33"})
	r, ok := find(fs, KindRecall, "Z-0901-2026")
	if !ok || r.Confidence != ConfidenceExact || r.RecallClass != "Class I" || r.Severity != "critical" || !strings.Contains(r.Summary, "K193012") {
		t.Fatalf("recall by UDI-DI: got %+v (found %v)", r, ok)
	}
	v, ok := find(fs, KindVulnerability, "CVE-2020-25165")
	if !ok || v.EPSS != 0.00512 || v.Confidence != ConfidenceRange {
		t.Fatalf("CVE-2020-25165 with EPSS: got %+v (found %v)", v, ok)
	}
	fs = assess(t, in, Device{Vendor: "Philips", Model: "IntelliVue MX40", Version: "B.06.17"})
	if r, ok := find(fs, KindRecall, "Z-0902-2026"); !ok || r.Confidence != ConfidencePossible || r.RecallClass != "Class II" {
		t.Fatalf("recall on firm and model text: got %+v", fs)
	}
	if _, ok := find(fs, KindVulnerability, "CVE-2017-9657"); !ok {
		t.Fatalf("MX40 B.06.17 < B.06.18: want CVE-2017-9657, got %+v", fs)
	}
	if fs := assess(t, in, Device{Vendor: "Philips", Model: "IntelliVue MX40", Version: "B.06.18"}); slices.ContainsFunc(fs, func(f Finding) bool { return f.ID == "CVE-2017-9657" }) {
		t.Fatalf("MX40 B.06.18 is fixed: got %+v", fs)
	}
	fs = assess(t, in, Device{Vendor: "Siemens Healthineers", Model: "Siemens PET/CT Systems Windows 7-Based", Version: "VB10"})
	if f, ok := find(fs, KindVulnerability, "CVE-2015-1635"); !ok || !f.KEV || f.Severity != "critical" {
		t.Fatalf("KEV-listed CVE-2015-1635: got %+v (found %v)", f, ok)
	}
}

func TestEndOfLifeAndCredentials(t *testing.T) {
	in := loadAll(t)
	d := Device{Vendor: "GE Healthcare", Model: "Discovery NM 750b", Version: "1.002", OS: "Windows 7 SP1"}
	fs := assess(t, in, d)
	e, ok := find(fs, KindEndOfLife, "eol:windows/7-sp1")
	if !ok || e.EOLDate != "2020-01-14" || e.Confidence != ConfidenceExact {
		t.Fatalf("Windows 7 SP1: got %+v (found %v)", e, ok)
	}
	old, err := in.Assess(d, time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := find(old, KindEndOfLife, "eol:windows/7-sp1"); ok {
		t.Fatal("Windows 7 was supported on 2019-01-01")
	}
	for _, proto := range []string{"telnet", "ftp"} {
		c, ok := find(fs, KindDefaultCredentials, "default-credentials:"+proto+"/insite")
		if !ok || c.Account != "insite" || c.Protocol != proto {
			t.Fatalf("default credentials over %s: got %+v", proto, fs)
		}
	}
	out, _ := json.Marshal(fs)
	for _, secret := range []string{"2getin", "b312d7b33d0229471385375f433f7072e02c5e0e1a56614e90ce2e3ab3d6b909"} {
		if bytes.Contains(out, []byte(secret)) {
			t.Fatalf("findings contain the password or its hash %q", secret)
		}
	}
}

func TestAssessIsDeterministic(t *testing.T) {
	in := loadAll(t)
	d := Device{Vendor: "Philips"} // vendor only: many findings
	a := assess(t, in, d)
	for range 3 {
		if b := assess(t, in, d); !slices.Equal(a, b) {
			t.Fatal("two assessments of one device differ")
		}
	}
	if len(a) < 20 || a[0].Confidence != ConfidenceVendor {
		t.Fatalf("vendor-only Philips device: %d findings, first %+v", len(a), a[0])
	}
	for i := 1; i < len(a); i++ {
		if sevRank[a[i].Severity] > sevRank[a[i-1].Severity] {
			t.Fatalf("findings not most severe first at %d: %s after %s", i, a[i].Severity, a[i-1].Severity)
		}
	}
}

func TestReadInventory(t *testing.T) {
	good := "# a comment\n{\"mac\":\"58:46:e1:00:01:0a\",\"vendor\":\"BD\",\"model\":\"8015\"}\n\n{\"os\":\"Windows 7\"}\n"
	ds, err := ReadInventory(strings.NewReader(good))
	if err != nil || len(ds) != 2 || ds[0].Vendor != "BD" || ds[1].OS != "Windows 7" {
		t.Fatalf("got %+v, %v", ds, err)
	}
	for in, want := range map[string]string{
		"{\"vendor\":\"BD\"}\n{\"vendr\":\"BD\"}\n": "line 2",
		"{\"vendor\":\"BD\"}\n{not json\n":          "line 2",
		"{\"mac\":\"58:46:e1:00:01:0a\"}\n":         "line 1: a device needs",
		"{\"vendor\":\"BD\"} {\"vendor\":\"BD\"}\n": "line 1: more than one",
	} {
		if _, err := ReadInventory(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}

package risk

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/risk/internal/osv"
	"github.com/medmesh/medmesh/risk/internal/sbom"
)

const (
	sbomDir = "internal/sbom/testdata"
	osvDir  = "internal/osv/testdata/records"
)

var deviceSBOMs = []string{
	"ventilator-monitor.cdx.json",
	"ventilator-monitor.cdx.xml",
	"ventilator-monitor.spdx.json",
	"ventilator-monitor.spdx",
}

func readSBOM(t testing.TB, name string) *sbom.Document {
	t.Helper()
	doc, err := sbom.ReadFile(filepath.Join(sbomDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func fixtureDB(t testing.TB) *osv.DB {
	t.Helper()
	db, err := osv.Load(osvDir)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// line is a finding in one line: component, id, confidence, fixed version,
// and whether a VEX statement suppressed it.
func line(f Finding) string {
	s := fmt.Sprintf("%s %s %s fixed=%s", f.Component, f.ID, f.Confidence, f.FixedVersion)
	if f.Suppressed != "" {
		s += " SUPPRESSED"
	}
	return s
}

func lines(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, line(f))
	}
	return out
}

const (
	zlib    = "pkg:deb/debian/zlib1g@1:1.2.11.dfsg-1?arch=armhf&distro=debian-10&upstream=zlib"
	libssl  = "pkg:deb/debian/libssl1.1@1.1.1d-0%2Bdeb10u2?arch=armhf&distro=debian-10&upstream=openssl"
	pyyaml  = "pkg:pypi/pyyaml@5.3.1"
	werkzeu = "pkg:pypi/werkzeug@1.0.1"
)

// What the records in internal/osv/testdata say of the device's versions,
// read off the records by hand: "exact" where a record's versions list
// names the version, "range" where only a range holds it. PyYAML 5.3.1 is
// the fixed version of CVE-2020-1747 (PYSEC-2020-96), so that one is absent;
// gunicorn, click, six and the rest have no record in the fixtures.
var wantFindings = []string{
	libssl + " CVE-2020-1967 range fixed=1.1.1d-0+deb10u3",
	zlib + " CVE-2018-25032 range fixed=1:1.2.11.dfsg-1+deb10u1",
	zlib + " CVE-2022-37434 range fixed=1:1.2.11.dfsg-1+deb10u2",
	"pkg:pypi/flask-cors@3.0.8 CVE-2020-25032 range fixed=3.0.9",
	"pkg:pypi/flask@1.1.2 CVE-2023-30861 exact fixed=2.2.5",
	"pkg:pypi/future@0.18.2 CVE-2022-40899 exact fixed=0.18.3",
	"pkg:pypi/jinja2@2.11.1 CVE-2020-28493 exact fixed=2.11.3",
	"pkg:pypi/jinja2@2.11.1 CVE-2024-22195 range fixed=3.1.3",
	"pkg:pypi/jinja2@2.11.1 CVE-2024-56201 range fixed=3.1.5",
	pyyaml + " CVE-2020-14343 exact fixed=5.4",
	werkzeu + " CVE-2023-25577 exact fixed=2.2.3",
	werkzeu + " CVE-2023-46136 exact fixed=3.0.1",
	werkzeu + " CVE-2024-34069 range fixed=3.0.3",
}

func TestSBOMFindingsSameInEveryFormat(t *testing.T) {
	db := fixtureDB(t)
	var first []byte
	for _, name := range deviceSBOMs {
		doc := readSBOM(t, name)
		fs, skipped := SBOMFindings(doc, db)
		if got := lines(fs); !slices.Equal(got, wantFindings) {
			t.Errorf("%s:\n got %q\nwant %q", name, got, wantFindings)
		}
		for _, f := range fs {
			if f.Kind != KindVulnerability || f.Source != SourceOSV || f.Severity == "" || f.Summary == "" || f.Remediation == "" || f.Suppressed != "" {
				t.Errorf("%s: incomplete finding %+v", name, f)
			}
		}
		if len(skipped) != 1 || skipped[0].Reason != "no package URL" {
			t.Errorf("%s: skipped %+v, want the OS component that has no package URL", name, skipped)
		}
		out, _ := json.Marshal(fs)
		if first == nil {
			first = out
		} else if string(out) != string(first) {
			t.Errorf("%s: findings differ from %s:\n%s\n%s", name, deviceSBOMs[0], out, first)
		}
	}
}

func TestSBOMFindingsMergeRecordsOfOneCVE(t *testing.T) {
	fs, _ := SBOMFindings(readSBOM(t, deviceSBOMs[0]), fixtureDB(t))
	for _, f := range fs {
		if f.ID != "CVE-2020-28493" {
			continue
		}
		// GHSA-g3rq-g295-4j3m scores it; PYSEC-2021-66 lists the version.
		if f.Confidence != ConfidenceExact || f.CVSS != 5.3 || f.Severity != "medium" ||
			!strings.Contains(f.Summary, "[GHSA-g3rq-g295-4j3m, PYSEC-2021-66]") ||
			f.Remediation != "upgrade jinja2 to 2.11.3 or later" {
			t.Errorf("merged finding %+v", f)
		}
		return
	}
	t.Error("no CVE-2020-28493 finding")
}

func TestVEXSuppressesWhatItSaysAndNothingElse(t *testing.T) {
	db := fixtureDB(t)
	vex := readSBOM(t, "ventilator-monitor.vex.cdx.json")
	for _, name := range deviceSBOMs {
		fs, _ := SBOMFindings(readSBOM(t, name), db, vex)
		var suppressed []string
		for _, f := range fs {
			if f.Suppressed != "" {
				suppressed = append(suppressed, f.Component+" "+f.ID+": "+f.Suppressed)
			}
		}
		want := []string{
			// By the GHSA alias's CVE, naming the package URL with its version.
			pyyaml + " CVE-2020-14343: vex not_affected (requires_environment): yaml.load runs only on the device's own application-*.yml files; no network input reaches it",
			// Naming the package without a version: every version.
			werkzeu + " CVE-2024-34069: vex not_affected (requires_configuration): start.sh serves the app with gunicorn; the Werkzeug debugger is never enabled",
		}
		// Not suppressed: flask-cors (in_triage), flask (the statement names
		// Jinja2), and nothing for Log4Shell, which the device lacks.
		if !slices.Equal(suppressed, want) {
			t.Errorf("%s: suppressed\n %q\nwant\n %q", name, suppressed, want)
		}
		if got := lines(fs); len(got) != len(wantFindings) {
			t.Errorf("%s: VEX changed the findings themselves: %q", name, got)
		}
	}
}

func TestLaterVEXStatementWins(t *testing.T) {
	db := fixtureDB(t)
	doc := readSBOM(t, deviceSBOMs[0])
	notAffected := &sbom.Document{VEX: []sbom.Statement{{ID: "PYSEC-2023-58", State: "not_affected", Justification: "code_not_reachable", Refs: []string{"pypi-werkzeug"}}}}
	exploitable := &sbom.Document{VEX: []sbom.Statement{{ID: "CVE-2023-25577", State: "exploitable", Refs: []string{werkzeu}}}}
	suppressedOf := func(fs []Finding) string {
		for _, f := range fs {
			if f.ID == "CVE-2023-25577" {
				return f.Suppressed
			}
		}
		t.Fatal("no CVE-2023-25577 finding")
		return ""
	}
	// By record id and bom-ref: suppressed.
	if s := suppressedOf(first(SBOMFindings(doc, db, notAffected))); s != "vex not_affected (code_not_reachable)" {
		t.Errorf("record id + bom-ref: %q", s)
	}
	// A later exploitable statement takes it back.
	if s := suppressedOf(first(SBOMFindings(doc, db, notAffected, exploitable))); s != "" {
		t.Errorf("later exploitable statement: %q", s)
	}
	// A bom-ref names a component of its own document only: the SPDX
	// document has no "pypi-werkzeug".
	if s := suppressedOf(first(SBOMFindings(readSBOM(t, "ventilator-monitor.spdx.json"), db, notAffected))); s != "" {
		t.Errorf("foreign bom-ref: %q", s)
	}
}

func first(fs []Finding, _ []Skipped) []Finding { return fs }

func TestSBOMFindingsDeterministic(t *testing.T) {
	db := fixtureDB(t)
	doc := readSBOM(t, deviceSBOMs[0])
	want, _ := json.Marshal(first(SBOMFindings(doc, db)))
	rev := *doc
	rev.Components = slices.Clone(doc.Components)
	slices.Reverse(rev.Components)
	for i := 0; i < 5; i++ {
		got, _ := json.Marshal(first(SBOMFindings(&rev, db)))
		if string(got) != string(want) {
			t.Fatalf("run %d with components reversed differs:\n%s\n%s", i, got, want)
		}
	}
}

func TestSBOMFindingsSkipsWithReasons(t *testing.T) {
	doc := &sbom.Document{Components: []sbom.Component{
		{Name: "pump-fw", Version: "3.2", PURL: "pkg:generic/pump-fw@3.2"},
		{Name: "zlib", Version: "a:1", PURL: "pkg:deb/debian/zlib@a:1?distro=debian-10"},
		{Name: "flask", PURL: "pkg:pypi/flask"},
		{Name: "thing", Version: "1"},
	}}
	fs, skipped := SBOMFindings(doc, fixtureDB(t))
	if len(fs) != 0 {
		t.Errorf("findings %q", lines(fs))
	}
	var got []string
	for _, s := range skipped {
		got = append(got, s.Component+": "+s.Reason)
	}
	want := []string{
		`pkg:deb/debian/zlib@a:1?distro=debian-10: version does not parse: "a:1" in Debian:10: invalid version: failed to convert a to a number`,
		`pkg:generic/pump-fw@3.2: no OSV ecosystem for package URL type "generic"`,
		`pkg:pypi/flask: package URL "pkg:pypi/flask" has no version`,
		`thing 1: no package URL`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("skipped\n %q\nwant\n %q", got, want)
	}
}

func TestOSVMatcherFromBundleFiles(t *testing.T) {
	files := map[string][]byte{}
	paths, _ := filepath.Glob(filepath.Join(osvDir, "*.json"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files["osv/"+filepath.Base(p)] = data
	}
	vex := readSBOM(t, "ventilator-monitor.vex.cdx.json")
	m, err := NewOSVMatcherFromFiles(files, vex)
	if err != nil {
		t.Fatal(err)
	}
	if fs, err := m.MatchSBOM(Device{MAC: "00:00:00:00:00:01"}); fs != nil || err != nil {
		t.Errorf("device without an SBOM: %v, %v", fs, err)
	}
	want := first(SBOMFindings(readSBOM(t, deviceSBOMs[2]), fixtureDB(t), vex))
	sortFindings(want) // the matcher keeps them most urgent first, as Assess lists them
	for range 3 {      // the same file for many devices of one model
		got, err := m.MatchSBOM(Device{Model: "Remote Ventilator Monitor Pi", SBOM: filepath.Join(sbomDir, deviceSBOMs[2])})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lines(got), lines(want)) || got[len(got)-1].Suppressed == "" {
			t.Errorf("matcher findings\n %q\nwant\n %q", lines(got), lines(want))
		}
		got[0].ID = "changed by the caller" // must not reach the cache
	}
	var wg sync.WaitGroup // devices assessed concurrently share the cache
	for range 8 {
		wg.Go(func() {
			if got, err := m.MatchSBOM(Device{SBOM: filepath.Join(sbomDir, deviceSBOMs[0])}); err != nil || len(got) != len(want) {
				t.Errorf("concurrent match: %d findings, %v", len(got), err)
			}
		})
	}
	wg.Wait()
	_, err = m.MatchSBOM(Device{SBOM: filepath.Join(t.TempDir(), "gone.cdx.json")})
	if err == nil || !strings.Contains(err.Error(), "gone.cdx.json") {
		t.Errorf("missing SBOM: %v", err)
	}
	if _, err := NewOSVMatcherFromFiles(map[string][]byte{"osv/notes.txt": []byte("x")}); err == nil || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("a file that is no OSV data: %v", err)
	}
	if _, err := NewOSVMatcherFromFiles(map[string][]byte{"osv/PyPI/all.zip": []byte("PK\x03\x04 cut short")}); err == nil || !strings.Contains(err.Error(), "truncated or corrupt zip") {
		t.Errorf("truncated archive: %v", err)
	}
}

// A bundle that carries OSV records assesses a device's SBOM through Load
// alone: the path `medmesh risk assess` and the coordinator take.
func TestLoadedBundleAssessesSBOMs(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "osv"), 0o755); err != nil {
		t.Fatal(err)
	}
	paths, _ := filepath.Glob(filepath.Join(osvDir, "*.json"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "osv", filepath.Base(p)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "intel.tar.gz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteBundle(f, []string{src}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	in, err := Load(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := Device{Model: "Remote Ventilator Monitor Pi", SBOM: filepath.Join(sbomDir, deviceSBOMs[0])}
	if !in.SBOMAssessed(d) {
		t.Fatal("a bundle with OSV records leaves SBOMs unassessed")
	}
	got, err := in.Assess(d, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	want := first(SBOMFindings(readSBOM(t, deviceSBOMs[0]), fixtureDB(t)))
	var fromOSV []Finding
	for _, f := range got {
		if f.Source == SourceOSV {
			fromOSV = append(fromOSV, f)
		}
	}
	// Assess orders a device's findings its own way; compare as sets.
	g, w := lines(fromOSV), lines(want)
	slices.Sort(g)
	slices.Sort(w)
	if len(w) == 0 || !slices.Equal(g, w) {
		t.Errorf("assess via the bundle\n %q\nwant\n %q", g, w)
	}
}

// plainMatcher hides OSVMatcher's sorted findings: Assess then copies and
// sorts, the path of any other SBOMMatcher.
type plainMatcher struct{ m *OSVMatcher }

func (p plainMatcher) MatchSBOM(d Device) ([]Finding, error) { return p.m.MatchSBOM(d) }

// Assess merges a model's shared, sorted SBOM findings with the device's
// own findings; the result is exactly what sorting them all gives.
func TestAssessMergesSBOMFindings(t *testing.T) {
	base := loadAll(t)
	db := fixtureDB(t)
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	vex := readSBOM(t, "ventilator-monitor.vex.cdx.json")
	for i, d := range benchInventory(base, 40) {
		d.OS = "Windows 7 SP1"
		d.SBOM = filepath.Join(sbomDir, deviceSBOMs[i%len(deviceSBOMs)])
		merged, sorted := *base, *base
		merged.UseSBOM(NewOSVMatcher(db, vex))
		sorted.UseSBOM(plainMatcher{NewOSVMatcher(db, vex)})
		got, err := merged.Assess(d, at)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sorted.Assess(d, at)
		if err != nil {
			t.Fatal(err)
		}
		osvN := 0
		for _, f := range got {
			if f.Source == SourceOSV {
				osvN++
			}
		}
		if osvN == 0 || osvN == len(got) {
			t.Fatalf("device %d: %d findings, %d from the SBOM: want both kinds", i, len(got), osvN)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("device %d: merged\n %q\nsorted\n %q", i, lines(got), lines(want))
		}
	}
}

package risk

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/risk/internal/osv"
	"github.com/medmesh/medmesh/risk/internal/sbom"
)

// benchEcosystems are the ecosystems of the generated corpus: the package
// URL of a package and version, and how a version is written there.
var benchEcosystems = []struct {
	eco    string
	purl   func(name, version string) string
	format func(r *rand.Rand, v [3]int, epoch int) string
}{
	{"PyPI", func(n, v string) string { return "pkg:pypi/" + n + "@" + v }, dotted},
	{"npm", func(n, v string) string { return "pkg:npm/" + n + "@" + v }, dotted},
	{"Maven", func(n, v string) string {
		return "pkg:maven/org.bench." + strings.ReplaceAll(n, "-", ".") + "/" + n + "@" + v
	}, dotted},
	{"Go", func(n, v string) string { return "pkg:golang/example.com/" + n + "@v" + v }, dotted},
	{"Debian:12", func(n, v string) string {
		return "pkg:deb/debian/" + n + "@" + strings.ReplaceAll(v, "+", "%2B") + "?arch=amd64&distro=debian-12"
	}, func(r *rand.Rand, v [3]int, epoch int) string {
		s := dotted(r, v, 0) + fmt.Sprintf("-%d", 1+r.Intn(4))
		if epoch > 0 {
			s = fmt.Sprintf("%d:%s", epoch, s)
		}
		if r.Intn(4) == 0 {
			s += fmt.Sprintf("+deb12u%d", 1+r.Intn(3))
		}
		return s
	}},
}

func dotted(_ *rand.Rand, v [3]int, _ int) string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

func randVersion(r *rand.Rand) [3]int { return [3]int{r.Intn(6), r.Intn(20), r.Intn(15)} }

// versionPair is two different versions, lower first (a Debian package
// keeps one epoch for both; one in ten has epoch 1).
func versionPair(r *rand.Rand, format func(*rand.Rand, [3]int, int) string) (string, string, bool) {
	a, b := randVersion(r), randVersion(r)
	if a == b {
		return "", "", false
	}
	if slices.Compare(a[:], b[:]) > 0 {
		a, b = b, a
	}
	epoch := 0
	if r.Intn(10) == 0 {
		epoch = 1
	}
	return format(r, a, epoch), format(r, b, epoch), true
}

// osvName is the package's name in OSV for the ecosystem.
func osvName(eco, n string) string {
	switch eco {
	case "Maven":
		return "org.bench." + strings.ReplaceAll(n, "-", ".") + ":" + n
	case "Go":
		return "example.com/" + n
	}
	return n
}

// benchCorpus is a generated OSV database and set of SBOMs for the
// 10,000-device benchmark: realistic shapes (several records per
// vulnerable package, multi-range records, versions lists, last_affected,
// Debian epochs), made from a fixed seed so every run matches the same
// data. The database is written as osv.dev's per-ecosystem all.zip files
// under dir/osv-scanner/<ecosystem>/ (the layout osv-scanner's offline mode
// reads; linked under dir/osv-scalibr/ too), the SBOMs as CycloneDX 1.5
// JSON under dir/sboms/.
type benchCorpus struct {
	dir     string
	zips    []string
	sboms   []string
	records int
}

func makeBenchCorpus(tb testing.TB, dir string, nSBOMs, nComponents, pkgsPerEco int) benchCorpus {
	tb.Helper()
	r := rand.New(rand.NewSource(18))
	c := benchCorpus{dir: dir}
	type pkg struct {
		eco, name  string
		vulnerable bool
	}
	var pool []pkg
	byEco := map[string][]*osv.Record{}
	for ei, e := range benchEcosystems {
		for i := range pkgsPerEco {
			p := pkg{eco: e.eco, name: fmt.Sprintf("bench-%s-%04d", strings.ToLower(e.eco[:2]), i), vulnerable: i%3 == 0}
			pool = append(pool, p)
			if !p.vulnerable {
				continue
			}
			for k := range 1 + r.Intn(6) {
				lo, hi, ok := versionPair(r, e.format)
				if !ok {
					continue
				}
				a := osv.Affected{Package: osv.Package{Ecosystem: e.eco, Name: osvName(e.eco, p.name)}}
				rg := osv.Range{Type: "ECOSYSTEM"}
				if e.eco == "Go" || e.eco == "npm" {
					rg.Type = "SEMVER"
				}
				switch r.Intn(10) {
				case 0:
					rg.Events = []osv.Event{{Introduced: "0"}, {LastAffected: hi}}
				case 1:
					rg.Events = []osv.Event{{Introduced: "0"}, {Fixed: lo}, {Introduced: hi}}
				default:
					rg.Events = []osv.Event{{Introduced: lo}, {Fixed: hi}}
				}
				a.Ranges = []osv.Range{rg}
				if r.Intn(5) == 0 {
					for range 20 + r.Intn(30) {
						a.Versions = append(a.Versions, e.format(r, randVersion(r), 0))
					}
				}
				id := fmt.Sprintf("BENCH-%d-%05d-%d", ei, i, k)
				byEco[e.eco] = append(byEco[e.eco], &osv.Record{
					SchemaVersion: "1.6.0", ID: id, Modified: "2026-12-01T00:00:00Z",
					Aliases:  []string{fmt.Sprintf("CVE-2026-%d%05d%d", ei, i, k)},
					Summary:  "generated record for the benchmark",
					Severity: []osv.Severity{{Type: "CVSS_V3", Score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}},
					Affected: []osv.Affected{a},
				})
			}
		}
	}
	for eco, recs := range byEco {
		base, _, _ := strings.Cut(eco, ":")
		path := filepath.Join(dir, "osv-scanner", base, "all.zip")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		zw := zip.NewWriter(f)
		for _, rec := range recs {
			w, err := zw.Create(rec.ID + ".json")
			if err != nil {
				tb.Fatal(err)
			}
			if err := json.NewEncoder(w).Encode(rec); err != nil {
				tb.Fatal(err)
			}
		}
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		f.Close()
		// osv-scanner up to 2.6 reads <dir>/osv-scanner/<ecosystem>/all.zip;
		// later releases read <dir>/osv-scalibr/…: give both the same file.
		alt := filepath.Join(dir, "osv-scalibr", base)
		if err := os.MkdirAll(alt, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.Link(path, filepath.Join(alt, "all.zip")); err != nil && !os.IsExist(err) {
			tb.Fatal(err)
		}
		c.zips = append(c.zips, path)
		c.records += len(recs)
	}
	slices.Sort(c.zips)

	if err := os.MkdirAll(filepath.Join(dir, "sboms"), 0o755); err != nil {
		tb.Fatal(err)
	}
	for s := range nSBOMs {
		var comps []map[string]any
		seen := map[string]bool{}
		for len(comps) < nComponents {
			p := pool[r.Intn(len(pool))]
			if seen[p.eco+p.name] {
				continue
			}
			seen[p.eco+p.name] = true
			var e = benchEcosystems[0]
			for _, x := range benchEcosystems {
				if x.eco == p.eco {
					e = x
				}
			}
			epoch := 0
			if r.Intn(10) == 0 {
				epoch = 1
			}
			v := e.format(r, randVersion(r), epoch)
			comps = append(comps, map[string]any{
				"bom-ref": fmt.Sprintf("c%d", len(comps)), "type": "library",
				"name": p.name, "version": v, "purl": e.purl(p.name, v),
			})
		}
		bom := map[string]any{
			"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
			"metadata": map[string]any{"component": map[string]any{
				"type": "device", "name": fmt.Sprintf("Bench Model %03d", s), "version": "1.0",
				"manufacturer": map[string]any{"name": "Bench Medical"}}},
			"components": comps,
		}
		path := filepath.Join(dir, "sboms", fmt.Sprintf("model-%03d.cdx.json", s))
		data, _ := json.Marshal(bom)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			tb.Fatal(err)
		}
		c.sboms = append(c.sboms, path)
	}
	return c
}

// BenchmarkSBOMMatch matches SBOMs of 500 components against a generated
// OSV database (5 ecosystems, 2,000 packages each, a third of them with 1-6
// records) and, when osv-scanner is on PATH (make bench-risk installs it),
// runs osv-scanner offline on the same SBOM files and the same all.zip
// files in the same run. MEDMESH_BENCH_SBOMS sets how many SBOMs (default
// 20); MEDMESH_BENCH_CORPUS keeps the corpus in that directory.
func BenchmarkSBOMMatch(b *testing.B) {
	n := 20
	if s := os.Getenv("MEDMESH_BENCH_SBOMS"); s != "" {
		fmt.Sscan(s, &n)
	}
	// The benchmark function runs more than once (b.N = 1, then the
	// requested count); the corpus and the peer's run are made once.
	if benchState.c.dir == "" {
		dir := os.Getenv("MEDMESH_BENCH_CORPUS")
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", "medmesh-bench-sbom-"); err != nil {
				b.Fatal(err)
			}
			benchState.cleanup = dir
		}
		benchState.c = makeBenchCorpus(b, dir, n, 500, 2000)
	}
	c, dir := benchState.c, benchState.c.dir

	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	t0 := time.Now()
	db, err := osv.Load(c.zips...)
	if err != nil {
		b.Fatal(err)
	}
	loadDB := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	docs := make([]*sbom.Document, len(c.sboms))
	t1 := time.Now()
	for i, p := range c.sboms {
		if docs[i], err = sbom.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	}
	parse := time.Since(t1)

	findings := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		findings = 0
		for _, d := range docs {
			fs, _ := SBOMFindings(d, db)
			findings += len(fs)
		}
	}
	b.StopTimer()
	matchPerSBOM := time.Duration(int64(b.Elapsed()) / int64(b.N) / int64(len(docs)))
	medmeshTotal := loadDB + parse + matchPerSBOM*time.Duration(len(docs))
	b.ReportMetric(float64(db.Stats().Records), "osv-records")
	b.ReportMetric(float64(findings)/float64(len(docs)), "findings/sbom")
	b.ReportMetric(float64(matchPerSBOM.Microseconds())/1000, "match-ms/sbom")
	b.ReportMetric(float64(parse.Microseconds())/1000/float64(len(docs)), "parse-ms/sbom")
	b.ReportMetric(float64(loadDB.Milliseconds()), "load-db-ms")
	b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/(1<<20), "db-heap-MiB")
	b.ReportMetric(float64(medmeshTotal.Milliseconds()), "medmesh-total-ms")

	if benchState.peerTotal == 0 && benchState.peerErr == "" {
		benchState.peerTotal, benchState.peerFindings, benchState.peerErr = runOSVScanner(b, c, dir)
	}
	if benchState.peerErr != "" {
		b.Log(benchState.peerErr)
		return
	}
	b.ReportMetric(float64(benchState.peerTotal.Milliseconds()), "osv-scanner-total-ms")
	b.ReportMetric(float64(benchState.peerFindings)/float64(len(docs)), "osv-scanner-findings/sbom")
	if benchState.peerFindings != findings {
		b.Logf("the tools disagree: osv-scanner reports %d findings, medmesh %d", benchState.peerFindings, findings)
	}
	b.ReportMetric(float64(benchState.peerTotal)/float64(medmeshTotal), "osv-scanner/medmesh-total")
}

var benchState struct {
	c            benchCorpus
	cleanup      string
	peerTotal    time.Duration
	peerFindings int
	peerErr      string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchState.cleanup != "" {
		os.RemoveAll(benchState.cleanup)
	}
	os.Exit(code)
}

// runOSVScanner scans the corpus's SBOMs with osv-scanner in offline mode
// against the corpus's all.zip files, in one invocation, and counts the
// vulnerabilities it reports per package.
func runOSVScanner(b *testing.B, c benchCorpus, dir string) (time.Duration, int, string) {
	peer, err := exec.LookPath("osv-scanner")
	if err != nil {
		return 0, 0, fmt.Sprintf("osv-scanner not on PATH, no peer comparison: %v (make bench-risk installs it)", err)
	}
	args := []string{"scan", "source", "--offline", "--format", "json"}
	for _, p := range c.sboms {
		args = append(args, "-L", p)
	}
	cmd := exec.Command(peer, args...)
	cmd.Env = append(os.Environ(), "OSV_SCANNER_LOCAL_DB_CACHE_DIRECTORY="+dir)
	var out strings.Builder
	cmd.Stdout = &out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t2 := time.Now()
	err = cmd.Run()
	peerTotal := time.Since(t2)
	// osv-scanner exits 1 when it finds vulnerabilities.
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		return 0, 0, fmt.Sprintf("osv-scanner failed: %v\n%s", err, stderr.String())
	}
	var res struct {
		Results []struct {
			Packages []struct {
				Vulnerabilities []struct{ ID string } `json:"vulnerabilities"`
			} `json:"packages"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		return 0, 0, fmt.Sprintf("osv-scanner output is not its JSON: %v\n%s", err, stderr.String())
	}
	peerFindings := 0
	for _, r := range res.Results {
		for _, p := range r.Packages {
			peerFindings += len(p.Vulnerabilities)
		}
	}
	return peerTotal, peerFindings, ""
}

//go:build linux

package risk

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchModels reads testdata/bench/components.txt.gz: the component lists
// (Go module, version) of the benchmark's device models, each from the
// go.mod files two real products published at one date (see
// testdata/bench/README.md).
func benchModels(tb testing.TB) (heads []string, models [][][2]string) {
	tb.Helper()
	f, err := os.Open("testdata/bench/components.txt.gz")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "# "); ok {
			heads = append(heads, h)
			models = append(models, nil)
			continue
		}
		mod, ver, ok := strings.Cut(line, " ")
		if !ok || len(models) == 0 {
			tb.Fatalf("components.txt.gz: bad line %q", line)
		}
		models[len(models)-1] = append(models[len(models)-1], [2]string{mod, ver})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return heads, models
}

// writeModelSBOM writes a CycloneDX 1.5 JSON SBOM of one model's Go
// modules, with the package URLs syft writes for them (pkg:golang/<module
// path>@<version>).
func writeModelSBOM(path, vendor, model, version, head string, comps [][2]string) error {
	cs := make([]map[string]any, len(comps))
	for i, c := range comps {
		cs[i] = map[string]any{
			"bom-ref": fmt.Sprintf("c%d", i), "type": "library",
			"name": c[0], "version": c[1], "purl": "pkg:golang/" + c[0] + "@" + c[1],
		}
	}
	bom := map[string]any{
		"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
		"metadata": map[string]any{"component": map[string]any{
			"type": "device", "name": model, "version": version, "description": head,
			"manufacturer": map[string]any{"name": vendor}}},
		"components": cs,
	}
	data, err := json.Marshal(bom)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// procRun is one run of an external command: wall time, CPU time (user +
// system) and peak resident memory, from the kernel's accounting of the
// child.
type procRun struct {
	wall, cpu time.Duration
	maxRSS    int64 // bytes
}

// The kernel's peak RSS of a process started from this one counts this
// process's own peak (at exec, a child started with CLONE_VM takes its
// parent's high-water mark as a floor), and this process holds the
// corpus. So runMeasured starts this test binary again as a small
// launcher (MEDMESH_BENCH_LAUNCH names a file), which runs the command as
// its own child and writes that child's wall time, CPU time and peak RSS:
// its floor is the launcher's few MiB, below anything measured here.
func init() {
	out := os.Getenv("MEDMESH_BENCH_LAUNCH")
	if out == "" || len(os.Args) < 2 {
		return
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "MEDMESH_BENCH_LAUNCH=") })
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(125)
		}
		code = ee.ExitCode()
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	res := fmt.Sprintf("%d %d %d\n", wall.Nanoseconds(), ru.Utime.Nano()+ru.Stime.Nano(), ru.Maxrss)
	if err := os.WriteFile(out, []byte(res), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(code)
}

func runMeasured(tb testing.TB, stdout string, env []string, okCodes []int, name string, args ...string) procRun {
	tb.Helper()
	out, err := os.Create(stdout)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	usage := stdout + ".rusage"
	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = out, &stderr
	cmd.Env = append(os.Environ(), append(env, "MEDMESH_BENCH_LAUNCH="+usage)...)
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || !slices.Contains(okCodes, ee.ExitCode())) {
		tb.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args[:min(len(args), 6)], " "), err, stderr.String())
	}
	var wall, cpu, maxRSS int64
	raw, err := os.ReadFile(usage)
	if err == nil {
		_, err = fmt.Sscan(string(raw), &wall, &cpu, &maxRSS)
	}
	if err != nil {
		tb.Fatalf("%s: the launcher's usage: %v", name, err)
	}
	return procRun{wall: time.Duration(wall), cpu: time.Duration(cpu), maxRSS: maxRSS * 1024} // Linux reports KiB
}

// assessCorpus is what BenchmarkRiskAssess runs on, written once.
type assessCorpus struct {
	dir                 string
	bundle, osvBundle   string // .tar.gz: everything; the OSV records alone
	inventory, sbomOnly string // JSON Lines: 10,000 devices; one device per SBOM
	sboms               []string
	osvDB               string // OSV_SCANNER_LOCAL_DB_CACHE_DIRECTORY
	devices, components int
}

func makeAssessCorpus(b *testing.B, dir string, nDevices int) assessCorpus {
	c := assessCorpus{dir: dir}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	write := func(name string, dirs ...string) string {
		var buf bytes.Buffer
		if _, err := WriteBundle(&buf, dirs, at, nil); err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	c.bundle = write("intel.tar.gz", sharedIntel, "testdata/intel", "testdata/bench/intel")
	c.osvBundle = write("osv-only.tar.gz", "testdata/bench/intel")

	// osv-scanner's offline database: <dir>/osv-scanner/<ecosystem>/all.zip
	// up to 2.6, <dir>/osv-scalibr/<ecosystem>/all.zip after; the same file.
	zip, err := os.ReadFile("testdata/bench/intel/osv/Go/all.zip")
	if err != nil {
		b.Fatal(err)
	}
	c.osvDB = filepath.Join(dir, "osvdb")
	for _, sub := range []string{"osv-scanner", "osv-scalibr"} {
		p := filepath.Join(c.osvDB, sub, "Go", "all.zip")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, zip, 0o644); err != nil {
			b.Fatal(err)
		}
	}

	// 10,000 devices of 200 models (vendor, product, version of the real
	// advisories; a quarter with an OS), model i with SBOM i.
	devices := benchInventory(loadAll(b), nDevices)
	heads, comps := benchModels(b)
	if err := os.MkdirAll(filepath.Join(dir, "sboms"), 0o755); err != nil {
		b.Fatal(err)
	}
	type key struct{ v, m, ver string }
	index := map[key]int{}
	var inv, only bytes.Buffer
	for i := range devices {
		d := &devices[i]
		k := key{d.Vendor, d.Model, d.Version}
		n, ok := index[k]
		if !ok {
			n = len(index)
			if n >= len(comps) {
				b.Fatalf("%d device models, %d component lists", n+1, len(comps))
			}
			index[k] = n
			p := filepath.Join(dir, "sboms", fmt.Sprintf("model-%03d.cdx.json", n))
			if err := writeModelSBOM(p, d.Vendor, d.Model, d.Version, heads[n], comps[n]); err != nil {
				b.Fatal(err)
			}
			c.sboms = append(c.sboms, p)
			c.components += len(comps[n])
			j, _ := json.Marshal(Device{Name: fmt.Sprintf("model-%03d", n), SBOM: p})
			only.Write(append(j, '\n'))
		}
		d.SBOM = c.sboms[n]
		j, _ := json.Marshal(d)
		inv.Write(append(j, '\n'))
	}
	c.devices = len(devices)
	c.inventory, c.sbomOnly = filepath.Join(dir, "inventory.jsonl"), filepath.Join(dir, "sbom-models.jsonl")
	if err := os.WriteFile(c.inventory, inv.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(c.sbomOnly, only.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	return c
}

// medmeshBinary is MEDMESH_BIN, or cmd/medmesh built into dir.
func medmeshBinary(b *testing.B, dir string) string {
	if p := os.Getenv("MEDMESH_BIN"); p != "" {
		return p
	}
	p := filepath.Join(dir, "medmesh")
	out, err := exec.Command("go", "build", "-o", p, "../cmd/medmesh").CombinedOutput()
	if err != nil {
		b.Fatalf("go build ../cmd/medmesh: %v\n%s", err, out)
	}
	return p
}

// assessCounts reads `risk assess -o json`: devices, findings, and the
// findings from SBOM components (vulnerability, source osv).
func assessCounts(b *testing.B, path string) (devices, findings, sbomFindings int) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	for {
		var a struct {
			Findings []Finding `json:"findings"`
			Notes    []string  `json:"notes"`
		}
		if err := dec.Decode(&a); err != nil {
			if err.Error() == "EOF" {
				return
			}
			b.Fatalf("%s: %v", path, err)
		}
		if len(a.Notes) > 0 {
			b.Fatalf("%s: a device was not fully assessed: %v", path, a.Notes)
		}
		devices++
		findings += len(a.Findings)
		for _, x := range a.Findings {
			if x.Source == SourceOSV {
				sbomFindings++
			}
		}
	}
}

// scannerCounts reads osv-scanner's JSON: (package, vulnerability) pairs,
// and the alias groups, which is what medmesh reports once (records naming
// one CVE merge into one finding).
func scannerCounts(b *testing.B, path string) (vulns, groups int) {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var res struct {
		Results []struct {
			Packages []struct {
				Vulnerabilities []struct{ ID string } `json:"vulnerabilities"`
				Groups          []struct {
					IDs []string `json:"ids"`
				} `json:"groups"`
			} `json:"packages"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		b.Fatalf("osv-scanner output is not its JSON: %v", err)
	}
	for _, r := range res.Results {
		for _, p := range r.Packages {
			vulns += len(p.Vulnerabilities)
			groups += len(p.Groups)
		}
	}
	return vulns, groups
}

func median(d []procRun, f func(procRun) float64) float64 {
	v := make([]float64, len(d))
	for i, r := range d {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// BenchmarkRiskAssess runs the medmesh binary's `risk assess -o json` as an
// operator would: 10,000 devices of 200 models, each model with an SBOM of
// 500 Go modules (real component lists, testdata/bench), against a bundle of
// the real shared data, the fixtures and the Go vulnerability database's
// 4,291 OSV records. In the same run, on the same 200 SBOM files and the
// same records (osv.dev's all.zip layout), osv-scanner offline: one
// invocation for all 200, against medmesh assessing one device per SBOM
// with a bundle of the OSV records alone. Wall time, CPU time (user +
// system) and peak RSS of each process, medians of MEDMESH_BENCH_ROUNDS
// rounds (default 3), the three commands alternating. MEDMESH_BIN names
// the medmesh binary (default: build ../cmd/medmesh); osv-scanner is taken
// from PATH (make bench-risk installs it in bin/); MEDMESH_BASELINE_BIN, a
// second medmesh binary (main's, say), is run on the 10,000 devices in
// each round too and must print the same bytes; MEDMESH_BENCH_CORPUS
// keeps the corpus in that directory. Run with -benchtime 1x.
func BenchmarkRiskAssess(b *testing.B) {
	rounds := 3
	if s := os.Getenv("MEDMESH_BENCH_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	dir := os.Getenv("MEDMESH_BENCH_CORPUS")
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	c := makeAssessCorpus(b, dir, 10_000)
	bin := medmeshBinary(b, dir)
	peer, peerErr := exec.LookPath("osv-scanner")
	b.Logf("corpus: %d devices, %d SBOMs, %d components; medmesh %s; osv-scanner %v", c.devices, len(c.sboms), c.components, bin, peer)

	assess := func(bundle, inv, out string) procRun {
		return runMeasured(b, out, nil, []int{0}, bin, "risk", "assess", "--intel", bundle, "--inventory", inv, "-o", "json", "--at", "2026-12-01")
	}
	scannerArgs := []string{"scan", "source", "--offline", "--format", "json"}
	for _, p := range c.sboms {
		scannerArgs = append(scannerArgs, "-L", p)
	}
	baseline := os.Getenv("MEDMESH_BASELINE_BIN")
	var full, sboms, scanner, base []procRun
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			fullOut, sbomOut, peerOut := filepath.Join(dir, "full.json"), filepath.Join(dir, "sboms.json"), filepath.Join(dir, "osv-scanner.json")
			full = append(full, assess(c.bundle, c.inventory, fullOut))
			if baseline != "" {
				baseOut := filepath.Join(dir, "baseline.json")
				base = append(base, runMeasured(b, baseOut, nil, []int{0}, baseline, "risk", "assess", "--intel", c.bundle, "--inventory", c.inventory, "-o", "json", "--at", "2026-12-01"))
				if !sameFile(b, fullOut, baseOut) {
					b.Fatalf("%s and the baseline %s print different assessments of the same inventory", bin, baseline)
				}
			}
			sboms = append(sboms, assess(c.osvBundle, c.sbomOnly, sbomOut))
			if peerErr == nil {
				// osv-scanner exits 1 when it finds vulnerabilities.
				scanner = append(scanner, runMeasured(b, peerOut, []string{"OSV_SCANNER_LOCAL_DB_CACHE_DIRECTORY=" + c.osvDB}, []int{0, 1}, peer, scannerArgs...))
			}
			if r > 0 {
				continue
			}
			nd, nf, nsf := assessCounts(b, fullOut)
			if nd != c.devices {
				b.Fatalf("risk assess printed %d devices, want %d", nd, c.devices)
			}
			md, _, msf := assessCounts(b, sbomOut)
			b.ReportMetric(float64(nf), "findings")
			b.ReportMetric(float64(nsf), "sbom-findings")
			b.ReportMetric(float64(msf), "medmesh-findings/200-sboms")
			b.Logf("full: %d devices, %d findings (%d from SBOMs); SBOMs alone: %d devices, %d findings", nd, nf, nsf, md, msf)
			if peerErr == nil {
				v, g := scannerCounts(b, peerOut)
				b.ReportMetric(float64(g), "osv-scanner-groups/200-sboms")
				b.Logf("osv-scanner: %d (package, vulnerability) pairs in %d alias groups", v, g)
			}
		}
	}
	b.StopTimer()
	wall := func(r procRun) float64 { return r.wall.Seconds() }
	cpu := func(r procRun) float64 { return r.cpu.Seconds() }
	rss := func(r procRun) float64 { return float64(r.maxRSS) / (1 << 20) }
	for i := range full {
		line := fmt.Sprintf("round %d: assess 10,000 %.2fs wall %.2fs cpu %.0f MiB; 200 SBOMs %.2fs wall %.2fs cpu %.0f MiB",
			i+1, wall(full[i]), cpu(full[i]), rss(full[i]), wall(sboms[i]), cpu(sboms[i]), rss(sboms[i]))
		if i < len(base) {
			line += fmt.Sprintf("; baseline assess 10,000 %.2fs wall %.2fs cpu %.0f MiB", wall(base[i]), cpu(base[i]), rss(base[i]))
		}
		if i < len(scanner) {
			line += fmt.Sprintf("; osv-scanner %.2fs wall %.2fs cpu %.0f MiB", wall(scanner[i]), cpu(scanner[i]), rss(scanner[i]))
		}
		b.Log(line)
	}
	b.ReportMetric(median(full, wall), "assess-wall-s")
	b.ReportMetric(median(full, cpu), "assess-cpu-s")
	b.ReportMetric(median(full, rss), "assess-maxrss-MiB")
	b.ReportMetric(median(sboms, wall), "sboms-wall-s")
	b.ReportMetric(median(sboms, cpu), "sboms-cpu-s")
	b.ReportMetric(median(sboms, rss), "sboms-maxrss-MiB")
	if len(base) > 0 {
		b.ReportMetric(median(base, wall), "baseline-assess-wall-s")
		b.ReportMetric(median(base, cpu), "baseline-assess-cpu-s")
		b.ReportMetric(median(base, rss), "baseline-assess-maxrss-MiB")
		b.ReportMetric(medianRatio(base, full, wall), "baseline/medmesh-wall")
		b.ReportMetric(medianRatio(base, full, cpu), "baseline/medmesh-cpu")
		b.ReportMetric(medianRatio(base, full, rss), "baseline/medmesh-maxrss")
	}
	if peerErr != nil {
		b.Logf("osv-scanner not on PATH, no peer comparison: %v (make bench-risk installs it)", peerErr)
		return
	}
	b.ReportMetric(median(scanner, wall), "osv-scanner-wall-s")
	b.ReportMetric(median(scanner, cpu), "osv-scanner-cpu-s")
	b.ReportMetric(median(scanner, rss), "osv-scanner-maxrss-MiB")
	b.ReportMetric(medianRatio(scanner, sboms, wall), "osv-scanner/medmesh-wall")
	b.ReportMetric(medianRatio(scanner, sboms, cpu), "osv-scanner/medmesh-cpu")
	b.ReportMetric(medianRatio(scanner, sboms, rss), "osv-scanner/medmesh-maxrss")
}

// medianRatio is the median over rounds of f(num)/f(den), each round
// having run both.
func medianRatio(num, den []procRun, f func(procRun) float64) float64 {
	rs := make([]procRun, len(num))
	for i := range num {
		rs[i] = procRun{wall: time.Duration(f(num[i]) / f(den[i]) * float64(time.Second))}
	}
	return median(rs, func(r procRun) float64 { return r.wall.Seconds() })
}

// sameFile compares two files by SHA-256 (they are hundreds of MB).
func sameFile(b *testing.B, x, y string) bool {
	sum := func(p string) [sha256.Size]byte {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			b.Fatal(err)
		}
		return [sha256.Size]byte(h.Sum(nil))
	}
	return sum(x) == sum(y)
}

package osv

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const recordsDir = "testdata/records"

func loadFixtures(t testing.TB) *DB {
	t.Helper()
	db, err := Load(recordsDir)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// zipRecords writes the fixture records as an ecosystem all.zip is laid
// out: one <id>.json per entry at the archive's root.
func zipRecords(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files, err := filepath.Glob(filepath.Join(recordsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.Create(filepath.Base(f))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func ids(ms []Match) []string {
	var out []string
	for _, m := range ms {
		s := m.Record.ID
		if m.Exact {
			s += "=exact"
		}
		if m.Fixed != "" {
			s += ">" + m.Fixed
		}
		out = append(out, s)
	}
	return out
}

func TestDirectoryAndZipLoadTheSame(t *testing.T) {
	fromDir := loadFixtures(t)
	path := filepath.Join(t.TempDir(), "all.zip")
	if err := os.WriteFile(path, zipRecords(t), 0o644); err != nil {
		t.Fatal(err)
	}
	fromZip, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Records: 16, Packages: 9, GitRangesIgnored: 3}
	if fromDir.Stats() != want || fromZip.Stats() != want {
		t.Errorf("stats dir %+v zip %+v, want %+v", fromDir.Stats(), fromZip.Stats(), want)
	}
	for _, q := range []Query{{"PyPI", "werkzeug", "1.0.1"}, {"Debian:10", "zlib", "1:1.2.11.dfsg-1"}, {"Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"}} {
		a, err1 := fromDir.Query(q)
		b, err2 := fromZip.Query(q)
		if err1 != nil || err2 != nil || !slices.Equal(ids(a), ids(b)) || len(a) == 0 {
			t.Errorf("%+v: dir %v (%v), zip %v (%v)", q, ids(a), err1, ids(b), err2)
		}
	}
}

func TestCorruptZipRefusedWithReason(t *testing.T) {
	good := zipRecords(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Cut off in the middle: the central directory is gone.
	_, err := Load(write("truncated.zip", good[:len(good)/2]))
	if err == nil || !strings.Contains(err.Error(), "truncated.zip") || !strings.Contains(err.Error(), "truncated or corrupt zip") {
		t.Errorf("truncated archive: %v", err)
	}
	// A flipped byte inside the first entry's data: its checksum fails.
	bad := bytes.Clone(good)
	zr, _ := zip.NewReader(bytes.NewReader(good), int64(len(good)))
	off, _ := zr.File[0].DataOffset()
	bad[off+10] ^= 0xff
	_, err = Load(write("flipped.zip", bad))
	if err == nil || !strings.Contains(err.Error(), "flipped.zip") || !strings.Contains(err.Error(), zr.File[0].Name) {
		t.Errorf("corrupt entry: %v", err)
	}
	// An entry that is not an OSV record.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("GHSA-bad.json")
	w.Write([]byte(`{"id":"GHSA-bad","affected":[{"package":{"ecosystem":"PyPI","name":"x"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0","fixed":"1"}]}]}]}`))
	zw.Close()
	_, err = Load(write("notosv.zip", buf.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "GHSA-bad.json") || !strings.Contains(err.Error(), "exactly one of") {
		t.Errorf("invalid record: %v", err)
	}
	_, err = Load(write("garbage.json", []byte("{")))
	if err == nil || !strings.Contains(err.Error(), "garbage.json") {
		t.Errorf("invalid JSON file: %v", err)
	}
}

func TestVersionOrder(t *testing.T) {
	db := loadFixtures(t)
	extra := New(append(records(t, db),
		// SemVer pre-releases (a SEMVER range, as npm records use).
		rec("SEMVER-PRE", "npm", "left-pad", Range{Type: "SEMVER", Events: []Event{{Introduced: "1.0.0-beta.2"}, {Fixed: "1.0.0"}}}),
		// last_affected includes its version; no fixed version is known.
		rec("LAST", "PyPI", "lastpkg", Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}, {LastAffected: "2.0.0"}}}),
		// A limit excludes its version and everything above.
		rec("LIMIT", "Go", "example.com/lim", Range{Type: "SEMVER", Events: []Event{{Introduced: "0"}, {Limit: "3.0.0"}}}),
		// Events listed out of order are evaluated in version order.
		rec("UNSORTED", "PyPI", "unsorted", Range{Type: "ECOSYSTEM", Events: []Event{{Fixed: "2.0"}, {Introduced: "1.0"}}}),
		// A record with only a GIT range matches no version.
		rec("GITONLY", "PyPI", "gitonly", Range{Type: "GIT", Repo: "https://example.com/r", Events: []Event{{Introduced: "0"}, {Fixed: "abc123"}}}),
		// Only a versions list: equality in the ecosystem's order.
		&Record{ID: "VERSIONS", Modified: "2024-01-01T00:00:00Z", Affected: []Affected{{Package: Package{Ecosystem: "PyPI", Name: "listed"}, Versions: []string{"1.0", "2.0rc1"}}}},
		// A listed version is affected even outside the ranges; Go lists
		// versions without the "v" that module versions carry.
		&Record{ID: "OUTSIDE", Modified: "2024-01-01T00:00:00Z", Affected: []Affected{{
			Package: Package{Ecosystem: "Go", Name: "example.com/outside"}, Versions: []string{"3.1.0"},
			Ranges: []Range{{Type: "SEMVER", Events: []Event{{Introduced: "1.0.0"}, {Fixed: "2.0.0"}}}}}}},
	)...)
	cases := []struct {
		q    Query
		want []string
	}{
		// Debian: epochs, revisions, tildes; fixed excludes its version.
		{Query{"Debian:10", "zlib", "1:1.2.11.dfsg-1"}, []string{"DEBIAN-CVE-2018-25032>1:1.2.11.dfsg-1+deb10u1", "DEBIAN-CVE-2022-37434>1:1.2.11.dfsg-1+deb10u2"}},
		{Query{"Debian:10", "zlib", "1:1.2.11.dfsg-1+deb10u1"}, []string{"DEBIAN-CVE-2022-37434>1:1.2.11.dfsg-1+deb10u2"}},
		{Query{"Debian:10", "zlib", "1:1.2.11.dfsg-1+deb10u2"}, nil},
		{Query{"Debian:10", "zlib", "1:1.2.11.dfsg-1+deb10u2~bpo1"}, []string{"DEBIAN-CVE-2022-37434>1:1.2.11.dfsg-1+deb10u2"}},
		// No epoch is epoch 0: 1.2.13 without one is older than 1:1.2.11.
		{Query{"Debian:10", "zlib", "1.2.13.dfsg-1"}, []string{"DEBIAN-CVE-2018-25032>1:1.2.11.dfsg-1+deb10u1", "DEBIAN-CVE-2022-37434>1:1.2.11.dfsg-1+deb10u2"}},
		{Query{"Debian:10", "zlib", "2:1.0-1"}, nil},
		// A release's records apply to that release only; no release, no match.
		{Query{"Debian:11", "zlib", "1:1.2.11.dfsg-1+deb10u2"}, []string{"DEBIAN-CVE-2018-25032>1:1.2.11.dfsg-2+deb11u1", "DEBIAN-CVE-2022-37434>1:1.2.11.dfsg-2+deb11u2"}},
		{Query{"Debian:12", "zlib", "1:1.2.11.dfsg-1"}, nil},
		{Query{"Debian", "zlib", "1:1.2.11.dfsg-1"}, nil},
		{Query{"Debian:10", "openssl", "1.1.1d-0+deb10u2"}, []string{"DEBIAN-CVE-2020-1967>1.1.1d-0+deb10u3"}},
		{Query{"Debian:10", "openssl", "1.1.1d-0+deb10u3"}, nil},
		// PyPI (PEP 440): introduced includes, fixed excludes, pre- and
		// post-releases, 5.1 == 5.1.0, names compared per PEP 503.
		{Query{"PyPI", "pyyaml", "5.0"}, []string{"PYSEC-2021-142>5.4"}},
		{Query{"PyPI", "PyYAML", "5.1"}, []string{"PYSEC-2020-96=exact>5.3.1", "PYSEC-2021-142=exact>5.4"}},
		{Query{"PyPI", "py.yaml", "5.1"}, nil},
		{Query{"PyPI", "pyyaml", "5.1.0"}, []string{"PYSEC-2020-96=exact>5.3.1", "PYSEC-2021-142=exact>5.4"}},
		{Query{"PyPI", "pyyaml", "5.3.1rc1"}, []string{"PYSEC-2020-96>5.3.1", "PYSEC-2021-142>5.4"}},
		{Query{"PyPI", "pyyaml", "5.3.1"}, []string{"PYSEC-2021-142=exact>5.4"}},
		{Query{"PyPI", "pyyaml", "5.3.1.post1"}, []string{"PYSEC-2021-142>5.4"}},
		{Query{"PyPI", "pyyaml", "5.4"}, nil},
		{Query{"PyPI", "Flask_Cors", "3.0.8"}, []string{"GHSA-xc3p-ff3m-f46v>3.0.9"}},
		// Two ranges in one record (Flask 2.2.5 and 2.3.2 fix the same flaw).
		{Query{"PyPI", "flask", "2.2.4"}, []string{"PYSEC-2023-62=exact>2.2.5"}},
		{Query{"PyPI", "flask", "2.2.5"}, nil},
		{Query{"PyPI", "flask", "2.3.0"}, []string{"PYSEC-2023-62=exact>2.3.2"}},
		{Query{"PyPI", "flask", "2.3.2"}, nil},
		// Maven: qualifiers order below releases; three affected entries.
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.0-beta9"}, []string{"GHSA-jfh8-c2jp-5v3q>2.3.1"}},
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.3.1"}, nil},
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.10.0"}, []string{"GHSA-jfh8-c2jp-5v3q>2.12.2"}},
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.12.2"}, nil},
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.13.0-rc1"}, nil},
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"}, []string{"GHSA-jfh8-c2jp-5v3q>2.15.0"}},
		{Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.15.0"}, nil},
		{Query{"Maven", "org.apache.logging.log4j:log4j-api", "2.14.1"}, nil},
		// SemVer: numeric pre-release identifiers order numerically.
		{Query{"npm", "left-pad", "1.0.0-beta.1"}, nil},
		{Query{"npm", "left-pad", "1.0.0-beta.2"}, []string{"SEMVER-PRE>1.0.0"}},
		{Query{"npm", "left-pad", "1.0.0-beta.10"}, []string{"SEMVER-PRE>1.0.0"}},
		{Query{"npm", "left-pad", "1.0.0-rc.1"}, []string{"SEMVER-PRE>1.0.0"}},
		{Query{"npm", "left-pad", "1.0.0"}, nil},
		{Query{"PyPI", "lastpkg", "2.0.0"}, []string{"LAST"}},
		{Query{"PyPI", "lastpkg", "2.0.1"}, nil},
		{Query{"Go", "example.com/lim", "2.9.9"}, []string{"LIMIT"}},
		{Query{"Go", "example.com/lim", "3.0.0"}, nil},
		{Query{"PyPI", "unsorted", "0.9"}, nil},
		{Query{"PyPI", "unsorted", "1.5"}, []string{"UNSORTED>2.0"}},
		{Query{"PyPI", "unsorted", "2.0"}, nil},
		{Query{"PyPI", "gitonly", "0.1"}, nil},
		{Query{"PyPI", "listed", "1.0.0"}, []string{"VERSIONS=exact"}},
		{Query{"PyPI", "listed", "2.0"}, nil},
		{Query{"PyPI", "listed", "2.0rc1"}, []string{"VERSIONS=exact"}},
		{Query{"Go", "example.com/outside", "v1.5.0"}, []string{"OUTSIDE>2.0.0"}},
		{Query{"Go", "example.com/outside", "v2.5.0"}, nil},
		{Query{"Go", "example.com/outside", "v3.1.0"}, []string{"OUTSIDE=exact"}},
	}
	for _, c := range cases {
		got, err := extra.Query(c.q)
		if err != nil {
			t.Errorf("%+v: %v", c.q, err)
			continue
		}
		if !slices.Equal(ids(got), c.want) {
			t.Errorf("%+v:\n got %v\nwant %v", c.q, ids(got), c.want)
		}
	}
	if _, err := extra.Query(Query{"Debian:10", "zlib", "a:1.2"}); !errors.Is(err, ErrBadVersion) {
		t.Errorf("unparsable version: %v, want ErrBadVersion", err)
	}
}

func rec(id, eco, name string, r Range) *Record {
	return &Record{ID: id, Modified: "2024-01-01T00:00:00Z", Affected: []Affected{{Package: Package{Ecosystem: eco, Name: name}, Ranges: []Range{r}}}}
}

func records(t *testing.T, db *DB) []*Record {
	t.Helper()
	var out []*Record
	for _, r := range db.byID {
		out = append(out, r)
	}
	return out
}

func TestWithdrawnAndNewestRecord(t *testing.T) {
	old := rec("DUP-1", "PyPI", "dup", Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}, {Fixed: "1.0"}}})
	newer := rec("DUP-1", "PyPI", "dup", Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}, {Fixed: "2.0"}}})
	newer.Modified = "2025-01-01T00:00:00Z"
	gone := rec("GONE-1", "PyPI", "dup", Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}}})
	gone.Withdrawn = "2025-02-01T00:00:00Z"
	for _, order := range [][]*Record{{old, newer, gone}, {gone, newer, old}} {
		db := New(order...)
		got, err := db.Query(Query{"PyPI", "dup", "1.5"})
		if err != nil || !slices.Equal(ids(got), []string{"DUP-1>2.0"}) {
			t.Errorf("got %v (%v), want the newer DUP-1 only", ids(got), err)
		}
		if s := db.Stats(); s.Withdrawn != 1 || s.Records != 1 {
			t.Errorf("stats %+v", s)
		}
	}
}

func TestQueryFromPURL(t *testing.T) {
	cases := []struct {
		purl string
		want Query
	}{
		{"pkg:pypi/flask-cors@3.0.8", Query{"PyPI", "flask-cors", "3.0.8"}},
		{"pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", Query{"Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"}},
		{"pkg:npm/%40angular/core@12.0.0", Query{"npm", "@angular/core", "12.0.0"}},
		{"pkg:golang/golang.org/x/text@v0.3.0", Query{"Go", "golang.org/x/text", "v0.3.0"}},
		{"pkg:deb/debian/zlib1g@1:1.2.11.dfsg-1?arch=armhf&distro=debian-10&upstream=zlib", Query{"Debian:10", "zlib", "1:1.2.11.dfsg-1"}},
		{"pkg:deb/debian/libc6@2.36-9+b1?upstream=glibc%402.36-9&distro=debian-12", Query{"Debian:12", "glibc", "2.36-9"}},
		{"pkg:deb/debian/login@4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12.5&epoch=1", Query{"Debian:12", "login", "1:4.13+dfsg1-1+b1"}},
		{"pkg:deb/debian/openssl@1.1.1n-0+deb11u4?distro=bullseye", Query{"Debian:11", "openssl", "1.1.1n-0+deb11u4"}},
		{"pkg:deb/ubuntu/openssl@3.0.2-0ubuntu1.10?distro=ubuntu-22.04", Query{"Ubuntu:22.04", "openssl", "3.0.2-0ubuntu1.10"}},
		{"pkg:apk/alpine/libssl3@3.0.8-r0?arch=x86_64&upstream=openssl&distro=alpine-3.17.2", Query{"Alpine:v3.17", "openssl", "3.0.8-r0"}},
		{"pkg:deb/debian/zlib1g@1:1.2.11.dfsg-1", Query{"Debian", "zlib1g", "1:1.2.11.dfsg-1"}},
	}
	for _, c := range cases {
		got, err := QueryFromPURL(c.purl)
		if err != nil || got != c.want {
			t.Errorf("%s: %+v (%v), want %+v", c.purl, got, err, c.want)
		}
	}
	for _, bad := range []string{"pkg:generic/pump-fw@3.2", "pkg:deb/raspbian/zlib1g@1.2", "pkg:pypi/flask", "flask==1.0"} {
		if _, err := QueryFromPURL(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	if _, err := QueryFromPURL("pkg:generic/pump-fw@3.2"); !errors.Is(err, ErrNoEcosystem) {
		t.Errorf("generic: %v, want ErrNoEcosystem", err)
	}
}

func TestScore(t *testing.T) {
	db := loadFixtures(t)
	score := func(id string) Score {
		r, ok := db.Record(id)
		if !ok {
			t.Fatalf("no record %s", id)
		}
		return r.Score(&r.Affected[0])
	}
	cases := []struct {
		id     string
		base   float64
		rating string
	}{
		{"GHSA-xc3p-ff3m-f46v", 7.5, "high"},      // CVSS 3.1 AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N
		{"GHSA-jfh8-c2jp-5v3q", 10.0, "critical"}, // Log4Shell, scope changed
		{"GHSA-g3rq-g295-4j3m", 5.3, "medium"},
		{"GHSA-h5c8-rqwp-cp95", 5.4, "medium"},
		{"GHSA-gmj6-6f8f-6699", 5.4, "medium"}, // CVSS 4.0
		{"PYSEC-2023-221", 7.5, "high"},
		{"PYSEC-2023-62", 0, ""}, // states no severity
	}
	for _, c := range cases {
		if s := score(c.id); s.Base != c.base || s.Rating != c.rating {
			t.Errorf("%s: %+v, want %.1f %s", c.id, s, c.base, c.rating)
		}
	}
	v2 := &Record{ID: "V2", Severity: []Severity{{Type: "CVSS_V2", Score: "AV:N/AC:L/Au:N/C:P/I:P/A:P"}}}
	if s := v2.Score(nil); s.Base != 7.5 || s.Rating != "high" {
		t.Errorf("CVSS v2: %+v", s)
	}
	word := &Record{ID: "W", DatabaseSpecific: []byte(`{"severity":"MODERATE"}`), Severity: []Severity{{Type: "CVSS_V3", Score: "CVSS:3.1/garbage"}}}
	if s := word.Score(nil); s.Base != 0 || s.Rating != "medium" {
		t.Errorf("database rating after a bad vector: %+v", s)
	}
}

// FuzzParseRecord: any bytes either parse into a record that New and
// Query handle, or are refused; never a panic.
func FuzzParseRecord(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(recordsDir, "*.json"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "1.0")
	}
	f.Add([]byte(`{"id":"X","affected":[{"package":{"ecosystem":"Debian:10","name":"zlib"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"last_affected":"1:2"},{"limit":"*"}]}]}]}`), "1:1")
	f.Fuzz(func(t *testing.T, data []byte, version string) {
		r, err := ParseRecord(data)
		if err != nil {
			return
		}
		db := New(r)
		for _, a := range r.Affected {
			db.Query(Query{a.Package.Ecosystem, a.Package.Name, version})
		}
		r.Score(nil)
		r.CVEs()
	})
}

// FuzzReadZip: a hostile archive is read or refused, never a panic.
func FuzzReadZip(f *testing.F) {
	// Small seeds keep the fuzzer fast: two records, then cut short.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"GHSA-xc3p-ff3m-f46v.json", "DEBIAN-CVE-2020-1967.json"} {
		data, err := os.ReadFile(filepath.Join(recordsDir, name))
		if err != nil {
			f.Fatal(err)
		}
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
		w.Write(data)
	}
	zw.Close()
	good := buf.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		ReadZip(bytes.NewReader(data), int64(len(data)), "fuzz.zip")
	})
}

package eol

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

const shared = "../../../../shared/testdata/intel/endoflife"

func loadShared(t *testing.T) *Table {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(shared, "*.md"))
	if len(files) == 0 {
		t.Skipf("skipped: no endoflife.date products in %s (the shared test data is absent)", shared)
	}
	var ps []*Product
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParseMarkdown(f, data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ps = append(ps, p)
	}
	tab, err := NewTable(ps)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestLookupRealData looks up the OS strings medical devices report against
// endoflife.date's real product files and the shipped legacy table.
func TestLookupRealData(t *testing.T) {
	tab := loadShared(t)
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		os, product, cycle, eol string
		past                    bool
	}{
		{"Windows 7 SP1", "windows", "7-sp1", "2020-01-14", true},
		{"Microsoft Windows 7 Professional", "windows", "7-sp1", "2020-01-14", true},
		{"Windows XP", "windows", "5-sp3", "2014-04-08", true},
		{"Windows XP Embedded", "windows-embedded", "xp-sp3", "2016-01-12", true},
		{"Windows Embedded Standard 7", "windows-embedded", "standard-7-sp1", "2020-10-13", true},
		{"Windows Embedded POSReady 2009", "windows-embedded", "posready-2009", "2019-04-09", true},
		{"Windows CE 6.0", "windows", "ce-6.0", "2018-04-10", true},
		{"Windows Vista", "windows", "6-sp2", "2017-04-11", true},
		{"Windows 10 Enterprise LTSC 2019", "windows", "10-ltsc-2019", "2029-01-09", false},
		{"Windows 10 Enterprise 1809", "windows", "10-1809-e", "2021-05-11", true},
		{"Windows 2000", "windows", "2000", "2010-07-13", true},
		{"Ubuntu 16.04.7 LTS", "ubuntu", "16.04", "", true},
		{"cpe:/o:microsoft:windows_7::sp1", "windows", "7-sp1", "2020-01-14", true},
	} {
		m, ok := tab.Lookup(tc.os)
		if !ok {
			t.Errorf("%q: no release", tc.os)
			continue
		}
		if m.Product.Name != tc.product || m.Release.Cycle != tc.cycle {
			t.Errorf("%q: %s/%s, want %s/%s", tc.os, m.Product.Name, m.Release.Cycle, tc.product, tc.cycle)
			continue
		}
		if tc.eol != "" && m.Release.EOL.String() != tc.eol {
			t.Errorf("%q: eol %s, want %s", tc.os, m.Release.EOL, tc.eol)
		}
		if m.Release.EOL.Passed(at) != tc.past {
			t.Errorf("%q: eol %s passed at %s = %v", tc.os, m.Release.EOL, at.Format(time.DateOnly), !tc.past)
		}
	}
	for _, os := range []string{"VxWorks 6.9", "QNX 6.5", ""} {
		if m, ok := tab.Lookup(os); ok {
			t.Errorf("%q: matched %s/%s, want nothing", os, m.Product.Name, m.Release.Cycle)
		}
	}
}

// TestAPIv1 reads an endoflife.date API v1 product response (the shape
// documented at https://endoflife.date/docs/api/v1/: result.name, label,
// aliases, identifiers, releases with eolFrom/isEol/eoasFrom/eoesFrom),
// written here because the API is not reachable from this machine.
func TestAPIv1(t *testing.T) {
	data := []byte(`{"schema_version":"1.2.0","generated_at":"2026-11-30T00:00:00+00:00","result":{
	  "name":"windows-embedded","label":"Microsoft Windows Embedded","aliases":["windowsembedded"],"category":"os","tags":["microsoft","windows"],
	  "identifiers":[{"id":"cpe:/o:microsoft:windows_embedded","type":"cpe"}],
	  "releases":[
	    {"name":"standard-7-sp1","codename":null,"label":"Standard 7 SP1","releaseDate":"2011-02-28","isLts":false,"ltsFrom":null,
	     "isEoas":true,"eoasFrom":"2015-10-13","isEol":true,"eolFrom":"2020-10-13","isEoes":null,"eoesFrom":null,"isMaintained":false,"latest":null},
	    {"name":"compact-2013","label":"Compact 2013","isEol":true,"eolFrom":null,"eoasFrom":false}]}}`)
	p, err := ParseAPI(data)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := NewTable([]*Product{p})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := tab.Lookup("Windows Embedded Standard 7 SP1")
	if !ok || m.Release.Cycle != "standard-7-sp1" || m.Release.EOL.String() != "2020-10-13" || !m.Exact {
		t.Fatalf("lookup: %+v %v", m, ok)
	}
	m, ok = tab.Lookup("Windows Embedded Compact 2013")
	if !ok || m.Release.EOL.String() != "yes" || !m.Release.EOL.Passed(time.Time{}) {
		t.Fatalf("isEol without a date: %+v %v", m, ok)
	}
	if _, err := ParseAPI([]byte(`{"result":{"name":"x","releases":[{"name":"1","eolFrom":"soon"}]}}`)); err == nil {
		t.Error("a bad date parsed")
	}
}

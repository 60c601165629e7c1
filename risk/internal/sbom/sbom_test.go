package sbom

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var fixtures = []struct {
	file   string
	format Format
	spec   string
}{
	{"ventilator-monitor.cdx.json", CycloneDXJSON, "1.5"},
	{"ventilator-monitor.cdx.xml", CycloneDXXML, "1.4"},
	{"ventilator-monitor.spdx.json", SPDXJSON, "SPDX-2.3"},
	{"ventilator-monitor.spdx", SPDXTagValue, "SPDX-2.2"},
}

// The component list every fixture states, as name, version, package URL.
var wantComponents = []string{
	"Raspbian GNU/Linux|10 (buster) lite 2020-02-13|",
	"click|7.1.1|pkg:pypi/click@7.1.1",
	"Flask|1.1.2|pkg:pypi/flask@1.1.2",
	"Flask-Cors|3.0.8|pkg:pypi/flask-cors@3.0.8",
	"future|0.18.2|pkg:pypi/future@0.18.2",
	"gunicorn|20.0.4|pkg:pypi/gunicorn@20.0.4",
	"iso8601|0.1.12|pkg:pypi/iso8601@0.1.12",
	"itsdangerous|1.1.0|pkg:pypi/itsdangerous@1.1.0",
	"Jinja2|2.11.1|pkg:pypi/jinja2@2.11.1",
	"MarkupSafe|1.1.1|pkg:pypi/markupsafe@1.1.1",
	"PyYAML|5.3.1|pkg:pypi/pyyaml@5.3.1",
	"serial|0.0.97|pkg:pypi/serial@0.0.97",
	"six|1.14.0|pkg:pypi/six@1.14.0",
	"Werkzeug|1.0.1|pkg:pypi/werkzeug@1.0.1",
	"zlib1g|1:1.2.11.dfsg-1|pkg:deb/debian/zlib1g@1:1.2.11.dfsg-1?arch=armhf&distro=debian-10&upstream=zlib",
	"libssl1.1|1.1.1d-0+deb10u2|pkg:deb/debian/libssl1.1@1.1.1d-0%2Bdeb10u2?arch=armhf&distro=debian-10&upstream=openssl",
}

func TestFixturesReadAlikeInEveryFormat(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			doc, err := ReadFile(filepath.Join("testdata", fx.file))
			if err != nil {
				t.Fatal(err)
			}
			if doc.Format != fx.format || doc.SpecVersion != fx.spec {
				t.Errorf("format %s %s, want %s %s", doc.Format, doc.SpecVersion, fx.format, fx.spec)
			}
			want := Subject{Vendor: "Open Ventilator Remote Monitoring", Model: "Remote Ventilator Monitor Pi", Version: "da570bae"}
			if doc.Subject != want {
				t.Errorf("subject %+v, want %+v", doc.Subject, want)
			}
			var got []string
			for _, c := range doc.Components {
				got = append(got, c.Name+"|"+c.Version+"|"+c.PURL)
				if strings.HasPrefix(c.PURL, "pkg:deb/") && len(c.CPEs) != 1 {
					t.Errorf("%s: CPEs %v, want the one the fixture states", c.Name, c.CPEs)
				}
				if c.Ref == "" {
					t.Errorf("%s: no document reference", c.Name)
				}
			}
			if !slices.Equal(got, wantComponents) {
				t.Errorf("components:\n got %q\nwant %q", got, wantComponents)
			}
			if len(doc.Warnings) > 0 || len(doc.VEX) > 0 {
				t.Errorf("warnings %q, VEX %v; want none", doc.Warnings, doc.VEX)
			}
		})
	}
}

func TestVEXFixture(t *testing.T) {
	doc, err := ReadFile("testdata/ventilator-monitor.vex.cdx.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Components) != 0 {
		t.Errorf("a VEX document lists no components; got %d", len(doc.Components))
	}
	type st struct{ id, state, just, refs string }
	var got []st
	for _, s := range doc.VEX {
		got = append(got, st{s.ID, s.State, s.Justification, strings.Join(s.Refs, ",")})
	}
	want := []st{
		{"CVE-2020-14343", "not_affected", "requires_environment", "pkg:pypi/pyyaml@5.3.1"},
		{"CVE-2024-34069", "not_affected", "requires_configuration", "pkg:pypi/werkzeug"},
		{"CVE-2020-25032", "in_triage", "", "pkg:pypi/flask-cors@3.0.8"},
		{"CVE-2023-30861", "not_affected", "code_not_present", "pkg:pypi/jinja2@2.11.1"},
		{"CVE-2021-44228", "not_affected", "code_not_present", "device"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("statements:\n got %v\nwant %v", got, want)
	}
	if !slices.Equal(doc.VEX[0].Aliases, []string{"GHSA-8q59-q68h-6hv4"}) {
		t.Errorf("aliases %v", doc.VEX[0].Aliases)
	}
	for i, s := range doc.VEX {
		if s.NotAffected() != (s.State == "not_affected") {
			t.Errorf("statement %d (%s): NotAffected %v", i, s.State, s.NotAffected())
		}
	}
}

func TestNestedComponentsAndBOMLinks(t *testing.T) {
	const doc = `{"bomFormat":"CycloneDX","specVersion":"1.6","version":1,
	 "metadata":{"component":{"bom-ref":"pump","type":"device","name":"Pump 8015","version":"12.1",
	   "supplier":{"name":"BD"},
	   "components":[{"bom-ref":"fw","type":"firmware","name":"pump-fw","version":"3.2","purl":"pkg:generic/pump-fw@3.2"}]}},
	 "components":[{"bom-ref":"app","type":"application","name":"app","version":"1",
	   "components":[{"bom-ref":"lib","type":"library","name":"Lib_Thing","version":"2.0","purl":"pkg:pypi/Lib_Thing@2.0"},
	                 {"bom-ref":"bad","type":"library","name":"bad","version":"1","purl":"not a purl"}]}],
	 "vulnerabilities":[{"id":"CVE-2099-0001","analysis":{"state":"false_positive"},
	   "affects":[{"ref":"urn:cdx:3e671687-395b-41d5-8d8e-0b2c1f5d3d7f/1#lib"}]},
	   {"id":"CVE-2099-0002","analysis":{"state":"resolved"}},
	   {"id":"CVE-2099-0003"}]}`
	d, err := Parse("nested.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range d.Components {
		names = append(names, c.Name+"="+c.PURL)
	}
	want := []string{"pump-fw=pkg:generic/pump-fw@3.2", "app=", "Lib_Thing=pkg:pypi/lib-thing@2.0", "bad="}
	if !slices.Equal(names, want) {
		t.Errorf("components %q, want %q", names, want)
	}
	if d.Subject.Vendor != "BD" || d.Subject.Model != "Pump 8015" || d.Subject.Version != "12.1" {
		t.Errorf("subject %+v", d.Subject)
	}
	if len(d.Warnings) != 1 || !strings.HasPrefix(d.Warnings[0], "nested.json: component \"bad\": invalid package URL") {
		t.Errorf("warnings %q", d.Warnings)
	}
	if len(d.VEX) != 2 || d.VEX[0].Refs[0] != "lib" || d.VEX[1].Refs[0] != "pump" || !d.VEX[1].NotAffected() {
		t.Errorf("VEX %+v: want the BOM-Link cut to its ref and a statement without affects about the subject", d.VEX)
	}
}

func TestRefusedWithFileAndReason(t *testing.T) {
	cases := []struct{ name, doc, reason string }{
		{"empty.json", "  \n", "empty document"},
		{"plain.json", `{"hello":"world"}`, "without bomFormat"},
		{"csaf.json", `{"document":{"csaf_version":"2.0"}}`, "a CSAF document"},
		{"spdx3.json", `{"@context":"https://spdx.org/rdf/3.0.1/spdx-context.jsonld","@graph":[]}`, "SPDX 3"},
		{"rdf.xml", `<?xml version="1.0"?><rdf:RDF xmlns:spdx="http://spdx.org/rdf/terms#"/>`, "SPDX RDF/XML is not supported"},
		{"other.xml", `<?xml version="1.0"?><project/>`, "without the CycloneDX namespace"},
		{"notes.txt", "just some text\n", "no SPDXVersion line"},
		{"future.cdx.json", `{"bomFormat":"CycloneDX","specVersion":"9.9","version":1}`, "invalid specification version"},
		{"wrong.cdx.json", `{"bomFormat":"SPDX","specVersion":"1.5","version":1}`, `bomFormat is "SPDX"`},
		{"broken.cdx.json", `{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":`, "cyclonedx-json"},
		{"broken.cdx.xml", `<bom xmlns="http://cyclonedx.org/schema/bom/1.5"><components><component>`, "cyclonedx-xml"},
		{"badns.cdx.xml", `<bom xmlns="http://cyclonedx.org/schema/bom/"></bom>`, "is not a CycloneDX BOM namespace"},
		{"old.spdx.json", `{"spdxVersion":"SPDX-3.0","SPDXID":"SPDXRef-DOCUMENT"}`, "spdx-json"},
		{"old.spdx", "SPDXVersion: SPDX-1.2\nDataLicense: CC0-1.0\n", "spdx-tag-value"},
	}
	for _, c := range cases {
		_, err := Parse(c.name, []byte(c.doc))
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.name) || !strings.Contains(msg, c.reason) {
			t.Errorf("%s: error %q does not name the file and %q", c.name, msg, c.reason)
		}
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSizeLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized document: %v", err)
	}
}

// FuzzParse feeds hostile bytes to every format's parser: Parse must
// return a document or an error, never panic or hang.
func FuzzParse(f *testing.F) {
	for _, fx := range fixtures {
		data, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	if data, err := os.ReadFile("testdata/ventilator-monitor.vex.cdx.json"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("SPDXVersion: SPDX-2.3\nPackageName: x\nSPDXID: SPDXRef-x\nExternalRef: PACKAGE-MANAGER purl pkg:npm/%40a/b@1\n"))
	f.Add([]byte(`<bom xmlns="http://cyclonedx.org/schema/bom/1.6"><components><component type="library"><name>a</name><purl>pkg:maven/g/a@1</purl></component></components></bom>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse("fuzz", data)
		if err == nil && doc == nil {
			t.Fatal("nil document without an error")
		}
	})
}

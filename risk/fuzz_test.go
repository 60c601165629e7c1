package risk

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/medmesh/medmesh/risk/internal/bundle"
)

// FuzzInventory feeds the JSON Lines inventory reader hostile input: it
// returns devices or an error naming a line, never panics, and every
// device it returns round-trips through JSON.
func FuzzInventory(f *testing.F) {
	if data, err := os.ReadFile("testdata/inventory.jsonl"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("{\"vendor\":\"BD\"}\n{\"vendr\":1}\n"))
	f.Add([]byte("# x\n\n{\"os\":\"Windows 7\",\"sbom\":\"a.json\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := ReadInventory(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, d := range ds {
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var back Device
			if err := json.Unmarshal(b, &back); err != nil || back != d {
				t.Fatalf("%+v does not round-trip: %v", d, err)
			}
		}
	})
}

// FuzzSourceFile feeds every source loader (KEV, EPSS, endoflife.date
// markdown and API JSON, openFDA JSON and zip, GUDID, credential lists)
// hostile content through the same path a bundle takes: an error naming
// the file, or a loaded bundle that can assess a device, never a panic.
func FuzzSourceFile(f *testing.F) {
	paths := []string{
		"kev/known_exploited_vulnerabilities.json", "epss/epss_scores-2026-11-30.csv.gz", "endoflife/windows.md",
		"endoflife/windows.json", "openfda/device-recall-0001-of-0001.json", "openfda/device-recall-0001-of-0001.json.zip",
		"gudid/device.txt", "gudid/identifiers.txt", "credentials/list.yaml",
	}
	for i, p := range []string{
		"testdata/intel/epss/epss_scores-2026-11-30.csv.gz", "testdata/intel/openfda/device-recall-0001-of-0001.json",
		"testdata/intel/openfda/device-enforcement-0001-of-0001.json", "testdata/intel/gudid/device.txt",
		"internal/eol/legacy/windows.md", "internal/credential/defaults.yaml",
	} {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(uint8(i), data)
		}
	}
	f.Add(uint8(0), []byte(`{"title":"t","catalogVersion":"1","dateReleased":"2025-08-25T17:04:19.9796Z","count":1,"vulnerabilities":[{"cveID":"CVE-2017-0144","dateAdded":"2022-01-01"}]}`))
	f.Add(uint8(3), []byte(`{"result":{"name":"windows","releases":[{"name":"7","eolFrom":"2020-01-14"}]}}`))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		p := paths[int(which)%len(paths)]
		files := map[string][]byte{p: data}
		if p == "gudid/identifiers.txt" {
			files["gudid/device.txt"] = []byte("PrimaryDI|BrandName|VersionModelNumber|CompanyName\n1|b|m|c\n")
		}
		b, err := bundle.FromFiles(files, bundle.Compute(files, time.Time{}))
		if err != nil {
			t.Fatal(err)
		}
		in, err := fromBundle(b)
		if err != nil {
			return
		}
		if _, err := in.Assess(Device{Vendor: "c", Model: "m", OS: "Windows 7", UDIDI: "1"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	})
}

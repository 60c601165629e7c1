package assetfile

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestReadCSVFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/biomed.csv")
	if err != nil {
		t.Fatal(err)
	}
	recs, f, err := Read(data, "")
	if err != nil || f != CSV {
		t.Fatalf("read: %v (format %s)", err, f)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3 (the blank line skipped)", len(recs))
	}
	want := &medmeshv1.AssetRecord{Line: 2, Mac: "00:1B:44:11:3A:B7", Ip: "10.1.0.5", Location: "north/main/3/icu", Asset: &medmeshv1.Asset{
		Manufacturer: "B. Braun", Model: "Perfusor Space", Serial: "PS-20931", UdiDi: "04046964001234", Udi: "(01)04046964001234(21)PS-20931",
		Owner: "Biomedical Engineering", Criticality: medmeshv1.Tier_TIER_LIFE_CRITICAL, RecordId: "BM-0042",
	}}
	if !proto.Equal(recs[0], want) {
		t.Errorf("record 1:\n got %v\nwant %v", recs[0], want)
	}
	if recs[1].GetMac() != "" || recs[1].GetIp() != "10.1.0.9" || recs[1].GetAsset().GetCriticality() != medmeshv1.Tier_TIER_CLINICAL {
		t.Errorf("record 2: %v", recs[1])
	}
	if recs[2].GetLine() != 5 || recs[2].GetAsset().GetModel() != "Monitor, bedside" || recs[2].GetAsset().GetVersion() != "2.1" {
		t.Errorf("record 3 (quoted comma, line after a blank): %v", recs[2])
	}
}

func TestReadJSONLFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/cmdb.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	recs, f, err := Read(data, "")
	if err != nil || f != JSONL {
		t.Fatalf("read: %v (format %s)", err, f)
	}
	if len(recs) != 2 || recs[0].GetLine() != 2 || recs[0].GetAsset().GetRecordId() != "BM-0042" || recs[1].GetAsset().GetCriticality() != medmeshv1.Tier_TIER_CLINICAL {
		t.Fatalf("records %v", recs)
	}
}

func TestReadErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mac,colour\n00:00:00:00:00:01,red\n", `unknown field "colour"`},
		{"serial\nX\n", "a mac or an ip column is required"},
		{"mac,serial\n,X\n", "csv line 2: a record needs a mac or an ip"},
		{"mac,criticality\n00:00:00:00:00:01,urgent\n", `csv line 2: criticality "urgent"`},
		{"{\"mac\":\"a\"}\n{\"mac\":\"b\",\"colour\":\"red\"}\n", "jsonl line 2: unknown field"},
		{"{\"mac\":\"a\",\"serial\":3}\n", "jsonl line 1:"},
		{"{\"mac\":\"a\",\"vendor\":\"x\",\"manufacturer\":\"y\"}\n", "given twice"},
		{`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}}]}`, "bundle entry 1"},
		{`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Device","colour":"red"}}]}`, "unknown field"},
		{`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Device","status":"broken"}}]}`, "FHIRDeviceStatus"},
		{`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Device","id":"x"}}]}`, "no urn:medmesh:mac"},
	} {
		_, _, err := Read([]byte(tc.in), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

// The parsers never panic, and what they accept is well formed: every
// record names a device.
func fuzzRead(f *testing.F, format Format, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _, err := Read(data, format)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.GetMac() == "" && r.GetIp() == "" {
				t.Fatalf("record without a device: %v", r)
			}
		}
	})
}

func FuzzReadCSV(f *testing.F) {
	data, _ := os.ReadFile("testdata/biomed.csv")
	fuzzRead(f, CSV, string(data), "mac\n\"00:01\n", "ip,tier\n10.0.0.1,clinical\n")
}

func FuzzReadJSONL(f *testing.F) {
	data, _ := os.ReadFile("testdata/cmdb.jsonl")
	fuzzRead(f, JSONL, string(data), "{}\n", "{\"mac\":\"x\"}{}")
}

func FuzzReadFHIR(f *testing.F) {
	fuzzRead(f, FHIR, `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Device","id":"00-1b-44-11-3a-b7","serialNumber":"S","safety":[{"coding":[{"system":"urn:medmesh:tier","code":"clinical"}]}]}}]}`)
}

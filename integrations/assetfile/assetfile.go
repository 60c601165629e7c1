// Package assetfile reads asset register exports (CSV, JSON Lines, FHIR Bundles) into inventory import records.
package assetfile

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/medmesh/medmesh/integrations/fhir"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// MaxSize is the largest file Read accepts.
const MaxSize = 64 << 20

// Fields are the column names of a CSV export and the keys of a JSON Lines
// one: the inventory format of medmesh risk assess --inventory (name, os and
// sbom are read there and ignored here) plus udi, criticality and
// record_id. manufacturer and tier are accepted for vendor and criticality.
var Fields = []string{"mac", "ip", "name", "vendor", "model", "version", "os", "udi_di", "udi", "serial", "location", "owner", "criticality", "record_id", "sbom"}

var aliases = map[string]string{"manufacturer": "vendor", "tier": "criticality", "asset_tag": "record_id"}

// Format names an input format.
type Format string

const (
	CSV   Format = "csv"
	JSONL Format = "jsonl"
	FHIR  Format = "fhir"
)

// Detect guesses a file's format from its content: a JSON object whose
// resourceType is Bundle is FHIR, other JSON objects (after # comment
// lines) JSON Lines, anything else CSV with a header.
func Detect(data []byte) Format {
	t := bytes.TrimLeft(data, " \t\r\n\ufeff")
	for len(t) > 0 && t[0] == '#' { // JSON Lines comments
		_, rest, _ := bytes.Cut(t, []byte("\n"))
		t = bytes.TrimLeft(rest, " \t\r\n")
	}
	if len(t) == 0 || t[0] != '{' {
		return CSV
	}
	var probe struct {
		ResourceType string `json:"resourceType"`
	}
	dec := json.NewDecoder(bytes.NewReader(t))
	if dec.Decode(&probe) == nil && probe.ResourceType == "Bundle" {
		return FHIR
	}
	return JSONL
}

// Read parses data in format f ("" detects it).
func Read(data []byte, f Format) ([]*medmeshv1.AssetRecord, Format, error) {
	if len(data) > MaxSize {
		return nil, f, fmt.Errorf("asset file larger than %d bytes", MaxSize)
	}
	if f == "" {
		f = Detect(data)
	}
	var recs []*medmeshv1.AssetRecord
	var err error
	switch f {
	case CSV:
		recs, err = ReadCSV(bytes.NewReader(data))
	case JSONL:
		recs, err = ReadJSONL(bytes.NewReader(data))
	case FHIR:
		recs, err = ReadFHIR(data)
	default:
		return nil, f, fmt.Errorf("format %q: want csv, jsonl or fhir", f)
	}
	return recs, f, err
}

// row is one record's fields by canonical name.
type row map[string]string

func canonical(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if a, ok := aliases[n]; ok {
		n = a
	}
	for _, f := range Fields {
		if f == n {
			return n, nil
		}
	}
	return "", fmt.Errorf("unknown field %q (want %s)", name, strings.Join(Fields, ", "))
}

func (r row) record(line int) (*medmeshv1.AssetRecord, error) {
	if r["mac"] == "" && r["ip"] == "" {
		return nil, errors.New("a record needs a mac or an ip")
	}
	t, ok := tier(r["criticality"])
	if !ok {
		return nil, fmt.Errorf("criticality %q: want life-critical, clinical or non-clinical", r["criticality"])
	}
	return &medmeshv1.AssetRecord{
		Line: int32(line), Mac: r["mac"], Ip: r["ip"], Location: r["location"],
		Asset: &medmeshv1.Asset{
			Manufacturer: r["vendor"], Model: r["model"], Version: r["version"], Serial: r["serial"],
			Udi: r["udi"], UdiDi: r["udi_di"], Owner: r["owner"], Criticality: t, RecordId: r["record_id"],
		},
	}, nil
}

func tier(s string) (medmeshv1.Tier, bool) {
	if v, ok := medmeshv1.Tier_value[strings.ToUpper(strings.TrimSpace(s))]; ok {
		return medmeshv1.Tier(v), true
	}
	return fhir.TierOf(s)
}

// ReadCSV reads CSV with a header row naming Fields (any order, any case;
// at least mac or ip). Errors name the line.
func ReadCSV(r io.Reader) ([]*medmeshv1.AssetRecord, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = false
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	cols := make([]string, len(head))
	seen := map[string]bool{}
	for i, h := range head {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		c, err := canonical(h)
		if err != nil {
			return nil, fmt.Errorf("csv header: %w", err)
		}
		if seen[c] {
			return nil, fmt.Errorf("csv header: column %q twice", c)
		}
		seen[c], cols[i] = true, c
	}
	if !seen["mac"] && !seen["ip"] {
		return nil, errors.New("csv header: a mac or an ip column is required")
	}
	var out []*medmeshv1.AssetRecord
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		rw := row{}
		blank := true
		for i, v := range rec {
			v = strings.TrimSpace(v)
			rw[cols[i]] = v
			blank = blank && v == ""
		}
		if blank {
			continue
		}
		a, err := rw.record(line)
		if err != nil {
			return nil, fmt.Errorf("csv line %d: %w", line, err)
		}
		out = append(out, a)
	}
}

// ReadJSONL reads JSON Lines: one object of Fields per line (string
// values); blank lines and lines starting with # are skipped. Unknown keys
// are errors.
func ReadJSONL(r io.Reader) ([]*medmeshv1.AssetRecord, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var out []*medmeshv1.AssetRecord
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var m map[string]string
		dec := json.NewDecoder(bytes.NewReader(line))
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("jsonl line %d: %w", n, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("jsonl line %d: more than one JSON value", n)
		}
		if m == nil {
			return nil, fmt.Errorf("jsonl line %d: want an object", n)
		}
		rw := row{}
		for k, v := range m {
			c, err := canonical(k)
			if err != nil {
				return nil, fmt.Errorf("jsonl line %d: %w", n, err)
			}
			if _, dup := rw[c]; dup {
				return nil, fmt.Errorf("jsonl line %d: %q given twice", n, c)
			}
			rw[c] = strings.TrimSpace(v)
		}
		a, err := rw.record(n)
		if err != nil {
			return nil, fmt.Errorf("jsonl line %d: %w", n, err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("jsonl after line %d: %w", n, err)
	}
	return out, nil
}

// ReadFHIR reads a FHIR R4 Bundle of Device resources (strictly: see
// fhir.ParseBundle); each entry's number is its record's line.
func ReadFHIR(data []byte) ([]*medmeshv1.AssetRecord, error) {
	devs, err := fhir.ParseBundle(data)
	if err != nil {
		return nil, err
	}
	out := make([]*medmeshv1.AssetRecord, 0, len(devs))
	for i, d := range devs {
		r, err := fhir.Record(d)
		if err != nil {
			return nil, fmt.Errorf("bundle entry %d: %w", i+1, err)
		}
		r.Line = int32(i + 1)
		out = append(out, r)
	}
	return out, nil
}

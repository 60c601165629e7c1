// Package recall reads openFDA's medical device recall and enforcement
// data in the bulk download format (https://open.fda.gov/apis/downloads/):
// a JSON object {"meta": {..., "last_updated": "YYYY-MM-DD"}, "results":
// [...]}, plain or as the .json.zip openFDA serves. Device recall records
// (/device/recall, fields as in openFDA's devicerecall_schema.json) carry
// the recall number (product_res_number), firm, product code, 510(k) and
// PMA numbers; enforcement reports (/device/enforcement) carry the recall
// class. Records are joined by recall number.
package recall

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Recall is one recalled product.
type Recall struct {
	Number      string // Z-1234-2019
	Event       string
	Firm        string
	Reason      string
	Product     string // product_description
	CodeInfo    string
	ProductCode string
	KNumbers    []string
	PMANumbers  []string
	Class       string // "Class I", "Class II", "Class III"; empty when no enforcement report says
	Status      string
	Initiated   string // YYYY-MM-DD
}

// File is one bulk file's records.
type File struct {
	Updated time.Time
	Recalls []Recall
	// Enforcement is true for an enforcement file.
	Enforcement bool
}

// Parse reads one bulk file (JSON or a zip holding one JSON file).
func Parse(name string, data []byte) (*File, error) {
	if strings.HasSuffix(strings.ToLower(name), ".zip") {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, fmt.Errorf("%w (truncated or not a zip)", err)
		}
		if len(zr.File) != 1 {
			return nil, fmt.Errorf("zip holds %d files, want one JSON file", len(zr.File))
		}
		rc, err := zr.File[0].Open()
		if err != nil {
			return nil, fmt.Errorf("zip %s: %w", zr.File[0].Name, err)
		}
		data, err = io.ReadAll(io.LimitReader(rc, 4<<30))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("zip %s: %w", zr.File[0].Name, err)
		}
	}
	var raw struct {
		Meta *struct {
			LastUpdated string `json:"last_updated"`
		} `json:"meta"`
		Results []map[string]json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, lineError(data, err)
	}
	if raw.Meta == nil || raw.Results == nil {
		return nil, errors.New(`not an openFDA bulk file: want {"meta": ..., "results": [...]}`)
	}
	f := &File{}
	t, err := time.Parse(time.DateOnly, raw.Meta.LastUpdated)
	if err != nil {
		return nil, fmt.Errorf("meta.last_updated %q: %v", raw.Meta.LastUpdated, err)
	}
	f.Updated = t
	for i, r := range raw.Results {
		var rec Recall
		var err error
		_, isEnf := r["classification"]
		if isEnf {
			f.Enforcement = true
			rec, err = enforcement(r)
		} else {
			rec, err = deviceRecall(r)
		}
		if err != nil {
			return nil, fmt.Errorf("results[%d]: %w", i, err)
		}
		f.Recalls = append(f.Recalls, rec)
	}
	return f, nil
}

func str(r map[string]json.RawMessage, k string) (string, error) {
	v, ok := r[k]
	if !ok || string(v) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%s: want a string: %w", k, err)
	}
	return strings.TrimSpace(s), nil
}

func strs(r map[string]json.RawMessage, k string) ([]string, error) {
	v, ok := r[k]
	if !ok || string(v) == "null" {
		return nil, nil
	}
	var s []string
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("%s: want an array of strings: %w", k, err)
	}
	return s, nil
}

func deviceRecall(r map[string]json.RawMessage) (Recall, error) {
	var rec Recall
	var errs []error
	get := func(k string) string { s, err := str(r, k); errs = append(errs, err); return s }
	rec.Number = get("product_res_number")
	rec.Event = get("res_event_number")
	rec.Firm = get("recalling_firm")
	rec.Reason = get("reason_for_recall")
	rec.Product = get("product_description")
	rec.CodeInfo = get("code_info")
	rec.ProductCode = get("product_code")
	rec.Status = get("recall_status")
	rec.Initiated = get("event_date_initiated")
	var err error
	rec.KNumbers, err = strs(r, "k_numbers")
	errs = append(errs, err)
	rec.PMANumbers, err = strs(r, "pma_numbers")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return rec, err
	}
	if rec.Number == "" || rec.Firm == "" {
		return rec, errors.New("device recall without product_res_number or recalling_firm")
	}
	if rec.Initiated != "" {
		if _, err := time.Parse(time.DateOnly, rec.Initiated); err != nil {
			return rec, fmt.Errorf("event_date_initiated %q: want YYYY-MM-DD", rec.Initiated)
		}
	}
	return rec, nil
}

func enforcement(r map[string]json.RawMessage) (Recall, error) {
	var rec Recall
	var errs []error
	get := func(k string) string { s, err := str(r, k); errs = append(errs, err); return s }
	rec.Number = get("recall_number")
	rec.Event = get("event_id")
	rec.Firm = get("recalling_firm")
	rec.Reason = get("reason_for_recall")
	rec.Product = get("product_description")
	rec.CodeInfo = get("code_info")
	rec.Class = get("classification")
	rec.Status = get("status")
	init := get("recall_initiation_date")
	if err := errors.Join(errs...); err != nil {
		return rec, err
	}
	if rec.Number == "" || rec.Firm == "" {
		return rec, errors.New("enforcement report without recall_number or recalling_firm")
	}
	switch rec.Class {
	case "Class I", "Class II", "Class III", "Not Yet Classified":
	default:
		return rec, fmt.Errorf("classification %q: want Class I, II or III", rec.Class)
	}
	if init != "" {
		t, err := time.Parse("20060102", init)
		if err != nil {
			return rec, fmt.Errorf("recall_initiation_date %q: want YYYYMMDD", init)
		}
		rec.Initiated = t.Format(time.DateOnly)
	}
	return rec, nil
}

// Join merges enforcement reports into device recalls by recall number:
// a recall gets its class; an enforcement report without a device recall
// record is kept as a recall of its own.
func Join(files []*File) []Recall {
	byNum := map[string]*Recall{}
	var order []string
	for _, pass := range []bool{false, true} {
		for _, f := range files {
			if f.Enforcement != pass {
				continue
			}
			for _, r := range f.Recalls {
				if old := byNum[r.Number]; old != nil {
					if r.Class != "" {
						old.Class = r.Class
					}
					continue
				}
				r := r
				byNum[r.Number] = &r
				order = append(order, r.Number)
			}
		}
	}
	out := make([]Recall, 0, len(order))
	for _, n := range order {
		out = append(out, *byNum[n])
	}
	return out
}

func lineError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	off := int64(-1)
	if errors.As(err, &se) {
		off = se.Offset
	} else if errors.As(err, &te) {
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	return fmt.Errorf("line %d: %w", 1+bytes.Count(data[:off], []byte("\n")), err)
}

// Package kev reads CISA's Known Exploited Vulnerabilities catalog in its
// published JSON form (known_exploited_vulnerabilities.json, schema at
// https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities_schema.json).
package kev

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Catalog is one KEV catalog.
type Catalog struct {
	Version  string
	Released time.Time
	Entries  map[string]Entry // by CVE id
}

// Entry is one known exploited vulnerability.
type Entry struct {
	CVE              string `json:"cveID"`
	VendorProject    string `json:"vendorProject"`
	Product          string `json:"product"`
	Name             string `json:"vulnerabilityName"`
	DateAdded        string `json:"dateAdded"`
	RequiredAction   string `json:"requiredAction"`
	DueDate          string `json:"dueDate"`
	RansomwareUse    string `json:"knownRansomwareCampaignUse"`
	ShortDescription string `json:"shortDescription"`
}

var cveID = regexp.MustCompile(`^CVE-\d{4}-\d{4,}$`)

// Parse reads a catalog; errors name the line or the entry that is wrong.
func Parse(data []byte) (*Catalog, error) {
	var raw struct {
		Title           *string `json:"title"`
		CatalogVersion  string  `json:"catalogVersion"`
		DateReleased    string  `json:"dateReleased"`
		Count           int     `json:"count"`
		Vulnerabilities []Entry `json:"vulnerabilities"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, lineError(data, err)
	}
	if raw.Title == nil || raw.Vulnerabilities == nil {
		return nil, errors.New("not a KEV catalog: no title or vulnerabilities")
	}
	c := &Catalog{Version: raw.CatalogVersion, Entries: make(map[string]Entry, len(raw.Vulnerabilities))}
	if t, err := time.Parse(time.RFC3339, raw.DateReleased); err == nil {
		c.Released = t.UTC()
	} else {
		return nil, fmt.Errorf("dateReleased %q: %v", raw.DateReleased, err)
	}
	for i, e := range raw.Vulnerabilities {
		if !cveID.MatchString(e.CVE) {
			return nil, fmt.Errorf("vulnerabilities[%d]: cveID %q is not a CVE id", i, e.CVE)
		}
		if _, err := time.Parse(time.DateOnly, e.DateAdded); err != nil {
			return nil, fmt.Errorf("vulnerabilities[%d] (%s): dateAdded %q: %v", i, e.CVE, e.DateAdded, err)
		}
		c.Entries[e.CVE] = e
	}
	if raw.Count != len(raw.Vulnerabilities) {
		return nil, fmt.Errorf("count says %d, the catalog holds %d (truncated?)", raw.Count, len(raw.Vulnerabilities))
	}
	return c, nil
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

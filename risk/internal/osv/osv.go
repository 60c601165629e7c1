// Package osv loads Open Source Vulnerability records (the OSV schema,
// https://ossf.github.io/osv-schema/) from a directory of .json files or an
// ecosystem all.zip as osv.dev publishes it, indexes them by ecosystem and
// package, and says which records affect a package version, using each
// ecosystem's own version order (osv-scalibr's semantic package): Debian
// epochs and tildes, PEP 440, Maven qualifiers, SemVer pre-releases.
package osv

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Record is one OSV entry, the fields matching needs.
type Record struct {
	SchemaVersion    string          `json:"schema_version,omitempty"`
	ID               string          `json:"id"`
	Modified         string          `json:"modified"`
	Published        string          `json:"published,omitempty"`
	Withdrawn        string          `json:"withdrawn,omitempty"`
	Aliases          []string        `json:"aliases,omitempty"`
	Upstream         []string        `json:"upstream,omitempty"`
	Related          []string        `json:"related,omitempty"`
	Summary          string          `json:"summary,omitempty"`
	Details          string          `json:"details,omitempty"`
	Severity         []Severity      `json:"severity,omitempty"`
	Affected         []Affected      `json:"affected,omitempty"`
	References       []Reference     `json:"references,omitempty"`
	DatabaseSpecific json.RawMessage `json:"database_specific,omitempty"`
}

// Severity is a scored severity: Type is CVSS_V2, CVSS_V3, CVSS_V4 or
// Ubuntu; Score is the vector (or the Ubuntu word).
type Severity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

// Affected is one package the record affects and which versions.
type Affected struct {
	Package           Package         `json:"package"`
	Severity          []Severity      `json:"severity,omitempty"`
	Ranges            []Range         `json:"ranges,omitempty"`
	Versions          []string        `json:"versions,omitempty"`
	EcosystemSpecific json.RawMessage `json:"ecosystem_specific,omitempty"`
	DatabaseSpecific  json.RawMessage `json:"database_specific,omitempty"`
}

// Package names a package in an ecosystem ("PyPI", "Debian:12", …).
type Package struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
	PURL      string `json:"purl,omitempty"`
}

// Range is a set of events over one version order: SEMVER, ECOSYSTEM or GIT.
type Range struct {
	Type   string  `json:"type"`
	Repo   string  `json:"repo,omitempty"`
	Events []Event `json:"events"`
}

// Event is one of introduced, fixed, last_affected or limit.
type Event struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

// Reference is a link with its kind (ADVISORY, FIX, WEB, …).
type Reference struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// ParseRecord decodes and checks one OSV JSON record.
func ParseRecord(data []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("not an OSV record: %w", err)
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Record) validate() error {
	if strings.TrimSpace(r.ID) == "" {
		return fmt.Errorf("OSV record without an id")
	}
	for i, a := range r.Affected {
		if a.Package.Name == "" && len(a.Ranges) > 0 && a.Ranges[0].Type != "GIT" {
			return fmt.Errorf("%s: affected[%d] has no package name", r.ID, i)
		}
		for j, rg := range a.Ranges {
			switch rg.Type {
			case "SEMVER", "ECOSYSTEM", "GIT":
			default:
				return fmt.Errorf("%s: affected[%d].ranges[%d]: unknown range type %q", r.ID, i, j, rg.Type)
			}
			if len(rg.Events) == 0 {
				return fmt.Errorf("%s: affected[%d].ranges[%d] has no events", r.ID, i, j)
			}
			for k, e := range rg.Events {
				n := 0
				for _, v := range []string{e.Introduced, e.Fixed, e.LastAffected, e.Limit} {
					if v != "" {
						n++
					}
				}
				if n != 1 {
					return fmt.Errorf("%s: affected[%d].ranges[%d].events[%d] must have exactly one of introduced, fixed, last_affected, limit", r.ID, i, j, k)
				}
			}
		}
	}
	return nil
}

// CVEs returns the record's CVE ids: its own id if it is one, then its
// aliases and upstream ids that are, without repeats, in that order.
func (r *Record) CVEs() []string {
	var out []string
	seen := map[string]bool{}
	for _, id := range append(append([]string{r.ID}, r.Aliases...), r.Upstream...) {
		if strings.HasPrefix(id, "CVE-") && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

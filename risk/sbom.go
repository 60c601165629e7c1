package risk

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	packageurl "github.com/package-url/packageurl-go"

	"github.com/medmesh/medmesh/risk/internal/osv"
	"github.com/medmesh/medmesh/risk/internal/sbom"
)

// SourceOSV is the Source of findings matched from OSV records.
const SourceOSV = "osv"

// Skipped is an SBOM component that could not be checked against OSV, and
// why: it has no package URL, its package URL has no OSV ecosystem, or its
// version does not parse in its ecosystem.
type Skipped struct {
	Component string `json:"component"` // the package URL, or the name and version
	Reason    string `json:"reason"`
}

// SBOMFindings matches every component of doc that has a package URL
// against db, each in its ecosystem's version order, and returns one
// vulnerability finding per component and vulnerability: confidence exact
// when a record lists the version, range when the version lies in a
// record's range. A vulnerability is identified by its CVE id when the
// records name exactly one, so the OSV records of several databases about
// one CVE (GHSA-…, PYSEC-…) become one finding. VEX statements (those doc
// carries, then those of each vex document in order, a later statement
// about the same component and vulnerability overriding an earlier one)
// that declare a component not affected set the finding's Suppressed;
// suppressed findings stay in the list. The result is sorted by component
// then id, and does not depend on map order or time.
func SBOMFindings(doc *sbom.Document, db *osv.DB, vex ...*sbom.Document) ([]Finding, []Skipped) {
	var statements []sbom.Statement
	statements = append(statements, doc.VEX...)
	for _, v := range vex {
		if v != nil {
			statements = append(statements, v.VEX...)
		}
	}

	type key struct{ component, id string }
	merged := map[key]*merge{}
	var skipped []Skipped
	seen := map[string]bool{}
	for i := range doc.Components {
		c := &doc.Components[i]
		if c.PURL == "" {
			skipped = append(skipped, Skipped{Component: strings.TrimSpace(c.Name + " " + c.Version), Reason: "no package URL"})
			continue
		}
		if seen[c.PURL] {
			continue // listed twice (a binary and its source, say)
		}
		seen[c.PURL] = true
		q, err := osv.QueryFromPURL(c.PURL)
		if err != nil {
			skipped = append(skipped, Skipped{Component: c.PURL, Reason: err.Error()})
			continue
		}
		matches, err := db.Query(q)
		if err != nil {
			skipped = append(skipped, Skipped{Component: c.PURL, Reason: err.Error()})
			continue
		}
		for _, m := range matches {
			id := m.Record.ID
			if cves := m.Record.CVEs(); len(cves) == 1 {
				id = cves[0]
			}
			k := key{c.PURL, id}
			mg := merged[k]
			if mg == nil {
				mg = &merge{component: c, query: q, id: id}
				merged[k] = mg
			}
			mg.add(m)
		}
	}

	findings := make([]Finding, 0, len(merged))
	for _, mg := range merged {
		f := mg.finding()
		for _, st := range statements {
			if mg.about(st) && refersTo(st, mg.component) {
				if st.NotAffected() {
					f.Suppressed = suppression(st)
				} else {
					f.Suppressed = ""
				}
			}
		}
		findings = append(findings, f)
	}
	slices.SortFunc(findings, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.Component, b.Component), strings.Compare(a.ID, b.ID))
	})
	slices.SortStableFunc(skipped, func(a, b Skipped) int { return strings.Compare(a.Component, b.Component) })
	return findings, skipped
}

// merge gathers the OSV records that name one vulnerability in one
// component.
type merge struct {
	component *sbom.Component
	query     osv.Query
	id        string
	matches   []osv.Match // in record id order
}

func (mg *merge) add(m osv.Match) { mg.matches = append(mg.matches, m) }

func (mg *merge) finding() Finding {
	f := Finding{
		Kind:       KindVulnerability,
		ID:         mg.id,
		Source:     SourceOSV,
		Confidence: ConfidenceRange,
		Component:  mg.component.PURL,
	}
	var ids []string
	var summary string
	var best osv.Score
	for _, m := range mg.matches {
		ids = append(ids, m.Record.ID)
		if m.Exact {
			f.Confidence = ConfidenceExact
		}
		if f.FixedVersion == "" {
			f.FixedVersion = m.Fixed
		}
		if summary == "" {
			summary = recordSummary(m.Record)
		}
		s := m.Record.Score(m.Affected)
		if s.Base > best.Base || (best.Rating == "" && s.Rating != "") {
			best = s
		}
	}
	f.CVSS, f.CVSSVector = best.Base, best.Vector
	f.Severity = severityWord(best.Rating)
	name := mg.query.Name
	f.Summary = fmt.Sprintf("%s %s: %s [%s]", name, mg.query.Version, summary, strings.Join(ids, ", "))
	if best.Rating == "" {
		f.Summary += " (no severity stated; medium assumed)"
	}
	if f.FixedVersion != "" {
		f.Remediation = fmt.Sprintf("upgrade %s to %s or later", name, f.FixedVersion)
	} else {
		f.Remediation = fmt.Sprintf("no fixed version of %s is published", name)
	}
	return f
}

// about says whether a VEX statement names this vulnerability: by the
// finding's id, a record's id, or any of their aliases.
func (mg *merge) about(st sbom.Statement) bool {
	names := append([]string{st.ID}, st.Aliases...)
	for _, n := range names {
		if n == "" {
			continue
		}
		if n == mg.id {
			return true
		}
		for _, m := range mg.matches {
			if n == m.Record.ID || slices.Contains(m.Record.Aliases, n) || slices.Contains(m.Record.Upstream, n) {
				return true
			}
		}
	}
	return false
}

// refersTo says whether a statement's affects list names the component:
// by its bom-ref/SPDXID, or by a package URL of the same package (and the
// same version, when the reference gives one; qualifiers aside).
func refersTo(st sbom.Statement, c *sbom.Component) bool {
	for _, ref := range st.Refs {
		if ref == c.Ref && ref != "" || ref == c.PURL {
			return true
		}
		if !strings.HasPrefix(ref, "pkg:") {
			continue
		}
		rp, err := packageurl.FromString(ref)
		if err != nil {
			continue
		}
		cp, err := packageurl.FromString(c.PURL)
		if err != nil {
			continue
		}
		if rp.Type == cp.Type && rp.Namespace == cp.Namespace && rp.Name == cp.Name &&
			(rp.Version == "" || rp.Version == cp.Version) {
			return true
		}
	}
	return false
}

func suppression(st sbom.Statement) string {
	s := "vex " + st.State
	if st.Justification != "" {
		s += " (" + st.Justification + ")"
	}
	if st.Detail != "" {
		s += ": " + st.Detail
	}
	return s
}

func recordSummary(r *osv.Record) string {
	s := strings.TrimSpace(r.Summary)
	if s == "" {
		s, _, _ = strings.Cut(strings.TrimSpace(r.Details), "\n")
	}
	if len(s) > 160 {
		cut := strings.LastIndex(s[:160], " ")
		if cut < 80 {
			cut = 160
			for cut > 0 && !utf8.RuneStart(s[cut]) {
				cut--
			}
		}
		s = s[:cut] + "…"
	}
	return s
}

// severityWord maps a CVSS rating onto Finding.Severity; a record that
// states no severity counts as medium.
func severityWord(rating string) string {
	switch rating {
	case "critical", "high", "medium", "low":
		return rating
	case "none":
		return "info"
	}
	return "medium"
}

// OSVMatcher matches the SBOM file a device names (Device.SBOM) against an
// OSV database, with the VEX statements the SBOM carries and those given
// to NewOSVMatcher. It reads and matches each SBOM file once: devices of
// one model share one SBOM. It is the SBOMMatcher (*Intel).UseSBOM takes,
// and is safe for concurrent use.
type OSVMatcher struct {
	db  *osv.DB
	vex []*sbom.Document

	mu   sync.Mutex
	done map[string]*sbomResult
}

type sbomResult struct {
	once     sync.Once
	findings []Finding
	err      error
}

// NewOSVMatcher returns a matcher over db; vex documents apply to every
// SBOM (statements name components by package URL or bom-ref).
func NewOSVMatcher(db *osv.DB, vex ...*sbom.Document) *OSVMatcher {
	return &OSVMatcher{db: db, vex: vex, done: map[string]*sbomResult{}}
}

// NewOSVMatcherFromFiles builds the database from OSV files as a bundle
// holds them (name → content: .json records, ecosystem .zip archives), the
// form (*Intel).Files("osv") returns.
func NewOSVMatcherFromFiles(files map[string][]byte, vex ...*sbom.Document) (*OSVMatcher, error) {
	db, err := osv.FromFiles(files)
	if err != nil {
		return nil, err
	}
	return NewOSVMatcher(db, vex...), nil
}

// MatchSBOM returns the vulnerability findings of d's SBOM, most urgent
// first (Assess's order); a device without one has none. An SBOM that
// cannot be read is an error naming the file; components that cannot be
// checked are left out (SBOMFindings returns them with the reason).
func (m *OSVMatcher) MatchSBOM(d Device) ([]Finding, error) {
	fs, err := m.sortedSBOM(d)
	return slices.Clone(fs), err
}

// sortedSBOM is MatchSBOM without the copy: the findings are shared by
// every device that names the same SBOM file and must not be changed.
func (m *OSVMatcher) sortedSBOM(d Device) ([]Finding, error) {
	if d.SBOM == "" {
		return nil, nil
	}
	m.mu.Lock()
	r, ok := m.done[d.SBOM]
	if !ok {
		r = &sbomResult{}
		m.done[d.SBOM] = r
	}
	m.mu.Unlock()
	r.once.Do(func() {
		doc, err := sbom.ReadFile(d.SBOM)
		if err != nil {
			r.err = err
			return
		}
		r.findings, _ = SBOMFindings(doc, m.db, m.vex...)
		sortFindings(r.findings)
	})
	return r.findings, r.err
}

package risk

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/medmesh/medmesh/risk/internal/csaf"
	"github.com/medmesh/medmesh/risk/internal/eol"
	"github.com/medmesh/medmesh/risk/internal/gudid"
	"github.com/medmesh/medmesh/risk/internal/version"
)

// SBOMMatcher finds the vulnerabilities of the components of a device's
// SBOM (Device.SBOM). The SBOM and OSV work plugs one in with UseSBOM;
// without one, Assess reports no SBOM findings and SBOMAssessed says so.
type SBOMMatcher interface {
	MatchSBOM(d Device) ([]Finding, error)
}

// UseSBOM sets the matcher for devices that name an SBOM. Call it before
// sharing the Intel between goroutines.
func (in *Intel) UseSBOM(m SBOMMatcher) { in.sbom = m }

// SBOMAssessed reports whether Assess looks at d's SBOM.
func (in *Intel) SBOMAssessed(d Device) bool { return d.SBOM == "" || in.sbom != nil }

// prodRef is one advisory product, prepared for matching.
type prodRef struct {
	adv    *csaf.Advisory
	p      *csaf.Product
	names  [][]string // word lists of the product's names and model numbers
	joined []string   // the same, each joined without spaces
	vkeys  []string
}

func (in *Intel) indexProducts() {
	for _, a := range in.advisories {
		ids := make([]string, 0, len(a.Products))
		for id := range a.Products {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			p := a.Products[id]
			r := prodRef{adv: a, p: p, vkeys: in.vendors.Keys(p.Vendor)}
			for _, n := range append([]string{p.Name, stripVendor(p.Name, p.Vendor)}, p.Models...) {
				if w := words(n); len(w) > 0 {
					r.names = append(r.names, w)
					r.joined = append(r.joined, strings.Join(w, ""))
				}
			}
			keys := r.vkeys
			if len(keys) == 0 {
				keys = []string{""}
			}
			for _, k := range keys {
				in.products[k] = append(in.products[k], r)
			}
		}
	}
}

var confRank = map[Confidence]int{ConfidenceExact: 5, ConfidenceRange: 4, ConfidenceModel: 3, ConfidenceVendor: 2, ConfidencePossible: 1}

// Assess returns every finding for d, most urgent first, at time at (which
// decides what has reached its end of life). The result depends only on d,
// at and the bundle. The error is the SBOM matcher's.
func (in *Intel) Assess(d Device, at time.Time) ([]Finding, error) {
	d = in.enrich(d)
	dkeys := in.vendors.Keys(d.Vendor)
	var out []Finding
	out = append(out, in.vulnerabilities(d, dkeys)...)
	if f, ok := in.endOfLife(d, at); ok {
		out = append(out, f)
	}
	out = append(out, in.recallFindings(d, dkeys)...)
	out = append(out, in.credentialFindings(d, dkeys)...)
	if d.SBOM == "" || in.sbom == nil {
		sortFindings(out)
		return out, nil
	}
	// An SBOM is shared by every device of its model: a matcher that keeps
	// its findings sorted most urgent first (OSVMatcher) lends them, and
	// they are merged with the device's own, not copied and sorted again.
	if sm, ok := in.sbom.(sortedSBOMMatcher); ok {
		fs, err := sm.sortedSBOM(d)
		if err != nil {
			return nil, fmt.Errorf("sbom %s: %w", d.SBOM, err)
		}
		sortFindings(out)
		return mergeFindings(out, fs), nil
	}
	fs, err := in.sbom.MatchSBOM(d)
	if err != nil {
		return nil, fmt.Errorf("sbom %s: %w", d.SBOM, err)
	}
	out = append(out, fs...)
	sortFindings(out)
	return out, nil
}

// sortedSBOMMatcher is an SBOMMatcher that can lend its findings of an
// SBOM, in sortFindings order, for reading only.
type sortedSBOMMatcher interface {
	sortedSBOM(d Device) ([]Finding, error)
}

// mergeFindings merges a and b, each in sortFindings order, into a new
// slice in that order, taking a's finding first when two compare equal:
// the same result as sortFindings of a followed by b (a stable sort).
func mergeFindings(a, b []Finding) []Finding {
	out := make([]Finding, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if compareFindings(&b[0], &a[0]) < 0 {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// enrich fills vendor and model from GUDID when the device has a UDI-DI
// and lacks them.
func (in *Intel) enrich(d Device) Device {
	if d.UDIDI == "" {
		return d
	}
	if g, ok := in.gudid.Lookup(d.UDIDI); ok {
		if d.Vendor == "" {
			d.Vendor = g.Company
		}
		if d.Model == "" {
			d.Model = g.Model
		}
	}
	return d
}

type vulnMatch struct {
	conf       Confidence
	adv        *csaf.Advisory
	v          *csaf.Vuln
	p          *csaf.Product
	suppressed string
}

func (in *Intel) vulnerabilities(d Device, dkeys []string) []Finding {
	dv, hasVersion := version.Parse(d.Version)
	model := words(d.Model)
	var cands []prodRef
	for _, k := range dkeys {
		cands = append(cands, in.products[k]...)
	}
	if len(model) > 0 {
		cands = append(cands, in.products[""]...)
	}
	best := map[string]*vulnMatch{}
	var order []string
	notAffected := map[string]vulnMatch{}
	for _, r := range cands {
		conf, ok := in.matchProduct(r, d, model, dv, hasVersion)
		if !ok {
			continue
		}
		for i := range r.adv.Vulns {
			v := &r.adv.Vulns[i]
			if v.CVE == "" {
				continue
			}
			id := r.p.ID
			switch {
			case slices.Contains(v.Affected, id):
				m := best[v.CVE]
				if m == nil {
					order = append(order, v.CVE)
				}
				if m == nil || confRank[conf] > confRank[m.conf] || conf == m.conf && r.adv.ID < m.adv.ID {
					best[v.CVE] = &vulnMatch{conf: conf, adv: r.adv, v: v, p: r.p}
				}
			case slices.Contains(v.NotAffected, id) || slices.Contains(v.Fixed, id):
				if conf == ConfidenceExact || conf == ConfidenceRange {
					why := "fixed"
					if slices.Contains(v.NotAffected, id) {
						why = "known_not_affected"
						if j := v.Justification[id]; j != "" {
							why += ": " + j
						}
					}
					notAffected[v.CVE] = vulnMatch{conf: conf, adv: r.adv, p: r.p, suppressed: fmt.Sprintf("VEX %s (%s, %s %s)", why, r.adv.ID, r.p.Name, r.p.VersionText)}
				}
			}
		}
	}
	var out []Finding
	for _, cve := range order {
		m := best[cve]
		f := Finding{
			Kind: KindVulnerability, ID: cve, Source: m.adv.ID, Confidence: m.conf,
			Summary: summaryOf(m),
		}
		if s, ok := m.v.Scores[m.p.ID]; ok {
			f.CVSS, f.CVSSVector = s.Base, s.Vector
		}
		if e, ok := in.epss[cve]; ok {
			f.EPSS = e.EPSS
		}
		_, f.KEV = in.kev[cve]
		f.FixedVersion = fixedVersion(m)
		f.Remediation = remediation(m.v, m.p.ID)
		f.Severity = severity(f.CVSS, f.KEV)
		if na, ok := notAffected[cve]; ok {
			f.Suppressed = na.suppressed
		}
		out = append(out, f)
	}
	return out
}

func summaryOf(m *vulnMatch) string {
	what := strings.TrimSpace(m.p.Vendor + " " + m.p.Name + " " + m.p.VersionText)
	if m.p.Component != "" {
		what += " (" + m.p.Component + ")"
	}
	title := m.v.Title
	if title == "" {
		title = m.adv.Title
	}
	return fmt.Sprintf("%s: %s", title, what)
}

// matchProduct decides whether d is an instance of the product, and how
// sure that is.
func (in *Intel) matchProduct(r prodRef, d Device, model []string, dv version.Version, hasVersion bool) (Confidence, bool) {
	if len(model) == 0 {
		if len(r.vkeys) == 0 {
			return "", false
		}
		return ConfidenceVendor, true
	}
	c := r.p.Constraint
	matched := false
	mj := strings.Join(model, "")
	for i, n := range r.names {
		if mj == r.joined[i] || sameModel(model, n) {
			matched = true
			break
		}
	}
	if !matched {
		// The version branch may name a model ("MMT-1710" under "MiniMed
		// 620G"): a device of that model has every version affected.
		for _, a := range c.Alts {
			if a.Exact != nil && sameModel(model, words(a.Exact.String())) {
				matched, c = true, version.Constraint{Any: true}
				break
			}
		}
	}
	if !matched {
		return "", false
	}
	if !hasVersion || c.Unknown != "" {
		return ConfidenceModel, true
	}
	ok, exact := c.Match(dv)
	switch {
	case !ok:
		return "", false
	case exact:
		return ConfidenceExact, true
	}
	return ConfidenceRange, true
}

// sameModel reports whether a device's model names a product: the same
// words, or the device's words inside the product name (or the other way
// round) when they carry a model number.
func sameModel(dev, prod []string) bool {
	if len(dev) == 0 || len(prod) == 0 {
		return false
	}
	if strings.Join(dev, "") == strings.Join(prod, "") {
		return true
	}
	hasDigit := func(ws []string) bool {
		return slices.ContainsFunc(ws, func(w string) bool { return strings.ContainsAny(w, "0123456789") })
	}
	if hasDigit(dev) && contains(prod, dev) {
		return true
	}
	return len(prod) >= 2 && hasDigit(prod) && contains(dev, prod)
}

// contains reports whether sub occurs as consecutive words in ws.
func contains(ws, sub []string) bool {
	for i := 0; i+len(sub) <= len(ws); i++ {
		if slices.Equal(ws[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// words splits a name into lower-case runs of letters and digits.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

func joined(s string) string { return strings.Join(words(s), "") }

// stripVendor drops a leading vendor name from a product name ("BD Pyxis
// MedStation" -> "Pyxis MedStation").
func stripVendor(name, vendor string) string {
	nw, vw := words(name), words(vendor)
	for _, v := range vw {
		if len(nw) > 1 && nw[0] == v {
			nw = nw[1:]
		}
	}
	if len(nw) > 1 && (nw[0] == "bd" || nw[0] == "ge" || nw[0] == "philips") {
		nw = nw[1:]
	}
	return strings.Join(nw, " ")
}

func fixedVersion(m *vulnMatch) string {
	var fixed []string
	for _, id := range m.v.Fixed {
		p := m.adv.Products[id]
		if p != nil && p.VersionText != "" && slices.Equal(words(p.Name), words(m.p.Name)) && !slices.Contains(fixed, p.VersionText) {
			fixed = append(fixed, p.VersionText)
		}
	}
	return strings.Join(fixed, ", ")
}

func remediation(v *csaf.Vuln, id string) string {
	var parts []string
	for _, r := range v.Remediations {
		if len(r.ProductIDs) > 0 && !slices.Contains(r.ProductIDs, id) || r.Details == "" {
			continue
		}
		parts = append(parts, r.Category+": "+r.Details)
	}
	return strings.Join(parts, " | ")
}

func severity(cvss float64, kev bool) string {
	s := "medium"
	switch {
	case cvss >= 9:
		s = "critical"
	case cvss >= 7:
		s = "high"
	case cvss >= 4 || cvss == 0:
		s = "medium"
	default:
		s = "low"
	}
	if kev && (s == "medium" || s == "low") {
		s = "high"
	}
	return s
}

func (in *Intel) endOfLife(d Device, at time.Time) (Finding, bool) {
	if d.OS == "" {
		return Finding{}, false
	}
	m, ok := in.eol.Lookup(d.OS)
	if !ok || !m.Release.EOL.Passed(at) {
		return Finding{}, false
	}
	r := m.Release
	conf := ConfidenceModel
	if m.Exact {
		conf = ConfidenceExact
	}
	src := m.Product.Source
	if strings.Contains(r.Link, eol.LegacySource) {
		src = eol.LegacySource
	}
	sum := fmt.Sprintf("%s %s: security support ended", m.Product.Title, r.Label)
	if !r.EOL.Time.IsZero() {
		sum += " " + r.EOL.String()
	}
	if r.EOES.Set && !r.EOES.Passed(at) {
		sum += fmt.Sprintf("; paid extended security updates until %s", r.EOES)
	} else if r.EOES.Set {
		sum += fmt.Sprintf("; paid extended security updates ended %s", r.EOES)
	}
	sum += fmt.Sprintf(" (device reports %q)", d.OS)
	return Finding{
		Kind: KindEndOfLife, ID: "eol:" + m.Product.Name + "/" + r.Cycle, Source: src, Confidence: conf,
		Severity: "high", Summary: sum, Product: m.Product.Title, Release: r.Label, EOLDate: r.EOL.String(),
		Remediation: r.Link,
	}, true
}

func (in *Intel) gudidDevice(d Device, dkeys []string) *gudid.Device {
	if g, ok := in.gudid.Lookup(d.UDIDI); ok && d.UDIDI != "" {
		return g
	}
	for _, g := range in.gudidModel[joined(d.Model)] {
		if in.vendors.Same(dkeys, in.vendors.Keys(g.Company)) {
			return g
		}
	}
	return nil
}

func (in *Intel) recallFindings(d Device, dkeys []string) []Finding {
	g := in.gudidDevice(d, dkeys)
	seen := map[int]bool{}
	var out []Finding
	consider := func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		r := in.recalls[i]
		var conf Confidence
		var why string
		firm := in.vendors.Same(dkeys, in.recallKeys[i]) || g != nil && in.vendors.Same(in.vendors.Keys(g.Company), in.recallKeys[i])
		switch {
		case g != nil && premarketMatch(g.Premarket, append(slices.Clone(r.KNumbers), r.PMANumbers...)) != "":
			conf, why = ConfidenceExact, "GUDID premarket submission "+premarketMatch(g.Premarket, append(slices.Clone(r.KNumbers), r.PMANumbers...))+" of device "+g.PrimaryDI
		case g != nil && firm && r.ProductCode != "" && slices.Contains(g.ProductCodes, r.ProductCode):
			conf, why = ConfidenceExact, "product code "+r.ProductCode+" and firm of GUDID device "+g.PrimaryDI
		case firm && len(joined(d.Model)) >= 3 && (contains(words(r.Product), words(d.Model)) || contains(words(r.CodeInfo), words(d.Model))):
			conf, why = ConfidencePossible, "firm and model text only"
		default:
			return
		}
		sev := map[string]string{"Class I": "critical", "Class II": "medium", "Class III": "low"}[r.Class]
		if sev == "" {
			sev = "medium"
		}
		out = append(out, Finding{
			Kind: KindRecall, ID: r.Number, Source: "openFDA", Confidence: conf, Severity: sev,
			Summary:      fmt.Sprintf("%s recall %s (%s, initiated %s; matched on %s): %s", r.Firm, r.Number, cmp.Or(r.Status, "status unknown"), cmp.Or(r.Initiated, "?"), why, truncate(r.Product, 200)),
			RecallNumber: r.Number, RecallClass: r.Class, Reason: r.Reason,
		})
	}
	keys := dkeys
	if g != nil {
		keys = append(slices.Clone(keys), in.vendors.Keys(g.Company)...)
	}
	for _, k := range keys {
		for _, i := range in.recallsBy[k] {
			consider(i)
		}
	}
	if g != nil { // a premarket number is enough, whatever the firm is called
		for i := range in.recalls {
			consider(i)
		}
	}
	return out
}

// premarketMatch returns the first submission number both lists share
// (a PMA supplement "P970003/S100" counts as its PMA "P970003").
func premarketMatch(device, recall []string) string {
	base := func(s string) string { b, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(s)), "/"); return b }
	for _, a := range device {
		for _, b := range recall {
			if base(a) != "" && base(a) == base(b) {
				return base(a)
			}
		}
	}
	return ""
}

func (in *Intel) credentialFindings(d Device, dkeys []string) []Finding {
	var out []Finding
	for i, e := range in.creds {
		if !in.vendors.Same(dkeys, in.credKeys[i]) {
			continue
		}
		conf := ConfidenceModel
		switch {
		case e.Model == "*":
			conf = ConfidenceVendor
		case d.Model == "" || !e.MatchModel(d.Model):
			continue
		}
		out = append(out, Finding{
			Kind: KindDefaultCredentials, ID: "default-credentials:" + e.Protocol + "/" + e.User, Source: in.credSource[i],
			Confidence: conf, Severity: "high", Protocol: e.Protocol, Account: e.User,
			Summary: fmt.Sprintf("publicly documented default account %q (%s) for %s %s; documented at %s", e.User, e.Protocol, e.Vendor, e.Model, e.Source),
		})
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

var sevRank = map[string]int{"critical": 5, "high": 4, "medium": 3, "low": 2, "info": 1}
var kindRank = map[Kind]int{KindVulnerability: 6, KindRecall: 5, KindDefaultCredentials: 4, KindEndOfLife: 3, KindExternalCommunication: 2, KindCleartextPHI: 1}

// sortFindings orders findings most urgent first: unsuppressed before
// suppressed, then severity, KEV, CVSS, EPSS, confidence, kind, id.
func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int { return compareFindings(&a, &b) })
}

// compareFindings is sortFindings' order.
func compareFindings(a, b *Finding) int {
	return cmp.Or(
		cmp.Compare(boolRank(a.Suppressed == ""), boolRank(b.Suppressed == ""))*-1,
		-cmp.Compare(sevRank[a.Severity], sevRank[b.Severity]),
		-cmp.Compare(boolRank(a.KEV), boolRank(b.KEV)),
		-cmp.Compare(a.CVSS, b.CVSS),
		-cmp.Compare(a.EPSS, b.EPSS),
		-cmp.Compare(confRank[a.Confidence], confRank[b.Confidence]),
		-cmp.Compare(kindRank[a.Kind], kindRank[b.Kind]),
		strings.Compare(a.ID, b.ID),
		strings.Compare(a.Source, b.Source),
	)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

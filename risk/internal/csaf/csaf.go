// Package csaf reads CSAF 2.0 advisories (OASIS CSAF 2.0, as CISA and
// device vendors publish them, VEX profile included) into the products and
// vulnerabilities medmesh matches devices against.
//
// Every document is first checked against the CSAF 2.0 JSON schema with
// github.com/gocsaf/csaf/v3 (csaf.ValidateCSAF, schemas embedded, nothing
// fetched). The document is then decoded into this package's own structs:
// gocsaf v3.7.0 models product_groups and group_ids as objects where the
// schema has arrays, so its typed Advisory cannot decode a valid document
// that uses product groups.
//
// Products come from the whole product tree: branches (vendor,
// product_family, product_name, product_version, product_version_range,
// patch_level, service_pack), full_product_names, relationships, with
// model_numbers and CPEs. A vulnerability carries its CVE, CVSS v3 (v2 when
// there is no v3) per product, the product status sets (affected: known_affected,
// first_affected, last_affected; not affected: known_not_affected, the VEX
// statement; fixed: fixed, first_fixed), VEX flags and impact statements, and
// remediations.
package csaf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gocsaf "github.com/gocsaf/csaf/v3/csaf"

	"github.com/medmesh/medmesh/risk/internal/version"
)

// Advisory is one CSAF document.
type Advisory struct {
	ID        string // document.tracking.id
	Title     string
	Publisher string
	Category  string // csaf_security_advisory, csaf_vex, ...
	Released  time.Time
	Products  map[string]*Product // by product_id
	Vulns     []Vuln
}

// Product is one product_id of the product tree.
type Product struct {
	ID       string
	Vendor   string
	Name     string // product_name (or product_family) branch, or the full name
	FullName string
	// VersionText is the product_version or product_version_range name;
	// empty when the product has no version branch (every version).
	VersionText string
	Constraint  version.Constraint
	Models      []string // model_numbers and model numbers named in the version text
	CPE         string
	// Component is set for a relationship product ("default_component_of:
	// Linux kernel 4.9"): the product is that component as part of (or
	// installed on) a platform, and the vendor, name, version and models
	// above are the platform's, which is what a device is matched on.
	Component string
}

// Vuln is one vulnerability of an advisory.
type Vuln struct {
	CVE          string
	Title        string
	Affected     []string // product ids
	NotAffected  []string
	Fixed        []string
	Scores       map[string]Score // by product id
	Remediations []Remediation
	// Justification says, per product id, why a not-affected product is not
	// affected (a VEX flag label or impact statement).
	Justification map[string]string
}

// Score is a CVSS base score and its vector.
type Score struct {
	Base   float64
	Vector string
}

// Remediation is one remediation entry.
type Remediation struct {
	Category   string
	Details    string
	URL        string
	ProductIDs []string
}

// Parse validates data against the CSAF 2.0 schema and reads it. Errors
// name the JSON line or the schema path that is wrong.
func Parse(data []byte) (*Advisory, error) {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, jsonError(data, err)
	}
	problems, err := gocsaf.ValidateCSAF(doc)
	if err != nil {
		return nil, fmt.Errorf("csaf schema: %w", err)
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], fmt.Sprintf("and %d more", len(problems)-3))
		}
		return nil, fmt.Errorf("fails the CSAF 2.0 schema: %s", strings.Join(problems, "; "))
	}
	var raw rawAdvisory
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, jsonError(data, err)
	}
	return raw.advisory()
}

// jsonError adds the line and column of a syntax or type error.
func jsonError(data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := int(off) - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Errorf("line %d column %d: %w", line, col, err)
}

type rawAdvisory struct {
	Document struct {
		Category  string `json:"category"`
		Title     string `json:"title"`
		Publisher struct {
			Name string `json:"name"`
		} `json:"publisher"`
		Tracking struct {
			ID                 string `json:"id"`
			CurrentReleaseDate string `json:"current_release_date"`
		} `json:"tracking"`
	} `json:"document"`
	ProductTree struct {
		Branches         []rawBranch `json:"branches"`
		FullProductNames []rawFPN    `json:"full_product_names"`
		Relationships    []struct {
			Category        string `json:"category"`
			FullProductName rawFPN `json:"full_product_name"`
			ProductRef      string `json:"product_reference"`
			RelatesTo       string `json:"relates_to_product_reference"`
		} `json:"relationships"`
		ProductGroups []struct {
			GroupID    string   `json:"group_id"`
			ProductIDs []string `json:"product_ids"`
		} `json:"product_groups"`
	} `json:"product_tree"`
	Vulnerabilities []struct {
		CVE           string              `json:"cve"`
		Title         string              `json:"title"`
		ProductStatus map[string][]string `json:"product_status"`
		Scores        []struct {
			V3 *struct {
				BaseScore    float64 `json:"baseScore"`
				VectorString string  `json:"vectorString"`
			} `json:"cvss_v3"`
			V2 *struct {
				BaseScore    float64 `json:"baseScore"`
				VectorString string  `json:"vectorString"`
			} `json:"cvss_v2"`
			Products []string `json:"products"`
		} `json:"scores"`
		Remediations []struct {
			Category   string   `json:"category"`
			Details    string   `json:"details"`
			URL        string   `json:"url"`
			ProductIDs []string `json:"product_ids"`
			GroupIDs   []string `json:"group_ids"`
		} `json:"remediations"`
		Flags []struct {
			Label      string   `json:"label"`
			ProductIDs []string `json:"product_ids"`
			GroupIDs   []string `json:"group_ids"`
		} `json:"flags"`
		Threats []struct {
			Category   string   `json:"category"`
			Details    string   `json:"details"`
			ProductIDs []string `json:"product_ids"`
			GroupIDs   []string `json:"group_ids"`
		} `json:"threats"`
	} `json:"vulnerabilities"`
}

type rawBranch struct {
	Category string      `json:"category"`
	Name     string      `json:"name"`
	Branches []rawBranch `json:"branches"`
	Product  *rawFPN     `json:"product"`
}

type rawFPN struct {
	Name   string `json:"name"`
	ID     string `json:"product_id"`
	Helper *struct {
		CPE          string   `json:"cpe"`
		ModelNumbers []string `json:"model_numbers"`
	} `json:"product_identification_helper"`
}

func (r *rawAdvisory) advisory() (*Advisory, error) {
	a := &Advisory{
		ID:        r.Document.Tracking.ID,
		Title:     r.Document.Title,
		Publisher: r.Document.Publisher.Name,
		Category:  r.Document.Category,
		Products:  map[string]*Product{},
	}
	if t, err := time.Parse(time.RFC3339, r.Document.Tracking.CurrentReleaseDate); err == nil {
		a.Released = t.UTC()
	}
	var path struct{ vendor, family, name, ver string }
	var walk func(bs []rawBranch)
	walk = func(bs []rawBranch) {
		for _, b := range bs {
			saved := path
			n := strings.TrimSpace(b.Name)
			switch b.Category {
			case "vendor":
				path.vendor = n
			case "product_family":
				path.family = n
			case "product_name":
				path.name = n
			case "product_version", "product_version_range":
				path.ver = n
			case "patch_level", "service_pack":
				path.ver = strings.TrimSpace(path.ver + " " + n)
			}
			if b.Product != nil {
				p := newProduct(*b.Product)
				p.Vendor = path.vendor
				p.Name = path.name
				if p.Name == "" {
					p.Name = path.family
				}
				p.setVersion(path.ver)
				a.Products[p.ID] = p
			}
			walk(b.Branches)
			path = saved
		}
	}
	walk(r.ProductTree.Branches)
	for _, f := range r.ProductTree.FullProductNames {
		p := newProduct(f)
		p.Name = p.FullName
		p.setVersion("")
		if p.CPE == "" {
			// A bare full name has no version apart from its name.
			p.Constraint = version.Constraint{Unknown: "full product name without a version part"}
		}
		a.Products[p.ID] = p
	}
	for _, rel := range r.ProductTree.Relationships {
		p := newProduct(rel.FullProductName)
		comp, plat := a.Products[rel.ProductRef], a.Products[rel.RelatesTo]
		if plat == nil {
			continue
		}
		p.Vendor, p.Name, p.VersionText, p.Constraint = plat.Vendor, plat.Name, plat.VersionText, plat.Constraint
		p.Models = append(p.Models, plat.Models...)
		if comp != nil {
			p.Component = rel.Category + ": " + comp.FullName
		}
		a.Products[p.ID] = p
	}
	for _, p := range a.Products {
		if p.CPE != "" {
			p.applyCPE()
		}
	}
	groups := map[string][]string{}
	for _, g := range r.ProductTree.ProductGroups {
		groups[g.GroupID] = g.ProductIDs
	}
	expand := func(ids, gids []string) []string {
		out := slices.Clone(ids)
		for _, g := range gids {
			out = append(out, groups[g]...)
		}
		return out
	}
	for _, rv := range r.Vulnerabilities {
		v := Vuln{CVE: rv.CVE, Title: rv.Title, Scores: map[string]Score{}, Justification: map[string]string{}}
		ps := rv.ProductStatus
		v.Affected = concat(ps["known_affected"], ps["first_affected"], ps["last_affected"])
		v.NotAffected = ps["known_not_affected"]
		v.Fixed = concat(ps["fixed"], ps["first_fixed"])
		for _, s := range rv.Scores {
			var sc Score
			switch {
			case s.V3 != nil:
				sc = Score{s.V3.BaseScore, s.V3.VectorString}
			case s.V2 != nil:
				sc = Score{s.V2.BaseScore, s.V2.VectorString}
			default:
				continue
			}
			for _, id := range s.Products {
				if old, ok := v.Scores[id]; !ok || sc.Base > old.Base {
					v.Scores[id] = sc
				}
			}
		}
		for _, rm := range rv.Remediations {
			v.Remediations = append(v.Remediations, Remediation{
				Category: rm.Category, Details: strings.TrimSpace(rm.Details), URL: rm.URL,
				ProductIDs: expand(rm.ProductIDs, rm.GroupIDs),
			})
		}
		for _, f := range rv.Flags {
			for _, id := range expand(f.ProductIDs, f.GroupIDs) {
				v.Justification[id] = f.Label
			}
		}
		for _, t := range rv.Threats {
			if t.Category != "impact" {
				continue
			}
			for _, id := range expand(t.ProductIDs, t.GroupIDs) {
				if slices.Contains(v.NotAffected, id) {
					v.Justification[id] = strings.TrimSpace(strings.TrimSpace(v.Justification[id]+"; ") + " " + t.Details)
					v.Justification[id] = strings.TrimPrefix(v.Justification[id], "; ")
				}
			}
		}
		a.Vulns = append(a.Vulns, v)
	}
	return a, nil
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func newProduct(f rawFPN) *Product {
	p := &Product{ID: f.ID, FullName: strings.TrimSpace(f.Name)}
	if f.Helper != nil {
		p.CPE = f.Helper.CPE
		p.Models = append(p.Models, f.Helper.ModelNumbers...)
	}
	return p
}

func (p *Product) setVersion(text string) {
	p.VersionText = text
	if text == "" {
		p.Constraint = version.Constraint{Any: true}
		return
	}
	p.Constraint = version.ParseConstraint(text)
	p.Models = append(p.Models, p.Constraint.Models...)
}

// applyCPE fills vendor, name and version a product lacks from its CPE
// (cpe:2.3:h:vendor:product:version:... or cpe:/h:vendor:product:version).
func (p *Product) applyCPE() {
	var parts []string
	switch {
	case strings.HasPrefix(p.CPE, "cpe:2.3:"):
		parts = splitCPE23(p.CPE[len("cpe:2.3:"):])
	case strings.HasPrefix(p.CPE, "cpe:/"):
		parts = strings.Split(p.CPE[len("cpe:/"):], ":")
	default:
		return
	}
	get := func(i int) string {
		if i >= len(parts) || parts[i] == "*" || parts[i] == "-" || parts[i] == "" {
			return ""
		}
		return strings.ReplaceAll(strings.ReplaceAll(parts[i], `\`, ""), "_", " ")
	}
	if p.Vendor == "" {
		p.Vendor = get(1)
	}
	if p.Name == "" || p.Name == p.FullName && get(2) != "" {
		p.Name = get(2)
	}
	if v := get(3); v != "" && (p.VersionText == "" || p.Constraint.Unknown != "") {
		p.setVersion(v)
	}
}

// splitCPE23 splits a CPE 2.3 formatted string on colons that are not
// escaped.
func splitCPE23(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			cur.WriteByte(s[i])
			cur.WriteByte(s[i+1])
			i++
		case s[i] == ':':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(parts, cur.String())
}

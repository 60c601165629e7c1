package compliance

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/medmesh/medmesh/compliance/internal/rules"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

//go:embed catalog/*.json
var catalogFS embed.FS

// catalogFile is one framework's file in catalog/.
type catalogFile struct {
	Framework string `json:"framework"`
	Source    string `json:"source"`
	Controls  []struct {
		ID          string   `json:"id"`
		Citation    string   `json:"citation"`
		Title       string   `json:"title"`
		Description string   `json:"description"`
		Proposed    bool     `json:"proposed"`
		Rules       []string `json:"rules"`
		Required    []string `json:"required_rules"`
		PerDevice   bool     `json:"per_device"`
	} `json:"controls"`
}

// Frameworks maps the catalog's and the CLI's names to the enum.
var Frameworks = map[string]medmeshv1.ComplianceFramework{
	"hipaa":         medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA,
	"hicp":          medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HICP,
	"proposed-2025": medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_PROPOSED_2025,
}

// FrameworkName is the catalog name of f ("" for UNSPECIFIED).
func FrameworkName(f medmeshv1.ComplianceFramework) string {
	for n, v := range Frameworks {
		if v == f {
			return n
		}
	}
	return ""
}

// Catalog returns every control of the embedded catalog, in file order
// (files by name). It fails only if the catalog is broken, which
// TestCatalog catches.
func Catalog() ([]*medmeshv1.ComplianceControl, error) { return loadCatalog(catalogFS) }

func loadCatalog(fsys fs.FS) ([]*medmeshv1.ComplianceControl, error) {
	names, err := fs.Glob(fsys, "catalog/*.json")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []*medmeshv1.ComplianceControl
	ids := map[string]string{}
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var cf catalogFile
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cf); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		fw, ok := Frameworks[cf.Framework]
		if !ok {
			return nil, fmt.Errorf("%s: framework %q: want one of hipaa, hicp, proposed-2025", name, cf.Framework)
		}
		if len(cf.Controls) == 0 {
			return nil, fmt.Errorf("%s: no controls", name)
		}
		for i, c := range cf.Controls {
			where := fmt.Sprintf("%s: control %d (%s)", name, i+1, c.ID)
			switch {
			case c.ID == "" || c.Citation == "" || c.Title == "":
				return nil, fmt.Errorf("%s: id, citation and title are required", where)
			case !strings.HasPrefix(c.ID, cf.Framework+"-"):
				return nil, fmt.Errorf("%s: id must start with %q", where, cf.Framework+"-")
			case ids[c.ID] != "":
				return nil, fmt.Errorf("%s: id also in %s", where, ids[c.ID])
			case len(c.Rules) == 0:
				return nil, fmt.Errorf("%s: no evidence rules", where)
			case (fw == medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_PROPOSED_2025) != c.Proposed:
				return nil, fmt.Errorf("%s: proposed must be true exactly for the proposed-2025 framework", where)
			}
			for _, r := range c.Rules {
				if _, ok := rules.All[r]; !ok {
					return nil, fmt.Errorf("%s: unknown evidence rule %q", where, r)
				}
			}
			for _, r := range c.Required {
				if !slices.Contains(c.Rules, r) {
					return nil, fmt.Errorf("%s: required rule %q is not among its rules", where, r)
				}
			}
			ids[c.ID] = name
			out = append(out, &medmeshv1.ComplianceControl{
				Id: c.ID, Framework: fw, Citation: c.Citation, Title: c.Title, Proposed: c.Proposed,
				Description: c.Description, Rules: slices.Clone(c.Rules), RequiredRules: slices.Clone(c.Required), PerDevice: c.PerDevice,
			})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("catalog: no files")
	}
	return out, nil
}

package sbom

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"
	"github.com/spdx/tools-golang/spdx/v2/common"
	"github.com/spdx/tools-golang/tagvalue"
)

func parseSPDX(format Format, data []byte) (*Document, error) {
	var (
		d   *spdx.Document
		err error
	)
	if format == SPDXJSON {
		d, err = spdxjson.Read(bytes.NewReader(data))
	} else {
		d, err = tagvalue.Read(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	// The library converts every version to 2.3; say what the file says.
	doc := &Document{Format: format, SpecVersion: statedSPDXVersion(format, data)}
	switch doc.SpecVersion {
	case "SPDX-2.1", "SPDX-2.2", "SPDX-2.3":
	default:
		return nil, fmt.Errorf("%s: SPDX version %q is not supported (2.2 and 2.3 are, 2.1 is read)", format, doc.SpecVersion)
	}

	described := describedIDs(d)
	var subject *spdx.Package
	for _, p := range d.Packages {
		if p != nil && described[p.PackageSPDXIdentifier] {
			subject = p
			break
		}
	}
	if subject == nil && len(d.Packages) == 1 {
		subject = d.Packages[0]
	}
	if subject != nil {
		doc.Subject = Subject{
			Vendor:  firstNonEmpty(supplierName(subject.PackageSupplier), originatorName(subject.PackageOriginator)),
			Model:   strings.TrimSpace(subject.PackageName),
			Version: strings.TrimSpace(subject.PackageVersion),
		}
		purl, cpes, _ := spdxRefs(subject)
		doc.Subject.PURL, _ = canonicalPURL(purl)
		if len(cpes) > 0 {
			doc.Subject.CPE = cpes[0]
		}
	}
	for _, p := range d.Packages {
		if p == nil {
			continue
		}
		// The described product is the subject, not one of its components,
		// unless it is all the document lists.
		if len(d.Packages) > 1 && (p == subject || described[p.PackageSPDXIdentifier]) {
			continue
		}
		comp := Component{
			Ref:      string(p.PackageSPDXIdentifier),
			Name:     strings.TrimSpace(p.PackageName),
			Version:  strings.TrimSpace(p.PackageVersion),
			Supplier: firstNonEmpty(supplierName(p.PackageSupplier), originatorName(p.PackageOriginator)),
		}
		purl, cpes, n := spdxRefs(p)
		if n > 1 {
			doc.Warnings = append(doc.Warnings, fmt.Sprintf("package %q: %d purl references, the first is used", comp.Name, n))
		}
		if purl != "" {
			c, err := canonicalPURL(purl)
			if err != nil {
				doc.Warnings = append(doc.Warnings, fmt.Sprintf("package %q: %v", comp.Name, err))
			} else {
				comp.PURL = c
			}
		}
		comp.CPEs = cpes
		doc.Components = append(doc.Components, comp)
	}
	return doc, nil
}

// statedSPDXVersion is the spdxVersion (JSON) or SPDXVersion (tag-value)
// the document states.
func statedSPDXVersion(format Format, data []byte) string {
	if format == SPDXJSON {
		var v struct {
			SPDXVersion string `json:"spdxVersion"`
		}
		_ = json.Unmarshal(data, &v)
		return strings.TrimSpace(v.SPDXVersion)
	}
	for line := range bytes.Lines(data) {
		if v, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("SPDXVersion:")); ok {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// describedIDs are the packages the document DESCRIBES (documentDescribes
// in JSON becomes such a relationship when read).
func describedIDs(d *spdx.Document) map[common.ElementID]bool {
	ids := map[common.ElementID]bool{}
	for _, r := range d.Relationships {
		if r == nil {
			continue
		}
		switch strings.ToUpper(strings.TrimSpace(r.Relationship)) {
		case "DESCRIBES":
			if r.RefA.ElementRefID == "DOCUMENT" {
				ids[r.RefB.ElementRefID] = true
			}
		case "DESCRIBED_BY":
			if r.RefB.ElementRefID == "DOCUMENT" {
				ids[r.RefA.ElementRefID] = true
			}
		}
	}
	return ids
}

// spdxRefs returns a package's first purl, its CPEs, and how many purl
// references it has. SPDX 2.2 spells the category PACKAGE-MANAGER, 2.3
// PACKAGE_MANAGER; both are read.
func spdxRefs(p *spdx.Package) (purl string, cpes []string, purls int) {
	for _, r := range p.PackageExternalReferences {
		if r == nil {
			continue
		}
		cat := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(r.Category), "_", "-"))
		typ := strings.TrimSpace(r.RefType)
		loc := strings.TrimSpace(r.Locator)
		switch {
		case cat == "PACKAGE-MANAGER" && typ == "purl":
			if purls == 0 {
				purl = loc
			}
			purls++
		case cat == "SECURITY" && (typ == "cpe23Type" || typ == "cpe22Type"):
			if loc != "" {
				cpes = append(cpes, loc)
			}
		}
	}
	return purl, cpes, purls
}

func supplierName(s *common.Supplier) string {
	if s == nil || s.Supplier == "NOASSERTION" {
		return ""
	}
	return s.Supplier
}

func originatorName(o *common.Originator) string {
	if o == nil || o.Originator == "NOASSERTION" {
		return ""
	}
	return o.Originator
}

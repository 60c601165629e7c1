package sbom

import (
	"bytes"
	"fmt"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// cdxNamespace is the XML namespace prefix; the spec version follows it.
const cdxNamespace = "http://cyclonedx.org/schema/bom/"

func parseCycloneDX(format Format, data []byte) (*Document, error) {
	var bom cdx.BOM
	fileFormat := cdx.BOMFileFormatJSON
	if format == CycloneDXXML {
		fileFormat = cdx.BOMFileFormatXML
	}
	if err := cdx.NewBOMDecoder(bytes.NewReader(data), fileFormat).Decode(&bom); err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	doc := &Document{Format: format}
	switch format {
	case CycloneDXJSON:
		if bom.BOMFormat != cdx.BOMFormat {
			return nil, fmt.Errorf("%s: bomFormat is %q, want %q", format, bom.BOMFormat, cdx.BOMFormat)
		}
		doc.SpecVersion = bom.SpecVersion.String()
	case CycloneDXXML:
		v, ok := strings.CutPrefix(bom.XMLNS, cdxNamespace)
		if !ok || v == "" {
			return nil, fmt.Errorf("%s: namespace %q is not a CycloneDX BOM namespace", format, bom.XMLNS)
		}
		doc.SpecVersion = v
	}
	if !knownCycloneDX(doc.SpecVersion) {
		return nil, fmt.Errorf("%s: spec version %q is not one of 1.0 to 1.7", format, doc.SpecVersion)
	}

	var subjectRef string
	if md := bom.Metadata; md != nil {
		if c := md.Component; c != nil {
			subjectRef = c.BOMRef
			doc.Subject = Subject{
				Vendor: firstNonEmpty(
					orgName(c.Manufacturer), orgName(md.Manufacturer), orgName(md.Manufacture),
					orgName(c.Supplier), orgName(md.Supplier), c.Publisher, c.Group, c.Author),
				Model:   strings.TrimSpace(c.Name),
				Version: strings.TrimSpace(c.Version),
				CPE:     strings.TrimSpace(c.CPE),
			}
			if p, err := canonicalPURL(c.PackageURL); err == nil {
				doc.Subject.PURL = p
			}
			// A product's own sub-components are components too.
			if c.Components != nil {
				doc.addCycloneDX(*c.Components)
			}
		} else {
			doc.Subject.Vendor = firstNonEmpty(orgName(md.Manufacturer), orgName(md.Manufacture), orgName(md.Supplier))
		}
	}
	if bom.Components != nil {
		doc.addCycloneDX(*bom.Components)
	}
	if bom.Vulnerabilities != nil {
		for _, v := range *bom.Vulnerabilities {
			if v.Analysis == nil || v.Analysis.State == "" {
				continue
			}
			st := Statement{
				ID:            strings.TrimSpace(v.ID),
				State:         string(v.Analysis.State),
				Justification: string(v.Analysis.Justification),
				Detail:        strings.TrimSpace(v.Analysis.Detail),
			}
			if v.References != nil {
				for _, r := range *v.References {
					if id := strings.TrimSpace(r.ID); id != "" {
						st.Aliases = append(st.Aliases, id)
					}
				}
			}
			if v.Affects != nil {
				for _, a := range *v.Affects {
					ref := strings.TrimSpace(a.Ref)
					if strings.HasPrefix(ref, "urn:cdx:") {
						// BOM-Link: urn:cdx:serial/version#bom-ref.
						if _, frag, ok := strings.Cut(ref, "#"); ok {
							ref = frag
						}
					}
					if ref != "" {
						st.Refs = append(st.Refs, ref)
					}
				}
			}
			if st.ID == "" {
				doc.Warnings = append(doc.Warnings, "vulnerability with an analysis but no id: skipped")
				continue
			}
			if len(st.Refs) == 0 && subjectRef != "" {
				// A statement that names nothing speaks of the subject.
				st.Refs = []string{subjectRef}
			}
			doc.VEX = append(doc.VEX, st)
		}
	}
	return doc, nil
}

func (doc *Document) addCycloneDX(cs []cdx.Component) {
	for i := range cs {
		c := &cs[i]
		comp := Component{
			Ref:      strings.TrimSpace(c.BOMRef),
			Name:     strings.TrimSpace(c.Name),
			Version:  strings.TrimSpace(c.Version),
			Supplier: firstNonEmpty(orgName(c.Supplier), orgName(c.Manufacturer), c.Publisher, c.Author),
		}
		if c.Group != "" && c.PackageURL == "" {
			comp.Name = strings.TrimSpace(c.Group) + "/" + comp.Name
		}
		if c.PackageURL != "" {
			p, err := canonicalPURL(c.PackageURL)
			if err != nil {
				doc.Warnings = append(doc.Warnings, fmt.Sprintf("component %q: %v", comp.Name, err))
			} else {
				comp.PURL = p
			}
		}
		if cpe := strings.TrimSpace(c.CPE); cpe != "" {
			comp.CPEs = []string{cpe}
		}
		doc.Components = append(doc.Components, comp)
		if c.Components != nil {
			doc.addCycloneDX(*c.Components)
		}
	}
}

func knownCycloneDX(v string) bool {
	switch v {
	case "1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7":
		return true
	}
	return false
}

func orgName(o *cdx.OrganizationalEntity) string {
	if o == nil {
		return ""
	}
	return o.Name
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	return ""
}

package risk

import (
	"github.com/medmesh/medmesh/risk/internal/sbom"
)

// SBOMInfo is what reading an SBOM found: its format and spec version,
// how many components it lists, the product it says it describes, and
// its warnings (components kept although flawed).
type SBOMInfo struct {
	Format      string
	SpecVersion string
	Components  int
	Vendor      string
	Model       string
	Version     string
	Warnings    []string
}

// ReadSBOM reads a CycloneDX (JSON, XML) or SPDX (JSON, tag-value) SBOM
// file as Assess will, to check it before it is kept; the error names the
// file and what is wrong.
func ReadSBOM(path string) (SBOMInfo, error) {
	doc, err := sbom.ReadFile(path)
	if err != nil {
		return SBOMInfo{}, err
	}
	return SBOMInfo{
		Format: string(doc.Format), SpecVersion: doc.SpecVersion, Components: len(doc.Components),
		Vendor: doc.Subject.Vendor, Model: doc.Subject.Model, Version: doc.Subject.Version, Warnings: doc.Warnings,
	}, nil
}

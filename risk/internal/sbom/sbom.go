// Package sbom reads software bills of materials: CycloneDX (JSON and XML,
// spec 1.2 to 1.7; 1.4 to 1.6 are what devices ship today) and SPDX 2.2/2.3
// (JSON and tag-value; 2.1 is read as well), with the VEX statements a
// CycloneDX document carries. The format is told from the content, never
// from the file name. A Document lists each component's name, version,
// package URL and CPEs, and the device the document describes when it says.
package sbom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Format is the serialisation a document was read from.
type Format string

const (
	CycloneDXJSON Format = "cyclonedx-json"
	CycloneDXXML  Format = "cyclonedx-xml"
	SPDXJSON      Format = "spdx-json"
	SPDXTagValue  Format = "spdx-tag-value"
)

// MaxSize is the largest document Parse and ReadFile accept (64 MiB: the
// SBOM of a whole device image is a few MiB).
const MaxSize = 64 << 20

// ErrUnknownFormat is returned for content that is neither CycloneDX nor SPDX.
var ErrUnknownFormat = errors.New("not a CycloneDX or SPDX document")

// Document is one SBOM (or VEX document) as read.
type Document struct {
	// Name is the file name (or whatever the caller named the content); every
	// error and warning starts with it.
	Name        string
	Format      Format
	SpecVersion string // "1.5", "SPDX-2.3"
	// Subject is the product the document describes, as far as it says.
	Subject Subject
	// Components are every component listed, nested ones flattened, in
	// document order. The subject itself is not among them.
	Components []Component
	// VEX holds the CycloneDX vulnerabilities[] entries that carry an
	// analysis (a VEX statement); empty for SPDX.
	VEX []Statement
	// Warnings name components that were kept but are flawed (an invalid
	// package URL, say), so a caller can show them.
	Warnings []string
}

// Subject is the device or product an SBOM describes. Empty fields were not
// stated.
type Subject struct {
	Vendor  string
	Model   string
	Version string
	PURL    string
	CPE     string
}

// Component is one software component.
type Component struct {
	// Ref is the document-local reference: a CycloneDX bom-ref or an SPDX
	// SPDXID. VEX statements point at components by it.
	Ref      string
	Name     string
	Version  string
	Supplier string
	// PURL is the package URL in canonical form, or "" when the component
	// has none (or an invalid one; see Document.Warnings).
	PURL string
	CPEs []string
}

// Statement is one CycloneDX VEX statement: what the document's author says
// about a vulnerability in the components it names.
type Statement struct {
	// ID is the vulnerability id (CVE-…, GHSA-…); Aliases are the ids of its
	// references[] entries.
	ID      string
	Aliases []string
	// State is the CycloneDX impact analysis state: not_affected,
	// false_positive, resolved, resolved_with_pedigree, exploitable,
	// in_triage.
	State         string
	Justification string
	Detail        string
	// Refs are the affects[].ref values: bom-refs of components (a BOM-Link
	// "urn:cdx:…#ref" is cut to its ref) or package URLs.
	Refs []string
}

// NotAffected says whether the statement declares its components unaffected
// (not_affected, false_positive, or resolved).
func (s Statement) NotAffected() bool {
	switch s.State {
	case "not_affected", "false_positive", "resolved", "resolved_with_pedigree":
		return true
	}
	return false
}

// ReadFile reads and parses the SBOM at path.
func ReadFile(path string) (*Document, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("sbom %s: read: %w", path, err)
	}
	return Parse(path, data)
}

// Parse reads one document; name is used in errors only. A panic inside a
// format library on hostile input is returned as an error.
func Parse(name string, data []byte) (doc *Document, err error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("sbom %s: larger than %d MiB", name, MaxSize>>20)
	}
	format, err := Detect(data)
	if err != nil {
		return nil, fmt.Errorf("sbom %s: %w", name, err)
	}
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("sbom %s: %s parser failed on this input: %v", name, format, r)
		}
	}()
	switch format {
	case CycloneDXJSON, CycloneDXXML:
		doc, err = parseCycloneDX(format, data)
	default:
		doc, err = parseSPDX(format, data)
	}
	if err != nil {
		return nil, fmt.Errorf("sbom %s: %w", name, err)
	}
	doc.Name = name
	for i, w := range doc.Warnings {
		doc.Warnings[i] = name + ": " + w
	}
	return doc, nil
}

// Detect tells the format from the content.
func Detect(data []byte) (Format, error) {
	s := bytes.TrimLeft(data, "\ufeff \t\r\n")
	if len(s) == 0 {
		return "", fmt.Errorf("empty document")
	}
	switch s[0] {
	case '{':
		head := s[:min(len(s), 1<<16)]
		switch {
		case bytes.Contains(head, []byte(`"bomFormat"`)):
			return CycloneDXJSON, nil
		case bytes.Contains(head, []byte(`"spdxVersion"`)):
			return SPDXJSON, nil
		case bytes.Contains(head, []byte(`"@context"`)) && bytes.Contains(head, []byte("spdx.org/rdf/3")):
			return "", fmt.Errorf("SPDX 3 JSON-LD is not supported (SPDX 2.2 and 2.3 are)")
		case bytes.Contains(head, []byte(`"document"`)) && bytes.Contains(head, []byte(`"csaf_version"`)):
			return "", fmt.Errorf("a CSAF document, not an SBOM")
		}
		return "", fmt.Errorf("%w: JSON without bomFormat (CycloneDX) or spdxVersion (SPDX)", ErrUnknownFormat)
	case '<':
		head := string(s[:min(len(s), 1<<12)])
		switch {
		case strings.Contains(head, "cyclonedx.org/schema/bom"):
			return CycloneDXXML, nil
		case strings.Contains(head, "spdx.org/rdf"):
			return "", fmt.Errorf("SPDX RDF/XML is not supported (SPDX JSON and tag-value are)")
		}
		return "", fmt.Errorf("%w: XML without the CycloneDX namespace", ErrUnknownFormat)
	}
	head := s[:min(len(s), 1<<16)]
	for line := range bytes.Lines(head) {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("SPDXVersion:")) {
			return SPDXTagValue, nil
		}
	}
	return "", fmt.Errorf("%w: neither JSON, XML, nor SPDX tag-value (no SPDXVersion line)", ErrUnknownFormat)
}

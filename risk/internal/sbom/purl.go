package sbom

import (
	"fmt"

	packageurl "github.com/package-url/packageurl-go"
)

// canonicalPURL parses a package URL and writes it back in canonical form
// (lower-case type, sorted qualifiers, the type's own name rules).
func canonicalPURL(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	p, err := packageurl.FromString(raw)
	if err != nil {
		return "", fmt.Errorf("invalid package URL %q: %w", raw, err)
	}
	return p.ToString(), nil
}

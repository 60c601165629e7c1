package osv

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	packageurl "github.com/package-url/packageurl-go"
)

// ErrNoEcosystem is returned for a package URL whose type has no OSV
// ecosystem (pkg:generic, pkg:github, …) or whose distribution is unknown.
var ErrNoEcosystem = errors.New("no OSV ecosystem")

// Query names a package version the way OSV does: an ecosystem with its
// release where the ecosystem has releases ("Debian:12", "Alpine:v3.18"),
// the package name in that ecosystem, and a version.
type Query struct {
	Ecosystem string
	Name      string
	Version   string
}

// purlEcosystems maps package URL types to OSV ecosystems where the mapping
// needs nothing but the type.
var purlEcosystems = map[string]string{
	"pypi":     "PyPI",
	"npm":      "npm",
	"maven":    "Maven",
	"golang":   "Go",
	"cargo":    "crates.io",
	"gem":      "RubyGems",
	"nuget":    "NuGet",
	"composer": "Packagist",
	"hex":      "Hex",
	"pub":      "Pub",
	"hackage":  "Hackage",
	"cran":     "CRAN",
	"swift":    "SwiftURL",
	"conan":    "ConanCenter",
	"bitnami":  "Bitnami",
}

var debianCodenames = map[string]string{
	"jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14",
}

var releaseDigits = regexp.MustCompile(`(\d+)(?:\.(\d+))?`)

// QueryFromPURL maps a package URL with a version to an OSV query. For
// Debian and Alpine packages the release comes from the distro qualifier
// and the source package from the upstream qualifier (as syft writes them);
// an epoch qualifier (as trivy writes it) is put back into the version.
func QueryFromPURL(purl string) (Query, error) {
	p, err := packageurl.FromString(purl)
	if err != nil {
		return Query{}, fmt.Errorf("package URL %q: %w", purl, err)
	}
	if p.Version == "" {
		return Query{}, fmt.Errorf("package URL %q has no version", purl)
	}
	q := Query{Name: p.Name, Version: p.Version}
	quals := p.Qualifiers.Map()
	if eco, ok := purlEcosystems[p.Type]; ok {
		q.Ecosystem = eco
		switch p.Type {
		case "maven":
			if p.Namespace != "" {
				q.Name = p.Namespace + ":" + p.Name
			}
		case "npm", "golang", "composer", "swift":
			if p.Namespace != "" {
				q.Name = p.Namespace + "/" + p.Name
			}
		}
		return q, nil
	}
	distro := strings.ToLower(quals["distro"])
	switch {
	case p.Type == "deb" && (p.Namespace == "debian" || p.Namespace == "ubuntu"):
		base := "Debian"
		if p.Namespace == "ubuntu" {
			base = "Ubuntu"
		}
		q.Ecosystem = base
		if rel := distroRelease(distro, p.Namespace, base == "Ubuntu"); rel != "" {
			q.Ecosystem = base + ":" + rel
		}
		sourcePackage(&q, quals)
		if e := quals["epoch"]; e != "" && e != "0" && !strings.Contains(q.Version, ":") {
			q.Version = e + ":" + q.Version
		}
		return q, nil
	case p.Type == "apk" && (p.Namespace == "alpine" || p.Namespace == "wolfi" || p.Namespace == "chainguard"):
		switch p.Namespace {
		case "alpine":
			q.Ecosystem = "Alpine"
			if rel := distroRelease(distro, "alpine", true); rel != "" {
				q.Ecosystem = "Alpine:v" + rel
			}
		case "wolfi":
			q.Ecosystem = "Wolfi"
		default:
			q.Ecosystem = "Chainguard"
		}
		sourcePackage(&q, quals)
		return q, nil
	case p.Type == "rpm" && (p.Namespace == "almalinux" || p.Namespace == "rocky-linux" || p.Namespace == "rocky"):
		base := "AlmaLinux"
		if p.Namespace != "almalinux" {
			base = "Rocky Linux"
		}
		q.Ecosystem = base
		if rel := distroRelease(distro, p.Namespace, false); rel != "" {
			q.Ecosystem = base + ":" + rel
		}
		if e := quals["epoch"]; e != "" && e != "0" && !strings.Contains(q.Version, ":") {
			q.Version = e + ":" + q.Version
		}
		return q, nil
	}
	if p.Namespace != "" {
		return Query{}, fmt.Errorf("%w for package URL type %q (namespace %q)", ErrNoEcosystem, p.Type, p.Namespace)
	}
	return Query{}, fmt.Errorf("%w for package URL type %q", ErrNoEcosystem, p.Type)
}

// sourcePackage takes the source package name (and its version, when
// given as name@version) from an upstream qualifier.
func sourcePackage(q *Query, quals map[string]string) {
	up := quals["upstream"]
	if up == "" {
		return
	}
	name, version, _ := strings.Cut(up, "@")
	if name != "" {
		q.Name = name
	}
	if version != "" {
		q.Version = version
	}
}

// distroRelease reads "debian-12.5", "bookworm", "ubuntu-22.04",
// "alpine-3.18.4" or "3.18.4" into the release OSV names: "12", "22.04",
// "3.18". withMinor keeps the minor number (Ubuntu, Alpine).
func distroRelease(distro, namespace string, withMinor bool) string {
	distro = strings.TrimPrefix(distro, namespace+"-")
	if n, ok := debianCodenames[distro]; ok {
		return n
	}
	m := releaseDigits.FindStringSubmatch(distro)
	if m == nil {
		return ""
	}
	if withMinor && m[2] != "" {
		if namespace == "ubuntu" && len(m[2]) == 1 {
			return m[1] + ".0" + m[2]
		}
		return m[1] + "." + m[2]
	}
	return m[1]
}

// splitEcosystem cuts "Debian:12" into "Debian" and "12".
func splitEcosystem(eco string) (base, release string) {
	base, release, _ = strings.Cut(eco, ":")
	return base, release
}

// releaseMatches says whether a record's ecosystem covers the queried one:
// a record without a release covers every release; a record with one
// covers a query of the same release ("Ubuntu:22.04:LTS" covers
// "Ubuntu:22.04"); a query without a release is covered by no record that
// has one, since which release it is cannot be told.
func releaseMatches(recordEco, queryEco string) bool {
	_, rrel := splitEcosystem(recordEco)
	if rrel == "" {
		return true
	}
	_, qrel := splitEcosystem(queryEco)
	if qrel == "" {
		return false
	}
	return recordEco == queryEco || strings.HasPrefix(recordEco, queryEco+":")
}

var pypiSeparators = regexp.MustCompile(`[-_.]+`)

// normalName is a package name as the ecosystem compares names: PyPI names
// per PEP 503 (case and runs of - _ . do not matter); others as written.
func normalName(base, name string) string {
	if base == "PyPI" {
		return pypiSeparators.ReplaceAllString(strings.ToLower(name), "-")
	}
	return name
}

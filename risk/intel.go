package risk

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/medmesh/medmesh/risk/internal/bundle"
	"github.com/medmesh/medmesh/risk/internal/credential"
	"github.com/medmesh/medmesh/risk/internal/csaf"
	"github.com/medmesh/medmesh/risk/internal/eol"
	"github.com/medmesh/medmesh/risk/internal/epss"
	"github.com/medmesh/medmesh/risk/internal/gudid"
	"github.com/medmesh/medmesh/risk/internal/kev"
	"github.com/medmesh/medmesh/risk/internal/recall"
	"github.com/medmesh/medmesh/risk/internal/vendor"
)

// Intel is a loaded, verified intelligence bundle, ready to assess devices.
// It is read-only after Load and safe for concurrent use.
type Intel struct {
	b          *bundle.Bundle
	files      []fileInfo
	advisories []*csaf.Advisory
	products   map[string][]prodRef // by vendor key; "" for products without a vendor
	kev        map[string]kev.Entry
	epss       map[string]epss.Score
	eol        *eol.Table
	recalls    []recall.Recall
	recallsBy  map[string][]int // firm key -> recall indexes
	gudid      *gudid.DB
	gudidModel map[string][]*gudid.Device // normalised model -> devices
	creds      []credential.Entry
	credSource []string
	credKeys   [][]string // vendor keys of each credential entry
	recallKeys [][]string // firm keys of each recall
	vendors    *vendor.Table
	sbom       SBOMMatcher
}

// fileInfo is what loading a bundle file found in it.
type fileInfo struct {
	path, kind, source string
	date               time.Time
	records            int
}

// Load reads a bundle (a directory or a .tar.gz) and checks it: the
// manifest against every file, the signature when key is not nil (an
// unsigned bundle is then refused), and every source file against its
// format. A refused bundle's error names the file and the reason.
func Load(p string, key ed25519.PublicKey) (*Intel, error) {
	b, err := bundle.Load(p, key)
	if err != nil {
		return nil, fmt.Errorf("bundle %s refused: %w", p, err)
	}
	in, err := fromBundle(b)
	if err != nil {
		return nil, fmt.Errorf("bundle %s refused: %w", p, err)
	}
	// SBOM components are matched against the bundle's OSV records; a
	// bundle without any leaves SBOMs unassessed, and says so.
	if files := in.Files("osv"); len(files) > 0 {
		m, err := NewOSVMatcherFromFiles(files)
		if err != nil {
			return nil, fmt.Errorf("bundle %s refused: %w", p, err)
		}
		in.UseSBOM(m)
	}
	return in, nil
}

// Digest is the SHA-256 of the bundle's manifest: the bundle's identity.
func (in *Intel) Digest() string { return in.b.Digest() }

// Signed reports whether the bundle's manifest signature was checked.
func (in *Intel) Signed() bool { return in.b.Signed }

// Files returns the content of a bundle's files of one kind ("osv", ...),
// by path, for the loaders of kinds this package does not parse.
func (in *Intel) Files(kind string) map[string][]byte {
	out := map[string][]byte{}
	for _, f := range in.b.Manifest.Files {
		if f.Kind == kind {
			out[f.Path] = in.b.Read(f.Path)
		}
	}
	return out
}

func fromBundle(b *bundle.Bundle) (*Intel, error) {
	in := &Intel{
		b: b, products: map[string][]prodRef{}, kev: map[string]kev.Entry{}, epss: map[string]epss.Score{},
		recallsBy: map[string][]int{}, gudid: gudid.NewDB(), gudidModel: map[string][]*gudid.Device{},
		vendors: vendor.Default,
	}
	var eolProducts []*eol.Product
	var recallFiles []*recall.File
	var epssDate time.Time
	var gudidFiles []bundle.File
	in.creds = credential.Defaults()
	for range in.creds {
		in.credSource = append(in.credSource, credential.DefaultSource)
	}
	for _, mf := range b.Manifest.Files {
		data := b.Read(mf.Path)
		if !isData(mf.Kind, mf.Path) {
			continue
		}
		fi := fileInfo{path: mf.Path, kind: mf.Kind}
		var err error
		switch mf.Kind {
		case "csaf":
			var a *csaf.Advisory
			if a, err = csaf.Parse(data); err == nil {
				in.advisories = append(in.advisories, a)
				fi.source, fi.date, fi.records = a.Publisher+" CSAF", a.Released, len(a.Vulns)
			}
		case "kev":
			var c *kev.Catalog
			if c, err = kev.Parse(data); err == nil {
				for id, e := range c.Entries {
					in.kev[id] = e
				}
				fi.source, fi.date, fi.records = "CISA KEV catalog "+c.Version, c.Released, len(c.Entries)
			}
		case "epss":
			var s *epss.Scores
			if s, err = epss.Parse(data); err == nil {
				if s.Date.After(epssDate) { // the newest file wins
					in.epss, epssDate = s.ByCVE, s.Date
				}
				fi.source, fi.date, fi.records = "FIRST EPSS "+s.Model, s.Date, len(s.ByCVE)
			}
		case "endoflife":
			var p *eol.Product
			if strings.HasSuffix(mf.Path, ".json") {
				p, err = eol.ParseAPI(data)
			} else {
				p, err = eol.ParseMarkdown(mf.Path, data)
			}
			if err == nil {
				p.Source = "endoflife.date"
				eolProducts = append(eolProducts, p)
				fi.source, fi.records = "endoflife.date", len(p.Releases)
			}
		case "openfda":
			var f *recall.File
			if f, err = recall.Parse(mf.Path, data); err == nil {
				recallFiles = append(recallFiles, f)
				fi.source, fi.date, fi.records = "openFDA device recall", f.Updated, len(f.Recalls)
				if f.Enforcement {
					fi.source = "openFDA device enforcement"
				}
			}
		case "gudid":
			gudidFiles = append(gudidFiles, mf)
			continue
		case "credentials":
			var es []credential.Entry
			if es, err = credential.Parse(data); err == nil {
				in.creds = append(in.creds, es...)
				for range es {
					in.credSource = append(in.credSource, mf.Path)
				}
				fi.source, fi.records = "default-credential list", len(es)
			}
		}
		if err != nil {
			return nil, &bundle.Error{File: mf.Path, Reason: err.Error()}
		}
		in.files = append(in.files, fi)
	}
	// GUDID: device.txt first, then the files that refer to it.
	slices.SortStableFunc(gudidFiles, func(a, b bundle.File) int {
		return slices.Index(gudid.Files, path.Base(a.Path)) - slices.Index(gudid.Files, path.Base(b.Path))
	})
	for _, mf := range gudidFiles {
		n, err := in.gudid.Add(mf.Path, b.Read(mf.Path))
		if err != nil {
			return nil, &bundle.Error{File: mf.Path, Reason: err.Error()}
		}
		in.files = append(in.files, fileInfo{path: mf.Path, kind: "gudid", source: "FDA GUDID delimited full release", date: dateInPath(mf.Path), records: n})
	}
	in.gudid.Index()
	for _, d := range in.gudid.Devices() {
		for _, m := range []string{d.Model, d.Brand} {
			if k := joined(m); k != "" {
				in.gudidModel[k] = append(in.gudidModel[k], d)
			}
		}
	}
	var err error
	if in.eol, err = eol.NewTable(eolProducts); err != nil {
		return nil, err
	}
	in.recalls = recall.Join(recallFiles)
	for i, r := range in.recalls {
		keys := in.vendors.Keys(r.Firm)
		in.recallKeys = append(in.recallKeys, keys)
		for _, k := range keys {
			in.recallsBy[k] = append(in.recallsBy[k], i)
		}
	}
	for _, e := range in.creds {
		in.credKeys = append(in.credKeys, in.vendors.Keys(e.Vendor))
	}
	slices.SortFunc(in.advisories, func(a, b *csaf.Advisory) int { return strings.Compare(a.ID, b.ID) })
	in.indexProducts()
	// Dates the manifest gives win over the ones read from content.
	for i := range in.files {
		for _, mf := range b.Manifest.Files {
			if mf.Path == in.files[i].path {
				if mf.Source != "" {
					in.files[i].source = mf.Source
				}
				if t, ok := parseDate(mf.Date); ok {
					in.files[i].date = t
				}
			}
		}
	}
	return in, nil
}

// isData says whether a bundle file is source data of its kind, as
// opposed to a licence, README or schema that travels with it.
func isData(kind, p string) bool {
	base := strings.ToLower(path.Base(p))
	if strings.HasPrefix(base, "readme") || strings.HasPrefix(base, "license") || strings.HasPrefix(base, "copying") ||
		strings.Contains(base, "schema") || strings.Contains(base, "mapping") {
		return false
	}
	switch kind {
	case "csaf", "kev":
		return strings.HasSuffix(base, ".json")
	case "epss":
		return strings.HasPrefix(base, "epss_scores") && (strings.HasSuffix(base, ".csv.gz") || strings.HasSuffix(base, ".csv"))
	case "endoflife":
		return strings.HasSuffix(base, ".md") || strings.HasSuffix(base, ".json")
	case "openfda":
		return strings.HasSuffix(base, ".json") || strings.HasSuffix(base, ".json.zip")
	case "gudid":
		return slices.Contains(gudid.Files, path.Base(p))
	case "credentials":
		return strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")
	}
	return false
}

var pathDate = regexp.MustCompile(`(20\d\d)-?([01]\d)-?([0-3]\d)`)

func dateInPath(p string) time.Time {
	m := pathDate.FindStringSubmatch(p)
	if m == nil {
		return time.Time{}
	}
	t, _ := time.Parse("20060102", m[1]+m[2]+m[3])
	return t
}

func parseDate(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// SourceStatus is one source of the bundle (or shipped with medmesh):
// how many files and records, and how old its newest data is.
type SourceStatus struct {
	Kind    string        `json:"kind"`
	Source  string        `json:"source"`
	Files   int           `json:"files"`
	Records int           `json:"records"`
	Date    time.Time     `json:"date"` // zero when the source gives none
	Age     time.Duration `json:"-"`
	AgeDays int           `json:"age_days"`
	// Stale is set when the data is older than the maximum age asked for.
	Stale bool `json:"stale"`
}

// ShippedDate is when the tables built into medmesh (legacy Windows
// end-of-life dates, default credentials) were last checked.
var ShippedDate = time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)

// Status lists every source with its date and age at now; a source older
// than maxAge (0: never) is marked stale. Stale data is still used.
func (in *Intel) Status(now time.Time, maxAge time.Duration) []SourceStatus {
	type key struct{ kind, source string }
	agg := map[key]*SourceStatus{}
	var keys []key
	add := func(k key, files, records int, date time.Time) {
		s := agg[k]
		if s == nil {
			s = &SourceStatus{Kind: k.kind, Source: k.source}
			agg[k] = s
			keys = append(keys, k)
		}
		s.Files += files
		s.Records += records
		if date.After(s.Date) {
			s.Date = date
		}
	}
	for _, f := range in.files {
		add(key{f.kind, f.source}, 1, f.records, f.date)
	}
	legacy := 0
	for _, p := range in.eol.Products() {
		for _, r := range p.Releases {
			if p.Source == eol.LegacySource || strings.Contains(r.Link, eol.LegacySource) {
				legacy++
			}
		}
	}
	add(key{"endoflife", eol.LegacySource + " (shipped)"}, 0, legacy, ShippedDate)
	add(key{"credentials", credential.DefaultSource + " (shipped)"}, 0, len(credential.Defaults()), ShippedDate)
	out := make([]SourceStatus, 0, len(keys))
	for _, k := range keys {
		s := *agg[k]
		if !s.Date.IsZero() {
			s.Age = now.Sub(s.Date)
			s.AgeDays = int(s.Age.Hours() / 24)
			s.Stale = maxAge > 0 && s.Age > maxAge
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b SourceStatus) int {
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.Source, b.Source)
	})
	return out
}

// Build makes a bundle from source directories laid out by kind: every
// file is read and checked by its kind's loader (a file that does not
// parse stops the build, naming it), and the manifest records each file's
// kind, size, SHA-256, source and date. With a key the manifest is signed.
// It returns the manifest, its bytes, the signature (nil without a key) and
// the files, ready for bundle.Write.
func Build(dirs []string, created time.Time, key ed25519.PrivateKey) (bundle.Manifest, []byte, []byte, map[string][]byte, error) {
	files, err := bundle.ReadSources(dirs...)
	if err != nil {
		return bundle.Manifest{}, nil, nil, nil, err
	}
	if len(files) == 0 {
		return bundle.Manifest{}, nil, nil, nil, errors.New("no files in " + strings.Join(dirs, ", "))
	}
	m := bundle.Compute(files, created)
	b, err := bundle.FromFiles(files, m)
	if err != nil {
		return bundle.Manifest{}, nil, nil, nil, err
	}
	in, err := fromBundle(b)
	if err != nil {
		return bundle.Manifest{}, nil, nil, nil, err
	}
	for i, f := range m.Files {
		for _, fi := range in.files {
			if fi.path == f.Path {
				m.Files[i].Source = fi.source
				if !fi.date.IsZero() {
					m.Files[i].Date = fi.date.Format(time.RFC3339)
				}
			}
		}
	}
	raw, err := bundle.Marshal(m)
	if err != nil {
		return bundle.Manifest{}, nil, nil, nil, err
	}
	var sig []byte
	if key != nil {
		sig = bundle.Sign(raw, key)
	}
	return m, raw, sig, files, nil
}

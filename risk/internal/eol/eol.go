// Package eol reads end-of-life data in endoflife.date's two published
// forms, the products/*.md YAML front matter of the endoflife.date
// repository and the API v1 product JSON, and finds the release an
// operating system string ("Windows 7 SP1", "Windows XP Embedded", "Ubuntu
// 16.04.7 LTS", a CPE) belongs to. A shipped table of legacy Windows
// releases that medical devices still run (legacy/*.md, same format,
// Microsoft's dates) is merged in under endoflife.date's own entries.
package eol

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/medmesh/medmesh/risk/internal/version"
)

// Product is one endoflife.date product.
type Product struct {
	Name     string // the permalink slug: "windows"
	Title    string // "Microsoft Windows"
	Aliases  []string
	CPEs     []string
	Releases []Release
	// Source is where the product came from ("endoflife.date" or the
	// legacy table).
	Source string
}

// Release is one release cycle.
type Release struct {
	Cycle    string
	Label    string
	Codename string
	EOL      Date // end of security support
	EOAS     Date // end of active support
	EOES     Date // end of extended (paid) support
	Link     string
}

// Date is an endoflife.date date field: a date, or true/false when the
// source gives no date.
type Date struct {
	Time time.Time
	Set  bool // true (without a date) or a date
}

// Passed reports whether the date is past at t (true without a date counts
// as passed).
func (d Date) Passed(at time.Time) bool {
	return d.Set && (d.Time.IsZero() || !d.Time.After(at))
}

// String is the date as YYYY-MM-DD, "yes" for a dateless true, "" when unset.
func (d Date) String() string {
	switch {
	case !d.Set:
		return ""
	case d.Time.IsZero():
		return "yes"
	}
	return d.Time.Format(time.DateOnly)
}

func (d *Date) UnmarshalYAML(n *yaml.Node) error {
	return d.parse(n.Value)
}

func (d *Date) UnmarshalJSON(b []byte) error {
	var s any
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	switch v := s.(type) {
	case nil:
		return nil
	case bool:
		return d.parse(fmt.Sprint(v))
	case string:
		return d.parse(v)
	}
	return fmt.Errorf("date %s: want a date or a boolean", b)
}

func (d *Date) parse(s string) error {
	switch strings.TrimSpace(s) {
	case "", "false", "null":
		*d = Date{}
		return nil
	case "true":
		*d = Date{Set: true}
		return nil
	}
	t, err := time.Parse(time.DateOnly, strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("date %q: want YYYY-MM-DD, true or false", s)
	}
	*d = Date{Time: t, Set: true}
	return nil
}

// ParseMarkdown reads a products/*.md file; errors name the line.
func ParseMarkdown(name string, data []byte) (*Product, error) {
	fm, ok := bytes.CutPrefix(data, []byte("---\n"))
	if !ok {
		return nil, errors.New("line 1: no front matter (want ---)")
	}
	end := bytes.Index(fm, []byte("\n---"))
	if end < 0 {
		return nil, errors.New("front matter not closed (want a --- line)")
	}
	var raw struct {
		Title          string              `yaml:"title"`
		Permalink      string              `yaml:"permalink"`
		AlternateURLs  []string            `yaml:"alternate_urls"`
		AlternativeURL []string            `yaml:"alternative_urls"`
		ReleaseLabel   string              `yaml:"releaseLabel"`
		Identifiers    []map[string]string `yaml:"identifiers"`
		Releases       []struct {
			Cycle    string `yaml:"releaseCycle"`
			Label    string `yaml:"releaseLabel"`
			Codename string `yaml:"codename"`
			EOL      Date   `yaml:"eol"`
			EOAS     Date   `yaml:"eoas"`
			EOES     Date   `yaml:"eoes"`
			Link     string `yaml:"link"`
		} `yaml:"releases"`
	}
	if err := yaml.Unmarshal(fm[:end+1], &raw); err != nil {
		return nil, fmt.Errorf("front matter (line numbers count from the first --- as line 1): %w", err)
	}
	if raw.Title == "" || len(raw.Releases) == 0 {
		return nil, errors.New("front matter has no title or no releases")
	}
	p := &Product{Name: strings.Trim(raw.Permalink, "/"), Title: raw.Title}
	if p.Name == "" {
		p.Name = strings.TrimSuffix(path.Base(name), ".md")
	}
	for _, u := range append(raw.AlternateURLs, raw.AlternativeURL...) {
		p.Aliases = append(p.Aliases, strings.Trim(u, "/"))
	}
	for _, id := range raw.Identifiers {
		if c := id["cpe"]; c != "" {
			p.CPEs = append(p.CPEs, c)
		}
	}
	for i, r := range raw.Releases {
		if r.Cycle == "" {
			return nil, fmt.Errorf("releases[%d]: no releaseCycle", i)
		}
		label := r.Label
		if label == "" {
			label = raw.ReleaseLabel
		}
		if label == "" {
			label = r.Cycle
		}
		label = strings.ReplaceAll(label, "__RELEASE_CYCLE__", r.Cycle)
		label = strings.ReplaceAll(label, "__CODENAME__", r.Codename)
		p.Releases = append(p.Releases, Release{Cycle: r.Cycle, Label: label, Codename: r.Codename, EOL: r.EOL, EOAS: r.EOAS, EOES: r.EOES, Link: r.Link})
	}
	return p, nil
}

// ParseAPI reads an endoflife.date API v1 product response
// (https://endoflife.date/api/v1/products/PRODUCT).
func ParseAPI(data []byte) (*Product, error) {
	var raw struct {
		Result *struct {
			Name        string   `json:"name"`
			Label       string   `json:"label"`
			Aliases     []string `json:"aliases"`
			Identifiers []struct {
				Type string `json:"type"`
				ID   string `json:"id"`
			} `json:"identifiers"`
			Releases []struct {
				Name     string `json:"name"`
				Label    string `json:"label"`
				Codename string `json:"codename"`
				EOL      Date   `json:"eolFrom"`
				IsEOL    bool   `json:"isEol"`
				EOAS     Date   `json:"eoasFrom"`
				EOES     Date   `json:"eoesFrom"`
			} `json:"releases"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if raw.Result == nil || raw.Result.Name == "" {
		return nil, errors.New("not an endoflife.date API v1 product: no result.name")
	}
	r := raw.Result
	p := &Product{Name: r.Name, Title: r.Label, Aliases: r.Aliases}
	for _, id := range r.Identifiers {
		if id.Type == "cpe" {
			p.CPEs = append(p.CPEs, id.ID)
		}
	}
	for _, rel := range r.Releases {
		eol := rel.EOL
		if !eol.Set && rel.IsEOL {
			eol = Date{Set: true}
		}
		label := rel.Label
		if label == "" {
			label = rel.Name
		}
		p.Releases = append(p.Releases, Release{Cycle: rel.Name, Label: label, Codename: rel.Codename, EOL: eol, EOAS: rel.EOAS, EOES: rel.EOES})
	}
	return p, nil
}

//go:embed legacy/*.md
var legacyFS embed.FS

// legacy is the shipped table, parsed once.
var legacy, legacyErr = func() ([]*Product, error) {
	var out []*Product
	entries, _ := legacyFS.ReadDir("legacy")
	for _, e := range entries {
		data, _ := legacyFS.ReadFile("legacy/" + e.Name())
		p, err := ParseMarkdown(e.Name(), data)
		if err != nil {
			return nil, fmt.Errorf("shipped legacy/%s: %w", e.Name(), err)
		}
		p.Source = LegacySource
		out = append(out, p)
	}
	return out, nil
}()

// LegacySource names the shipped table in findings and status.
const LegacySource = "medmesh legacy Windows table (Microsoft Lifecycle dates)"

// Table is a set of products to look operating systems up in.
type Table struct {
	products []*Product
}

// NewTable merges products from a bundle with the shipped legacy table:
// a legacy release is added to the product of the same name unless that
// product already has its release cycle or label.
func NewTable(products []*Product) (*Table, error) {
	t := &Table{}
	byName := map[string]*Product{}
	for _, p := range products {
		if old := byName[p.Name]; old != nil {
			old.Releases = append(old.Releases, p.Releases...)
			continue
		}
		byName[p.Name] = p
		t.products = append(t.products, p)
	}
	if legacyErr != nil {
		return nil, legacyErr
	}
	for _, shared := range legacy {
		lp := *shared
		lp.Releases = slices.Clone(shared.Releases)
		p := byName[lp.Name]
		if p == nil {
			byName[lp.Name] = &lp
			t.products = append(t.products, &lp)
			continue
		}
		for _, r := range lp.Releases {
			if !slices.ContainsFunc(p.Releases, func(x Release) bool {
				return x.Cycle == r.Cycle || strings.EqualFold(x.Label, r.Label)
			}) {
				r.Link = r.Link + " (" + LegacySource + ")"
				p.Releases = append(p.Releases, r)
			}
		}
	}
	slices.SortFunc(t.products, func(a, b *Product) int { return strings.Compare(a.Name, b.Name) })
	return t, nil
}

// Products returns the table's products, sorted by name.
func (t *Table) Products() []*Product { return t.products }

// Match is the release an operating system string belongs to.
type Match struct {
	Product *Product
	Release Release
	// Exact is true when every word of the release's label or cycle is in
	// the string; false when the string named the release less precisely
	// ("Windows 7" for "7 SP1") or by version prefix ("16.04.7" in "16.04").
	Exact bool
}

// Lookup finds the release os names. Among equally good releases it picks
// the one whose support ends first.
func (t *Table) Lookup(os string) (Match, bool) {
	words := osWords(os)
	if len(words) == 0 {
		return Match{}, false
	}
	type cand struct {
		p     *Product
		n     int // product name words
		first int // position of the first name word
		rest  []string
	}
	var cands []cand
	for _, p := range t.products {
		for _, name := range p.names() {
			rest, first, ok := consume(words, name)
			if ok {
				cands = append(cands, cand{p, len(name), first, rest})
			}
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return a.first - b.first
	})
	for _, c := range cands {
		if m, ok := bestRelease(c.p, c.rest); ok {
			return m, true
		}
	}
	return Match{}, false
}

// names are the word lists a product is known by: its title without the
// vendor, its slug and aliases, and the product part of its CPEs.
func (p *Product) names() [][]string {
	var out [][]string
	add := func(s string) {
		w := osWords(s)
		if len(w) > 0 && !slices.ContainsFunc(out, func(x []string) bool { return slices.Equal(x, w) }) {
			out = append(out, w)
		}
	}
	add(p.Title)
	add(strings.ReplaceAll(p.Name, "-", " "))
	for _, a := range p.Aliases {
		add(strings.ReplaceAll(a, "-", " "))
	}
	for _, c := range p.CPEs {
		parts := strings.Split(strings.TrimPrefix(strings.TrimPrefix(c, "cpe:2.3:"), "cpe:/"), ":")
		if len(parts) >= 3 {
			add(strings.ReplaceAll(parts[2], "_", " "))
		}
	}
	return out
}

// consume removes name's words from words when all are there.
func consume(words, name []string) (rest []string, first int, ok bool) {
	first = len(words)
	used := make([]bool, len(words))
	for _, n := range name {
		i := slices.IndexFunc(words, func(w string) bool { return w == n })
		for i >= 0 && used[i] {
			j := slices.IndexFunc(words[i+1:], func(w string) bool { return w == n })
			if j < 0 {
				i = -1
				break
			}
			i += 1 + j
		}
		if i < 0 {
			return nil, 0, false
		}
		used[i] = true
		first = min(first, i)
	}
	for i, w := range words {
		if !used[i] {
			rest = append(rest, w)
		}
	}
	return rest, first, true
}

func bestRelease(p *Product, rest []string) (Match, bool) {
	var best Match
	bestHit, bestMiss, found := 0, 0, false
	for _, r := range p.Releases {
		lw := osWords(r.Label)
		for _, w := range osWords(strings.ReplaceAll(r.Cycle, "-", " ")) {
			if !slices.Contains(lw, w) {
				lw = append(lw, w)
			}
		}
		if r.Codename != "" {
			lw = append(lw, osWords(r.Codename)...)
		}
		if len(lw) == 0 || !wordIn(lw[0], rest) {
			continue
		}
		hit, miss, prefix := 0, 0, false
		for _, w := range lw {
			if slices.Contains(rest, w) {
				hit++
			} else if wordIn(w, rest) {
				hit++
				prefix = true
			} else {
				miss++
			}
		}
		better := !found || hit > bestHit || hit == bestHit && miss < bestMiss ||
			hit == bestHit && miss == bestMiss && endsBefore(r, best.Release)
		if better {
			best = Match{Product: p, Release: r, Exact: miss == 0 && !prefix}
			bestHit, bestMiss, found = hit, miss, true
		}
	}
	return best, found
}

// endsBefore orders releases by the end of security support, dated first.
func endsBefore(a, b Release) bool {
	if !a.EOL.Set || a.EOL.Time.IsZero() {
		return false
	}
	if !b.EOL.Set || b.EOL.Time.IsZero() {
		return true
	}
	return a.EOL.Time.Before(b.EOL.Time)
}

// wordIn reports whether w is one of words, or a version prefix of one
// ("16.04" of "16.04.7").
func wordIn(w string, words []string) bool {
	if slices.Contains(words, w) {
		return true
	}
	if !strings.ContainsAny(w, "0123456789") {
		return false
	}
	for _, x := range words {
		if strings.HasPrefix(x, w+".") {
			if _, ok := version.Parse(x); ok {
				return true
			}
		}
	}
	return false
}

var editions = map[string]string{
	"enterprise": "e", "education": "e", "home": "w", "pro": "w", "professional": "w",
	"ltsc": "lts", "ltsb": "lts", "microsoft": "", "the": "", "os": "", "operating": "", "system": "",
}

// osWords splits an OS string into lower-case words: dots stay inside
// version numbers, "SP 1"/"Service Pack 1" become "sp1", edition names
// become endoflife.date's (E)/(W) markers, a CPE becomes its product,
// version and update.
func osWords(s string) []string {
	s = strings.ToLower(strings.TrimSpace(s))
	if rest, ok := strings.CutPrefix(s, "cpe:2.3:"); ok {
		s = cpeText(strings.Split(rest, ":"))
	} else if rest, ok := strings.CutPrefix(s, "cpe:/"); ok {
		s = cpeText(strings.Split(rest, ":"))
	}
	s = strings.ReplaceAll(s, "service pack", "sp")
	f := strings.FieldsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r > 127)
	})
	var out []string
	for i := 0; i < len(f); i++ {
		w := strings.Trim(f[i], ".")
		if w == "sp" && i+1 < len(f) {
			w, i = "sp"+f[i+1], i+1
		}
		if e, ok := editions[w]; ok {
			w = e
		}
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

func cpeText(parts []string) string {
	var keep []string
	for i, p := range parts {
		if i == 0 || i == 1 || p == "*" || p == "-" || p == "" {
			continue // part and vendor
		}
		keep = append(keep, strings.ReplaceAll(p, "_", " "))
	}
	return strings.Join(keep, " ")
}

package risk

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sharedIntel is the real public data the tests read (see
// ../shared/testdata/README.md).
const sharedIntel = "../../shared/testdata/intel"

func loadShared(t testing.TB) *Intel {
	t.Helper()
	if _, err := os.Stat(filepath.Join(sharedIntel, "csaf")); err != nil {
		t.Skipf("skipped: %s is absent (the shared test data)", sharedIntel)
	}
	in, err := Load(sharedIntel, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// The inventory of the acceptance test is built from each advisory's raw
// JSON by the test itself, the way a person reading the product tree would,
// so that it does not share the parser it checks.
type treeNode struct {
	vendor, product, versionText, id string
}

func productNodes(t *testing.T, raw map[string]any) []treeNode {
	var out []treeNode
	var walk func(bs []any, n treeNode)
	walk = func(bs []any, n treeNode) {
		for _, b := range bs {
			m := b.(map[string]any)
			name, _ := m["name"].(string)
			c := n
			switch m["category"] {
			case "vendor":
				c.vendor = name
			case "product_name", "product_family":
				c.product = name
			case "product_version", "product_version_range":
				c.versionText = name
			}
			if p, ok := m["product"].(map[string]any); ok {
				c.id = p["product_id"].(string)
				out = append(out, c)
			}
			if sub, ok := m["branches"].([]any); ok {
				walk(sub, c)
			}
		}
	}
	pt, _ := raw["product_tree"].(map[string]any)
	bs, _ := pt["branches"].([]any)
	walk(bs, treeNode{})
	return out
}

var (
	monthWords = regexp.MustCompile(`(?i)\b(january|february|march|april|may|june|july|august|september|october|november|december|nov|shipped|distributed)\b`)
	digitRun   = regexp.MustCompile(`\d+`)
	stopAt     = regexp.MustCompile(`(?i)\s+(on|with|for|integrated)\b.*$`)
)

// insideVersions gives versions a person would say lie inside a version
// text, or why none can be named.
func insideVersions(text string) ([]string, string) {
	t := strings.Join(strings.Fields(text), " ")
	low := strings.ToLower(t)
	if strings.HasPrefix(low, "vers:all") || strings.HasPrefix(low, "*") || strings.HasPrefix(low, "all versions") {
		return []string{"1.0"}, ""
	}
	if strings.HasPrefix(t, "(") && strings.HasSuffix(t, ")") && strings.Count(t, "(") == 1 {
		t = t[1 : len(t)-1]
	} else {
		t = regexp.MustCompile(`\([^()]*(\([^()]*\)[^()]*)*\)?`).ReplaceAllString(t, "")
	}
	if monthWords.MatchString(t) || monthWords.MatchString(text) && !strings.ContainsAny(t, "0123456789") {
		return nil, fmt.Sprintf("%q names a date (of shipping or distribution), not a version a device reports", text)
	}
	if i := strings.Index(strings.ToLower(t), "firmware "); i >= 0 {
		return []string{strings.TrimRight(strings.Fields(t[i+9:])[0], ",")}, ""
	}
	if i := strings.Index(t, " model "); i >= 0 {
		t = t[:i]
	}
	var out []string
	for _, p := range strings.Split(t, "|") {
		p = strings.TrimSpace(p)
		lp := strings.ToLower(p)
		switch {
		case p == "":
		case strings.HasPrefix(p, "<="), strings.HasPrefix(p, ">="):
			out = append(out, strings.TrimSpace(stopAt.ReplaceAllString(p[2:], "")))
		case strings.HasPrefix(p, "<"):
			out = append(out, below(strings.TrimSpace(p[1:])))
		case strings.HasSuffix(lp, " or newer"):
			f := strings.Fields(p[:len(p)-len(" or newer")])
			out = append(out, f[len(f)-1])
		case strings.HasSuffix(lp, " and below"):
			out = append(out, strings.TrimSpace(p[:len(p)-len(" and below")]))
		case strings.Contains(p, " <= "), strings.Contains(p, " < "):
			out = append(out, strings.Fields(p)[0])
		case strings.HasPrefix(lp, "rev ") && strings.Contains(p, "-"):
			out = append(out, strings.Split(strings.Fields(p)[1], "-")[0])
		case strings.Contains(p, " and "):
			out = append(out, strings.Split(p, " and ")...)
		case strings.HasPrefix(lp, "release "):
			out = append(out, strings.Fields(p)[1:]...)
		case strings.HasSuffix(lp, ".x") || strings.HasSuffix(lp, "0x"):
			out = append(out, strings.NewReplacer(".x", ".1", ".X", ".1", "0x", "01").Replace(p))
		default:
			out = append(out, p)
		}
	}
	return out, ""
}

// below returns a version just under v: its last non-zero number minus one.
func below(v string) string {
	runs := digitRun.FindAllStringIndex(v, -1)
	for i := len(runs) - 1; i >= 0; i-- {
		s := v[runs[i][0]:runs[i][1]]
		n, _ := strconv.Atoi(s)
		if n > 0 {
			d := fmt.Sprintf("%0*d", len(s), n-1)
			return v[:runs[i][0]] + d + v[runs[i][1]:]
		}
	}
	return v
}

// TestEveryAdvisoryMatchesItsOwnProducts is the first acceptance point of
// issue 18: for every CISA medical advisory, an inventory built from its
// product tree gets every CVE of the advisory at confidence exact or range,
// and a version outside the affected versions gets none of them.
func TestEveryAdvisoryMatchesItsOwnProducts(t *testing.T) {
	in := loadShared(t)
	files, _ := filepath.Glob(filepath.Join(sharedIntel, "csaf", "*.json"))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var full, partial int
	var cannot []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var raw map[string]any
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatal(err)
		}
		advID := raw["document"].(map[string]any)["tracking"].(map[string]any)["id"].(string)
		affected := map[string][]string{} // product id -> CVEs
		for _, v := range raw["vulnerabilities"].([]any) {
			vm := v.(map[string]any)
			cve, _ := vm["cve"].(string)
			ps, _ := vm["product_status"].(map[string]any)
			ids, _ := ps["known_affected"].([]any)
			for _, id := range ids {
				affected[id.(string)] = append(affected[id.(string)], cve)
			}
		}
		nodes := productNodes(t, raw)
		var why []string
		failed := false
		type group struct{ vendor, product string }
		outsideOK := map[group]bool{}
		for _, n := range nodes {
			g := group{n.vendor, n.product}
			if _, ok := outsideOK[g]; !ok {
				outsideOK[g] = true
			}
			want := affected[n.id]
			if len(want) == 0 {
				continue
			}
			versions, reason := insideVersions(n.versionText)
			if reason != "" {
				why = append(why, fmt.Sprintf("%s / %s: %s", n.vendor, n.product, reason))
				outsideOK[g] = false
				// Still found, at confidence model: the model matched and
				// no version can be checked.
				fs, _ := in.Assess(Device{Vendor: n.vendor, Model: n.product, Version: "1.0"}, at)
				for _, cve := range want {
					if !slices.ContainsFunc(fs, func(f Finding) bool { return f.ID == cve && f.Confidence == ConfidenceModel }) {
						t.Errorf("%s: %s / %s: %s not found at confidence model", advID, n.vendor, n.product, cve)
						failed = true
					}
				}
				continue
			}
			lt := strings.ToLower(n.versionText)
			if strings.HasPrefix(lt, "vers:all") || strings.HasPrefix(lt, "*") || strings.HasPrefix(lt, ">=") && !strings.Contains(lt, "<") || strings.HasSuffix(lt, " or newer") {
				outsideOK[g] = false // every version (or every later one) is affected
			}
			for _, v := range versions {
				d := Device{Vendor: n.vendor, Model: n.product, Version: v}
				fs, err := in.Assess(d, at)
				if err != nil {
					t.Fatal(err)
				}
				for _, cve := range want {
					if !slices.ContainsFunc(fs, func(f Finding) bool {
						return f.ID == cve && (f.Confidence == ConfidenceExact || f.Confidence == ConfidenceRange)
					}) {
						t.Errorf("%s: %+v: %s not found at exact or range (version text %q)", advID, d, cve, n.versionText)
						failed = true
					}
				}
			}
		}
		// Outside: a version past every affected one of the product.
		for g, ok := range outsideOK {
			if !ok {
				continue
			}
			d := Device{Vendor: g.vendor, Model: g.product, Version: "99999999999999"}
			fs, _ := in.Assess(d, at)
			for _, f := range fs {
				if f.Source == advID && (f.Confidence == ConfidenceExact || f.Confidence == ConfidenceRange) {
					t.Errorf("%s: %+v outside every affected version got %s at %s", advID, d, f.ID, f.Confidence)
					failed = true
				}
			}
		}
		switch {
		case failed:
		case len(why) == 0:
			full++
		default:
			partial++
			cannot = append(cannot, advID+": "+strings.Join(why, "; "))
		}
	}
	t.Logf("%d of %d advisories fully matched (every product, every CVE at exact or range; outside versions get none)", full, len(files))
	t.Logf("%d advisories matched except products no version can name:", partial)
	for _, c := range cannot {
		t.Logf("  %s", c)
	}
	if full == 0 {
		t.Fatal("no advisory matched")
	}
}

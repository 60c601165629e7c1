package version

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Constraint is the set of versions an advisory's version text names: any
// version (Any), the union of Alts, minus Excluded. A text this package
// cannot evaluate (a shipping date, a free-text condition) gives a
// Constraint with Unknown set to the reason and no Alts.
type Constraint struct {
	Any      bool
	Alts     []Alt
	Excluded []Version
	// Unknown says why no version can be tested against the text.
	Unknown string
	// Models are model numbers the text names beside the version
	// ("6.x model 35700BAX").
	Models []string
}

// Alt is one exact version or one interval (a nil bound is unbounded).
type Alt struct {
	Exact  *Version
	Lo, Hi *Bound
}

// Bound is one end of an interval.
type Bound struct {
	V    Version
	Incl bool
}

// Match reports whether v satisfies c, and whether it did so by equality
// with an exact version (as opposed to lying in an interval or in "any").
func (c Constraint) Match(v Version) (ok, exact bool) {
	for _, x := range c.Excluded {
		if v.Compare(x) == 0 {
			return false, false
		}
	}
	for _, a := range c.Alts {
		if a.Exact != nil && v.Compare(*a.Exact) == 0 {
			return true, true
		}
	}
	if c.Any {
		return true, false
	}
	for _, a := range c.Alts {
		if a.Exact == nil && a.contains(v) {
			return true, false
		}
	}
	return false, false
}

func (a Alt) contains(v Version) bool {
	if a.Lo != nil {
		c := v.Compare(a.Lo.V)
		if c < 0 || c == 0 && !a.Lo.Incl {
			return false
		}
	}
	if a.Hi != nil {
		c := v.Compare(a.Hi.V)
		if c > 0 || c == 0 && !a.Hi.Incl {
			return false
		}
	}
	return true
}

// String writes c back in vers-like notation, for messages.
func (c Constraint) String() string {
	if c.Unknown != "" {
		return "unknown (" + c.Unknown + ")"
	}
	var parts []string
	if c.Any {
		parts = append(parts, "*")
	}
	for _, a := range c.Alts {
		switch {
		case a.Exact != nil:
			parts = append(parts, "="+a.Exact.raw)
		default:
			var s []string
			if a.Lo != nil {
				s = append(s, map[bool]string{true: ">=", false: ">"}[a.Lo.Incl]+a.Lo.V.raw)
			}
			if a.Hi != nil {
				s = append(s, map[bool]string{true: "<=", false: "<"}[a.Hi.Incl]+a.Hi.V.raw)
			}
			parts = append(parts, strings.Join(s, ","))
		}
	}
	for _, x := range c.Excluded {
		parts = append(parts, "!="+x.raw)
	}
	return strings.Join(parts, "|")
}

var (
	spaces     = regexp.MustCompile(`\s+`)
	dateWords  = regexp.MustCompile(`(?i)\b(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(t|tember)?|oct(ober)?|nov(ember)?|dec(ember)?|shipped|distributed|manufactured)\b`)
	infix      = regexp.MustCompile(`^(\S+)\s*(<=|<)\s*(\S+)$`)
	between    = regexp.MustCompile(`(?i)^(\S+)\s+(?:through|to|-)\s+(\S+)$`)
	revRange   = regexp.MustCompile(`(?i)^(?:rev(?:ision)?\.?\s+)([A-Za-z0-9.]+)-([A-Za-z0-9.]+)$`)
	leadWords  = regexp.MustCompile(`(?i)^(all\s+)?(versions?|releases?|rev(ision)?s?\.?|software|firmware|sw|fw)\s+`)
	belowWords = regexp.MustCompile(`(?i)\s+(and|or)\s+(below|earlier|prior|lower|older)$`)
	aboveWords = regexp.MustCompile(`(?i)\s+(and|or)\s+(later|above|newer|higher|greater)$`)
	priorTo    = regexp.MustCompile(`(?i)^(?:all\s+)?(?:versions?\s+)?(?:prior\s+to|before|earlier\s+than|older\s+than|below)\s+`)
	stopWords  = regexp.MustCompile(`(?i)\s+(on|with|for|running|integrated|in|including|and|or)\b.*$`)
	comparator = regexp.MustCompile(`^(>=|<=|!=|==|=|<|>)\s*`)
)

// Parse reads the version text of an advisory: a CSAF product_version or
// product_version_range name, a vers: URI, or free text.
func ParseConstraint(text string) Constraint {
	t := strings.TrimSpace(spaces.ReplaceAllString(text, " "))
	low := strings.ToLower(t)
	if strings.HasPrefix(low, "vers:") {
		return parseVers(t)
	}
	if low == "" {
		return Constraint{Unknown: "no version text"}
	}
	if m := priorTo.FindStringIndex(t); m != nil {
		t = "< " + t[m[1]:]
		low = strings.ToLower(t)
	}
	if low == "*" || strings.HasPrefix(low, "* ") || low == "all" || strings.HasPrefix(low, "all versions") || low == "any" {
		return Constraint{Any: true}
	}
	if bare := stripParens(t); dateWords.MatchString(bare) ||
		dateWords.MatchString(t) && !strings.ContainsAny(bare, "0123456789") {
		return Constraint{Unknown: "names a date, not a version: " + strconvQuote(text)}
	}
	var c Constraint
	if i := strings.Index(low, " model "); i >= 0 {
		c.Models = strings.Fields(t[i+len(" model "):])
		t, low = t[:i], low[:i]
	}
	if i := strings.Index(low, "firmware "); i > 0 {
		f := strings.Fields(t[i+len("firmware "):])
		if len(f) > 0 {
			t = strings.TrimRight(f[0], ",;")
			low = strings.ToLower(t)
		}
	}
	t = stripParens(t)
	var cmps []cmpItem
	for _, part := range strings.Split(t, "|") {
		part = strings.TrimSpace(stripParens(part))
		if part == "" {
			continue
		}
		if m := revRange.FindStringSubmatch(part); m != nil {
			if lo, ok := Parse(m[1]); ok {
				if hi, ok := Parse(m[2]); ok {
					c.Alts = append(c.Alts, Alt{Lo: &Bound{lo, true}, Hi: &Bound{hi, true}})
					continue
				}
			}
		}
		part = leadWords.ReplaceAllString(part, "")
		if m := priorTo.FindStringIndex(part); m != nil {
			part = "< " + part[m[1]:]
		}
		if m := belowWords.FindStringIndex(part); m != nil {
			part = "<= " + part[:m[0]]
		} else if m := aboveWords.FindStringIndex(part); m != nil {
			// "... with Software 04.00.00 or newer": the version is the
			// last word before the phrase.
			f := strings.Fields(part[:m[0]])
			part = ">= " + f[len(f)-1]
		}
		if m := comparator.FindStringSubmatch(part); m != nil {
			vt := strings.TrimSpace(stopWords.ReplaceAllString(part[len(m[0]):], ""))
			if it, ok := newCmp(m[1], vt); ok {
				cmps = append(cmps, it...)
			}
			continue
		}
		if m := infix.FindStringSubmatch(part); m != nil {
			lo, ok1 := wildcardOrExact(m[1])
			hi, ok2 := wildcardOrExact(m[3])
			if ok1 && ok2 {
				a := Alt{Lo: lo.Lo, Hi: hi.Hi}
				if m[2] == "<" && hi.Exact == nil {
					a.Hi = &Bound{hi.Lo.V, false} // "< 3.x": below the first 3
				} else if m[2] == "<" {
					a.Hi = &Bound{*hi.Exact, false}
				} else if hi.Exact != nil {
					a.Hi = &Bound{*hi.Exact, true}
				}
				if lo.Exact != nil {
					a.Lo = &Bound{*lo.Exact, true}
				}
				c.Alts = append(c.Alts, a)
				continue
			}
		}
		if m := between.FindStringSubmatch(part); m != nil {
			lo, ok1 := Parse(m[1])
			hi, ok2 := Parse(m[2])
			if ok1 && ok2 && lo.Compare(hi) < 0 {
				c.Alts = append(c.Alts, Alt{Lo: &Bound{lo, true}, Hi: &Bound{hi, true}})
				continue
			}
		}
		if list := versionList(part); len(list) > 1 {
			for _, v := range list {
				c.Alts = append(c.Alts, Alt{Exact: &v})
			}
			continue
		}
		if a, ok := wildcardOrExact(part); ok {
			c.Alts = append(c.Alts, a)
		}
	}
	c.Alts = append(c.Alts, pair(cmps, &c)...)
	if !c.Any && len(c.Alts) == 0 {
		c.Unknown = "no version in " + strconvQuote(text)
	}
	return c
}

func strconvQuote(s string) string { return strconv.Quote(s) }

// stripParens removes parenthesised remarks ("<= 1.54 (integrated into GE
// MobileLink)"); a text that is one parenthesis is unwrapped instead.
func stripParens(t string) string {
	t = strings.TrimSpace(t)
	if strings.HasPrefix(t, "(") && strings.HasSuffix(t, ")") && strings.Count(t, "(") == 1 {
		return strings.TrimSpace(t[1 : len(t)-1])
	}
	var b strings.Builder
	depth := 0
	for _, r := range t {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
}

// versionList splits "2131 and 2141" or "1.3.2 1.4.0 1.4.1" into versions;
// it returns nil unless every item looks like a version number.
func versionList(t string) []Version {
	var items []string
	if strings.Contains(strings.ToLower(t), " and ") {
		items = regexp.MustCompile(`(?i)\s*,?\s+and\s+|\s*,\s*`).Split(t, -1)
	} else {
		items = strings.Fields(t)
		for _, it := range items {
			if !strings.Contains(it, ".") {
				return nil
			}
		}
	}
	var out []Version
	for _, it := range items {
		if !strings.ContainsAny(it, "0123456789") {
			return nil
		}
		v, ok := Parse(it)
		if !ok {
			return nil
		}
		out = append(out, v)
	}
	return out
}

// wildcardOrExact reads one version, where trailing "x" groups ("5.x.x",
// "12.2.x.x", "C.0x") stand for any digits: it gives an exact Alt, or an
// interval from the wildcard's first to (excluded) the first version past
// it.
func wildcardOrExact(t string) (Alt, bool) {
	t = strings.TrimSpace(t)
	groups := strings.Split(t, ".")
	k := len(groups)
	for k > 1 && isAllX(groups[k-1]) {
		k--
	}
	prefix := strings.Join(groups[:k], ".")
	var digits string
	var nx int
	if k == len(groups) {
		d, n, ok := digitsThenX(groups[k-1])
		if !ok {
			v, ok := Parse(t)
			if !ok {
				return Alt{}, false
			}
			return Alt{Exact: &v}, true
		}
		prefix, digits, nx = strings.Join(groups[:k-1], "."), d, n
	}
	lo, ok := Parse(prefix)
	if !ok && digits == "" && nx == 0 {
		return Alt{}, false
	}
	hi := lo
	hi.segs = slices.Clone(lo.segs)
	if nx > 0 {
		n, _ := strconv.Atoi("0" + digits)
		lo.segs = append(slices.Clone(lo.segs), segment{num: true, digit: strings.TrimLeft(strconv.Itoa(n)+strings.Repeat("0", nx), "0")})
		hi.segs = append(hi.segs, segment{num: true, digit: strconv.Itoa(n+1) + strings.Repeat("0", nx)})
	} else {
		hi.segs = next(hi.segs)
	}
	lo.raw, hi.raw = t, t+" (past)"
	return Alt{Lo: &Bound{lo, true}, Hi: &Bound{hi, false}}, true
}

// next returns the segments of the first version past every version that
// starts with segs.
func next(segs []segment) []segment {
	last := segs[len(segs)-1]
	if last.num {
		n, err := strconv.ParseUint("0"+last.digit, 10, 63)
		if err != nil {
			last.digit += "0" // too long to add to: longer is larger
		} else {
			last.digit = strconv.FormatUint(n+1, 10)
		}
	} else {
		last.alpha += "~" // '~' sorts after every letter
	}
	segs[len(segs)-1] = last
	return segs
}

func isAllX(g string) bool {
	g = strings.TrimSpace(g)
	return g != "" && strings.Trim(g, "xX*") == ""
}

// digitsThenX reads "0x" or "1xx": digits followed by at least one x.
func digitsThenX(g string) (string, int, bool) {
	i := 0
	for i < len(g) && isDigit(g[i]) {
		i++
	}
	if i == len(g) || i == 0 && len(g) > 0 && !isAllX(g) {
		return "", 0, false
	}
	rest := g[i:]
	if !isAllX(rest) {
		return "", 0, false
	}
	return g[:i], len(rest), true
}

// cmpItem is one comparator and version ("<= 3.0"), a wildcard already
// resolved to the bound it means.
type cmpItem struct {
	op string // one of = != < <= > >=
	v  Version
}

func newCmp(op, text string) ([]cmpItem, bool) {
	if op == "==" {
		op = "="
	}
	a, ok := wildcardOrExact(text)
	if !ok {
		return nil, false
	}
	if a.Exact != nil {
		return []cmpItem{{op, *a.Exact}}, true
	}
	switch op {
	case "<": // below the wildcard's first version
		return []cmpItem{{"<", a.Lo.V}}, true
	case "<=":
		return []cmpItem{{"<", a.Hi.V}}, true
	case ">":
		return []cmpItem{{">=", a.Hi.V}}, true
	case ">=":
		return []cmpItem{{">=", a.Lo.V}}, true
	case "=":
		return []cmpItem{{">=", a.Lo.V}, {"<", a.Hi.V}}, true
	}
	return nil, false
}

// pair turns comparators into intervals the way the vers specification
// does: sorted by version, a lower bound pairs with the upper bound that
// follows it; an upper bound with no lower bound before it reaches down to
// every version, a lower bound with none after it up to every version.
// Exact ("=") items become exact alternatives, "!=" exclusions.
func pair(items []cmpItem, c *Constraint) []Alt {
	var alts []Alt
	var rest []cmpItem
	for _, it := range items {
		switch it.op {
		case "=":
			v := it.v
			alts = append(alts, Alt{Exact: &v})
		case "!=":
			c.Excluded = append(c.Excluded, it.v)
		default:
			rest = append(rest, it)
		}
	}
	slices.SortStableFunc(rest, func(a, b cmpItem) int { return a.v.Compare(b.v) })
	for i := 0; i < len(rest); i++ {
		it := rest[i]
		b := &Bound{it.v, strings.HasSuffix(it.op, "=")}
		if it.op[0] == '<' {
			alts = append(alts, Alt{Hi: b})
			continue
		}
		if i+1 < len(rest) && rest[i+1].op[0] == '<' {
			n := rest[i+1]
			alts = append(alts, Alt{Lo: b, Hi: &Bound{n.v, strings.HasSuffix(n.op, "=")}})
			i++
			continue
		}
		alts = append(alts, Alt{Lo: b})
	}
	return alts
}

// parseVers reads a vers URI (github.com/package-url/vers-spec):
// "vers:all/*" or "vers:<scheme>/<comparator><version>|...".
func parseVers(t string) Constraint {
	_, spec, ok := strings.Cut(t[len("vers:"):], "/")
	if !ok {
		return Constraint{Unknown: "vers URI without a slash: " + strconvQuote(t)}
	}
	spec = strings.TrimSpace(spec)
	if spec == "*" {
		return Constraint{Any: true}
	}
	var c Constraint
	var items []cmpItem
	for _, p := range strings.Split(spec, "|") {
		p = strings.TrimSpace(p)
		op := "="
		if m := comparator.FindStringSubmatch(p); m != nil {
			op, p = m[1], strings.TrimSpace(p[len(m[0]):])
		}
		if it, ok := newCmp(op, p); ok {
			items = append(items, it...)
		}
	}
	c.Alts = pair(items, &c)
	if len(c.Alts) == 0 {
		c.Unknown = "no version in " + strconvQuote(t)
	}
	return c
}

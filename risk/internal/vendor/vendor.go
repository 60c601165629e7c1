// Package vendor decides whether two spellings name one company: "BD",
// "Becton, Dickinson and Company (BD)" and "CareFusion" are one vendor,
// "B. Braun" and "B. Braun Melsungen AG" another. Names are normalised
// (case, punctuation, legal suffixes, UTF-8 decoded twice by mistake) and
// looked up in an alias table (aliases.txt, embedded); a name the table does
// not know is its own key, and a name listing several companies ("Silex
// Technology and GE Healthcare") has a key for each.
package vendor

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

//go:embed aliases.txt
var aliasData string

// Table maps normalised names to company keys.
type Table struct {
	alias map[string]string
}

// Default is the embedded alias table.
var Default = MustParse(aliasData)

// Parse reads an alias table; errors name the line.
func Parse(data string) (*Table, error) {
	t := &Table{alias: map[string]string{}}
	for i, line := range strings.Split(data, "\n") {
		if j := strings.Index(line, "#"); j >= 0 {
			line = line[:j]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, names, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("aliases line %d: want key = name; name", i+1)
		}
		for _, n := range strings.Split(names, ";") {
			if n := Normalise(n); n != "" {
				t.alias[n] = key
			}
		}
	}
	return t, nil
}

// MustParse is Parse for the embedded table.
func MustParse(data string) *Table {
	t, err := Parse(data)
	if err != nil {
		panic(err)
	}
	return t
}

var suffixes = []string{"inc", "incorporated", "ltd", "limited", "llc", "co", "corp", "corporation", "company",
	"gmbh", "ag", "sa", "nv", "plc", "oy", "kk", "se", "spa", "bv", "ab", "as", "kgaa", "and", "the"}

// Normalise returns the comparable form of a company name.
func Normalise(s string) string {
	s = fixMojibake(s)
	s = strings.ReplaceAll(s, "&", " and ")
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		} else if r != '.' && r != '\'' {
			b.WriteByte(' ')
		}
	}
	f := strings.Fields(b.String())
	for len(f) > 1 && slices.Contains(suffixes, f[len(f)-1]) {
		f = f[:len(f)-1]
	}
	return strings.Join(f, " ")
}

// fixMojibake undoes UTF-8 read as Latin-1 ("YhtymÃ¤" for "Yhtymä").
func fixMojibake(s string) string {
	if !strings.ContainsAny(s, "ÃÂ") {
		return s
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return s
		}
		b = append(b, byte(r))
	}
	if !utf8.Valid(b) {
		return s
	}
	return string(b)
}

// Keys returns the company keys a vendor name stands for, sorted.
func (t *Table) Keys(name string) []string {
	whole := Normalise(stripParens(name))
	if whole == "" {
		return nil
	}
	var keys []string
	add := func(n string) bool {
		if k, ok := t.alias[n]; ok {
			keys = append(keys, k)
			return true
		}
		return false
	}
	found := add(whole)
	for _, p := range parens(name) {
		found = add(Normalise(p)) || found
	}
	if !found {
		keys = append(keys, whole)
		for _, part := range splitCompanies(stripParens(name)) {
			if n := Normalise(part); n != "" && n != whole && !add(n) {
				keys = append(keys, n)
			}
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Same reports whether two vendor names share a company.
func (t *Table) Same(a, b []string) bool {
	for _, k := range a {
		if slices.Contains(b, k) {
			return true
		}
	}
	return false
}

func splitCompanies(s string) []string {
	s = strings.ReplaceAll(s, " and ", ",")
	s = strings.ReplaceAll(s, " & ", ",")
	return strings.Split(s, ",")
}

func stripParens(s string) string {
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func parens(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '(')
		j := strings.IndexByte(s, ')')
		if i < 0 || j < i {
			return out
		}
		out = append(out, s[i+1:j])
		s = s[j+1:]
	}
}

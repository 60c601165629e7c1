// Package version orders the version strings medical-device vendors print
// (firmware builds such as "B.06.18", "2.4A", "R4.1L1", "20D29",
// "012U000040") and reads the affected-version text of advisories ("<= 3.0",
// "vers:generic/>=1.1|<=1.3.2", "versions prior to 4.2", "5.x.x", "All
// versions") into constraints.
//
// Device firmware belongs to no package ecosystem, so osv-scalibr's
// semantic package (one comparer per ecosystem) has no order for it. The
// order here is rpmvercmp's, the most forgiving of semantic's: a version is
// a list of segments, runs of digits or of letters, every other character
// a separator; digits compare as numbers, letters as upper-case text, and a
// number is newer than letters at the same place. Unlike rpm, missing
// trailing numbers count as zero ("3.0" equals "3.0.0") and a trailing
// letter segment is newer than nothing ("2.4A" follows "2.4"), as vendors
// use letter suffixes for revisions. Versions are never compared as text.
package version

import (
	"strings"
)

// Version is a parsed version string.
type Version struct {
	raw  string
	segs []segment
}

type segment struct {
	num   bool
	digit string // digits without leading zeros ("" is zero) when num
	alpha string // upper case when !num
}

// Parse reads s. It returns false when s holds no digit or letter.
func Parse(s string) (Version, bool) {
	v := Version{raw: s}
	s = strings.TrimSpace(s)
	if len(s) > 1 && (s[0] == 'v' || s[0] == 'V') && isDigit(s[1]) {
		s = s[1:]
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isDigit(c):
			j := i
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			v.segs = append(v.segs, segment{num: true, digit: strings.TrimLeft(s[i:j], "0")})
			i = j
		case isLetter(c):
			j := i
			for j < len(s) && isLetter(s[j]) {
				j++
			}
			v.segs = append(v.segs, segment{alpha: strings.ToUpper(s[i:j])})
			i = j
		default:
			i++
		}
	}
	return v, len(v.segs) > 0
}

// MustParse is Parse for strings known to hold a version (tests, tables).
func MustParse(s string) Version {
	v, ok := Parse(s)
	if !ok {
		panic("version: no version in " + s)
	}
	return v
}

// String returns the text the version was parsed from.
func (v Version) String() string { return v.raw }

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v Version) Compare(w Version) int {
	n := max(len(v.segs), len(w.segs))
	for i := range n {
		var a, b *segment
		if i < len(v.segs) {
			a = &v.segs[i]
		}
		if i < len(w.segs) {
			b = &w.segs[i]
		}
		if c := compareSegment(a, b); c != 0 {
			return c
		}
	}
	return 0
}

// compareSegment orders two segments; nil is a missing segment, which
// equals a zero number and precedes letters and non-zero numbers.
func compareSegment(a, b *segment) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		if b.num && b.digit == "" {
			return 0
		}
		return -1
	case b == nil:
		return -compareSegment(b, a)
	case a.num && b.num:
		if len(a.digit) != len(b.digit) {
			return sign(len(a.digit) - len(b.digit))
		}
		return strings.Compare(a.digit, b.digit)
	case a.num:
		return 1
	case b.num:
		return -1
	default:
		return strings.Compare(a.alpha, b.alpha)
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

package osv

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/osv-scalibr/semantic"
)

// Match is one record that affects a queried version.
type Match struct {
	Record *Record
	// Affected is the first affected[] entry that matched.
	Affected *Affected
	// Exact: the version is listed in a versions array. Otherwise it lies
	// inside a SEMVER or ECOSYSTEM range.
	Exact bool
	// Fixed is the lowest fixed version above the queried one in the
	// ranges of the matching entries; "" when the record names none (only
	// last_affected, or not fixed yet).
	Fixed string
}

// ErrBadVersion is returned when the queried version does not parse in
// its ecosystem's version order.
var ErrBadVersion = errors.New("version does not parse")

// Query returns the records that affect q, sorted by record id.
func (db *DB) Query(q Query) ([]Match, error) {
	base, _ := splitEcosystem(q.Ecosystem)
	entries := db.index[pkgKey{base, normalName(base, q.Name)}]
	if len(entries) == 0 {
		return nil, nil
	}
	var (
		eco, sem semantic.Version
		ecoErr   error
		ecoDone  bool
	)
	parsed := func(semver bool) (semantic.Version, error) {
		if semver {
			if sem == nil {
				sem = semantic.ParseSemverVersion(q.Version)
			}
			return sem, nil
		}
		if !ecoDone {
			eco, ecoErr = semantic.Parse(q.Version, q.Ecosystem)
			ecoDone = true
		}
		return eco, ecoErr
	}

	type found struct {
		m     Match
		fixed *pevent
	}
	var out []found
	byRecord := map[*Record]int{}
	var firstErr error
	for _, e := range entries {
		if !releaseMatches(e.ecosystem, q.Ecosystem) {
			continue
		}
		exact := e.versions[q.Version]
		inRange := false
		var fixed *pevent
		for _, r := range e.ranges {
			v, err := parsed(r.semver)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("%w: %q in %s: %v", ErrBadVersion, q.Version, q.Ecosystem, err)
				}
				continue
			}
			hit, fx := r.affects(v)
			if hit {
				inRange = true
				fixed = lower(fixed, fx)
			}
		}
		if !exact && len(e.versions) > 0 {
			// Not listed as written: compare in the ecosystem's order, so
			// "1.0" finds "1.0.0" where the ecosystem says they are equal.
			// A listed version is affected even outside every range.
			if v, err := parsed(false); err == nil {
				exact = e.listed(v)
			}
		}
		if !exact && !inRange {
			continue
		}
		if exact && fixed == nil {
			// Listed by version: still say what fixes it, if a range does.
			for _, r := range e.ranges {
				if v, err := parsed(r.semver); err == nil {
					fixed = lower(fixed, r.nextFixed(v))
				}
			}
		}
		if i, ok := byRecord[e.rec]; ok {
			out[i].m.Exact = out[i].m.Exact || exact
			out[i].fixed = lower(out[i].fixed, fixed)
			continue
		}
		byRecord[e.rec] = len(out)
		out = append(out, found{m: Match{Record: e.rec, Affected: e.aff, Exact: exact}, fixed: fixed})
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	ms := make([]Match, len(out))
	for i, f := range out {
		ms[i] = f.m
		if f.fixed != nil {
			ms[i].Fixed = f.fixed.raw
		}
	}
	slices.SortFunc(ms, func(a, b Match) int { return strings.Compare(a.Record.ID, b.Record.ID) })
	return ms, nil
}

// affects evaluates the range's events, sorted by version, as the OSV
// schema specifies: introduced opens the range at (and including) its
// version, fixed closes it at its version (excluded), last_affected closes
// it after its version (included), and a limit excludes its version and
// everything above it. When v is affected it also returns the fixed event
// that closes the open range, if there is one.
func (r prange) affects(v semantic.Version) (bool, *pevent) {
	vulnerable := false
	i := 0
	for ; i < len(r.events); i++ {
		e := &r.events[i]
		c := -1 // e's version relative to v; "0" is below every version
		if !e.zero {
			var err error
			if c, err = e.v.Compare(v); err != nil {
				return false, nil
			}
		}
		if c > 0 {
			break // this and every later event lie above v
		}
		switch e.kind {
		case 'i':
			vulnerable = true
		case 'f':
			vulnerable = false
		case 'l':
			if c < 0 {
				vulnerable = false
			}
		case 'x':
			return false, nil
		}
	}
	if !vulnerable {
		return false, nil
	}
	for ; i < len(r.events); i++ {
		switch r.events[i].kind {
		case 'f':
			return true, &r.events[i]
		case 'l', 'x':
			return true, nil
		}
	}
	return true, nil
}

// nextFixed is the first fixed event above v.
func (r prange) nextFixed(v semantic.Version) *pevent {
	for i := range r.events {
		e := &r.events[i]
		if e.kind != 'f' || e.zero {
			continue
		}
		if c, err := e.v.Compare(v); err == nil && c > 0 {
			return e
		}
	}
	return nil
}

// lower keeps the lower of two fixed events; of two that cannot be
// compared (a SEMVER and an ECOSYSTEM range) the first.
func lower(a, b *pevent) *pevent {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	if c, err := a.v.Compare(b.v); err == nil && c > 0 {
		return b
	}
	return a
}

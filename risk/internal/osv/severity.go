package osv

import (
	"encoding/json"
	"strings"

	cvss20 "github.com/pandatix/go-cvss/20"
	cvss30 "github.com/pandatix/go-cvss/30"
	cvss31 "github.com/pandatix/go-cvss/31"
	cvss40 "github.com/pandatix/go-cvss/40"
)

// Score is a record's severity for one affected package.
type Score struct {
	// Base is the CVSS base score computed from Vector (0 when there is no
	// vector that parses).
	Base   float64
	Vector string
	// Rating is "critical", "high", "medium", "low" or "none" from the
	// score, or from the database's own rating (GitHub's
	// database_specific.severity) when there is no score; "" when the
	// record says nothing.
	Rating string
}

// Score returns the record's severity for affected entry a (which may
// be nil): the entry's own severity before the record's, the newest CVSS
// version first (v4, v3.1, v3.0, v2).
func (r *Record) Score(a *Affected) Score {
	var sevs []Severity
	if a != nil {
		sevs = append(sevs, a.Severity...)
	}
	sevs = append(sevs, r.Severity...)
	best, bestRank := Score{}, 0
	for _, s := range sevs {
		score, rank := scoreVector(strings.TrimSpace(s.Score))
		if rank > bestRank {
			best, bestRank = score, rank
		}
	}
	if bestRank > 0 {
		return best
	}
	for _, raw := range [][]byte{affectedDB(a), r.DatabaseSpecific} {
		var ds struct {
			Severity string `json:"severity"`
		}
		if len(raw) > 0 && json.Unmarshal(raw, &ds) == nil && ds.Severity != "" {
			return Score{Rating: wordRating(ds.Severity)}
		}
	}
	return Score{}
}

func affectedDB(a *Affected) []byte {
	if a == nil {
		return nil
	}
	return a.DatabaseSpecific
}

// scoreVector computes the base score of a CVSS vector; rank orders the
// versions (4 > 3.1 > 3.0 > 2), 0 for a vector that does not parse.
func scoreVector(v string) (Score, int) {
	switch {
	case strings.HasPrefix(v, "CVSS:4.0/"):
		c, err := cvss40.ParseVector(v)
		if err != nil {
			return Score{}, 0
		}
		s := c.Score()
		return Score{Base: s, Vector: v, Rating: rating(s)}, 4
	case strings.HasPrefix(v, "CVSS:3.1/"):
		c, err := cvss31.ParseVector(v)
		if err != nil {
			return Score{}, 0
		}
		s := c.BaseScore()
		return Score{Base: s, Vector: v, Rating: rating(s)}, 3
	case strings.HasPrefix(v, "CVSS:3.0/"):
		c, err := cvss30.ParseVector(v)
		if err != nil {
			return Score{}, 0
		}
		s := c.BaseScore()
		return Score{Base: s, Vector: v, Rating: rating(s)}, 2
	case strings.HasPrefix(v, "AV:"):
		c, err := cvss20.ParseVector(v)
		if err != nil {
			return Score{}, 0
		}
		s := c.BaseScore()
		// CVSS v2 has no "critical" band: NVD rates 7.0-10.0 high.
		r := "low"
		switch {
		case s >= 7:
			r = "high"
		case s >= 4:
			r = "medium"
		}
		return Score{Base: s, Vector: v, Rating: r}, 1
	}
	return Score{}, 0
}

// rating is the CVSS v3/v4 qualitative rating of a score.
func rating(s float64) string {
	switch {
	case s >= 9:
		return "critical"
	case s >= 7:
		return "high"
	case s >= 4:
		return "medium"
	case s > 0:
		return "low"
	}
	return "none"
}

// wordRating maps a database's word (GitHub: LOW, MODERATE, HIGH,
// CRITICAL) onto the CVSS words.
func wordRating(w string) string {
	switch strings.ToLower(strings.TrimSpace(w)) {
	case "critical":
		return "critical"
	case "high", "important":
		return "high"
	case "moderate", "medium":
		return "medium"
	case "low", "negligible":
		return "low"
	}
	return ""
}

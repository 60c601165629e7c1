// Package epss reads FIRST's Exploit Prediction Scoring System daily file,
// epss_scores-YYYY-MM-DD.csv.gz as published at
// https://www.first.org/epss/data_stats: a first line
// "#model_version:v2023.03.01,score_date:2023-03-14T00:00:00+0000", a header
// "cve,epss,percentile", then one line per CVE.
package epss

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Scores is one EPSS file.
type Scores struct {
	Model string
	Date  time.Time
	ByCVE map[string]Score
}

// Score is one CVE's probability of exploitation in the next 30 days and
// its percentile, both in [0, 1].
type Score struct {
	EPSS       float64
	Percentile float64
}

// Parse reads an EPSS file, gzip-compressed or not; errors name the line.
func Parse(data []byte) (*Scores, error) {
	var r io.Reader = bytes.NewReader(data)
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	s := &Scores{ByCVE: map[string]Score{}}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		switch {
		case line == 1:
			meta, ok := strings.CutPrefix(text, "#")
			if !ok {
				return nil, fmt.Errorf("line 1: want #model_version:...,score_date:..., got %q", trunc(text))
			}
			for _, kv := range strings.Split(meta, ",") {
				k, v, _ := strings.Cut(kv, ":")
				switch k {
				case "model_version":
					s.Model = v
				case "score_date":
					t, err := time.Parse("2006-01-02T15:04:05-0700", v)
					if err != nil {
						return nil, fmt.Errorf("line 1: score_date %q: %v", v, err)
					}
					s.Date = t.UTC()
				}
			}
			if s.Model == "" || s.Date.IsZero() {
				return nil, fmt.Errorf("line 1: model_version or score_date missing in %q", trunc(text))
			}
		case line == 2:
			if text != "cve,epss,percentile" {
				return nil, fmt.Errorf("line 2: header %q, want cve,epss,percentile", trunc(text))
			}
		case text == "":
		default:
			f := strings.Split(text, ",")
			if len(f) != 3 || !strings.HasPrefix(f[0], "CVE-") {
				return nil, fmt.Errorf("line %d: want CVE-id,epss,percentile, got %q", line, trunc(text))
			}
			e, err1 := strconv.ParseFloat(f[1], 64)
			p, err2 := strconv.ParseFloat(f[2], 64)
			if err1 != nil || err2 != nil || e < 0 || e > 1 || p < 0 || p > 1 {
				return nil, fmt.Errorf("line %d: epss and percentile must be numbers in [0,1], got %q", line, trunc(text))
			}
			s.ByCVE[f[0]] = Score{e, p}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("after line %d: %w", line, err)
	}
	if line < 2 {
		return nil, fmt.Errorf("%d lines: no header", line)
	}
	return s, nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

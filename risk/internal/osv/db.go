package osv

import (
	"archive/zip"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/google/osv-scalibr/semantic"
)

// MaxRecordSize bounds one record (a file or a zip entry); the largest
// records osv.dev serves are well under 1 MiB.
const MaxRecordSize = 16 << 20

// DB is an immutable, indexed set of OSV records. Queries are safe for
// concurrent use.
type DB struct {
	byID  map[string]*Record
	index map[pkgKey][]*entry
	stats Stats
}

// Stats counts what a DB holds and what it could not use, with the reason
// in each field's name.
type Stats struct {
	Records   int // records indexed (withdrawn ones excluded)
	Withdrawn int // records skipped because they are withdrawn
	Packages  int // distinct ecosystem+package names
	// GitRangesIgnored counts GIT ranges: they name commits, and SBOM
	// components carry versions, so they cannot be evaluated here. The
	// record's SEMVER/ECOSYSTEM ranges and versions list still are.
	GitRangesIgnored int
	// UnorderedRanges counts ranges in ecosystems osv-scalibr has no
	// version order for; their records match only through versions lists.
	UnorderedRanges int
	// BadVersions counts range events whose version does not parse in the
	// range's ecosystem; such a range is not evaluated.
	BadVersions int
}

type pkgKey struct{ base, name string }

// entry is one affected[] element of a record, with its ranges parsed.
type entry struct {
	rec       *Record
	aff       *Affected
	ecosystem string
	versions  map[string]bool
	ranges    []prange

	// The versions list parsed in the ecosystem's order, made on the
	// entry's first query (most packages are never queried).
	parseOnce sync.Once
	parsed    []semantic.Version
}

// listed says whether v equals a version of the versions list in the
// ecosystem's order ("v2.1.0" and "2.1.0" in Go, "1.0" and "1.0.0" in PyPI).
func (e *entry) listed(v semantic.Version) bool {
	e.parseOnce.Do(func() {
		for _, s := range e.aff.Versions {
			if pv, err := semantic.Parse(s, e.ecosystem); err == nil {
				e.parsed = append(e.parsed, pv)
			}
		}
	})
	for _, pv := range e.parsed {
		if c, err := pv.Compare(v); err == nil && c == 0 {
			return true
		}
	}
	return false
}

type prange struct {
	semver bool // SEMVER range: versions are compared as SemVer
	events []pevent
}

type pevent struct {
	kind byte // 'i' introduced, 'f' fixed, 'l' last_affected, 'x' limit
	raw  string
	zero bool // introduced "0": before every version
	v    semantic.Version
}

// New indexes records. Of records with the same id the one modified last
// is kept; withdrawn records are left out.
func New(records ...*Record) *DB {
	db := &DB{byID: map[string]*Record{}, index: map[pkgKey][]*entry{}}
	for _, r := range records {
		if r == nil {
			continue
		}
		if old, ok := db.byID[r.ID]; ok && old.Modified >= r.Modified {
			continue
		}
		db.byID[r.ID] = r
	}
	ids := make([]string, 0, len(db.byID))
	for id, r := range db.byID {
		if r.Withdrawn != "" {
			db.stats.Withdrawn++
			delete(db.byID, id)
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		db.add(db.byID[id])
	}
	db.stats.Records = len(db.byID)
	db.stats.Packages = len(db.index)
	return db
}

func (db *DB) add(r *Record) {
	for i := range r.Affected {
		a := &r.Affected[i]
		if a.Package.Name == "" || a.Package.Ecosystem == "" {
			continue
		}
		base, _ := splitEcosystem(a.Package.Ecosystem)
		e := &entry{rec: r, aff: a, ecosystem: a.Package.Ecosystem}
		if len(a.Versions) > 0 {
			e.versions = make(map[string]bool, len(a.Versions))
			for _, v := range a.Versions {
				e.versions[v] = true
			}
		}
		for _, rg := range a.Ranges {
			pr, ok := db.parseRange(rg, a.Package.Ecosystem)
			if ok {
				e.ranges = append(e.ranges, pr)
			}
		}
		k := pkgKey{base, normalName(base, a.Package.Name)}
		db.index[k] = append(db.index[k], e)
	}
}

func (db *DB) parseRange(rg Range, ecosystem string) (prange, bool) {
	pr := prange{semver: rg.Type == "SEMVER"}
	switch rg.Type {
	case "GIT":
		db.stats.GitRangesIgnored++
		return pr, false
	case "SEMVER", "ECOSYSTEM":
	default:
		return pr, false
	}
	for _, ev := range rg.Events {
		pe := pevent{}
		switch {
		case ev.Introduced != "":
			pe.kind, pe.raw = 'i', ev.Introduced
			pe.zero = ev.Introduced == "0"
		case ev.Fixed != "":
			pe.kind, pe.raw = 'f', ev.Fixed
		case ev.LastAffected != "":
			pe.kind, pe.raw = 'l', ev.LastAffected
		case ev.Limit != "":
			if ev.Limit == "*" {
				continue // no limit
			}
			pe.kind, pe.raw = 'x', ev.Limit
		default:
			continue
		}
		if !pe.zero {
			v, err := parseVersion(pe.raw, ecosystem, pr.semver)
			if err != nil {
				if errors.Is(err, semantic.ErrUnsupportedEcosystem) {
					db.stats.UnorderedRanges++
				} else {
					db.stats.BadVersions++
				}
				return pr, false
			}
			pe.v = v
		}
		pr.events = append(pr.events, pe)
	}
	// Evaluate in version order, "0" first; at equal versions an
	// introduced event comes before the event that ends it.
	slices.SortStableFunc(pr.events, func(a, b pevent) int {
		switch {
		case a.zero && b.zero:
			return 0
		case a.zero:
			return -1
		case b.zero:
			return 1
		}
		c, err := a.v.Compare(b.v)
		if err != nil || c == 0 {
			return cmp.Compare(order(a.kind), order(b.kind))
		}
		return c
	})
	return pr, len(pr.events) > 0
}

func order(kind byte) int {
	if kind == 'i' {
		return 0
	}
	return 1
}

func parseVersion(v, ecosystem string, semver bool) (semantic.Version, error) {
	if semver {
		return semantic.ParseSemverVersion(v), nil
	}
	return semantic.Parse(v, ecosystem)
}

// Stats reports what the DB holds.
func (db *DB) Stats() Stats { return db.stats }

// Record returns the record with the given id.
func (db *DB) Record(id string) (*Record, bool) {
	r, ok := db.byID[id]
	return r, ok
}

// Load reads records from each path: a directory (every .json file below
// it), an ecosystem all.zip, or one .json file, and indexes them.
func Load(paths ...string) (*DB, error) {
	var all []*Record
	for _, p := range paths {
		recs, err := ReadPath(p)
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
	}
	return New(all...), nil
}

// ReadPath reads the records at one path (see Load).
func ReadPath(path string) ([]*Record, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("osv: %w", err)
	}
	switch {
	case fi.IsDir():
		return ReadDir(path)
	case strings.EqualFold(filepath.Ext(path), ".zip"):
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("osv: %w", err)
		}
		defer f.Close()
		return ReadZip(f, fi.Size(), path)
	default:
		data, err := readLimited(path)
		if err != nil {
			return nil, err
		}
		r, err := ParseRecord(data)
		if err != nil {
			return nil, fmt.Errorf("osv %s: %w", path, err)
		}
		return []*Record{r}, nil
	}
}

// ReadDir reads every .json file below dir, and every .zip file as an
// ecosystem archive, in lexical order.
func ReadDir(dir string) ([]*Record, error) {
	var out []*Record
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("osv: %w", err)
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".json":
			data, err := readLimited(path)
			if err != nil {
				return err
			}
			r, err := ParseRecord(data)
			if err != nil {
				return fmt.Errorf("osv %s: %w", path, err)
			}
			out = append(out, r)
		case ".zip":
			recs, err := ReadPath(path)
			if err != nil {
				return err
			}
			out = append(out, recs...)
		}
		return nil
	})
	return out, err
}

// ReadZip reads an ecosystem archive as osv.dev publishes it: one record
// per .json entry. A truncated or corrupt archive, an entry whose checksum
// fails, or an entry that is not an OSV record is an error naming the
// archive (and the entry).
func ReadZip(r io.ReaderAt, size int64, name string) ([]*Record, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("osv %s: truncated or corrupt zip archive: %w", name, err)
	}
	var out []*Record
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || !strings.EqualFold(filepath.Ext(f.Name), ".json") {
			continue
		}
		if f.UncompressedSize64 > MaxRecordSize {
			return nil, fmt.Errorf("osv %s: entry %s: %d bytes, more than a record may have (%d)", name, f.Name, f.UncompressedSize64, MaxRecordSize)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("osv %s: entry %s: %w", name, f.Name, err)
		}
		var buf bytes.Buffer
		_, err = io.Copy(&buf, io.LimitReader(rc, MaxRecordSize+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("osv %s: entry %s: truncated or corrupt: %w", name, f.Name, err)
		}
		if buf.Len() > MaxRecordSize {
			return nil, fmt.Errorf("osv %s: entry %s: larger than its header says", name, f.Name)
		}
		rec, err := ParseRecord(buf.Bytes())
		if err != nil {
			return nil, fmt.Errorf("osv %s: entry %s: %w", name, f.Name, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("osv: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("osv %s: %w", path, err)
	}
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("osv %s: larger than a record may be (%d bytes)", path, MaxRecordSize)
	}
	return data, nil
}

// FromFiles reads records from file contents keyed by name, as a bundle
// hands them over: names ending in .zip are ecosystem archives, names
// ending in .json single records; others are refused. The result is
// indexed like Load's.
func FromFiles(files map[string][]byte) (*DB, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var all []*Record
	for _, n := range names {
		data := files[n]
		switch strings.ToLower(filepath.Ext(n)) {
		case ".zip":
			recs, err := ReadZip(bytes.NewReader(data), int64(len(data)), n)
			if err != nil {
				return nil, err
			}
			all = append(all, recs...)
		case ".json":
			if len(data) > MaxRecordSize {
				return nil, fmt.Errorf("osv %s: larger than a record may be (%d bytes)", n, MaxRecordSize)
			}
			r, err := ParseRecord(data)
			if err != nil {
				return nil, fmt.Errorf("osv %s: %w", n, err)
			}
			all = append(all, r)
		default:
			return nil, fmt.Errorf("osv %s: neither a .json record nor a .zip archive", n)
		}
	}
	return New(all...), nil
}

package auditlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Retain is how long segments are kept by default: six years, as HIPAA
// requires for the documentation of security measures (45 CFR
// 164.316(b)(2)), plus two leap days.
const Retain = (6*365 + 2) * 24 * time.Hour

// ErrDiverged means the store holds a different record at a sequence number
// than the one the replicated log derives: the disk is not this cluster's
// trail, or it was altered.
var ErrDiverged = errors.New("audit store diverges from the replicated chain")

// Options tune a Store.
type Options struct {
	// MaxSegmentBytes rolls a segment once it is this large (8 MiB).
	MaxSegmentBytes int64
	// Retain deletes a whole segment once its newest record is older than
	// this (Retain, six years). Zero keeps everything.
	Retain time.Duration
	// Now is the wall clock (time.Now); a segment is deleted only when it is
	// past retention both by this clock and by the newest record's time, so
	// one leader's clock far in the future cannot erase the trail.
	Now func() time.Time
}

// DefaultOptions are 8 MiB segments kept six years.
func DefaultOptions() Options {
	return Options{MaxSegmentBytes: 8 << 20, Retain: Retain, Now: time.Now}
}

// Store is the segment store of one coordinator. Records are written with
// one write(2) each, so a process crash loses nothing the kernel accepted;
// segments are fsynced when they roll and on Sync, which the FSM calls
// before every snapshot: records a snapshot covers are durable, and later
// ones are derived again from the Raft log on restart.
type Store struct {
	dir  string
	opts Options

	mu     sync.Mutex
	f      *os.File
	seg    int   // number of the active segment (0: none yet)
	size   int64 // bytes in the active segment
	head   Head
	latest time.Time // time of the newest record appended
}

// Open opens (creating) the store in dir, finds the head and cuts a torn
// last line left by a crash.
func Open(dir string, opts Options) (*Store, error) {
	def := DefaultOptions()
	if opts.MaxSegmentBytes <= 0 {
		opts.MaxSegmentBytes = def.MaxSegmentBytes
	}
	if opts.Now == nil {
		opts.Now = def.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit store: %w", err)
	}
	s := &Store{dir: dir, opts: opts}
	segs, err := segments(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return s, nil
	}
	s.seg = segs[len(segs)-1]
	f, err := os.OpenFile(s.path(s.seg), os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit store: %w", err)
	}
	s.f = f
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("audit store: read %s: %w", s.path(s.seg), err), f.Close())
	}
	good := int64(0)
	var last []byte // the body of the last whole record
	for len(data[good:]) > 0 {
		nl := bytes.IndexByte(data[good:], '\n')
		if nl < 0 {
			break // torn: written without its newline
		}
		e, err := parseLine(data[good : good+int64(nl)])
		if err != nil {
			break
		}
		s.head, last = e.Head(), e.Body
		good += int64(nl) + 1
	}
	s.latest = bodyTime(last)
	if good < int64(len(data)) {
		if err := f.Truncate(good); err != nil {
			return nil, errors.Join(fmt.Errorf("audit store: cut torn tail: %w", err), f.Close())
		}
	}
	s.size = good
	if good == 0 && len(segs) > 1 {
		// Rolled, then stopped before the first record: the head is the
		// previous segment's last record.
		e, err := lastEntry(s.path(segs[len(segs)-2]))
		if err != nil {
			return nil, errors.Join(err, f.Close())
		}
		s.head, s.latest = e.Head(), bodyTime(e.Body)
	}
	return s, nil
}

// Head is the last record the store holds.
func (s *Store) Head() Head {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

// Append writes e. An entry the store already holds (a replay after a
// restart) is skipped after checking it matches; an entry past a gap (a
// replica restored from a snapshot it had not seen the records of) is
// preceded by an anchor record that adopts the replicated head.
func (s *Store) Append(e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case e.Seq <= s.head.Seq:
		if e.Seq == s.head.Seq && e.Hash != s.head.Hash {
			return fmt.Errorf("record %d: %w", e.Seq, ErrDiverged)
		}
		return nil
	case e.Seq == s.head.Seq+1:
		if e.Prev != s.head.Hash {
			return fmt.Errorf("record %d follows %x, the store's head is %x: %w", e.Seq, e.Prev[:8], s.head.Hash[:8], ErrDiverged)
		}
	default:
		if err := s.anchorLocked(Head{Seq: e.Seq - 1, Hash: e.Prev}); err != nil {
			return err
		}
	}
	return s.writeLocked(e)
}

// Adopt makes head the store's head, writing an anchor when the store is
// behind it (after a snapshot restore). A store at or past head is left
// alone.
func (s *Store) Adopt(head Head) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if head.Seq <= s.head.Seq {
		if head.Seq == s.head.Seq && head.Hash != s.head.Hash {
			return fmt.Errorf("head %d: %w", head.Seq, ErrDiverged)
		}
		return nil
	}
	return s.anchorLocked(head)
}

func (s *Store) anchorLocked(h Head) error {
	note := fmt.Sprintf("chain continued from head %x at record %d; records %d..%d were not applied on this replica (it restored a snapshot); a replica that applied them holds them",
		h.Hash, h.Seq, s.head.Seq+1, h.Seq)
	body, err := json.Marshal(Body{Action: "chain.anchor", Note: note})
	if err != nil {
		return err
	}
	return s.writeLocked(Entry{Seq: h.Seq, Prev: s.head.Hash, Hash: h.Hash, Body: body, Anchor: true})
}

func (s *Store) writeLocked(e Entry) error {
	b := e.marshal()
	if s.f == nil || (s.size > 0 && s.size+int64(len(b)) > s.opts.MaxSegmentBytes) {
		if err := s.rollLocked(); err != nil {
			return err
		}
	}
	n, err := s.f.Write(b)
	s.size += int64(n)
	if err != nil {
		// Cut what was written so the segment never ends in half a record.
		s.size -= int64(n)
		return errors.Join(fmt.Errorf("audit store: write record %d: %w", e.Seq, err), s.f.Truncate(s.size))
	}
	s.head = e.Head()
	if e.Time.After(s.latest) {
		s.latest = e.Time
	}
	return nil
}

// rollLocked fsyncs and closes the active segment, opens the next one and
// deletes segments past retention.
func (s *Store) rollLocked() error {
	if s.f != nil {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("audit store: sync segment %d: %w", s.seg, err)
		}
		if err := s.f.Close(); err != nil {
			return fmt.Errorf("audit store: close segment %d: %w", s.seg, err)
		}
		s.f = nil
	}
	s.seg++
	f, err := os.OpenFile(s.path(s.seg), os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit store: %w", err)
	}
	s.f, s.size = f, 0
	if err := syncDir(s.dir); err != nil {
		return err
	}
	return s.expireLocked()
}

// expireLocked deletes the oldest segments whose newest record is past
// retention, oldest first, never the active one.
func (s *Store) expireLocked() error {
	if s.opts.Retain <= 0 {
		return nil
	}
	now := s.opts.Now()
	if s.latest.Before(now) {
		now = s.latest
	}
	horizon := now.Add(-s.opts.Retain)
	segs, err := segments(s.dir)
	if err != nil {
		return err
	}
	for _, n := range segs {
		if n >= s.seg {
			break
		}
		e, err := lastEntry(s.path(n))
		if err != nil {
			return err
		}
		if t := bodyTime(e.Body); t.IsZero() || !t.Before(horizon) {
			break
		}
		if err := os.Remove(s.path(n)); err != nil {
			return fmt.Errorf("audit store: expire segment: %w", err)
		}
	}
	return nil
}

// Sync makes every record written so far durable.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("audit store: sync: %w", err)
	}
	return nil
}

// Close syncs and closes the active segment.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := errors.Join(s.f.Sync(), s.f.Close())
	s.f = nil
	return err
}

func (s *Store) path(n int) string { return segPath(s.dir, n) }

func segPath(dir string, n int) string { return filepath.Join(dir, fmt.Sprintf("%08d.seg", n)) }

// segments lists the segment numbers in dir, ascending.
func segments(dir string) ([]int, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit store: %w", err)
	}
	var out []int
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".seg")
		if !ok || de.IsDir() {
			continue
		}
		n, err := strconv.Atoi(name)
		if err != nil || n <= 0 {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// lastEntry is the last complete record of a segment.
func lastEntry(path string) (Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Entry{}, fmt.Errorf("audit store: %w", err)
	}
	data = bytes.TrimRight(data, "\n")
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[i+1:]
	}
	e, err := parseLine(data)
	if err != nil {
		return Entry{}, fmt.Errorf("audit store: last record of %s: %w", path, err)
	}
	return e, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit store: %w", err)
	}
	return errors.Join(d.Sync(), d.Close())
}

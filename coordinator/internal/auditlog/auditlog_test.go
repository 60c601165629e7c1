package auditlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func record(i int, at time.Time) *medmeshv1.AuditRecord {
	return &medmeshv1.AuditRecord{
		Index: uint64(100 + i), Time: timestamppb.New(at), Actor: "operator/alice",
		Action: "decision.create", Resource: fmt.Sprintf("decision/d%d", i), Reason: "isolate <scanner> & log",
	}
}

// fill appends n records, one a day from start, and returns the head.
func fill(t *testing.T, s *Store, head Head, n int, start time.Time) Head {
	t.Helper()
	for i := range n {
		e := Next(head, record(int(head.Seq)+1, start.Add(time.Duration(i)*24*time.Hour)))
		if err := s.Append(e); err != nil {
			t.Fatal(err)
		}
		head = e.Head()
	}
	return head
}

func small() Options { return Options{MaxSegmentBytes: 4 << 10, Retain: Retain} }

func TestChainVerifiesAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, small())
	if err != nil {
		t.Fatal(err)
	}
	head := fill(t, s, Head{}, 100, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, small())
	if err != nil {
		t.Fatal(err)
	}
	if s.Head() != head {
		t.Fatalf("reopened head %v, want %v", s.Head(), head)
	}
	head = fill(t, s, head, 20, t0.Add(200*24*time.Hour))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Break != nil || rep.Records != 120 || rep.First != 1 || rep.Head != head || rep.Segments < 3 {
		t.Fatalf("report %+v (break %v), want 120 records in >= 3 segments ending at %v", rep, rep.Break, head)
	}
}

// One byte changed anywhere is caught, at the record it is in.
func TestVerifyCatchesOneTamperedByte(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, small())
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, Head{}, 60, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, "00000002.seg")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	off := len(bytes.Join(lines[:4], nil)) + bytes.Index(lines[4], []byte("alice")) // line 5: the actor
	data[off] = 'A'
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Break == nil || rep.Break.Segment != "00000002.seg" || rep.Break.Line != 5 {
		t.Fatalf("break %v, want 00000002.seg line 5", rep.Break)
	}
	t.Logf("caught: %v", rep.Break)
}

func TestVerifyCatchesDeletedRecordAndMissingSegment(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, small())
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, Head{}, 60, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, "00000001.seg")
	data, _ := os.ReadFile(seg)
	lines := bytes.SplitAfter(data, []byte("\n"))
	if err := os.WriteFile(seg, bytes.Join(append(lines[:2:2], lines[3:]...), nil), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, _ := Verify(dir)
	if rep.Break == nil || rep.Break.Line != 3 {
		t.Fatalf("deleted record: break %v, want line 3", rep.Break)
	}
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "00000002.seg")); err != nil {
		t.Fatal(err)
	}
	rep, _ = Verify(dir)
	if rep.Break == nil || rep.Break.Segment != "00000003.seg" {
		t.Fatalf("missing segment: break %v", rep.Break)
	}
}

// A crash mid-write leaves half a line: Verify reports it as torn, Open
// cuts it, and the replayed record is written whole.
func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, Options{})
	head := fill(t, s, Head{}, 3, t0)
	s.Close()
	e := Next(head, record(4, t0))
	f, _ := os.OpenFile(filepath.Join(dir, "00000001.seg"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(e.marshal()[:30])
	f.Close()
	if rep, _ := Verify(dir); rep.Torn != 30 || rep.Break != nil {
		t.Fatalf("report %+v", rep)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(e); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if rep, _ := Verify(dir); rep.Torn != 0 || rep.Break != nil || rep.Records != 4 {
		t.Fatalf("report %+v", rep)
	}
}

// A store behind the replicated head anchors and carries on; replays of
// records it holds are skipped; a different record at a held seq is
// divergence.
func TestAnchorReplayAndDivergence(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, Options{})
	defer s.Close()
	head := fill(t, s, Head{}, 2, t0)
	// Records 3..10 applied elsewhere; this replica restores a snapshot at 10.
	far := head
	for i := 3; i <= 10; i++ {
		far = Next(far, record(i, t0)).Head()
	}
	if err := s.Adopt(far); err != nil {
		t.Fatal(err)
	}
	head = fill(t, s, far, 2, t0)
	if err := s.Append(Next(Head{}, record(1, t0))); err != nil {
		t.Fatalf("replaying a held record: %v", err)
	}
	wrong := Next(far, record(99, t0))
	wrong.Seq = head.Seq
	if err := s.Append(wrong); !errors.Is(err, ErrDiverged) {
		t.Fatalf("different record at held seq: %v", err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.Break != nil {
		t.Fatalf("verify: %v %v", err, rep.Break)
	}
	if len(rep.Gaps) != 1 || rep.Gaps[0].From != 3 || rep.Gaps[0].To != 10 || rep.Records != 4 || rep.Head != head {
		t.Fatalf("report %+v", rep)
	}
}

// Segments go only when their newest record is past retention by both the
// record times and the wall clock.
func TestRetentionDeletesOnlyExpiredSegments(t *testing.T) {
	dir := t.TempDir()
	now := t0.Add(8 * 365 * 24 * time.Hour)
	opts := Options{MaxSegmentBytes: 4 << 10, Retain: Retain, Now: func() time.Time { return now }}
	s, _ := Open(dir, opts)
	head := fill(t, s, Head{}, 40, t0) // ~40 days in 2025: about three segments
	before, _ := segments(dir)
	fill(t, s, head, 40, t0.Add(7*365*24*time.Hour))
	s.Close()
	after, _ := segments(dir)
	if after[0] <= before[len(before)-2] {
		t.Fatalf("segments %v -> %v: the 2025 segments should have expired", before, after)
	}
	rep, _ := Verify(dir)
	if rep.Break != nil || rep.First == 1 {
		t.Fatalf("report %+v", rep)
	}
	// A clock in the past keeps everything.
	dir2 := t.TempDir()
	opts.Now = func() time.Time { return t0 }
	s, _ = Open(dir2, opts)
	head = fill(t, s, Head{}, 40, t0)
	fill(t, s, head, 40, t0.Add(7*365*24*time.Hour))
	s.Close()
	if segs, _ := segments(dir2); segs[0] != 1 {
		t.Fatalf("segments %v: deleted although the wall clock says they are young", segs)
	}
}

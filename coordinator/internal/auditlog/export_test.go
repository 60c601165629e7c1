package auditlog

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestExportCutsAtHead: an export up to record k holds every segment up to
// the one with k, cut after it, and verifies with head k; a torn last line
// of the store (a record being written) is never exported.
func TestExportCutsAtHead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, small())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var heads []Head
	h := Head{}
	for i := 0; i < 60; i++ {
		h = fill(t, s, h, 1, start.Add(time.Duration(i)*time.Hour))
		heads = append(heads, h)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := segments(dir)
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	// A torn tail, as a crash mid-write leaves it.
	f, err := os.OpenFile(segPath(dir, segs[len(segs)-1]), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":61,"prev":"`)
	f.Close()
	for _, k := range []int{1, 25, 60} {
		out := t.TempDir()
		if err := Export(dir, heads[k-1].Seq, func(name string, data []byte) error {
			return os.WriteFile(filepath.Join(out, name), data, 0o600)
		}); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(out)
		if err != nil || rep.Break != nil || rep.Torn != 0 {
			t.Fatalf("export to %d: %+v, %v", k, rep, err)
		}
		if rep.Head != heads[k-1] || rep.Records != uint64(k) {
			t.Fatalf("export to %d: head %v, %d records; want %v", k, rep.Head, rep.Records, heads[k-1])
		}
	}
}

package raftlog

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestWALInUse: a second open of a WAL in use fails after about a second
// (raft-wal alone would wait for ever on its meta file's lock).
func TestWALInUse(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenWAL(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	if s2, err := OpenWAL(dir, hclog.NewNullLogger()); err == nil {
		s2.Close()
		t.Fatal("opened a WAL in use")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second open failed after %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := OpenWAL(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	s3.Close()
}

// TestCompactedEntriesAreGone: after Raft deletes the head of the log, its
// entries read as not found, so a follower that needs them gets a
// snapshot (TestFollowerCatchesUpThroughSnapshot relies on it).
func TestCompactedEntriesAreGone(t *testing.T) {
	s, err := OpenWAL(t.TempDir(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(1); i <= 50; i++ {
		if err := s.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(40, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Errorf("compacted entry 40: %v, want ErrLogNotFound", err)
	}
	if err := s.GetLog(41, &l); err != nil || l.Index != 41 {
		t.Errorf("entry 41: %+v, %v", l, err)
	}
}

// TestTailTruncationSurvivesRestart: a follower whose uncommitted tail
// Raft truncates (a deposed leader's entries) must reopen its log. raft-wal
// v0.4.0 marked the tail segment sealed without writing its index block, so
// the next start panicked in raft.NewRaft with "sealed segment has no index
// block" (hashicorp/raft-wal#31, fixed in v0.4.1; seen here in
// TestLinearizablePoliciesUnderFaults).
func TestTailTruncationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenWAL(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(8, 10); err != nil { // the conflicting tail
		t.Fatal(err)
	}
	if err := s.StoreLogs([]*raft.Log{{Index: 8, Term: 2, Type: raft.LogCommand, Data: []byte("new")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenWAL(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	last, err := s.LastIndex()
	if err != nil || last != 8 {
		t.Fatalf("last index after restart = %d, %v; want 8", last, err)
	}
	for i := uint64(1); i <= 8; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d after restart: %v", i, err)
		}
		if i == 8 && (l.Term != 2 || string(l.Data) != "new") {
			t.Fatalf("entry 8 = term %d %q, want the new leader's", l.Term, l.Data)
		}
	}
}

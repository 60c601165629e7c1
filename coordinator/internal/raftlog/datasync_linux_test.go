package raftlog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/fs"
)

// TestDatasyncSegments: the WAL's segments (datasyncFS) are created
// owner-only and preallocated, reopened for writing after a restart, and
// hold every entry written through both.
func TestDatasyncSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenWAL(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	write := func(s *Store, from, to uint64) {
		t.Helper()
		var logs []*raft.Log
		for i := from; i <= to; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
		}
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	write(s, 1, 3)
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v: want one", segs, err)
	}
	fi, err := os.Stat(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 64<<20 {
		t.Fatalf("segment %s: mode %v, size %d; want 0600 and 64 MiB preallocated", fi.Name(), fi.Mode().Perm(), fi.Size())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The tail segment is reopened for writing (OpenWriter), twice.
	for _, r := range [][2]uint64{{4, 6}, {7, 7}} {
		if s, err = OpenWAL(dir, hclog.NewNullLogger()); err != nil {
			t.Fatal(err)
		}
		write(s, r[0], r[1])
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if s, err = OpenWAL(dir, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(1); i <= 7; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil || len(l.Data) != 1 || l.Data[0] != byte(i) {
			t.Fatalf("entry %d after restarts: %+v, %v", i, l, err)
		}
	}
}

// TestDatasyncCreate: a segment is never created over an existing file,
// nor larger than raft-wal's format allows; a new one syncs.
func TestDatasyncCreate(t *testing.T) {
	dir := t.TempDir()
	v := datasyncFS{fs.New()}
	f, err := v.Create(dir, "a.wal", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("entry"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Create(dir, "a.wal", 1<<20); !errors.Is(err, os.ErrExist) {
		t.Fatalf("create over an existing segment: %v, want ErrExist", err)
	}
	if _, err := v.Create(dir, "b.wal", 1<<32); err == nil {
		t.Fatal("a segment over 2 GiB was created")
	}
	b, err := os.ReadFile(filepath.Join(dir, "a.wal"))
	if err != nil || len(b) != 1<<20 || string(b[:5]) != "entry" {
		t.Fatalf("segment: %d bytes starting %q, %v", len(b), b[:min(5, len(b))], err)
	}
}

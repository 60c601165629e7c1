// Package raftlog is a coordinator's Raft log and stable store on disk:
// hashicorp/raft-wal (one fdatasync per append), and the one-time migration
// of a data directory written by raft-boltdb into it.
package raftlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/migrate"
	"github.com/hashicorp/raft-wal/segment"
	"go.etcd.io/bbolt"
)

// The Raft log and stable store: hashicorp/raft-wal, one fdatasync per
// append (its segments go through datasyncFS; raft-boltdb took two
// fdatasyncs per bolt commit). The data directory holds
//
//	<data-dir>/raft/wal/         the WAL: segment files and wal-meta.db
//	                             (raft-wal's bolt file: segment list and
//	                             the stable keys CurrentTerm, LastVoteTerm,
//	                             LastVoteCand)
//	<data-dir>/snapshots/        Raft snapshots (raft.FileSnapshotStore)
//	<data-dir>/raft.db.migrated  the raft-boltdb store of a coordinator that
//	                             ran before raft-wal, kept after migration
//
// A data directory written by raft-boltdb (<data-dir>/raft.db, no WAL) is
// migrated once, on start, before Raft opens it: logs and stable keys are
// copied into <data-dir>/raft/wal.migrating with raft-wal's migrate
// package, read back and compared, and the directory is renamed to
// <data-dir>/raft/wal only then; raft.db is renamed to raft.db.migrated,
// never deleted. A crash before the rename leaves wal.migrating, which the
// next start removes before migrating again; a crash after it leaves the
// WAL and raft.db, and the next start checks that they hold the same log
// and finishes the rename.
const (
	boltFile      = "raft.db"
	boltMigrated  = "raft.db.migrated"
	walDir        = "raft/wal"
	walMigrating  = "raft/wal.migrating"
	migrateBatchB = 1 << 20 // bytes of log data per WAL append while migrating
)

// Store is a raft-wal WAL: Raft's LogStore, StableStore and
// MonotonicLogStore.
type Store struct {
	*wal.WAL
}

// GetLog reads entry index. raft-wal (v0.4.1) truncates the head of its log
// by moving its first index, and still serves the entries below it while
// they sit in the unsealed tail segment (the first 64 MiB of a log).
// Raft expects ErrLogNotFound for a compacted entry, and sends a follower
// that needs one a snapshot then; this restores that.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	first, err := s.WAL.FirstIndex()
	if err != nil {
		return err
	}
	if index < first {
		return raft.ErrLogNotFound
	}
	return s.WAL.GetLog(index, l)
}

// OpenWAL opens (creating if need be) the WAL in dir.
func OpenWAL(dir string, hl hclog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create wal dir: %w", err)
	}
	// raft-wal opens wal-meta.db with no lock timeout: a second process on
	// this data directory would wait for ever. Fail after a second instead,
	// as raft-boltdb did.
	metaPath := filepath.Join(dir, metadb.FileName)
	if ok, err := exists(metaPath); err != nil {
		return nil, err
	} else if ok {
		probe, err := bbolt.Open(metaPath, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open wal %s (in use by another coordinator?): %w", dir, err)
		}
		if err := probe.Close(); err != nil {
			return nil, fmt.Errorf("open wal %s: %w", dir, err)
		}
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithLogger(hl.Named("wal")),
		wal.WithSegmentFiler(segment.NewFiler(dir, segmentFS())))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open wal %s: %w", dir, err), meta.Close())
	}
	return &Store{WAL: w}, nil
}

// Open migrates a raft-boltdb store in dataDir if there is one and opens
// the WAL.
func Open(ctx context.Context, dataDir string, hl hclog.Logger, log *slog.Logger) (*Store, error) {
	if err := migrateBolt(ctx, dataDir, hl, log); err != nil {
		return nil, fmt.Errorf("migrate %s to raft-wal: %w", filepath.Join(dataDir, boltFile), err)
	}
	return OpenWAL(filepath.Join(dataDir, walDir), hl)
}

// migrateBolt moves a raft-boltdb store into a new WAL, once (see the
// comment at the top of this file).
func migrateBolt(ctx context.Context, dataDir string, hl hclog.Logger, log *slog.Logger) error {
	boltPath := filepath.Join(dataDir, boltFile)
	final := filepath.Join(dataDir, walDir)
	tmp := filepath.Join(dataDir, walMigrating)
	hasBolt, err := exists(boltPath)
	if err != nil {
		return err
	}
	hasWAL, err := exists(final)
	if err != nil {
		return err
	}
	if !hasBolt {
		if ok, _ := exists(tmp); ok {
			log.Warn("unfinished raft-wal migration directory without raft.db; left alone", "dir", tmp)
		}
		return nil
	}
	bolt, err := openBolt(boltPath)
	if err != nil {
		return err
	}
	defer bolt.Close()
	if hasWAL {
		// The previous start crashed between renaming the WAL into place
		// and renaming raft.db: nothing has written the WAL since.
		if err := sameLog(ctx, final, bolt, hl); err != nil {
			return fmt.Errorf("both %s and %s exist: %w", boltPath, final, err)
		}
		log.Info("raft-wal migration: finishing an interrupted migration", "wal", final)
		return retireBolt(dataDir, bolt, log)
	}
	start := time.Now()
	if ok, _ := exists(tmp); ok {
		log.Warn("raft-wal migration: removing an unfinished migration", "dir", tmp)
	}
	// Only ever a partial copy made by an earlier start: raft.db is intact.
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove unfinished migration: %w", err)
	}
	first, last, keys, err := copyToWAL(ctx, tmp, bolt, hl, log)
	if err != nil {
		return err
	}
	if err := sameLog(ctx, tmp, bolt, hl); err != nil {
		return fmt.Errorf("verify migrated wal: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("move migrated wal into place: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	entries := uint64(0)
	if last > 0 {
		entries = last - first + 1
	}
	log.Info("raft-wal migration: copied raft-boltdb store into the wal",
		"entries", entries, "first_index", first, "last_index", last, "stable_keys", keys,
		"wal", final, "took", time.Since(start).Round(time.Millisecond))
	return retireBolt(dataDir, bolt, log)
}

// openBolt opens a raft-boltdb store read-only.
func openBolt(path string) (*raftboltdb.BoltStore, error) {
	s, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: time.Second, ReadOnly: true},
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// copyToWAL copies every log entry and the stable keys Raft writes from
// bolt into a new WAL in dir. keys counts the stable keys bolt held.
func copyToWAL(ctx context.Context, dir string, bolt *raftboltdb.BoltStore, hl hclog.Logger, log *slog.Logger) (first, last uint64, keys int, err error) {
	w, err := OpenWAL(dir, hl)
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { err = errors.Join(err, w.Close()) }()
	if first, err = bolt.FirstIndex(); err != nil {
		return 0, 0, 0, fmt.Errorf("read first index: %w", err)
	}
	if last, err = bolt.LastIndex(); err != nil {
		return 0, 0, 0, fmt.Errorf("read last index: %w", err)
	}
	if last > 0 { // CopyLogs reads index 0 of an empty store
		progress := make(chan string, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for m := range progress {
				log.Debug("raft-wal migration", "progress", m)
			}
		}()
		err = migrate.CopyLogs(ctx, w, bolt, migrateBatchB, progress)
		<-done
		if err != nil {
			return 0, 0, 0, fmt.Errorf("copy logs: %w", err)
		}
	}
	src := presentStable{StableStore: bolt}
	if err := migrate.CopyStable(ctx, w, &src, nil, nil, nil); err != nil {
		return 0, 0, 0, fmt.Errorf("copy stable keys: %w", err)
	}
	return first, last, src.present, nil
}

// presentStable reads a raft-boltdb stable store as raft-wal's does: a
// missing key (a node that never voted has no LastVoteCand) reads as
// empty, not as an error, so CopyStable copies the keys there are.
type presentStable struct {
	raft.StableStore
	present int
}

func (s *presentStable) Get(k []byte) ([]byte, error) {
	v, err := s.StableStore.Get(k)
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil, nil
	}
	if err == nil {
		s.present++
	}
	return v, err
}

func (s *presentStable) GetUint64(k []byte) (uint64, error) {
	v, err := s.StableStore.GetUint64(k)
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return 0, nil
	}
	if err == nil {
		s.present++
	}
	return v, err
}

// sameLog checks that the WAL in dir holds exactly bolt's log entries and
// stable keys.
func sameLog(ctx context.Context, dir string, bolt *raftboltdb.BoltStore, hl hclog.Logger) (err error) {
	w, err := OpenWAL(dir, hl)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, w.Close()) }()
	bf, err := bolt.FirstIndex()
	if err != nil {
		return err
	}
	bl, err := bolt.LastIndex()
	if err != nil {
		return err
	}
	wf, err := w.FirstIndex()
	if err != nil {
		return err
	}
	wl, err := w.LastIndex()
	if err != nil {
		return err
	}
	if bl != wl || (bl > 0 && bf != wf) {
		return fmt.Errorf("wal holds indexes [%d, %d], raft.db [%d, %d]", wf, wl, bf, bl)
	}
	for i := bf; bl > 0 && i <= bl; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var a, b raft.Log
		if err := bolt.GetLog(i, &a); err != nil {
			return fmt.Errorf("read raft.db entry %d: %w", i, err)
		}
		if err := w.GetLog(i, &b); err != nil {
			return fmt.Errorf("read wal entry %d: %w", i, err)
		}
		if a.Index != b.Index || a.Term != b.Term || a.Type != b.Type ||
			!bytes.Equal(a.Data, b.Data) || !bytes.Equal(a.Extensions, b.Extensions) || !a.AppendedAt.Equal(b.AppendedAt) {
			return fmt.Errorf("entry %d differs between raft.db and wal", i)
		}
	}
	// The keys hashicorp/raft keeps in its stable store, as CopyStable:
	// two uint64s (raft-boltdb stores them big-endian, raft-wal
	// little-endian) and the candidate's id.
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		a, err := bolt.GetUint64([]byte(k))
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			a, err = 0, nil
		}
		if err != nil {
			return fmt.Errorf("read raft.db key %s: %w", k, err)
		}
		b, err := w.GetUint64([]byte(k))
		if err != nil {
			return fmt.Errorf("read wal key %s: %w", k, err)
		}
		if a != b {
			return fmt.Errorf("stable key %s is %d in raft.db, %d in wal", k, a, b)
		}
	}
	a, err := bolt.Get([]byte("LastVoteCand"))
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		a, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("read raft.db key LastVoteCand: %w", err)
	}
	b, err := w.Get([]byte("LastVoteCand"))
	if err != nil {
		return fmt.Errorf("read wal key LastVoteCand: %w", err)
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("stable key LastVoteCand is %q in raft.db, %q in wal", a, b)
	}
	return nil
}

// retireBolt closes bolt and renames raft.db to raft.db.migrated (or, if
// an operator kept an older one there, raft.db.migrated-<unix seconds>).
func retireBolt(dataDir string, bolt *raftboltdb.BoltStore, log *slog.Logger) error {
	if err := bolt.Close(); err != nil {
		return fmt.Errorf("close raft.db: %w", err)
	}
	to := filepath.Join(dataDir, boltMigrated)
	if ok, err := exists(to); err != nil {
		return err
	} else if ok {
		to = fmt.Sprintf("%s-%d", to, time.Now().Unix())
	}
	if err := os.Rename(filepath.Join(dataDir, boltFile), to); err != nil {
		return fmt.Errorf("rename raft.db: %w", err)
	}
	if err := syncDir(dataDir); err != nil {
		return err
	}
	log.Info("raft-wal migration: raft-boltdb store kept, no longer used", "path", to)
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat: %w", err)
	}
	return true, nil
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir to sync: %w", err)
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("sync dir %s: %w", dir, err), f.Close())
	}
	return f.Close()
}

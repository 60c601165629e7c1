package raftlog

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
	"golang.org/x/sys/unix"
)

// datasyncFS is raft-wal's file system (fs.FS) with one change: a segment
// file is made durable with fdatasync, not fsync. raft-wal's own files
// call os.File.Sync, an fsync, which also writes the inode's new
// modification time; on ext4 that is a journal commit on every append, and
// the commits of every process writing to the file system run one after
// another. fdatasync writes the data and only the metadata needed to read
// it back (the file's size and block map, so a segment that grows past its
// preallocated size is still durable), as etcd's WAL does. The directory
// is still fsynced after the first sync of a new segment, as raft-wal does,
// so a crash cannot lose the file's name.
type datasyncFS struct{ *fs.FS }

var _ types.VFS = datasyncFS{}

// segmentFS is the file system of raft-wal's segments.
func segmentFS() types.VFS { return datasyncFS{fs.New()} }

// Create creates segment name in dir, preallocated to size bytes where the
// file system can (as raft-wal's fs.FS does; the file is extended
// otherwise).
func (v datasyncFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	if size > math.MaxInt32 {
		return nil, fmt.Errorf("segment %s: size %d over the maximum %d", name, size, math.MaxInt32)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if size > 0 {
		if err := preallocate(f, int64(size)); err != nil {
			return nil, errors.Join(fmt.Errorf("preallocate segment %s: %w", name, err), f.Close())
		}
	}
	return &datasyncFile{File: f, dir: dir}, nil
}

// OpenWriter opens an existing segment for writing (the tail segment after
// a restart).
func (v datasyncFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	w := &datasyncFile{File: f}
	w.synced.Store(true)
	return w, nil
}

// preallocate reserves size bytes for f and sets its size, with fallocate,
// or, where the file system lacks it, by extending the file.
func preallocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return f.Truncate(size)
	}
	return err
}

// datasyncFile is a segment file synced with fdatasync.
type datasyncFile struct {
	*os.File
	dir    string      // the directory to sync once, after the first sync of a new file
	synced atomic.Bool // the directory entry is durable
}

// Sync makes the file's data durable; after the first sync of a new file,
// its directory entry too.
func (f *datasyncFile) Sync() error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	if f.synced.Load() {
		return nil
	}
	d, err := os.Open(f.dir)
	if err != nil {
		return err
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		return err
	}
	f.synced.Store(true)
	return nil
}

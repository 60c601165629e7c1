//go:build !linux

package raftlog

import (
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
)

// segmentFS is the file system of raft-wal's segments: raft-wal's own
// (fsync). Coordinators run on Linux (datasync_linux.go); this keeps the
// package building for the CLI on other systems.
func segmentFS() types.VFS { return fs.New() }

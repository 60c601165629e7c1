package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/medmesh/medmesh/coordinator/internal/api"
	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/backup"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/raftlog"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Members of a snapshot archive (internal/backup adds SHA256SUMS last).
const (
	archiveState = "raft/state.bin" // the FSM snapshot stream, as Raft persists it
	archiveMeta  = "meta.json"
	archiveAudit = "audit/" // segments, cut at the snapshot's audit head
	archiveData  = "data/"  // every other file of the data directory
	// archiveFormat is meta.json's format; a restore refuses others.
	archiveFormat = 1
)

// dataDirSkip are the data directory's entries a snapshot archive does not
// copy as files: Raft's own (the state travels as a snapshot), the audit
// trail (exported cut at the snapshot's head); also anything named
// raft.db* (a raft-boltdb store, migrated or not) and a restore's staging.
var dataDirSkip = []string{"raft", "snapshots", "audit"}

const stagingPrefix = ".restore-"

// archiveMetadata is meta.json.
type archiveMetadata struct {
	Format        int       `json:"format"`
	Index         uint64    `json:"index"`
	Term          uint64    `json:"term"`
	StateHash     string    `json:"state_hash"`
	AuditHeadSeq  uint64    `json:"audit_head_seq"`
	AuditHeadHash string    `json:"audit_head_hash"`
	ServedBy      string    `json:"served_by"`
	Servers       []string  `json:"servers"` // the source cluster's Raft configuration, for the record
	Created       time.Time `json:"created"`
}

var _ api.Backend = (*Coordinator)(nil)

// SaveSnapshot (leader only) takes a Raft user snapshot and writes the
// backup archive to w: the snapshot, meta.json, the audit segments up to
// the snapshot's audit head, the other files of the data directory (the
// risk bundle and SBOM store), and the manifest of their SHA-256.
func (c *Coordinator) SaveSnapshot(ctx context.Context, w io.Writer) (*medmeshv1.SnapshotSummary, error) {
	if !c.IsLeader() {
		return nil, api.ErrNotLeader
	}
	f := c.raft.Snapshot()
	if err := c.await(f); err != nil {
		return nil, fmt.Errorf("raft snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("open raft snapshot: %w", err)
	}
	defer rc.Close()
	aw := backup.NewWriter(w)
	// The stream goes into the archive as it is read into a fresh FSM,
	// which gives the state hash and the audit head to cut the trail at.
	check := fsm.New()
	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() {
		err := check.Restore(pr)
		pr.CloseWithError(err) // unblocks the writer if Restore stopped early
		restored <- err
	}()
	err = aw.Add(archiveState, meta.Size, io.TeeReader(rc, pw))
	pw.CloseWithError(err)
	if rerr := <-restored; err == nil && rerr != nil {
		err = fmt.Errorf("snapshot does not load: %w", rerr)
	}
	if err != nil {
		return nil, err
	}
	hash, err := check.Hash()
	if err != nil {
		return nil, err
	}
	head := check.AuditHead()
	am := archiveMetadata{
		Format: archiveFormat, Index: meta.Index, Term: meta.Term,
		StateHash: hex.EncodeToString(hash[:]), AuditHeadSeq: head.Seq, AuditHeadHash: hex.EncodeToString(head.Hash[:]),
		ServedBy: c.cfg.ID, Created: time.Now().UTC(),
	}
	for _, s := range meta.Configuration.Servers {
		am.Servers = append(am.Servers, fmt.Sprintf("%s@%s", s.ID, s.Address))
	}
	mb, err := json.MarshalIndent(am, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := aw.AddBytes(archiveMeta, append(mb, '\n')); err != nil {
		return nil, err
	}
	if err := auditlog.Export(filepath.Join(c.cfg.DataDir, "audit"), head.Seq, func(name string, data []byte) error {
		return aw.AddBytes(archiveAudit+name, data)
	}); err != nil {
		return nil, err
	}
	if err := addDataFiles(ctx, aw, c.cfg.DataDir); err != nil {
		return nil, err
	}
	files := aw.Files()
	if err := aw.Close(); err != nil {
		return nil, err
	}
	c.log.Info("snapshot saved", "index", meta.Index, "term", meta.Term, "state_hash", am.StateHash, "audit_head", head.Seq, "files", files)
	return &medmeshv1.SnapshotSummary{
		Index: meta.Index, Term: meta.Term, StateHash: am.StateHash, AuditHeadSeq: head.Seq,
		Files: uint32(files), ServedBy: c.cfg.ID,
	}, nil
}

// addDataFiles adds every regular file of the data directory that is not
// Raft's or the audit trail's (for now the risk bundle and SBOM store),
// in lexical order.
func addDataFiles(ctx context.Context, aw *backup.Writer, dataDir string) error {
	return filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, err := filepath.Rel(dataDir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if top, _, _ := strings.Cut(rel, "/"); slices.Contains(dataDirSkip, top) || strings.HasPrefix(top, stagingPrefix) || strings.HasPrefix(top, "raft.db") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return aw.AddFile(archiveData+rel, p)
	})
}

// RestoreOptions name the data directory a snapshot archive is restored
// into and the coordinator that will run on it.
type RestoreOptions struct {
	DataDir string
	// ID and RaftAddr are the --id and --raft of the coordinator that will
	// start on DataDir: the restored Raft configuration has it as the only
	// voter, and other coordinators join it.
	ID, RaftAddr string
	Log          *slog.Logger
}

// RestoreResult describes a restore.
type RestoreResult struct {
	Index, Term   uint64
	StateHash     string
	AuditHeadSeq  uint64
	Files         int
	SourceServers []string
}

// RestoreSnapshot writes the archive read from r into a fresh data
// directory, offline: every member is checked against the manifest (a
// corrupt archive is refused, naming the member) and the snapshot must
// load and hash to meta.json's state hash before anything is written
// outside a staging directory. The Raft snapshot goes into the snapshot
// store with a configuration of this one coordinator (as
// raft.RecoverCluster writes it) and the stable store's term is set to
// the snapshot's; the audit segments and data files go where the
// coordinator reads them.
func RestoreSnapshot(r io.Reader, o RestoreOptions) (*RestoreResult, error) {
	if o.DataDir == "" || o.ID == "" || o.RaftAddr == "" {
		return nil, errors.New("restore: data directory, id and raft address are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	des, err := os.ReadDir(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if len(des) > 0 {
		return nil, fmt.Errorf("restore: %s is not empty (it holds %s): restore only into a fresh data directory", o.DataDir, des[0].Name())
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	stage := filepath.Join(o.DataDir, stagingPrefix+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(stage, 0o700); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	res, err := restoreStaged(r, o, stage)
	if err != nil {
		// Leave the directory as fresh as it was.
		return nil, errors.Join(err, clearDir(o.DataDir))
	}
	if err := os.RemoveAll(stage); err != nil {
		return nil, err
	}
	return res, syncTree(o.DataDir)
}

// syncTree fsyncs every file and directory under dir: a restore is on disk
// before it reports success.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		return errors.Join(f.Sync(), f.Close())
	})
}

func clearDir(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, de := range des {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, de.Name())))
	}
	return errors.Join(errs...)
}

func restoreStaged(r io.Reader, o RestoreOptions, stage string) (*RestoreResult, error) {
	names, err := backup.Extract(r, stage)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	mb, err := os.ReadFile(filepath.Join(stage, archiveMeta))
	if err != nil {
		return nil, fmt.Errorf("restore: archive has no %s: %w", archiveMeta, backup.ErrCorrupt)
	}
	var am archiveMetadata
	if err := json.Unmarshal(mb, &am); err != nil {
		return nil, fmt.Errorf("restore: %s: %v: %w", archiveMeta, err, backup.ErrCorrupt)
	}
	if am.Format != archiveFormat {
		return nil, fmt.Errorf("restore: archive format %d, this medmesh reads %d", am.Format, archiveFormat)
	}
	if am.Index == 0 || am.Term == 0 {
		return nil, fmt.Errorf("restore: %s: no Raft index or term: %w", archiveMeta, backup.ErrCorrupt)
	}
	statePath := filepath.Join(stage, filepath.FromSlash(archiveState))
	check := fsm.New()
	sf, err := os.Open(statePath)
	if err != nil {
		return nil, fmt.Errorf("restore: archive has no %s: %w", archiveState, backup.ErrCorrupt)
	}
	if err := check.Restore(sf); err != nil {
		return nil, fmt.Errorf("restore: %s: %w", archiveState, err)
	}
	hash, err := check.Hash()
	if err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(hash[:]); got != am.StateHash || check.AppliedIndex() != am.Index {
		return nil, fmt.Errorf("restore: %s hashes to %s at index %d, %s says %s at %d", archiveState, got, check.AppliedIndex(), archiveMeta, am.StateHash, am.Index)
	}
	head := check.AuditHead()
	// The trail: segments into <data-dir>/audit, which must verify and end
	// at the snapshot's audit head.
	auditDir := filepath.Join(o.DataDir, "audit")
	if err := os.Mkdir(auditDir, 0o700); err != nil {
		return nil, err
	}
	files := 0
	for _, n := range names {
		var dst string
		switch {
		case strings.HasPrefix(n, archiveAudit):
			dst = filepath.Join(auditDir, filepath.FromSlash(strings.TrimPrefix(n, archiveAudit)))
		case strings.HasPrefix(n, archiveData):
			dst = filepath.Join(o.DataDir, filepath.FromSlash(strings.TrimPrefix(n, archiveData)))
			if top, _, _ := strings.Cut(strings.TrimPrefix(n, archiveData), "/"); slices.Contains(dataDirSkip, top) || strings.HasPrefix(top, stagingPrefix) || strings.HasPrefix(top, "raft.db") {
				return nil, fmt.Errorf("restore: archive member %s would overwrite the coordinator's own files: %w", n, backup.ErrCorrupt)
			}
		default:
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return nil, err
		}
		if err := os.Rename(filepath.Join(stage, filepath.FromSlash(n)), dst); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		files++
	}
	if head.Seq > 0 {
		rep, err := auditlog.Verify(auditDir)
		if err != nil {
			return nil, fmt.Errorf("restore: audit trail: %w", err)
		}
		if rep.Head != head {
			return nil, fmt.Errorf("restore: audit segments end at %v, the snapshot's audit head is %v", rep.Head, head)
		}
	}
	// Raft: the snapshot, with this coordinator as the only voter.
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: io.Discard})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(o.DataDir, 2, hl)
	if err != nil {
		return nil, fmt.Errorf("restore: snapshot store: %w", err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(o.ID), Address: raft.ServerAddress(o.RaftAddr)}}}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(o.RaftAddr))
	sink, err := snaps.Create(raft.SnapshotVersionMax, am.Index, am.Term, conf, am.Index, trans)
	if err != nil {
		return nil, fmt.Errorf("restore: create snapshot: %w", err)
	}
	sf, err = os.Open(statePath) // Restore closed it
	if err != nil {
		return nil, errors.Join(err, sink.Cancel())
	}
	defer sf.Close()
	if _, err := io.Copy(sink, sf); err != nil {
		return nil, errors.Join(fmt.Errorf("restore: write snapshot: %w", err), sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return nil, fmt.Errorf("restore: write snapshot: %w", err)
	}
	// The stable store starts at the snapshot's term, so the new
	// cluster's terms never run backwards past the restored log position.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := raftlog.Open(ctx, o.DataDir, hl, o.Log)
	if err != nil {
		return nil, fmt.Errorf("restore: raft store: %w", err)
	}
	if err := errors.Join(store.SetUint64([]byte("CurrentTerm"), am.Term), store.Close()); err != nil {
		return nil, fmt.Errorf("restore: raft store: %w", err)
	}
	return &RestoreResult{Index: am.Index, Term: am.Term, StateHash: am.StateHash, AuditHeadSeq: head.Seq, Files: files, SourceServers: am.Servers}, nil
}

package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/medmesh/medmesh/coordinator/internal/raftlog"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The data directory's Raft files, as docs/architecture.md documents them.
const (
	boltFile     = "raft.db"
	boltMigrated = "raft.db.migrated"
	walDir       = "raft/wal"
	walMigrating = "raft/wal.migrating"
)

// openBolt opens a raft-boltdb store read-only.
func openBolt(path string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: time.Second, ReadOnly: true},
	})
}

// boltFixture runs a real single-node coordinator, writes 240 policies, 30
// devices (sensor batches) and a decision through it, stops it and turns
// its data directory into the one the raft-boltdb version left: the same
// log entries and stable keys in raft.db (opened with that version's bolt
// options), and no WAL. Snapshots are off, so a restarted node can only
// rebuild its state from the migrated log. It returns the stopped node
// (newCluster's cleanup stops it again), the FSM hash and the last index.
func boltFixture(t *testing.T) (*cluster, *node, [32]byte, uint64) {
	t.Helper()
	cl := newCluster(t, 1, func(c *Config) {
		c.SnapshotThreshold = 1 << 30
		c.SnapshotInterval = time.Hour
	})
	n := cl.nodes[0]
	for i := 0; i < 240; i++ {
		put(t, n, fmt.Sprintf("p-%d", i), fmt.Sprintf("v%d", i))
	}
	for b := 0; b < 3; b++ {
		var devs []*medmeshv1.Device
		for i := 0; i < 10; i++ {
			devs = append(devs, &medmeshv1.Device{Mac: fmt.Sprintf("00-1B-44-11-%02X-%02X", b, i), DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP,
				Location: &medmeshv1.Location{Floor: "3"}, Risk: &medmeshv1.RiskScore{Score: uint32(i * 5)}})
		}
		report(t, n, "s1", uint64(1+10*b), devs...)
	}
	pol := &medmeshv1.Policy{Name: "pacs", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PACS}}
	if _, err := n.c.ProposeDecision(ctxT(t, 5*time.Second), &medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, Policy: pol, Actor: "op"}, false); err != nil {
		t.Fatalf("decision: %v", err)
	}
	// The leader commits on its own too (the risk assessor's postures for
	// the reported devices): hash the state once nothing more comes, or
	// an entry proposed meanwhile is in the log but not in the hash.
	settle(t, n)
	hash, err := n.c.FSM().Hash()
	if err != nil {
		t.Fatal(err)
	}
	n.stop(false)

	dir := n.cfg.DataDir
	w, err := raftlog.OpenWAL(filepath.Join(dir, walDir), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile), BoltOptions: &bbolt.Options{
		Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType,
	}})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := w.FirstIndex()
	last, _ := w.LastIndex()
	if first != 1 || last < 245 {
		t.Fatalf("coordinator's log holds [%d, %d], want [1, >=245]", first, last)
	}
	var batch []*raft.Log
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := w.GetLog(i, l); err != nil {
			t.Fatal(err)
		}
		if batch = append(batch, l); len(batch) == 64 || i == last {
			if err := b.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		v, err := w.GetUint64([]byte(k))
		if err != nil || v == 0 {
			t.Fatalf("coordinator's %s = %d, %v", k, v, err)
		}
		if err := b.SetUint64([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	cand, err := w.Get([]byte("LastVoteCand"))
	if err != nil || len(cand) == 0 {
		t.Fatalf("coordinator's LastVoteCand = %q, %v", cand, err)
	}
	if err := b.Set([]byte("LastVoteCand"), cand); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "raft")); err != nil {
		t.Fatal(err)
	}
	if snaps, err := n.c.snaps.List(); err != nil || len(snaps) != 0 {
		t.Fatalf("fixture has %d snapshots (%v), want none", len(snaps), err)
	}
	return cl, n, hash, last
}

// settle waits until n has applied its whole log and nothing new has come
// for half a second.
func settle(t *testing.T, n *node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for last := n.c.FSM().AppliedIndex(); ; {
		time.Sleep(500 * time.Millisecond)
		now := n.c.FSM().AppliedIndex()
		if now == last && n.c.raft.AppliedIndex() == n.c.raft.LastIndex() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator kept committing for 10 s (applied %d, then %d)", last, now)
		}
		last = now
	}
}

// sameAsBolt checks that entries 1..last of s are those of the raft-boltdb
// store in dir/raft.db.migrated.
func sameAsBolt(t *testing.T, dir string, s raft.LogStore, last uint64) *raftboltdb.BoltStore {
	t.Helper()
	b, err := openBolt(filepath.Join(dir, boltMigrated))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if bl, _ := b.LastIndex(); bl != last {
		t.Fatalf("raft.db.migrated ends at %d, want %d", bl, last)
	}
	for i := uint64(1); i <= last; i++ {
		var a, w raft.Log
		if err := b.GetLog(i, &a); err != nil {
			t.Fatalf("bolt entry %d: %v", i, err)
		}
		if err := s.GetLog(i, &w); err != nil {
			t.Fatalf("wal entry %d: %v", i, err)
		}
		if a.Index != w.Index || a.Term != w.Term || a.Type != w.Type || !bytes.Equal(a.Data, w.Data) || !a.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("entry %d: wal %+v, bolt %+v", i, w, a)
		}
	}
	return b
}

func mustExist(t *testing.T, dir string, want map[string]bool) {
	t.Helper()
	for name, ok := range want {
		_, err := os.Stat(filepath.Join(dir, name))
		if ok != (err == nil) {
			t.Errorf("%s: exists=%v, want %v (%v)", name, err == nil, ok, err)
		}
	}
}

// TestMigrateBoltDataDir: a coordinator started on a raft-boltdb data
// directory migrates it into raft-wal once, every entry and stable key
// carried over, rebuilds the same state from the migrated log, keeps the
// bolt file as raft.db.migrated, and does not migrate again on the next
// start.
func TestMigrateBoltDataDir(t *testing.T) {
	cl, n, hash, last := boltFixture(t)
	dir := n.cfg.DataDir

	n.start()
	cl.waitReady()
	mustExist(t, dir, map[string]bool{boltFile: false, boltMigrated: true, walDir: true, walMigrating: false})
	b := sameAsBolt(t, dir, n.c.store, last)
	bt, _ := b.GetUint64([]byte("CurrentTerm"))
	if wt, err := n.c.store.GetUint64([]byte("CurrentTerm")); err != nil || wt < bt {
		t.Errorf("wal CurrentTerm %d (%v), below raft.db's %d", wt, err, bt)
	}
	// The node voted for itself (its Raft address) before and after.
	bc, _ := b.Get([]byte("LastVoteCand"))
	if cand, _ := n.c.store.Get([]byte("LastVoteCand")); len(bc) == 0 || !bytes.Equal(cand, bc) {
		t.Errorf("wal LastVoteCand %q, raft.db %q", cand, bc)
	}
	if got, err := n.c.FSM().Hash(); err != nil || got != hash {
		t.Errorf("state after migration differs from before (hash %x, want %x, %v)", got, hash, err)
	}
	for _, name := range []string{"p-0", "p-123", "p-239"} {
		resp, err := n.policies().GetPolicy(ctxT(t, 5*time.Second), &medmeshv1.GetPolicyRequest{Name: name})
		if want := "v" + strings.TrimPrefix(name, "p-"); err != nil || resp.GetPolicy().GetDescription() != want {
			t.Errorf("policy %s after migration: %v, %v; want %s", name, resp.GetPolicy(), err, want)
		}
	}
	if d := n.c.FSM().Device("00:1b:44:11:02:09"); d == nil || d.GetRisk().GetScore() != 45 {
		t.Errorf("device after migration: %v", d)
	}

	// The second start uses the WAL as it is: what was written after the
	// migration stays, and raft.db.migrated is left alone.
	put(t, n, "after-migration", "ok")
	before, err := os.Stat(filepath.Join(dir, boltMigrated))
	if err != nil {
		t.Fatal(err)
	}
	n.stop(false)
	n.start()
	cl.waitReady()
	if p := n.c.FSM().Policy("after-migration"); p.GetDescription() != "ok" {
		t.Errorf("write after the migration lost on restart: %v", p)
	}
	if p := n.c.FSM().Policy("p-239"); p.GetDescription() != "v239" {
		t.Errorf("migrated write lost on the second restart: %v", p)
	}
	after, err := os.Stat(filepath.Join(dir, boltMigrated))
	if err != nil || !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Errorf("raft.db.migrated changed by the second start: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, boltMigrated+"-*")); len(m) != 0 {
		t.Errorf("second start migrated again: %v", m)
	}
	mustExist(t, dir, map[string]bool{boltFile: false, walMigrating: false})
}

// TestMigrateRecoversFromCrash: a half-made migration directory left by a
// crash is removed and the migration done again; a crash between moving
// the WAL into place and renaming raft.db is finished on the next start;
// a WAL that does not hold raft.db's log stops the start with both kept.
func TestMigrateRecoversFromCrash(t *testing.T) {
	_, n, _, last := boltFixture(t)
	dir := n.cfg.DataDir
	ctx := context.Background()
	log := testLogger()

	// A crash after the first 10 entries were copied.
	b, err := openBolt(filepath.Join(dir, boltFile))
	if err != nil {
		t.Fatal(err)
	}
	bl, _ := b.LastIndex()
	part, err := raftlog.OpenWAL(filepath.Join(dir, walMigrating), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 10; i++ {
		var l raft.Log
		if err := b.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if err := part.StoreLog(&l); err != nil {
			t.Fatal(err)
		}
	}
	terms := map[string]uint64{}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		if terms[k], err = b.GetUint64([]byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	cand, err := b.Get([]byte("LastVoteCand"))
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(part.Close(), b.Close()); err != nil {
		t.Fatal(err)
	}
	if bl != last {
		t.Fatalf("raft.db ends at %d, want %d", bl, last)
	}

	s, err := raftlog.Open(ctx, dir, hclog.NewNullLogger(), log)
	if err != nil {
		t.Fatal(err)
	}
	mustExist(t, dir, map[string]bool{boltFile: false, boltMigrated: true, walDir: true, walMigrating: false})
	sameAsBolt(t, dir, s, last)
	if wl, _ := s.LastIndex(); wl != last {
		t.Errorf("wal ends at %d, want %d", wl, last)
	}
	for k, v := range terms {
		if got, err := s.GetUint64([]byte(k)); err != nil || got != v {
			t.Errorf("stable key %s: wal %d (%v), raft.db %d", k, got, err, v)
		}
	}
	if got, err := s.Get([]byte("LastVoteCand")); err != nil || !bytes.Equal(got, cand) {
		t.Errorf("LastVoteCand: wal %q (%v), raft.db %q", got, err, cand)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash between the two renames: the WAL is in place, raft.db too.
	if err := os.Rename(filepath.Join(dir, boltMigrated), filepath.Join(dir, boltFile)); err != nil {
		t.Fatal(err)
	}
	s, err = raftlog.Open(ctx, dir, hclog.NewNullLogger(), log)
	if err != nil {
		t.Fatal(err)
	}
	mustExist(t, dir, map[string]bool{boltFile: false, boltMigrated: true, walDir: true})
	if wl, _ := s.LastIndex(); wl != last {
		t.Errorf("wal ends at %d after finishing the rename, want %d", wl, last)
	}
	// The WAL moves on; then a raft.db appears beside it again.
	if err := s.StoreLog(&raft.Log{Index: last + 1, Term: 99, Type: raft.LogNoop}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, boltMigrated), filepath.Join(dir, boltFile)); err != nil {
		t.Fatal(err)
	}
	if s, err := raftlog.Open(ctx, dir, hclog.NewNullLogger(), log); err == nil {
		s.Close()
		t.Fatal("opened a WAL that does not hold raft.db's log, beside raft.db")
	} else if !strings.Contains(err.Error(), "both") {
		t.Errorf("error %q does not say both stores exist", err)
	}
	mustExist(t, dir, map[string]bool{boltFile: true, boltMigrated: false, walDir: true})
}

// TestMigrateCompactedAndEmpty: a raft-boltdb log compacted after a
// snapshot (the usual case) keeps its first index in the WAL; an empty
// raft.db (a node that never joined) migrates to an empty WAL that Raft
// sees as no state.
func TestMigrateCompactedAndEmpty(t *testing.T) {
	_, n, _, last := boltFixture(t)
	dir := n.cfg.DataDir
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteRange(1, 99); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := raftlog.Open(context.Background(), dir, hclog.NewNullLogger(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if first, _ := s.FirstIndex(); first != 100 {
		t.Errorf("wal starts at %d, want 100", first)
	}
	if wl, _ := s.LastIndex(); wl != last {
		t.Errorf("wal ends at %d, want %d", wl, last)
	}
	var l raft.Log
	if err := s.GetLog(99, &l); err == nil {
		t.Error("wal holds entry 99, compacted in raft.db")
	}
	// Entry 100 on, unchanged.
	bm, err := openBolt(filepath.Join(dir, boltMigrated))
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	for i := uint64(100); i <= last; i++ {
		var a, w raft.Log
		if err := errors.Join(bm.GetLog(i, &a), s.GetLog(i, &w)); err != nil || a.Term != w.Term || !bytes.Equal(a.Data, w.Data) {
			t.Fatalf("entry %d: wal %+v, bolt %+v, %v", i, w, a, err)
		}
	}

	empty := t.TempDir()
	e, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(empty, boltFile)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	es, err := raftlog.Open(context.Background(), empty, hclog.NewNullLogger(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(empty, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if has, err := raft.HasExistingState(es, es, snaps); err != nil || has {
		t.Errorf("empty raft.db migrated to existing state %v (%v)", has, err)
	}
	mustExist(t, empty, map[string]bool{boltFile: false, boltMigrated: true, walDir: true})
}

package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// snapshotState lists what a restore must carry over: devices, policies,
// decisions and the audit records, as the FSM serves them.
func snapshotState(t *testing.T, n *node) (devs []*medmeshv1.Device, pols []*medmeshv1.Policy, decs []*medmeshv1.Decision, audit []*medmeshv1.AuditRecord) {
	t.Helper()
	f := n.c.FSM()
	devs, _, _, _ = f.ListDevices("", 1<<20, func(*medmeshv1.Device) bool { return true })
	pols, _, _ = f.ListPolicies("", 1<<20, "")
	decs, _, _ = f.ListDecisions(0, 1<<20, func(*medmeshv1.Decision) bool { return true })
	audit, _, _, _ = f.ListAudit(0, 1<<20, "")
	return
}

func sameMessages[M proto.Message](t *testing.T, what string, want, got []M) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d restored, %d saved", what, len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			t.Fatalf("%s %d differs:\nsaved    %v\nrestored %v", what, i, want[i], got[i])
		}
	}
}

// TestSnapshotSaveRestoreNewCluster: a three-coordinator cluster with
// devices, policies, a decision and their audit records is saved through a
// follower (which relays the leader's archive); the archive restored into
// a fresh data directory starts a coordinator at the same index with the
// same state hash; two empty coordinators join it; the new cluster serves
// the same devices, policies, decisions and audit records, every replica's
// audit trail verifies, the data directory's other files came along, and
// the new cluster takes writes.
func TestSnapshotSaveRestoreNewCluster(t *testing.T) {
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	for i := 0; i < 30; i++ {
		put(t, cl.nodes[i%3], fmt.Sprintf("p-%d", i), fmt.Sprintf("v%d", i))
	}
	for b := 0; b < 2; b++ {
		var devs []*medmeshv1.Device
		for i := 0; i < 10; i++ {
			devs = append(devs, &medmeshv1.Device{Mac: fmt.Sprintf("00-1B-44-11-%02X-%02X", b, i), DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP,
				Location: &medmeshv1.Location{Floor: "3"}, Risk: &medmeshv1.RiskScore{Score: uint32(i * 5)}})
		}
		report(t, leader, "s1", uint64(1+10*b), devs...)
	}
	pol := &medmeshv1.Policy{Name: "pacs", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PACS}}
	if _, err := leader.c.ProposeDecision(ctxT(t, 5*time.Second), &medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, Policy: pol, Actor: "op"}, false); err != nil {
		t.Fatalf("decision: %v", err)
	}
	// A file of the data directory that is not Raft's: the risk bundle
	// store keeps content-addressed files like it.
	bundle := []byte(`{"bundle":"test","sha256":"x"}` + "\n")
	if err := os.MkdirAll(filepath.Join(leader.cfg.DataDir, "intel", "bundles"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leader.cfg.DataDir, "intel", "bundles", "ab12.json"), bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	wantDevs, wantPols, wantDecs, wantAudit := snapshotState(t, leader)
	if len(wantDevs) != 20 || len(wantPols) != 30 || len(wantDecs) == 0 || len(wantAudit) == 0 {
		t.Fatalf("source state: %d devices, %d policies, %d decisions, %d audit records", len(wantDevs), len(wantPols), len(wantDecs), len(wantAudit))
	}

	// Save through a follower.
	via := cl.followers()[0]
	stream, err := via.cluster().SaveSnapshot(ctxT(t, 30*time.Second), &medmeshv1.SaveSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	var sum *medmeshv1.SnapshotSummary
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("save via %s: %v", via.cfg.ID, err)
		}
		archive.Write(m.GetChunk())
		if m.GetSummary() != nil {
			sum = m.GetSummary()
		}
	}
	if sum == nil || sum.GetServedBy() != leader.cfg.ID || sum.GetFiles() < 3 {
		t.Fatalf("summary %v, want one from the leader %s with the state, meta, audit and bundle files", sum, leader.cfg.ID)
	}
	// Every source replica that applied the snapshot's index has its hash.
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		for _, n := range cl.nodes {
			h, err := n.c.FSM().Hash()
			if err != nil || n.c.FSM().AppliedIndex() != sum.GetIndex() || fmt.Sprintf("%x", h) != sum.GetStateHash() {
				return false
			}
		}
		return true
	}, "source replicas do not all hold state hash %s at index %d", sum.GetStateHash(), sum.GetIndex())

	// Restore into a fresh data directory of a new cluster's first node.
	base := t.TempDir()
	apis := []string{fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	first := testConfig("n1", filepath.Join(base, "n1"), apis[0], fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	res, err := RestoreSnapshot(bytes.NewReader(archive.Bytes()), RestoreOptions{DataDir: first.DataDir, ID: first.ID, RaftAddr: first.RaftAddr})
	if err != nil {
		t.Fatal(err)
	}
	if res.StateHash != sum.GetStateHash() || res.Index != sum.GetIndex() || res.AuditHeadSeq != sum.GetAuditHeadSeq() {
		t.Fatalf("restore %+v, save %v", res, sum)
	}
	// Refused a second time: the directory is no longer fresh.
	if _, err := RestoreSnapshot(bytes.NewReader(archive.Bytes()), RestoreOptions{DataDir: first.DataDir, ID: "n1", RaftAddr: first.RaftAddr}); err == nil {
		t.Fatal("restore into a used data directory succeeded")
	}
	// The coordinator starts from the snapshot: same index, same hash,
	// before it applies anything of its own.
	c, err := New(first, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.FSM().Hash()
	if err != nil || fmt.Sprintf("%x", h) != sum.GetStateHash() || c.FSM().AppliedIndex() != sum.GetIndex() {
		t.Fatalf("restored coordinator: hash %x at %d (%v), saved %s at %d", h, c.FSM().AppliedIndex(), err, sum.GetStateHash(), sum.GetIndex())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	ncl := &cluster{t: t}
	for i, id := range []string{"n1", "n2", "n3"} {
		cfg := first
		if i > 0 {
			cfg = testConfig(id, filepath.Join(base, id), apis[i], fmt.Sprintf("127.0.0.1:%d", freePort(t)))
			cfg.Join = apis[:1]
		}
		ncl.nodes = append(ncl.nodes, &node{t: t, cfg: cfg, conn: dialT(t, apis[i], pki.Files{}), raw: dialRawT(t, apis[i], pki.Files{})})
	}
	t.Cleanup(func() {
		for _, nd := range ncl.nodes {
			nd.stop(true)
			nd.conn.Close()
			nd.raw.Close()
		}
	})
	for _, nd := range ncl.nodes {
		nd.start()
	}
	ncl.waitReady()
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, func() bool {
		return ncl.nodes[0].c.voters() == 3
	}, "the new cluster never had three voters")
	nl := ncl.leader()
	for _, n := range ncl.nodes {
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
			return n.c.FSM().AppliedIndex() >= nl.c.FSM().AppliedIndex()
		}, "%s did not catch up", n.cfg.ID)
		devs, pols, decs, audit := snapshotState(t, n)
		sameMessages(t, n.cfg.ID+" device", wantDevs, devs)
		sameMessages(t, n.cfg.ID+" policy", wantPols, pols)
		sameMessages(t, n.cfg.ID+" decision", wantDecs, decs)
		if len(audit) < len(wantAudit) {
			t.Fatalf("%s: %d audit records, saved %d", n.cfg.ID, len(audit), len(wantAudit))
		}
		sameMessages(t, n.cfg.ID+" audit record", wantAudit, audit[:len(wantAudit)])
	}
	got, err := os.ReadFile(filepath.Join(first.DataDir, "intel", "bundles", "ab12.json"))
	if err != nil || !bytes.Equal(got, bundle) {
		t.Fatalf("bundle file after restore: %q, %v", got, err)
	}
	// Writable, and every replica's trail verifies (what `medmesh audit
	// verify --data-dir` runs).
	put(t, ncl.nodes[2], "after-restore", "v")
	// The write is committed on a quorum when put returns; wait until every
	// replica has applied it before stopping them.
	nl = ncl.leader()
	for _, n := range ncl.nodes {
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
			return n.c.FSM().AppliedIndex() >= nl.c.FSM().AppliedIndex()
		}, "%s did not apply the write after restore", n.cfg.ID)
	}
	for _, n := range ncl.nodes {
		n.stop(false)
		rep, err := VerifyAudit(n.cfg.DataDir)
		if err != nil || rep.Break != nil {
			t.Fatalf("%s audit: %+v, %v", n.cfg.ID, rep, err)
		}
		if rep.Head.Seq <= sum.GetAuditHeadSeq() {
			t.Fatalf("%s audit head %d, saved head %d and a write since", n.cfg.ID, rep.Head.Seq, sum.GetAuditHeadSeq())
		}
		if n.cfg.ID == "n1" && (rep.First != 1 || len(rep.Gaps) != 0) {
			t.Fatalf("n1 restored the whole trail, got %+v", rep)
		}
	}
}

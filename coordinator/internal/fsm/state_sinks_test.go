package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func sinkPut(name string, fromStart bool) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_SinkPut{SinkPut: &fsmpb.SinkPut{
		Sink:  &medmeshv1.Sink{Name: name, Kind: medmeshv1.SinkKind_SINK_KIND_SYSLOG, Address: "127.0.0.1:6514", Tls: true, CaFile: "/etc/medmesh/ca.pem"},
		Actor: "approver/carol", Reason: "siem", StartAtBeginning: fromStart,
	}}}
}

func sinkProgress(name string, alertPos, auditSeq uint64) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_SinkProgress{SinkProgress: &fsmpb.SinkProgress{Positions: []*fsmpb.SinkPosition{
		{Name: name, AlertPosition: alertPos, AuditSeq: auditSeq},
	}}}}
}

func sinkOf(t *testing.T, f *FSM, name string) *medmeshv1.Sink {
	t.Helper()
	ss, _ := f.Sinks()
	for _, s := range ss {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// TestSinkTableAndProgress: a new sink starts at the end of what is
// committed (or at the beginning when asked), its changes are audited and
// keep its positions, progress only moves forward and never past what is
// committed, and everything survives a snapshot.
func TestSinkTableAndProgress(t *testing.T) {
	l := newLog(t)
	l.ok(alertIngest("a1", mac1, "scan", 50))
	l.ok(alertIngest("a2", mac1, "scan", 50))
	head := l.f.AuditHead().Seq
	l.ok(sinkPut("siem", false))
	s := sinkOf(t, l.f, "siem")
	if s.GetAlertPosition() != 2 || s.GetAuditSeq() != head || s.GetVersion() != 1 || s.GetUpdatedBy() != "approver/carol" {
		t.Fatalf("new sink %v: want alert position 2, audit seq %d", s, head)
	}
	// Its own put is the first audit record it delivers.
	recs, _, _, _ := l.f.ListAudit(s.GetAuditSeq(), 10, "")
	if len(recs) != 1 || recs[0].GetAction() != "sink.put" || recs[0].GetResource() != "sink/siem" {
		t.Fatalf("audit after the sink's position: %v", recs)
	}
	l.ok(sinkPut("all", true))
	if a := sinkOf(t, l.f, "all"); a.GetAlertPosition() != 0 || a.GetAuditSeq() != 0 {
		t.Fatalf("start_at_beginning: %v", a)
	}
	l.ok(alertIngest("a3", mac1, "scan", 50))
	l.ok(sinkProgress("siem", 3, head+1))
	l.ok(sinkProgress("siem", 1, 0)) // a deposed leader's late batch
	l.ok(sinkProgress("siem", 99, 999))
	l.ok(sinkProgress("gone", 1, 1))
	s = sinkOf(t, l.f, "siem")
	if s.GetAlertPosition() != 3 || s.GetAuditSeq() != l.f.AuditHead().Seq {
		t.Fatalf("progress: %v (audit head %d)", s, l.f.AuditHead().Seq)
	}
	// Replacing the destination keeps the positions.
	put := sinkPut("siem", true)
	put.GetSinkPut().GetSink().Address = "10.0.0.1:6514"
	l.ok(put)
	s = sinkOf(t, l.f, "siem")
	if s.GetAlertPosition() != 3 || s.GetVersion() != 2 || s.GetAddress() != "10.0.0.1:6514" {
		t.Fatalf("replaced sink: %v", s)
	}
	bad := sinkPut("Bad Name", false)
	if r := l.apply(bad); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("invalid sink: %v", r.Err)
	}
	del := &fsmpb.Command{Command: &fsmpb.Command_SinkDelete{SinkDelete: &fsmpb.SinkDelete{Name: "all", Actor: "approver/carol"}}}
	l.ok(del)
	if r := l.apply(del); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("delete twice: %v", r.Err)
	}
	recs, _, _, _ = l.f.ListAudit(0, 100, "sink/all")
	if len(recs) != 2 || recs[1].GetAction() != "sink.delete" {
		t.Fatalf("sink/all audit: %v", recs)
	}

	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	buf := &memSink{failAfter: -1}
	if err := snap.Persist(buf); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	h1, _ := l.f.Hash()
	h2, _ := g.Hash()
	if h1 != h2 || sinkOf(t, g, "siem").GetAlertPosition() != 3 || sinkOf(t, g, "all") != nil {
		t.Fatal("sinks did not survive the snapshot")
	}
	// The hash covers the positions.
	a4 := l.ok(alertIngest("a4", mac1, "scan", 50))
	a4cmd := alertIngest("a4", mac1, "scan", 50)
	a4cmd.Time = a4.Alert.GetCreateTime()
	g.ApplyCommand(a4.Index, a4cmd)
	if h1, _ = l.f.Hash(); true {
		h2, _ = g.Hash()
		if h1 != h2 {
			t.Fatal("replicas diverged")
		}
	}
	l.ok(sinkProgress("siem", 4, 0))
	if h1, _ = l.f.Hash(); h1 == h2 {
		t.Fatal("hash ignores a sink's position")
	}
}

// TestSinkAlertOpensNoIncident: the leader's sink_stuck alert is committed
// once per id, belongs to no device and no incident, and makes no decision.
func TestSinkAlertOpensNoIncident(t *testing.T) {
	l := newLog(t)
	l.ok(seed())
	cmd := func(kind string) *fsmpb.Command {
		return &fsmpb.Command{Command: &fsmpb.Command_SinkAlert{SinkAlert: &fsmpb.SinkAlert{Alert: &medmeshv1.Alert{
			Id: "sink-stuck/siem/3-9", Kind: kind, DeviceMac: mac1, Risk: &medmeshv1.RiskScore{Score: 100}, Summary: "sink siem is stuck",
		}}}}
	}
	if r := l.apply(cmd("scan")); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("a sink alert of another kind: %v", r.Err)
	}
	decisions := len(l.f.st.decisions)
	r := l.ok(cmd("sink_stuck"))
	if r.Alert.GetIndex() != r.Index || r.Alert.GetDeviceMac() != "" || r.Alert.GetIncidentId() != "" {
		t.Fatalf("sink alert %v", r.Alert)
	}
	l.ok(cmd("sink_stuck"))
	if l.f.AlertEnd() != 1 || len(l.f.st.inc.byID) != 0 || len(l.f.st.decisions) != decisions {
		t.Fatalf("alerts %d, incidents %d, decisions %d -> %d", l.f.AlertEnd(), len(l.f.st.inc.byID), decisions, len(l.f.st.decisions))
	}
}

func postureProgress(name string, idx uint64, mac string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_SinkProgress{SinkProgress: &fsmpb.SinkProgress{Positions: []*fsmpb.SinkPosition{
		{Name: name, PostureIndex: idx, PostureMac: mac},
	}}}}
}

// TestSinkPosturePosition: a new sink's posture position is its own put
// (postures committed before it are not its findings; --from-start takes
// every current posture), progress moves forward in (index, MAC) order,
// never to an index not yet committed, a replaced sink keeps it, and the
// snapshot and the state hash cover it.
func TestSinkPosturePosition(t *testing.T) {
	l := newLog(t)
	const m1, m2 = "00:00:00:00:00:01", "00:00:00:00:00:02"
	l.ok(upsert("s1", pump(m1)))
	l.ok(upsert("s1", pump(m2)))
	l.ok(activateIntel(digestA))
	before := l.ok(findingsPut(postureOf(m1, digestA, 2), postureOf(m2, digestA, 1)))
	put := l.ok(sinkPut("siem", false))
	s := sinkOf(t, l.f, "siem")
	if s.GetPostureIndex() != put.Index || s.GetPostureMac() != "" {
		t.Fatalf("new sink posture position %d/%q, want %d/\"\"", s.GetPostureIndex(), s.GetPostureMac(), put.Index)
	}
	if ps, _ := l.f.PosturesChanged(s.GetPostureIndex(), s.GetPostureMac()); len(ps) != 0 {
		t.Fatalf("postures committed before the sink are after its position: %v", ps)
	}
	l.ok(sinkPut("all", true))
	if a := sinkOf(t, l.f, "all"); a.GetPostureIndex() != 0 || a.GetPostureMac() != "" {
		t.Fatalf("start_at_beginning posture position %d/%q", a.GetPostureIndex(), a.GetPostureMac())
	}
	after := l.ok(findingsPut(postureOf(m1, digestA, 3), postureOf(m2, digestA, 0)))
	if ps, _ := l.f.PosturesChanged(put.Index, ""); len(ps) != 2 || ps[0].GetIndex() != after.Index || ps[0].GetDeviceMac() != m1 {
		t.Fatalf("postures after the sink: %v", ps)
	}
	l.ok(postureProgress("siem", after.Index, m1))
	l.ok(postureProgress("siem", before.Index, m2)) // a deposed leader's late batch
	s = sinkOf(t, l.f, "siem")
	if s.GetPostureIndex() != after.Index || s.GetPostureMac() != m1 {
		t.Fatalf("posture progress %d/%q, want %d/%s", s.GetPostureIndex(), s.GetPostureMac(), after.Index, m1)
	}
	// Not past what is committed: no posture is at this entry's index.
	r := l.ok(postureProgress("siem", l.idx+1, m1))
	if s = sinkOf(t, l.f, "siem"); s.GetPostureIndex() != after.Index {
		t.Fatalf("posture position moved to %d, at or past the progress entry %d", s.GetPostureIndex(), r.Index)
	}
	l.ok(postureProgress("siem", after.Index, m2))
	// The alert and audit positions did not move with it.
	if s = sinkOf(t, l.f, "siem"); s.GetPostureMac() != m2 || s.GetAlertPosition() != 0 || s.GetAuditSeq() == 0 {
		t.Fatalf("after posture progress: %v", s)
	}
	rep := sinkPut("siem", true)
	rep.GetSinkPut().GetSink().Events = []string{"finding"}
	l.ok(rep)
	if s = sinkOf(t, l.f, "siem"); s.GetPostureIndex() != after.Index || s.GetPostureMac() != m2 {
		t.Fatalf("replaced sink lost its posture position: %v", s)
	}

	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	buf := &memSink{failAfter: -1}
	if err := snap.Persist(buf); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	h1, _ := l.f.Hash()
	h2, _ := g.Hash()
	if h1 != h2 || sinkOf(t, g, "siem").GetPostureMac() != m2 || sinkOf(t, g, "siem").GetPostureIndex() != after.Index {
		t.Fatal("the posture position did not survive the snapshot")
	}
	next := l.ok(findingsPut(postureOf(m1, digestA, 1)))
	h3, _ := l.f.Hash()
	l.ok(postureProgress("siem", next.Index, m1))
	if h4, _ := l.f.Hash(); h4 == h3 {
		t.Fatal("hash ignores a sink's posture position")
	}
}

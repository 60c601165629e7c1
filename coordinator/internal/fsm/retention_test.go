package fsm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var day0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

type clockLog struct {
	t     *testing.T
	f     *FSM
	index uint64
	log   []*fsmpb.Command
}

func (c *clockLog) at(days int, cmd *fsmpb.Command) *Result {
	c.t.Helper()
	c.index++
	cmd.Time = timestamppb.New(day0.Add(time.Duration(days) * 24 * time.Hour))
	c.log = append(c.log, cmd)
	return c.f.ApplyCommand(c.index, cmd)
}

func alertCmd(id, mac string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_AlertIngest{AlertIngest: &fsmpb.AlertIngest{Alert: &medmeshv1.Alert{Id: id, DeviceMac: mac, Kind: "scan"}}}}
}

func decisionCmd(id, mac string, action medmeshv1.DecisionAction, peer string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_DecisionCreate{DecisionCreate: &fsmpb.DecisionCreate{Decision: &medmeshv1.Decision{
		Id: id, DeviceMac: mac, Action: action, PeerCidr: peer, Actor: "operator/alice",
	}}}}
}

// Alerts past 90 days of leader time are evicted; positions count every
// alert, so a page token taken before eviction stays meaningful.
func TestAlertRetentionByAgeKeepsPositions(t *testing.T) {
	c := &clockLog{t: t, f: New()}
	for d := range 100 {
		c.at(d, alertCmd("a"+uitoa(uint64(d)), "02:00:00:00:00:01"))
	}
	if c.f.Alert("a8") != nil || c.f.Alert("a9") == nil {
		t.Fatalf("day 99: alert a8 should be evicted, a9 (exactly 90 days old) kept")
	}
	page, last, _, _ := c.f.ListAlerts(0, 5, func(*medmeshv1.Alert) bool { return true })
	if page[0].GetId() != "a9" || last != 14 {
		t.Fatalf("list from 0: first %s, last position %d; want a9 and 14", page[0].GetId(), last)
	}
	page, _, _ = c.f.AlertsFrom(last, 1)
	if page[0].GetId() != "a14" {
		t.Fatalf("resume at position 14: %s", page[0].GetId())
	}
	if pos := c.f.AlertPosition(page[0].GetIndex()); pos != 15 {
		t.Fatalf("AlertPosition %d, want 15", pos)
	}
	c.f.SetRetention(Retention{MaxAlerts: 10})
	c.at(100, alertCmd("a100", "02:00:00:00:00:01"))
	if page, first, _ := c.f.AlertsFrom(0, 100); len(page) != 10 || first != 91 {
		t.Fatalf("count cap: %d alerts from position %d", len(page), first)
	}
}

// Decisions not in force go after 90 days; a pending decision and the
// latest decision of each slot stay forever.
func TestDecisionCompactionKeepsWhatIsInForce(t *testing.T) {
	c := &clockLog{t: t, f: New()}
	const mac = "02:00:00:00:00:02"
	c.at(0, &fsmpb.Command{Command: &fsmpb.Command_DeviceUpsert{DeviceUpsert: &fsmpb.DeviceUpsert{Device: &medmeshv1.Device{
		Mac: mac, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}}}})
	c.at(0, decisionCmd("q1", mac, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, ""))
	c.at(1, decisionCmd("r1", mac, medmeshv1.DecisionAction_DECISION_ACTION_RELEASE, ""))
	c.at(1, decisionCmd("b1", mac, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, "203.0.113.7/32"))
	c.at(2, decisionCmd("b2", mac, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, "203.0.113.8/32"))
	c.at(3, decisionCmd("u2", mac, medmeshv1.DecisionAction_DECISION_ACTION_UNBLOCK_PEER, "203.0.113.8/32"))
	c.at(3, decisionCmd("n1", mac, medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY, ""))
	pending := decisionCmd("p1", mac, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, "")
	pending.GetDecisionCreate().Decision.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
	c.at(4, pending)
	c.at(95, alertCmd("late", mac))
	for id, want := range map[string]bool{"q1": false, "r1": true, "b1": true, "b2": false, "u2": true, "n1": false, "p1": true} {
		if got := c.f.Decision(id) != nil; got != want {
			t.Errorf("decision %s kept = %v, want %v", id, got, want)
		}
	}
	ds, _, _ := c.f.ListDecisions(0, 100, func(*medmeshv1.Decision) bool { return true })
	for i := 1; i < len(ds); i++ {
		if ds[i].GetIndex() <= ds[i-1].GetIndex() {
			t.Fatalf("decision log out of index order after compaction")
		}
	}
}

// Replicas that apply the same log hold the same state and write identical
// audit segments, and the chain verifies.
func TestAuditStoreIdenticalOnReplicas(t *testing.T) {
	var dirs []string
	var hashes [][32]byte
	for range 2 {
		dir := t.TempDir()
		store, err := auditlog.Open(dir, auditlog.Options{MaxSegmentBytes: 2 << 10})
		if err != nil {
			t.Fatal(err)
		}
		c := &clockLog{t: t, f: New()}
		c.f.SetAuditStore(store)
		c.f.SetRetention(Retention{AuditWindow: 8})
		for d := range 40 {
			c.at(d, alertCmd("a"+uitoa(uint64(d)), "02:00:00:00:00:03"))
			c.at(d, &fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: "a" + uitoa(uint64(d)), Actor: "operator/bob"}}})
		}
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
		rep, err := auditlog.Verify(dir)
		if err != nil || rep.Break != nil || rep.Records != 40 || rep.Head != c.f.AuditHead() {
			t.Fatalf("verify: %v %+v", err, rep)
		}
		page, _, _, _ := c.f.ListAudit(0, 100, "")
		if len(page) > 10 || page[len(page)-1].GetResource() != "alert/a39" {
			t.Fatalf("window: %d records", len(page))
		}
		h, _ := c.f.Hash()
		dirs, hashes = append(dirs, dir), append(hashes, h)
	}
	if hashes[0] != hashes[1] {
		t.Fatal("replicas' state hashes differ")
	}
	a, _ := os.ReadFile(filepath.Join(dirs[0], "00000002.seg"))
	b, _ := os.ReadFile(filepath.Join(dirs[1], "00000002.seg"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("replicas' audit segments differ")
	}
}

// A fresh replica restored from a snapshot holds the window's records and
// an anchor for those it never saw; its chain continues and verifies.
func TestRestoreCatchesUpAuditStore(t *testing.T) {
	c := &clockLog{t: t, f: New()}
	c.f.SetRetention(Retention{AuditWindow: 4})
	for d := range 20 {
		c.at(d, alertCmd("a"+uitoa(uint64(d)), "02:00:00:00:00:04"))
		c.at(d, &fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: "a" + uitoa(uint64(d)), Actor: "operator/bob"}}})
	}
	var buf bytes.Buffer
	st := c.f.st.shallowCopy()
	if err := st.write(&buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, _ := auditlog.Open(dir, auditlog.Options{})
	fresh := New()
	fresh.SetAuditStore(store)
	if err := fresh.Restore(nopCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	if fresh.AuditHead() != c.f.AuditHead() {
		t.Fatalf("restored head %v, want %v", fresh.AuditHead(), c.f.AuditHead())
	}
	c2 := &clockLog{t: t, f: fresh, index: c.index}
	c2.at(21, &fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: "a19", Actor: "operator/carol"}}})
	store.Close()
	rep, err := auditlog.Verify(dir)
	if err != nil || rep.Break != nil {
		t.Fatalf("verify: %v %v", err, rep.Break)
	}
	if len(rep.Gaps) != 1 || rep.Gaps[0].To != 20-uint64(len(c.f.st.audit)) || rep.Head != fresh.AuditHead() {
		t.Fatalf("report %+v", rep)
	}
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

type failingStore struct{}

func (failingStore) Append(auditlog.Entry) error { return errors.New("disk full") }
func (failingStore) Adopt(auditlog.Head) error   { return nil }
func (failingStore) Sync() error                 { return nil }

// Audit fails closed: a record that cannot be written stops the apply.
func TestAuditWriteFailureStopsApply(t *testing.T) {
	c := &clockLog{t: t, f: New()}
	c.f.SetAuditStore(failingStore{})
	c.at(0, alertCmd("a", "02:00:00:00:00:05")) // no audit record: fine
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("an unwritable audit record did not stop the apply")
		}
	}()
	c.at(0, &fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: "a", Actor: "operator/bob"}}})
}

// The two-person rule still knows which sensor caused a pending decision
// after its alert is evicted.
func TestTwoPersonRuleSurvivesAlertEviction(t *testing.T) {
	c := &clockLog{t: t, f: New()}
	const mac = "02:00:00:00:00:06"
	c.at(0, &fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: []*fsmpb.SensorReport{{
		SensorId: "s1", Records: []*medmeshv1.SensorRecord{{Seq: 1, Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{Id: "s1/1", DeviceMac: mac, Kind: "scan"}}}},
	}}}}})
	d := decisionCmd("p1", mac, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, "")
	d.GetDecisionCreate().Decision.AlertId = "s1/1"
	d.GetDecisionCreate().Automatic = true
	if res := c.at(0, d); res.Decision.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("state %v", res.Decision.GetState())
	}
	c.at(120, alertCmd("later", mac))
	if c.f.Alert("s1/1") != nil {
		t.Fatal("alert not evicted")
	}
	res := c.at(120, &fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
		TargetId: "p1", Approve: true, Actor: SensorIdentity("s1"), DecisionId: "r1", TwoPerson: true,
	}}})
	if !errors.Is(res.Err, ErrPermissionDenied) {
		t.Fatalf("review by the causing sensor: %v", res.Err)
	}
	var buf bytes.Buffer
	if err := c.f.st.shallowCopy().write(&buf); err != nil {
		t.Fatal(err)
	}
	st, err := readSnapshot(&buf)
	if err != nil || st.pendingCause["p1"] != SensorIdentity("s1") {
		t.Fatalf("restored pending cause: %v %v", err, st.pendingCause)
	}
}

package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func acceptException(kind medmeshv1.ExceptionTargetKind, target string, expire time.Time) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_ExceptionAccept{ExceptionAccept: &fsmpb.ExceptionAccept{
		Exception: &medmeshv1.RiskException{TargetKind: kind, Target: target, Owner: "biomed team", Reason: "vendor patch due in Q3", ExpireTime: timestamppb.New(expire)},
		Actor:     "approver/carol",
	}}}
}

// at stamps a command with a leader time, as the leader does.
func stampAt(cmd *fsmpb.Command, t time.Time) *fsmpb.Command {
	cmd.Time = timestamppb.New(t)
	return cmd
}

// TestExceptionLifecycle: accept, expire by leader time (days compressed
// into a log), reappear, revoke; each step audited; refusals change
// nothing; retries apply once; snapshot and hash keep it all.
func TestExceptionLifecycle(t *testing.T) {
	l := newLog(t)
	day0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	action := medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION
	finding := medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING

	// Refusals.
	for name, cmd := range map[string]*fsmpb.Command{
		"past expiry":   acceptException(action, "patch:x", day0.Add(-time.Hour)),
		"too far ahead": acceptException(action, "patch:x", day0.Add(ExceptionMaxTerm+time.Hour)),
		"no target":     acceptException(action, " ", day0.Add(time.Hour)),
		"no kind":       acceptException(medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_UNSPECIFIED, "patch:x", day0.Add(time.Hour)),
	} {
		if r := l.apply(stampAt(cmd, day0)); !errors.Is(r.Err, ErrInvalid) {
			t.Fatalf("%s: %v", name, r.Err)
		}
	}
	if ex, _ := l.f.Exceptions(); len(ex) != 0 {
		t.Fatalf("a refused accept stored %v", ex)
	}

	// Accept an action for 3 days, retried once with the same request id.
	cmd := stampAt(acceptException(action, "patch:B. Braun/Space@1.2.5", day0.Add(72*time.Hour)), day0)
	cmd.Request = &fsmpb.ClientRequest{Identity: "approver/carol", Id: "acc-1"}
	first := l.ok(cmd)
	e := first.Exception
	if e.GetId() == "" || e.GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE || e.GetAcceptedBy() != "approver/carol" || !e.GetAcceptTime().AsTime().Equal(day0) {
		t.Fatalf("accepted %v", e)
	}
	again := l.ok(stampAt(proto.CloneOf(cmd), day0.Add(time.Second)))
	if !again.Duplicate || again.Exception.GetId() != e.GetId() {
		t.Fatalf("retry: duplicate=%v %v", again.Duplicate, again.Exception)
	}
	if r := l.apply(stampAt(acceptException(action, "patch:B. Braun/Space@1.2.5", day0.Add(48*time.Hour)), day0.Add(time.Minute))); !errors.Is(r.Err, ErrFailedPrecondition) {
		t.Fatalf("second exception for the same action: %v", r.Err)
	}
	fe := l.ok(stampAt(acceptException(finding, "CVE-2026-0001", day0.Add(30*24*time.Hour)), day0.Add(2*time.Minute))).Exception

	// Two days later nothing expired; a day after the expiry an unrelated
	// write (here the leader's ExceptionsExpire) ends it at leader time.
	l.ok(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionsExpire{ExceptionsExpire: &fsmpb.ExceptionsExpire{}}}, day0.Add(48*time.Hour)))
	if l.f.ExceptionDue(day0.Add(48 * time.Hour)) {
		t.Fatal("due before its expiry")
	}
	if !l.f.ExceptionDue(day0.Add(72 * time.Hour)) {
		t.Fatal("not due at its expiry")
	}
	expireAt := day0.Add(73 * time.Hour)
	l.ok(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionsExpire{ExceptionsExpire: &fsmpb.ExceptionsExpire{}}}, expireAt))
	ex, _ := l.f.Exceptions()
	if len(ex) != 2 || ex[0].GetId() != e.GetId() || ex[0].GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_EXPIRED || !ex[0].GetEndTime().AsTime().Equal(expireAt) || ex[1].GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE {
		t.Fatalf("after expiry: %v", ex)
	}
	// Expired, the action may be accepted again (it reappeared).
	re := l.ok(stampAt(acceptException(action, "patch:B. Braun/Space@1.2.5", day0.Add(10*24*time.Hour)), expireAt.Add(time.Hour))).Exception
	// Revoke the finding's exception; revoking twice or an unknown id fails.
	if r := l.apply(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionRevoke{ExceptionRevoke: &fsmpb.ExceptionRevoke{Id: fe.GetId(), Actor: "approver/dan"}}}, expireAt.Add(2*time.Hour))); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("revoke without a reason: %v", r.Err)
	}
	rv := l.ok(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionRevoke{ExceptionRevoke: &fsmpb.ExceptionRevoke{Id: fe.GetId(), Actor: "approver/dan", Reason: "patch installed"}}}, expireAt.Add(2*time.Hour))).Exception
	if rv.GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_REVOKED || rv.GetEndedBy() != "approver/dan" {
		t.Fatalf("revoked %v", rv)
	}
	if r := l.apply(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionRevoke{ExceptionRevoke: &fsmpb.ExceptionRevoke{Id: fe.GetId(), Actor: "approver/dan", Reason: "again"}}}, expireAt.Add(3*time.Hour))); !errors.Is(r.Err, ErrFailedPrecondition) {
		t.Fatalf("second revoke: %v", r.Err)
	}
	if r := l.apply(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionRevoke{ExceptionRevoke: &fsmpb.ExceptionRevoke{Id: "exc-999", Actor: "approver/dan", Reason: "x"}}}, expireAt.Add(3*time.Hour))); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("unknown revoke: %v", r.Err)
	}

	// Every step is in the audit trail, in order, with who and when.
	all, _, _, _ := l.f.ListAudit(0, 1000, "")
	var steps []string
	var recs []*medmeshv1.AuditRecord
	for _, r := range all {
		if strings.HasPrefix(r.GetResource(), "exception/") {
			recs = append(recs, r)
			steps = append(steps, r.GetAction()+" "+r.GetActor()+" "+r.GetResource())
		}
	}
	want := []string{
		"exception.accept approver/carol exception/" + e.GetId(),
		"exception.accept approver/carol exception/" + fe.GetId(),
		"exception.expire leader exception/" + e.GetId(),
		"exception.accept approver/carol exception/" + re.GetId(),
		"exception.revoke approver/dan exception/" + fe.GetId(),
	}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit trail:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
	if recs[0].GetRequestId() != "acc-1" || !recs[2].GetTime().AsTime().Equal(expireAt) || !strings.Contains(recs[2].GetComment(), "action patch:B. Braun/Space@1.2.5 is back in the plan") {
		t.Fatalf("audit records lack the request id or leader time: %v / %v", recs[0], recs[2])
	}

	checkRoundTrip(t, l)

	// Ended exceptions are forgotten EndedExceptionAge after they ended;
	// the re-accepted one expires on the way (audited).
	l.ok(stampAt(&fsmpb.Command{Command: &fsmpb.Command_ExceptionsExpire{ExceptionsExpire: &fsmpb.ExceptionsExpire{}}}, expireAt.Add(EndedExceptionAge+3*time.Hour)))
	if ex, _ := l.f.Exceptions(); len(ex) != 1 || ex[0].GetId() != re.GetId() || ex[0].GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_EXPIRED {
		t.Fatalf("after the ended ones aged out: %v", ex)
	}
	checkRoundTrip(t, l)
}

// TestTrendBoundedDaily: one point a day (the day's latest record), the
// day from leader time, at most MaxTrendDays kept; 120 days compressed.
func TestTrendBoundedDaily(t *testing.T) {
	l := newLog(t)
	day0 := time.Date(2026, 1, 1, 23, 30, 0, 0, time.UTC)
	rec := func(t0 time.Time, met uint32) *fsmpb.Command {
		return stampAt(&fsmpb.Command{Command: &fsmpb.Command_TrendRecord{TrendRecord: &fsmpb.TrendRecord{Point: &medmeshv1.TrendPoint{Day: "1999-01-01", Devices: 10, ControlsMet: met}}}}, t0)
	}
	for d := range 120 {
		l.ok(rec(day0.AddDate(0, 0, d), 9999))
		l.ok(rec(day0.AddDate(0, 0, d).Add(10*time.Minute), uint32(d))) // same UTC day: replaces
	}
	pts, _ := l.f.Trend()
	if len(pts) != MaxTrendDays {
		t.Fatalf("%d points kept, want %d", len(pts), MaxTrendDays)
	}
	if pts[0].GetDay() != "2026-01-31" || pts[len(pts)-1].GetDay() != "2026-04-30" {
		t.Fatalf("kept %s..%s", pts[0].GetDay(), pts[len(pts)-1].GetDay())
	}
	for i, p := range pts {
		if p.GetControlsMet() != uint32(30+i) || p.GetIndex() == 0 {
			t.Fatalf("point %d (%s): met %d index %d: the day's latest record must be kept", i, p.GetDay(), p.GetControlsMet(), p.GetIndex())
		}
	}
	if !l.f.HasTrendDay("2026-04-30") || l.f.HasTrendDay("2026-01-30") {
		t.Fatal("HasTrendDay")
	}
	// A record stamped with an earlier day (a new leader whose clock is
	// behind) replaces that day in place, keeping the order.
	l.ok(rec(time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC), 1))
	pts2, _ := l.f.Trend()
	if len(pts2) != MaxTrendDays || pts2[43].GetDay() != "2026-03-15" || pts2[43].GetControlsMet() != 1 || !proto.Equal(pts2[44], pts[44]) {
		t.Fatalf("late record: %v", pts2[43])
	}
	checkRoundTrip(t, l)
}

// checkRoundTrip: a snapshot restores an equal state, and the hash covers
// the compliance state (changing it changes the hash).
func checkRoundTrip(t *testing.T, l *log) {
	t.Helper()
	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	h1, _ := l.f.Hash()
	h2, _ := g.Hash()
	if h1 != h2 {
		t.Fatal("restored state hash differs")
	}
	e1, _ := l.f.Exceptions()
	e2, _ := g.Exceptions()
	t1, _ := l.f.Trend()
	t2, _ := g.Trend()
	if len(e1) != len(e2) || len(t1) != len(t2) {
		t.Fatalf("restored %d exceptions %d points, want %d %d", len(e2), len(t2), len(e1), len(t1))
	}
	for i := range e1 {
		if !proto.Equal(e1[i], e2[i]) {
			t.Fatalf("exception %d differs after restore", i)
		}
	}
	for i := range t1 {
		if !proto.Equal(t1[i], t2[i]) {
			t.Fatalf("trend point %d differs after restore", i)
		}
	}
	// The hash covers it: a state differing only in compliance hashes
	// differently.
	st := g.st.shallowCopy()
	if len(st.comp.trend) > 0 {
		st.comp.trend = st.comp.trend[1:]
	} else {
		for k := range st.comp.exceptions {
			delete(st.comp.exceptions, k)
		}
	}
	h3, err := st.hash()
	if err != nil {
		t.Fatal(err)
	}
	if h3 == h1 {
		t.Fatal("the state hash does not cover the compliance state")
	}
}

// TestMDS2Attach: an MDS2 form's answers attach to a model (case-folded),
// replace the one before, are audited, refused without a model or with a
// bad digest, and survive a snapshot.
func TestMDS2Attach(t *testing.T) {
	l := newLog(t)
	att := func(model, digest string, n int) *fsmpb.Command {
		a := &medmeshv1.MDS2Attachment{Name: "pump.xlsx", Digest: digest, Manufacturer: "B. Braun", Model: model}
		for i := range n {
			a.Answers = append(a.Answers, &medmeshv1.MDS2Answer{Id: "TXCF-" + string(rune('1'+i)), Answer: "No"})
		}
		return &fsmpb.Command{Command: &fsmpb.Command_Mds2Attach{Mds2Attach: &fsmpb.MDS2Attach{Attachment: a, Actor: "operator/alice", Reason: "vendor MDS2 2026"}}}
	}
	if r := l.apply(att("", digestA, 1)); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("without a model: %v", r.Err)
	}
	if r := l.apply(att("Space", "x", 1)); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("bad digest: %v", r.Err)
	}
	l.ok(att("Space", digestA, 2))
	r := l.ok(att("SPACE ", digestB, 3))
	ms, _ := l.f.MDS2s()
	if len(ms) != 1 || ms[0].GetDigest() != digestB || len(ms[0].GetAnswers()) != 3 || ms[0].GetIndex() != r.Index || ms[0].GetAttachedBy() != "operator/alice" {
		t.Fatalf("attachments %v", ms)
	}
	recs, _, _, _ := l.f.ListAudit(0, 100, "mds2/B. Braun/Space")
	if len(recs) != 1 || recs[0].GetAction() != "mds2.attach" {
		t.Fatalf("audit %v", recs)
	}
	snap, _ := l.f.Snapshot()
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	gm, _ := g.MDS2s()
	h1, _ := l.f.Hash()
	h2, _ := g.Hash()
	if h1 != h2 || len(gm) != 1 || !proto.Equal(gm[0], ms[0]) {
		t.Fatal("MDS2 attachment lost in a snapshot")
	}
}

// TestComplianceViewIsOneIndex takes compliance views while alerts, device
// upserts, policies and acknowledgements commit, and checks that each view
// holds exactly what was applied up to its index, no more and no less.
func TestComplianceViewIsOneIndex(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	const entries = 3000
	// What entry i commits (i from 2): an alert about mac1; every 10th
	// entry instead acknowledges the alert before it; every 7th a new
	// device; every 50th a device policy for mac1 flipping its mode.
	type counts struct{ alerts, acked, devices, mode int }
	expect := make([]counts, entries+2) // by index
	expect[1] = counts{devices: 1}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := expect[1]
		var lastAlert string
		for i := 2; i < entries+2; i++ {
			// expect[i] is written before entry i applies: the FSM's lock
			// orders it before any view that sees index i.
			var cmd *fsmpb.Command
			switch {
			case i%50 == 0:
				mode := medmeshv1.PolicyMode_POLICY_MODE_MONITOR
				if c.mode == int(mode) {
					mode = medmeshv1.PolicyMode_POLICY_MODE_ENFORCE
				}
				p := policy("device/"+mac1, mac1)
				p.Mode = mode
				cmd = &fsmpb.Command{Command: &fsmpb.Command_PolicyPut{PolicyPut: &fsmpb.PolicyPut{Policy: p, Actor: "approver/alice", TwoPerson: true, DecisionId: fmt.Sprintf("d%d", i)}}}
				c.mode = int(mode)
			case i%10 == 0 && lastAlert != "":
				cmd = &fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: lastAlert, Actor: "t"}}}
				c.acked++
				lastAlert = ""
			case i%7 == 0:
				cmd = upsert("s1", pump(fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)))
				c.devices++
			default:
				id := fmt.Sprintf("s1/%d", i)
				cmd = &fsmpb.Command{Command: &fsmpb.Command_AlertIngest{AlertIngest: &fsmpb.AlertIngest{Alert: &medmeshv1.Alert{Id: id, DeviceMac: mac1, Kind: "new_peer"}}}}
				c.alerts++
				lastAlert = id
			}
			expect[i] = c
			l.ok(cmd)
		}
	}()
	views := 0
	for running := true; running; views++ {
		select {
		case <-done:
			running = false
		default:
		}
		v := l.f.ComplianceView()
		want := expect[v.Index]
		if running && v.Index < 2 {
			continue
		}
		got := counts{alerts: len(v.Alerts[mac1]), devices: len(v.Devices), mode: int(v.DevicePolicies[mac1].GetMode())}
		for _, a := range v.Alerts[mac1] {
			if a.GetState() == medmeshv1.AlertState_ALERT_STATE_ACKNOWLEDGED {
				got.acked++
			}
		}
		if got != want {
			t.Fatalf("view at index %d holds %+v, the state at that index is %+v", v.Index, got, want)
		}
	}
	t.Logf("%d views, each the state at its index", views)
}

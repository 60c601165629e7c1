package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/response"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func seed() *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_RulesSeed{RulesSeed: &fsmpb.RulesSeed{Rules: response.DefaultRules(), Actor: "coordinator/c1"}}}
}

func putRule(r *medmeshv1.ResponseRule, expected *uint64) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_RulePut{RulePut: &fsmpb.RulePut{Rule: r, ExpectedVersion: expected, Actor: "approver/carol", Reason: "tune", Comment: "ticket 7"}}}
}

func delRule(name string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_RuleDelete{RuleDelete: &fsmpb.RuleDelete{Name: name, Actor: "approver/carol", Reason: "retire"}}}
}

func alertIngest(id, mac, kind string, score uint32) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_AlertIngest{AlertIngest: &fsmpb.AlertIngest{Alert: &medmeshv1.Alert{
		Id: id, SensorId: "s1", DeviceMac: mac, Kind: kind, Risk: &medmeshv1.RiskScore{Score: score},
		Flow: &medmeshv1.FlowRef{Src: "10.1.0.5", Dst: "203.0.113.9", Proto: 6, Dport: 443},
	}}}}
}

func ruleNames(f *FSM) []string {
	rs, _ := f.Rules()
	var out []string
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	return out
}

// TestRulesSeedOnceAndAudited: the defaults are seeded once in a cluster's
// life; operators' changes are versioned, compare-and-set and audited; a
// later seed changes nothing.
func TestRulesSeedOnceAndAudited(t *testing.T) {
	l := newLog(t)
	if l.f.RulesSeeded() || len(ruleNames(l.f)) != 0 {
		t.Fatal("a new FSM has rules")
	}
	l.ok(seed())
	names := ruleNames(l.f)
	if len(names) != len(response.DefaultRules()) || !l.f.RulesSeeded() {
		t.Fatalf("seeded %v", names)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("rules not ordered by name: %v", names)
		}
	}
	l.ok(delRule("notify-medium"))
	if r := l.apply(delRule("notify-medium")); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("delete twice: %v", r.Err)
	}
	l.ok(seed()) // a second seed (another leader's) is a no-op
	if got := ruleNames(l.f); len(got) != len(names)-1 {
		t.Fatalf("second seed changed the table: %v", got)
	}
	r := &medmeshv1.ResponseRule{Name: "quarantine-scanner", Kinds: []string{"scan"}, MinScore: 70, Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE}
	if res := l.apply(putRule(r, u64(7))); !errors.Is(res.Err, ErrVersionMismatch) {
		t.Fatalf("stale CAS: %v", res.Err)
	}
	got := l.ok(putRule(r, u64(1))).Rule
	if got.GetVersion() != 2 || got.GetUpdatedBy() != "approver/carol" || got.GetRevision() != l.idx || got.GetMinScore() != 70 {
		t.Fatalf("stored rule %v", got)
	}
	bad := &medmeshv1.ResponseRule{Name: "x", Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY}
	if res := l.apply(putRule(bad, nil)); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("non-automatic action accepted: %v", res.Err)
	}
	page, _, _, _ := l.f.ListAudit(0, 100, "")
	var actions []string
	for _, a := range page {
		actions = append(actions, a.GetActor()+" "+a.GetAction()+" "+a.GetResource())
	}
	want := len(response.DefaultRules()) + 2 // seed, delete, put
	if len(page) != want || page[len(page)-1].GetComment() != "ticket 7" || page[len(page)-2].GetAction() != "rule.delete" || page[0].GetActor() != "coordinator/c1" {
		t.Fatalf("audit trail %v", actions)
	}
}

// TestRulesDecideInsideApply: the alert's apply appends its decisions at
// the alert's index; the tier comes from the store (unknown devices and
// life-critical ones wait for approval); a retried alert decides nothing
// twice; rules survive a snapshot.
func TestRulesDecideInsideApply(t *testing.T) {
	l := newLog(t)
	l.ok(seed())
	ws := &medmeshv1.Device{Mac: "00:1b:44:11:3a:01", IpAddresses: []string{"10.1.0.5"}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}
	l.ok(upsert("s1", ws))
	l.ok(upsert("s1", pump(mac1)))
	const stranger = "00:1b:44:11:3a:99"

	check := func(mac string, want medmeshv1.DecisionState) {
		t.Helper()
		res := l.ok(alertIngest("s1/"+mac, mac, "scan", 100))
		ds, _, _ := l.f.ListDecisions(res.Index-1, 100, func(*medmeshv1.Decision) bool { return true })
		var q *medmeshv1.Decision
		for _, d := range ds {
			if d.GetIndex() != res.Index {
				t.Fatalf("decision at %d, alert at %d", d.GetIndex(), res.Index)
			}
			if d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE {
				q = d
			}
		}
		if q == nil || q.GetState() != want || q.GetRule() != "quarantine-scanner" || q.GetDeviceMac() != mac || q.GetAlertId() != "s1/"+mac || q.GetActor() != response.Actor {
			t.Fatalf("%s: quarantine %v, want %v", mac, q, want)
		}
		if len(ds) != 2 { // notify + quarantine
			t.Fatalf("%s: %d decisions", mac, len(ds))
		}
		before := len(l.f.st.decisions)
		l.ok(alertIngest("s1/"+mac, mac, "scan", 100)) // a retried report
		if len(l.f.st.decisions) != before {
			t.Fatal("a retried alert decided again")
		}
	}
	check(ws.Mac, medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE)
	check(mac1, medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL)
	check(stranger, medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL)

	// An approval entry carries everything an enforcer needs.
	var pending *medmeshv1.Decision
	for _, d := range l.f.st.decisions {
		if d.GetDeviceMac() == mac1 && d.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
			pending = d
		}
	}
	ap := l.ok(&fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
		TargetId: pending.GetId(), Approve: true, Actor: "approver/dan", DecisionId: "d-approve", TwoPerson: true}}}).Decision
	if ap.GetAction() != pending.GetAction() || ap.GetDeviceMac() != mac1 || ap.GetRule() != pending.GetRule() ||
		ap.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || ap.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED {
		t.Fatalf("approval entry is not self-contained: %v", ap)
	}

	// Snapshot round trip keeps the rules and the seeded flag.
	var buf bytes.Buffer
	if err := l.f.st.write(&buf); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	ha, _ := l.f.Hash()
	hb, _ := g.Hash()
	if ha != hb || !g.RulesSeeded() || len(ruleNames(g)) != len(response.DefaultRules()) {
		t.Fatal("rules lost in the snapshot")
	}
}

package fsm

import (
	"errors"
	"testing"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestSensorObservationsNeverLowerTier walks sensor observations of one
// device through the tiers: they may raise it and give an unclassified
// device its first class, never lower it; an operator's update can.
func TestSensorObservationsNeverLowerTier(t *testing.T) {
	const (
		pumpC = medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP
		pacsC = medmeshv1.DeviceClass_DEVICE_CLASS_PACS
		itC   = medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION
		lc    = medmeshv1.Tier_TIER_LIFE_CRITICAL
		cl    = medmeshv1.Tier_TIER_CLINICAL
		nc    = medmeshv1.Tier_TIER_NON_CLINICAL
		unk   = medmeshv1.Tier_TIER_UNSPECIFIED
	)
	obs := func(c medmeshv1.DeviceClass) *medmeshv1.Device { return &medmeshv1.Device{Mac: mac1, DeviceClass: c} }
	for _, tc := range []struct {
		name      string
		seq       []medmeshv1.DeviceClass
		wantClass medmeshv1.DeviceClass
		wantTier  medmeshv1.Tier
	}{
		{"a new device takes its first class's tier", []medmeshv1.DeviceClass{itC}, itC, nc},
		{"a pump reported as a workstation stays a pump", []medmeshv1.DeviceClass{pumpC, itC}, pumpC, lc},
		{"a pump reported as PACS stays a pump", []medmeshv1.DeviceClass{pumpC, pacsC}, pumpC, lc},
		{"a workstation can be raised to a pump", []medmeshv1.DeviceClass{itC, pumpC}, pumpC, lc},
		{"PACS raised, then not lowered", []medmeshv1.DeviceClass{itC, pacsC, itC}, pacsC, cl},
		{"an unknown device gets a class but keeps its unknown tier", []medmeshv1.DeviceClass{0, itC}, itC, unk},
		{"an unknown device classified life-critical is raised", []medmeshv1.DeviceClass{0, pumpC}, pumpC, lc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLog(t)
			for _, c := range tc.seq {
				l.ok(upsert("s1", obs(c)))
			}
			d := l.f.Device(mac1)
			if d.GetDeviceClass() != tc.wantClass || d.GetTier() != tc.wantTier {
				t.Fatalf("after %v: class %v tier %v, want %v %v", tc.seq, d.GetDeviceClass(), d.GetTier(), tc.wantClass, tc.wantTier)
			}
		})
	}

	l := newLog(t)
	l.ok(upsert("s1", obs(pumpC)))
	r := l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: mac1, DeviceClass: itC}, Paths: []string{"device_class"}, Actor: "operator/alice", Reason: "replaced",
	}}})
	if r.Device.GetDeviceClass() != itC || r.Device.GetTier() != nc {
		t.Fatalf("operator sets the class: %v", r.Device)
	}
	page, _, _, _ := l.f.ListAudit(0, 10, "device/"+mac1)
	if len(page) != 1 || page[0].GetActor() != "operator/alice" {
		t.Fatalf("audit: %v", page)
	}
}

// TestEnforceModeAndTwoPersonRule: monitor_only refuses enforce mode; an
// enforce-mode activation for a life-critical device waits, and its author
// cannot review it.
func TestEnforceModeAndTwoPersonRule(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	p := policy("q", mac1)
	p.Mode = medmeshv1.PolicyMode_POLICY_MODE_ENFORCE
	r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_PolicyPut{PolicyPut: &fsmpb.PolicyPut{Policy: p, Actor: "operator/bob", MonitorOnly: true, DecisionId: "x"}}})
	if !errors.Is(r.Err, ErrPermissionDenied) {
		t.Fatalf("monitor-only put of an enforce-mode policy: %v", r.Err)
	}
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyPut{PolicyPut: &fsmpb.PolicyPut{Policy: p, Actor: "approver/alice", TwoPerson: true, DecisionId: "d0"}}})
	r = l.apply(&fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: "q", Actor: "operator/bob", MonitorOnly: true, DecisionId: "d1"}}})
	if !errors.Is(r.Err, ErrPermissionDenied) {
		t.Fatalf("monitor-only activation of an enforce-mode policy: %v", r.Err)
	}
	r = l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: "q", Actor: "approver/alice", TwoPerson: true, DecisionId: "d2"}}})
	if r.Decision.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("enforce mode on a pump by one approver: %v", r.Decision)
	}
	review := func(actor, id string) *Result {
		return l.apply(&fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
			TargetId: "d2", Approve: true, Actor: actor, DecisionId: id, TwoPerson: true}}})
	}
	if r := review("approver/alice", "r1"); !errors.Is(r.Err, ErrPermissionDenied) {
		t.Fatalf("self-approval: %v", r.Err)
	}
	if r := review("approver/bob", "r2"); r.Err != nil || r.Decision.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED {
		t.Fatalf("second approver: %v %v", r.Decision, r.Err)
	}
}

// TestTwoPersonRuleCoversUnknownTiers: a device whose tier nobody has
// established is treated as life-critical, so enforce mode on it waits for
// a second approver too; a non-clinical device's does not.
func TestTwoPersonRuleCoversUnknownTiers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		class medmeshv1.DeviceClass
		want  medmeshv1.DecisionState
	}{
		{"unclassified device", medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED, medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL},
		{"infusion pump", medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL},
		{"workstation", medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLog(t)
			l.ok(upsert("s1", &medmeshv1.Device{Mac: mac1, DeviceClass: tc.class}))
			p := policy("q", mac1)
			p.Mode = medmeshv1.PolicyMode_POLICY_MODE_ENFORCE
			l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyPut{PolicyPut: &fsmpb.PolicyPut{Policy: p, Actor: "approver/alice", TwoPerson: true, DecisionId: "d0"}}})
			r := l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: "q", Actor: "approver/alice", TwoPerson: true, DecisionId: "d1"}}})
			if got := r.Decision.GetState(); got != tc.want {
				t.Fatalf("enforce mode on a %s by one approver: decision %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

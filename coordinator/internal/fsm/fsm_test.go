package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// log applies commands at consecutive indexes, stamping times as a leader
// would.
type log struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

func newLog(t *testing.T) *log { return &log{t: t, f: New()} }

func (l *log) apply(cmd *fsmpb.Command) *Result {
	l.idx++
	if cmd.Time == nil {
		cmd.Time = timestamppb.New(t0.Add(time.Duration(l.idx) * time.Second))
	}
	return l.f.ApplyCommand(l.idx, cmd)
}

func (l *log) ok(cmd *fsmpb.Command) *Result {
	l.t.Helper()
	r := l.apply(cmd)
	if r.Err != nil {
		l.t.Fatalf("apply %T at %d: %v", cmd.Command, r.Index, r.Err)
	}
	return r
}

func upsert(sensor string, d *medmeshv1.Device) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_DeviceUpsert{DeviceUpsert: &fsmpb.DeviceUpsert{Device: d, SensorId: sensor}}}
}

func pump(mac string) *medmeshv1.Device {
	return &medmeshv1.Device{Mac: mac, IpAddresses: []string{"10.1.0.5"}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, ClassConfidence: 0.9, Vendor: "B. Braun"}
}

func putPolicy(p *medmeshv1.Policy, expected *uint64) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_PolicyPut{PolicyPut: &fsmpb.PolicyPut{Policy: p, ExpectedVersion: expected, Actor: "alice", Reason: "why", DecisionId: "d-put-" + p.GetName()}}}
}

func policy(name, mac string) *medmeshv1.Policy {
	return &medmeshv1.Policy{Name: name, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: medmeshv1.PolicyMode_POLICY_MODE_MONITOR}
}

func u64(v uint64) *uint64 { return &v }

const mac1 = "00:1b:44:11:3a:b7"

func TestDeviceUpsertMergesAndKeepsOperatorFields(t *testing.T) {
	l := newLog(t)
	r := l.ok(upsert("s1", pump(mac1)))
	d := r.Device
	if d.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || d.GetRevision() != 1 || d.GetLastSensorId() != "s1" || d.GetFirstSeen() == nil {
		t.Fatalf("new device: %v", d)
	}
	// Operator sets labels, tier and location.
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: mac1, Labels: map[string]string{"cmdb": "42"}, Tier: medmeshv1.Tier_TIER_CLINICAL, Location: &medmeshv1.Location{Floor: "3", Zone: "icu"}},
		Paths:  []string{"labels", "tier", "location"}, Actor: "alice", Reason: "cmdb sync",
	}}})
	// A later observation merges and keeps the operator's fields.
	obs := &medmeshv1.Device{Mac: mac1, IpAddresses: []string{"10.1.0.6"}, Protocols: []string{"hl7"},
		Location:    &medmeshv1.Location{Floor: "9", Zone: "er", Building: "B"},
		Identifiers: &medmeshv1.Identifiers{Hl7SendingApplications: []string{"PUMP_GW"}}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_VENTILATOR}
	d = l.ok(upsert("s2", obs)).Device
	if got := d.GetIpAddresses(); len(got) != 2 {
		t.Errorf("ips = %v, want both", got)
	}
	if d.GetLabels()["cmdb"] != "42" || d.GetTier() != medmeshv1.Tier_TIER_CLINICAL || !d.GetTierOverridden() {
		t.Errorf("operator fields lost: labels=%v tier=%v", d.GetLabels(), d.GetTier())
	}
	if d.GetLocation().GetFloor() != "3" || d.GetLocation().GetZone() != "icu" || d.GetLocation().GetBuilding() != "B" {
		t.Errorf("location = %v, want operator floor/zone kept, building filled", d.GetLocation())
	}
	if d.GetVendor() != "B. Braun" || d.GetIdentifiers().GetHl7SendingApplications()[0] != "PUMP_GW" || d.GetLastSensorId() != "s2" || d.GetRevision() != 3 {
		t.Errorf("merge: %v", d)
	}
	// Removing the override derives the tier from the class again.
	d = l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: mac1}, Paths: []string{"tier"}, Actor: "alice"}}}).Device
	if d.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || d.GetTierOverridden() {
		t.Errorf("tier after override removed: %v", d.GetTier())
	}
	// Errors change nothing.
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{Device: &medmeshv1.Device{Mac: "00:00:00:00:00:01"}, Paths: []string{"labels"}}}}); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("unknown device: %v", r.Err)
	}
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{Device: &medmeshv1.Device{Mac: mac1}, Paths: []string{"vendor"}}}}); !errors.Is(r.Err, ErrInvalid) {
		t.Errorf("bad path: %v", r.Err)
	}
	if got := l.f.Device(mac1).GetRevision(); got != 4 {
		t.Errorf("revision after failed commands = %d, want 4", got)
	}
}

// TestRouterObservationReplacesForwardedAddresses: addresses a sensor
// attached to a MAC before it knew the MAC was a router's (the servers
// behind it) go when the sensor reports the router; a device's firmware
// and the new identifiers merge.
func TestRouterObservationReplacesForwardedAddresses(t *testing.T) {
	l := newLog(t)
	const gw = "ce:ec:31:50:c7:ae"
	l.ok(upsert("s1", &medmeshv1.Device{Mac: gw, IpAddresses: []string{"10.98.0.10", "10.98.0.12"},
		DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN, Services: []*medmeshv1.Service{{Protocol: 17, Port: 67, App: "dhcp"}},
		Identifiers: &medmeshv1.Identifiers{HttpServers: []string{"Apache"}}}))
	d := l.ok(upsert("s1", &medmeshv1.Device{Mac: gw, IpAddresses: []string{"10.101.0.1"}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER})).Device
	if got := d.GetIpAddresses(); len(got) != 1 || got[0] != "10.101.0.1" || d.GetDeviceClass() != medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER ||
		d.GetTier() != medmeshv1.Tier_TIER_NON_CLINICAL || len(d.GetServices()) != 0 || d.GetIdentifiers() != nil {
		t.Errorf("router after its sensor recognised it: %v", d)
	}
	d = l.ok(upsert("s1", &medmeshv1.Device{Mac: mac1, Model: "BD Alaris PCU", Firmware: "9.33",
		DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Identifiers: &medmeshv1.Identifiers{SnmpSysName: "pump-1", HttpServers: []string{"a/1"}}})).Device
	d = l.ok(upsert("s2", &medmeshv1.Device{Mac: mac1, IpAddresses: []string{"10.1.0.5"},
		DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Identifiers: &medmeshv1.Identifiers{HttpServers: []string{"b/2"}}})).Device
	if d.GetModel() != "BD Alaris PCU" || d.GetFirmware() != "9.33" || d.GetIdentifiers().GetSnmpSysName() != "pump-1" || len(d.GetIdentifiers().GetHttpServers()) != 2 {
		t.Errorf("merged device: %v", d)
	}
}

func TestPolicyPutCASAndVersions(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	p := l.ok(putPolicy(policy("device/a", mac1), u64(0))).Policy
	if p.GetVersion() != 1 || p.GetRevision() != 2 || p.GetUpdatedBy() != "alice" || p.GetCreateTime() == nil {
		t.Fatalf("created: %v", p)
	}
	p = l.ok(putPolicy(policy("device/a", mac1), nil)).Policy
	if p.GetVersion() != 2 || !p.GetCreateTime().AsTime().Equal(t0.Add(2*time.Second)) {
		t.Fatalf("replaced: %v", p)
	}
	for _, exp := range []uint64{0, 1, 3} {
		if r := l.apply(putPolicy(policy("device/a", mac1), u64(exp))); !errors.Is(r.Err, ErrVersionMismatch) {
			t.Errorf("CAS expected %d on v2: %v", exp, r.Err)
		}
	}
	if got := l.f.Policy("device/a").GetVersion(); got != 2 {
		t.Fatalf("failed CAS changed the version to %d", got)
	}
	if p = l.ok(putPolicy(policy("device/a", mac1), u64(2))).Policy; p.GetVersion() != 3 {
		t.Fatalf("CAS success: %v", p)
	}
	// Delete with CAS.
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "device/a", ExpectedVersion: u64(1), Actor: "a"}}}); !errors.Is(r.Err, ErrVersionMismatch) {
		t.Errorf("delete CAS: %v", r.Err)
	}
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "device/a", ExpectedVersion: u64(3), Actor: "a"}}})
	if l.f.Policy("device/a") != nil {
		t.Fatal("policy not deleted")
	}
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "device/a", Actor: "a"}}}); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("delete absent: %v", r.Err)
	}
	// Deleted inactive policy: no decision.
	if page, _, _ := l.f.ListDecisions(0, 10, func(*medmeshv1.Decision) bool { return true }); len(page) != 0 {
		t.Errorf("decisions for inactive policy: %v", page)
	}
}

func TestPolicyActivateCreatesDecisionAtItsIndex(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	l.ok(putPolicy(policy("device/a", mac1), nil))
	r := l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{
		Name: "device/a", Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, Actor: "alice", Reason: "go live", DecisionId: "d-1"}}})
	d := r.Decision
	if d.GetIndex() != r.Index || d.GetIndex() != 3 || d.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY ||
		d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE || d.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL ||
		d.GetPolicy().GetMode() != medmeshv1.PolicyMode_POLICY_MODE_ENFORCE || d.GetDeviceMac() != mac1 {
		t.Fatalf("activation decision: %v", d)
	}
	if p := r.Policy; !p.GetActive() || p.GetVersion() != 2 {
		t.Fatalf("activated policy: %v", p)
	}
	// A change to an active policy reaches the enforcers as a new decision.
	r = l.ok(putPolicy(policy("device/a", mac1), nil))
	if r.Decision == nil || r.Decision.GetIndex() != 4 || !r.Policy.GetActive() {
		t.Fatalf("put on active policy: %v %v", r.Policy, r.Decision)
	}
	r = l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "device/a", Actor: "a", DecisionId: "d-del"}}})
	if r.Decision.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY || r.Decision.GetIndex() != 5 {
		t.Fatalf("delete of active policy: %v", r.Decision)
	}
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: "nope", DecisionId: "x"}}}); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("activate absent: %v", r.Err)
	}
}

func createDecision(id, mac string, automatic bool) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_DecisionCreate{DecisionCreate: &fsmpb.DecisionCreate{Automatic: automatic, Decision: &medmeshv1.Decision{
		Id: id, Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, DeviceMac: mac, Actor: "response-engine", Rule: "r1", AlertId: "s1/7"}}}}
}

func TestDecisionsLifeCriticalWaitAndReview(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	const ws = "00:00:00:00:00:02"
	l.ok(upsert("s1", &medmeshv1.Device{Mac: ws, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}))

	if d := l.ok(createDecision("auto-pump", mac1, true)).Decision; d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("automatic quarantine of a pump must wait: %v", d.GetState())
	}
	if d := l.ok(createDecision("auto-ws", ws, true)).Decision; d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
		t.Fatalf("automatic quarantine of a workstation: %v", d.GetState())
	}
	if d := l.ok(createDecision("op-pump", mac1, false)).Decision; d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
		t.Fatalf("operator decision: %v", d.GetState())
	}
	// An operator-overridden tier does not make a pump blockable
	// automatically, nor does an unknown device.
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: mac1, Tier: medmeshv1.Tier_TIER_NON_CLINICAL}, Paths: []string{"tier"}, Actor: "a"}}})
	if d := l.ok(createDecision("auto-pump-2", mac1, true)).Decision; d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("automatic quarantine of a pump with a lowered tier: %v", d.GetState())
	}
	if d := l.ok(createDecision("auto-unknown", "00:00:00:00:00:99", true)).Decision; d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("automatic quarantine of an unknown device: %v", d.GetState())
	}
	if r := l.apply(createDecision("op-pump", mac1, false)); !errors.Is(r.Err, ErrFailedPrecondition) {
		t.Errorf("duplicate id: %v", r.Err)
	}
	review := func(target, id string, approve bool) *Result {
		return l.apply(&fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{TargetId: target, Approve: approve, Actor: "bob", Reason: "checked", DecisionId: id}}})
	}
	r := review("auto-pump", "appr-1", true)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	a := r.Decision
	if a.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || a.GetTargetDecisionId() != "auto-pump" || a.GetIndex() != r.Index ||
		a.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE || a.GetActor() != "bob" {
		t.Fatalf("approval entry: %v", a)
	}
	if tgt := l.f.Decision("auto-pump"); tgt.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || tgt.GetReviewIndex() != r.Index || tgt.GetReviewedBy() != "bob" {
		t.Fatalf("reviewed target: %v", tgt)
	}
	if r := review("auto-pump", "appr-2", false); !errors.Is(r.Err, ErrFailedPrecondition) {
		t.Errorf("second review: %v", r.Err)
	}
	if r := review("missing", "appr-3", true); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("review of unknown: %v", r.Err)
	}
	// The log is in index order, one entry per index.
	page, _, _ := l.f.ListDecisions(0, 100, func(*medmeshv1.Decision) bool { return true })
	for i := 1; i < len(page); i++ {
		if page[i].GetIndex() <= page[i-1].GetIndex() {
			t.Fatalf("decision log out of order at %d", i)
		}
	}
	if len(page) != 6 {
		t.Fatalf("decision log has %d entries, want 6", len(page))
	}
	// A nil filter keeps every decision (it used to panic).
	if all, _, _ := l.f.ListDecisions(0, 100, nil); len(all) != len(page) {
		t.Fatalf("nil filter listed %d decisions, want %d", len(all), len(page))
	}
	if devs, _, total, _ := l.f.ListDevices("", 100, nil); len(devs) == 0 || total != len(devs) {
		t.Fatalf("nil filter listed %d of %d devices", len(devs), total)
	}
}

func TestAlertsBaselinesFlowsAndSensorBatchExactlyOnce(t *testing.T) {
	l := newLog(t)
	batch := func(sensor string, from, to uint64) *fsmpb.Command {
		rep := &fsmpb.SensorReport{SensorId: sensor}
		for s := from; s <= to; s++ {
			var rec *medmeshv1.SensorRecord
			switch s % 4 {
			case 0:
				rec = &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: pump(mac1)}}}
			case 1:
				rec = &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{DeviceMac: mac1, Kind: "new_peer"}}}
			case 2:
				rec = &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{DeviceMac: mac1, PeerIp: fmt.Sprintf("10.9.0.%d", s)}}}
			case 3:
				rec = &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{DeviceMac: mac1, Version: s}}}
			}
			rec.Seq = s
			rep.Records = append(rep.Records, rec)
		}
		return &fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: []*fsmpb.SensorReport{rep}}}}
	}
	r := l.ok(batch("s1", 1, 8))
	if r.Acks["s1"] != 8 {
		t.Fatalf("acks = %v", r.Acks)
	}
	h1, _ := l.f.Hash()
	alerts, _, _, _ := l.f.ListAlerts(0, 100, nil) // nil keeps every alert
	// A retry of records 5..8 changes nothing; 9..12 are new.
	r = l.ok(batch("s1", 5, 8))
	if r.Acks["s1"] != 8 {
		t.Fatalf("retry acks = %v", r.Acks)
	}
	l.f.mu.Lock()
	l.f.st.applied-- // compare state, not the applied index
	l.f.mu.Unlock()
	if h2, _ := l.f.Hash(); h2 != h1 {
		t.Fatal("a retried batch changed the state")
	}
	r = l.ok(batch("s1", 5, 12))
	if r.Acks["s1"] != 12 || l.f.SensorSeq("s1") != 12 {
		t.Fatalf("acks = %v", r.Acks)
	}
	alerts2, _, _, _ := l.f.ListAlerts(0, 100, func(*medmeshv1.Alert) bool { return true })
	if len(alerts) != 2 || len(alerts2) != 3 || alerts2[0].GetId() != "s1/1" || alerts2[2].GetId() != "s1/9" {
		t.Fatalf("alerts: %d then %d: %v", len(alerts), len(alerts2), alerts2)
	}
	if b := l.f.Baseline(mac1); b.GetVersion() != 11 || b.GetSensorId() != "s1" {
		t.Errorf("baseline: %v", b)
	}
	// A stream's next report, proposed after 13..16 that never committed:
	// skipped whole (its after_seq is 16), acknowledged at 12, so the
	// sensor's resend of 13..20 is not taken for duplicates.
	next := batch("s1", 17, 20)
	next.GetSensorBatch().Reports[0].AfterSeq = 16
	if r := l.ok(next); r.Acks["s1"] != 12 || l.f.SensorSeq("s1") != 12 {
		t.Fatalf("report after an uncommitted one: acks = %v, seq %d", r.Acks, l.f.SensorSeq("s1"))
	}
	if r := l.ok(batch("s1", 13, 20)); r.Acks["s1"] != 20 {
		t.Fatalf("resend: acks = %v", r.Acks)
	}
	// In order, the same condition holds and the report applies.
	next = batch("s1", 21, 24)
	next.GetSensorBatch().Reports[0].AfterSeq = 20
	if r := l.ok(next); r.Acks["s1"] != 24 {
		t.Fatalf("report after a committed one: acks = %v", r.Acks)
	}
	if b := l.f.Baseline(mac1); b.GetVersion() != 23 {
		t.Errorf("baseline after the resend: %v", b.GetVersion())
	}
	// An older baseline version is ignored.
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_BaselinePut{BaselinePut: &fsmpb.BaselinePut{Baseline: &medmeshv1.Baseline{DeviceMac: mac1, Version: 2}}}})
	if b := l.f.Baseline(mac1); b.GetVersion() != 23 {
		t.Errorf("older baseline replaced the newer: %v", b.GetVersion())
	}
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_BaselinePut{BaselinePut: &fsmpb.BaselinePut{Baseline: &medmeshv1.Baseline{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PACS, Version: 1}}}})
	if l.f.ClassBaseline(medmeshv1.DeviceClass_DEVICE_CLASS_PACS) == nil {
		t.Error("class baseline missing")
	}
	if n := len(l.f.FlowSummaries(mac1)); n != 6 {
		t.Errorf("flow summaries = %d, want 6", n)
	}
	// Alert ingest is idempotent on id; ack is audited.
	a := l.ok(&fsmpb.Command{Command: &fsmpb.Command_AlertIngest{AlertIngest: &fsmpb.AlertIngest{Alert: &medmeshv1.Alert{Id: "s1/1", Kind: "dup"}}}}).Alert
	if a.GetKind() != "new_peer" {
		t.Errorf("duplicate alert replaced the original: %v", a)
	}
	a = l.ok(&fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: "s1/1", Actor: "carol", Note: "known"}}}).Alert
	if a.GetState() != medmeshv1.AlertState_ALERT_STATE_ACKNOWLEDGED || a.GetAcknowledgedBy() != "carol" || a.GetAcknowledgeTime() == nil {
		t.Errorf("ack: %v", a)
	}
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{Id: "nope", Actor: "c"}}}); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("ack unknown: %v", r.Err)
	}
}

func TestFlowRingIsBounded(t *testing.T) {
	l := newLog(t)
	var fs []*medmeshv1.FlowSummary
	for i := 0; i < FlowRingSize+250; i++ {
		fs = append(fs, &medmeshv1.FlowSummary{DeviceMac: mac1, Flows: uint64(i)})
	}
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_FlowSummaries{FlowSummaries: &fsmpb.FlowSummaries{Summaries: fs}}})
	got := l.f.FlowSummaries(mac1)
	if len(got) != FlowRingSize || got[0].GetFlows() != 250 || got[len(got)-1].GetFlows() != FlowRingSize+249 {
		t.Fatalf("ring: len %d first %d", len(got), got[0].GetFlows())
	}
}

func TestAuditTrail(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	l.ok(putPolicy(policy("device/a", mac1), nil))
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: "device/a", Actor: "alice", Reason: "go", DecisionId: "d1"}}})
	recs, _, _, _ := l.f.ListAudit(0, 100, "")
	want := []struct {
		action, resource string
		index            uint64
	}{{"policy.put", "policy/device/a", 2}, {"policy.activate", "policy/device/a", 3}, {"decision.create", "decision/d1", 3}}
	if len(recs) != len(want) {
		t.Fatalf("audit = %v", recs)
	}
	for i, w := range want {
		r := recs[i]
		if r.GetAction() != w.action || r.GetResource() != w.resource || r.GetIndex() != w.index || r.GetActor() != "alice" || r.GetTime() == nil {
			t.Errorf("audit[%d] = %v, want %+v", i, r, w)
		}
	}
	only, _, _, _ := l.f.ListAudit(0, 100, "decision/d1")
	if len(only) != 1 {
		t.Errorf("filtered audit: %v", only)
	}
}

type memSink struct {
	bytes.Buffer
	failAfter int
	cancelled bool
	closed    bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAfter >= 0 && s.Len()+len(p) > s.failAfter {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

// randomLog builds a deterministic pseudo-random command log covering
// every command type.
func randomLog(seed uint64, n int) []*fsmpb.Command {
	rnd := rand.New(rand.NewPCG(seed, 1))
	macs := []string{mac1, "00:00:00:00:00:02", "00:00:00:00:00:03"}
	var cmds []*fsmpb.Command
	for i := 0; i < n; i++ {
		mac := macs[rnd.IntN(len(macs))]
		name := fmt.Sprintf("p%d", rnd.IntN(4))
		var c *fsmpb.Command
		switch rnd.IntN(9) {
		case 0:
			c = upsert("s1", &medmeshv1.Device{Mac: mac, IpAddresses: []string{fmt.Sprintf("10.0.0.%d", rnd.IntN(9))}, DeviceClass: medmeshv1.DeviceClass(rnd.IntN(13))})
		case 1:
			c = &fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{Device: &medmeshv1.Device{Mac: mac, Labels: map[string]string{"k": fmt.Sprint(i)}}, Paths: []string{"labels"}, Actor: "a"}}}
		case 2:
			c = putPolicy(policy(name, mac), nil)
			c.GetPolicyPut().DecisionId = fmt.Sprintf("put-%d", i)
		case 3:
			c = &fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: name, Actor: "a", DecisionId: fmt.Sprintf("act-%d", i)}}}
		case 4:
			c = createDecision(fmt.Sprintf("d-%d", i), mac, rnd.IntN(2) == 0)
		case 5:
			c = &fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{TargetId: fmt.Sprintf("d-%d", rnd.IntN(i+1)), Approve: true, Actor: "b", DecisionId: fmt.Sprintf("r-%d", i)}}}
		case 6:
			c = &fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: []*fsmpb.SensorReport{{SensorId: "s2", Records: []*medmeshv1.SensorRecord{
				{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{DeviceMac: mac, Kind: "scan"}}},
			}}}}}}
		case 7:
			c = &fsmpb.Command{Command: &fsmpb.Command_FlowSummaries{FlowSummaries: &fsmpb.FlowSummaries{Summaries: []*medmeshv1.FlowSummary{{DeviceMac: mac, Flows: uint64(i)}}}}}
		default:
			switch rnd.IntN(6) {
			case 4: // outbound sinks and their delivered positions
				c = sinkPut(fmt.Sprintf("s%d", rnd.IntN(2)), rnd.IntN(2) == 0)
			case 5:
				c = sinkProgress(fmt.Sprintf("s%d", rnd.IntN(2)), uint64(rnd.IntN(i+1)), uint64(rnd.IntN(i+1)))
			case 0: // risk posture: a bundle, an SBOM, findings
				c = activateIntel([]string{digestA, digestB}[rnd.IntN(2)])
			case 1:
				c = &fsmpb.Command{Command: &fsmpb.Command_SbomAttach{SbomAttach: &fsmpb.SBOMAttach{Actor: "a",
					Attachment: &medmeshv1.SBOMAttachment{Vendor: "v", Model: fmt.Sprint(rnd.IntN(3)), Digest: digestA}}}}
			case 2:
				c = findingsPut(postureOf(mac, []string{digestA, digestB}[rnd.IntN(2)], rnd.IntN(4)))
			default:
				c = &fsmpb.Command{Command: &fsmpb.Command_ServerRegister{ServerRegister: &fsmpb.ServerRegister{Id: fmt.Sprintf("c%d", rnd.IntN(3)), ApiAddr: fmt.Sprint(i)}}}
			}
		}
		if _, operator := c.Command.(*fsmpb.Command_SensorBatch); !operator && rnd.IntN(3) == 0 {
			// Client request ids from a small pool: some commands are
			// retries of earlier ones, some reuse an id for another kind.
			c.Request = &fsmpb.ClientRequest{Identity: fmt.Sprintf("operator/o%d", rnd.IntN(2)), Id: fmt.Sprintf("r%d", rnd.IntN(50))}
		}
		c.Time = timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond))
		cmds = append(cmds, c)
	}
	return cmds
}

func TestDeterminism(t *testing.T) {
	a, b := New(), New()
	for i, c := range randomLog(7, 2000) {
		a.ApplyCommand(uint64(i+1), c)
	}
	for i, c := range randomLog(7, 2000) {
		b.ApplyCommand(uint64(i+1), c)
	}
	ha, _ := a.Hash()
	hb, _ := b.Hash()
	if ha != hb {
		t.Fatal("same log, different state")
	}
	c := New()
	for i, cmd := range randomLog(8, 2000) {
		c.ApplyCommand(uint64(i+1), cmd)
	}
	if hc, _ := c.Hash(); hc == ha {
		t.Fatal("hash does not depend on the state")
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := New()
	cmds := randomLog(3, 1500)
	for i, c := range cmds[:1000] {
		f.ApplyCommand(uint64(i+1), c)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := f.Hash()
	// Applies after the capture do not leak into it.
	for i, c := range cmds[1000:] {
		f.ApplyCommand(uint64(1001+i), c)
	}
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v closed=%v", err, sink.closed)
	}
	snap.Release()
	g := New()
	changed := g.Changed()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("restore did not wake watchers")
	}
	if got, _ := g.Hash(); got != want || g.AppliedIndex() != 1000 {
		t.Fatalf("restored state differs (applied %d)", g.AppliedIndex())
	}
	// The restored FSM continues exactly like the original.
	for i, c := range cmds[1000:] {
		g.ApplyCommand(uint64(1001+i), c)
	}
	h1, _ := f.Hash()
	h2, _ := g.Hash()
	if h1 != h2 {
		t.Fatal("restored FSM diverged after further applies")
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("garbage")))); err == nil {
		t.Fatal("restore accepted garbage")
	}
	if h3, _ := g.Hash(); h3 != h2 {
		t.Fatal("a failed restore changed the state")
	}
}

func TestPersistCancelsOnError(t *testing.T) {
	f := New()
	for i, c := range randomLog(4, 500) {
		f.ApplyCommand(uint64(i+1), c)
	}
	snap, _ := f.Snapshot()
	sink := &memSink{failAfter: 100}
	if err := snap.Persist(sink); err == nil || !sink.cancelled || sink.closed {
		t.Fatalf("persist to a failing sink: err=%v cancelled=%v closed=%v", err, sink.cancelled, sink.closed)
	}
}

func TestUndecodableEntryIsSkippedEverywhere(t *testing.T) {
	f := New()
	r := f.Apply(rawLog(1, []byte{0xff, 0xff})).(*Result)
	if !errors.Is(r.Err, ErrInvalid) || f.AppliedIndex() != 1 {
		t.Fatalf("garbage entry: %v applied=%d", r.Err, f.AppliedIndex())
	}
}

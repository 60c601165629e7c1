package fsm

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const itClass = medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION

func classPol(name string, c medmeshv1.DeviceClass, mode medmeshv1.PolicyMode) *medmeshv1.Policy {
	return &medmeshv1.Policy{Name: name, Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: c}, Mode: mode,
		Rules: []*medmeshv1.Rule{{Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.0.0.0/8"}, Protocol: 6, PortMin: 443, PortMax: 443}}}
}

func activateAs(name, id string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{Name: name, Actor: "approver/alice", DecisionId: id, TwoPerson: true}}}
}

func ws(mac string) *medmeshv1.Device {
	return &medmeshv1.Device{Mac: mac, DeviceClass: itClass}
}

func wsMAC(i int) string { return fmt.Sprintf("02:00:00:00:00:%02x", i) }

// checkApply asserts ds are effective APPLY_POLICY decisions of policy
// name for macs, in that order, at index.
func checkApply(t *testing.T, ds []*medmeshv1.Decision, index uint64, name string, macs ...string) {
	t.Helper()
	if len(ds) != len(macs) {
		t.Fatalf("%d decisions, want %d: %v", len(ds), len(macs), ds)
	}
	for i, d := range ds {
		if d.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY || d.GetDeviceMac() != macs[i] ||
			d.GetPolicy().GetName() != name || d.GetIndex() != index || d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
			t.Fatalf("decision %d: %v, want APPLY_POLICY %s for %s at %d, effective", i, d, name, macs[i], index)
		}
	}
}

// TestClassPolicyFansOutPerDevice: activating a class policy gives one
// decision per known device of the class, by MAC, in the same apply; a
// device classified later gets its own in the apply that classifies it; a
// device policy wins over the class policy; deletion removes it.
func TestClassPolicyFansOutPerDevice(t *testing.T) {
	l := newLog(t)
	// Reported out of MAC order; one device of another class.
	for _, i := range []int{3, 1, 2} {
		l.ok(upsert("s1", ws(wsMAC(i))))
	}
	l.ok(upsert("s1", pump(mac1)))
	l.ok(putPolicy(classPol("class/it", itClass, medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), nil))
	r := l.ok(activateAs("class/it", "d-act"))
	checkApply(t, r.Decisions, r.Index, "class/it", wsMAC(1), wsMAC(2), wsMAC(3))
	if r.Decision != r.Decisions[0] || r.Decisions[0].GetId() != "d-act/"+wsMAC(1) {
		t.Fatalf("first decision %v", r.Decision)
	}
	if got := l.f.Decision("d-act/" + wsMAC(2)); got.GetPolicy().GetDeviceClass() != itClass || got.GetPolicy().GetRules()[0].GetPortMin() != 443 {
		t.Fatalf("decision does not carry the policy: %v", got)
	}

	// A fourth device, reported classified by a sensor batch: its decision
	// is in that apply, by the sensor.
	r = l.ok(&fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: []*fsmpb.SensorReport{{SensorId: "s1", Records: []*medmeshv1.SensorRecord{
		{Seq: 1, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: ws(wsMAC(4))}}},
	}}}}}})
	page, _, _ := l.f.ListDecisions(r.Index-1, 10, func(*medmeshv1.Decision) bool { return true })
	checkApply(t, page, r.Index, "class/it", wsMAC(4))
	if page[0].GetActor() != "sensor/s1" {
		t.Fatalf("actor %q", page[0].GetActor())
	}
	// A fifth, new device seen classified: the same.
	r = l.ok(upsert("s1", ws(wsMAC(5))))
	checkApply(t, r.Decisions, r.Index, "class/it", wsMAC(5))
	// Seen again, same class: nothing new.
	if r = l.ok(upsert("s1", ws(wsMAC(5)))); len(r.Decisions) != 0 {
		t.Fatalf("unchanged class: %v", r.Decisions)
	}
	// A device first seen unclassified has an unknown tier, which no
	// sensor lowers: classified later, its enforce-mode decision waits.
	l.ok(upsert("s1", &medmeshv1.Device{Mac: wsMAC(6)}))
	r = l.ok(upsert("s1", ws(wsMAC(6))))
	if len(r.Decisions) != 1 || r.Decisions[0].GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("device of unknown tier: %v", r.Decisions)
	}

	// A device policy wins: its own decision only, and the class policy's
	// changes skip it.
	own := policy("dev2", wsMAC(2))
	l.ok(putPolicy(own, nil))
	r = l.ok(activateAs("dev2", "d-own"))
	checkApply(t, r.Decisions, r.Index, "dev2", wsMAC(2))
	p := classPol("class/it", itClass, medmeshv1.PolicyMode_POLICY_MODE_ENFORCE)
	p.Rules[0].PortMax = 444
	put := putPolicy(p, nil)
	put.GetPolicyPut().TwoPerson = true
	r = l.ok(put)
	checkApply(t, r.Decisions[:4], r.Index, "class/it", wsMAC(1), wsMAC(3), wsMAC(4), wsMAC(5))
	if len(r.Decisions) != 5 || r.Decisions[4].GetDeviceMac() != wsMAC(6) || r.Decisions[4].GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("changed class policy: %v", r.Decisions)
	}
	// Deleting the device policy gives the device its class policy back.
	r = l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "dev2", Actor: "approver/alice", DecisionId: "d-del-own"}}})
	if len(r.Decisions) != 2 || r.Decisions[0].GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY {
		t.Fatalf("delete device policy: %v", r.Decisions)
	}
	checkApply(t, r.Decisions[1:], r.Index, "class/it", wsMAC(2))

	// An operator moves a device out of the class: its policy is removed.
	r = l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: wsMAC(5), DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY}, Paths: []string{"device_class"}, Actor: "operator/bob"}}})
	if len(r.Decisions) != 1 || r.Decisions[0].GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY ||
		r.Decisions[0].GetDeviceMac() != wsMAC(5) || r.Decisions[0].GetActor() != "operator/bob" {
		t.Fatalf("device left the class: %v", r.Decisions)
	}

	// Deleting the class policy removes it from each device of the class.
	r = l.ok(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "class/it", Actor: "approver/alice", DecisionId: "d-del"}}})
	var macs []string
	for _, d := range r.Decisions {
		if d.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY || d.GetPolicy().GetName() != "class/it" {
			t.Fatalf("delete class policy: %v", d)
		}
		macs = append(macs, d.GetDeviceMac())
	}
	if fmt.Sprint(macs) != fmt.Sprint([]string{wsMAC(1), wsMAC(2), wsMAC(3), wsMAC(4), wsMAC(6)}) {
		t.Fatalf("removed from %v", macs)
	}
	// No decision ever lacks a device.
	all, _, _ := l.f.ListDecisions(0, 1000, func(*medmeshv1.Decision) bool { return true })
	for _, d := range all {
		if d.GetDeviceMac() == "" {
			t.Fatalf("decision without a device: %v", d)
		}
	}
}

// TestClassPolicyLifeCritical: an enforce-mode class policy for
// life-critical devices waits for a second approver on every device, also
// for a pump classified later; monitor mode is effective.
func TestClassPolicyLifeCritical(t *testing.T) {
	const pumpC = medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP
	l := newLog(t)
	l.ok(upsert("s1", pump(wsMAC(1))))
	l.ok(upsert("s1", pump(wsMAC(2))))
	l.ok(putPolicy(classPol("class/pump", pumpC, medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), nil))
	r := l.ok(activateAs("class/pump", "d-act"))
	if len(r.Decisions) != 2 {
		t.Fatalf("decisions: %v", r.Decisions)
	}
	for _, d := range r.Decisions {
		if d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
			t.Fatalf("enforce mode on a pump without a second approver: %v", d)
		}
	}
	r = l.ok(upsert("s1", pump(wsMAC(3))))
	if len(r.Decisions) != 1 || r.Decisions[0].GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("pump classified later: %v", r.Decisions)
	}
	// The sensor that classified it may not approve it; a person may.
	rv := l.apply(&fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
		TargetId: r.Decisions[0].GetId(), Approve: true, Actor: "sensor/s1", DecisionId: "rv1", TwoPerson: true}}})
	if rv.Err == nil {
		t.Fatal("the classifying sensor approved its own decision")
	}
	rv = l.ok(&fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
		TargetId: r.Decisions[0].GetId(), Approve: true, Actor: "approver/carol", DecisionId: "rv2", TwoPerson: true}}})
	if d := rv.Decision; d.GetDeviceMac() != wsMAC(3) || d.GetPolicy().GetName() != "class/pump" {
		t.Fatalf("approval entry is not self-contained: %v", d)
	}

	// An IT workstation whose tier an operator raised is life-critical too.
	l.ok(upsert("s1", ws(wsMAC(9))))
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: wsMAC(9), Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL}, Paths: []string{"tier"}, Actor: "operator/bob"}}})
	l.ok(putPolicy(classPol("class/it", itClass, medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), nil))
	r = l.ok(activateAs("class/it", "d-it"))
	if len(r.Decisions) != 1 || r.Decisions[0].GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("life-critical workstation: %v", r.Decisions)
	}
}

// TestClassPolicyDeterministic: the same log gives byte-identical decision
// logs on three FSMs.
func TestClassPolicyDeterministic(t *testing.T) {
	var cmds []*fsmpb.Command
	for i := 20; i > 0; i-- {
		cmds = append(cmds, upsert("s1", ws(wsMAC(i))))
	}
	cmds = append(cmds,
		putPolicy(classPol("class/it", itClass, medmeshv1.PolicyMode_POLICY_MODE_ENFORCE), nil),
		putPolicy(classPol("class/it-b", itClass, medmeshv1.PolicyMode_POLICY_MODE_MONITOR), nil),
		activateAs("class/it-b", "a1"),
		activateAs("class/it", "a2"), // first by name: in force
		upsert("s1", ws(wsMAC(30))),
		&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "class/it", Actor: "approver/alice", DecisionId: "del"}}},
	)
	var logs [3][]byte
	for k := range logs {
		l := newLog(t)
		for _, c := range cmds {
			l.ok(proto.CloneOf(c))
		}
		all, _, _ := l.f.ListDecisions(0, 1000, func(*medmeshv1.Decision) bool { return true })
		for _, d := range all {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			logs[k] = append(logs[k], b...)
		}
		if k == 0 && len(all) != 20+20+1+21 {
			t.Fatalf("%d decisions", len(all))
		}
		if k == 0 {
			last := all[len(all)-1]
			if last.GetPolicy().GetName() != "class/it-b" || last.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY {
				t.Fatalf("after deleting the policy in force, the next one applies: %v", last)
			}
		}
	}
	if string(logs[0]) != string(logs[1]) || string(logs[1]) != string(logs[2]) {
		t.Fatal("same log, different decisions")
	}
}

// TestListDecisionsNeverSplitsAnIndex: a caller that resumes after the
// last index of a page gets every decision of a class policy fan-out.
func TestListDecisionsNeverSplitsAnIndex(t *testing.T) {
	l := newLog(t)
	for i := 1; i <= 5; i++ {
		l.ok(upsert("s1", ws(wsMAC(i))))
	}
	l.ok(putPolicy(classPol("class/it", itClass, medmeshv1.PolicyMode_POLICY_MODE_MONITOR), nil))
	l.ok(activateAs("class/it", "a"))
	l.ok(createDecision("after", mac1, false))
	var got []string
	for after, more := uint64(0), true; more; {
		var page []*medmeshv1.Decision
		page, more, _ = l.f.ListDecisions(after, 2, func(*medmeshv1.Decision) bool { return true })
		for _, d := range page {
			got = append(got, d.GetId())
			after = d.GetIndex()
		}
	}
	if len(got) != 6 || got[5] != "after" {
		t.Fatalf("resumed listing: %v", got)
	}
}

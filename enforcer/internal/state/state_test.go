package state

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"testing"

	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// fakeTable is an in-memory datapath that fails any write which would
// open a window: pointing a device at a slot that is not fully written, or
// clearing a slot a device still points to.
type fakeTable struct {
	slots   map[uint32][]xdp.Rule
	devices map[string]xdp.DeviceEntry
	applied uint64
	writes  int
	// named and names are the records of named rules and the names they
	// refer to: a record may refer only to stored names, and a name a
	// record refers to cannot be removed.
	named map[string][]byte
	names map[xdp.NameKey]string
}

func newFake() *fakeTable {
	return &fakeTable{slots: map[uint32][]xdp.Rule{}, devices: map[string]xdp.DeviceEntry{}, named: map[string][]byte{}, names: map[xdp.NameKey]string{}}
}

// recordKeys are the name keys a record refers to.
func recordKeys(rec []byte) []xdp.NameKey {
	plen := int(rec[2])
	var out []xdp.NameKey
	for e := rec[4+plen:]; len(e) >= namedRuleBytes; e = e[namedRuleBytes:] {
		out = append(out, xdp.NameKey(e[6:namedRuleBytes]))
	}
	return out
}

func (f *fakeTable) SetNamed(mac net.HardwareAddr, rec []byte) error {
	if len(rec) > xdp.MaxNamedRecord {
		return fmt.Errorf("record of %d bytes", len(rec))
	}
	for _, k := range recordKeys(rec) {
		if _, ok := f.names[k]; !ok {
			return fmt.Errorf("record of %s refers to a name not stored yet", mac)
		}
	}
	f.named[mac.String()] = slices.Clone(rec)
	return nil
}

func (f *fakeTable) DeleteNamed(mac net.HardwareAddr) error {
	delete(f.named, mac.String())
	return nil
}

func (f *fakeTable) SetDNSName(k xdp.NameKey, name string) error {
	f.names[k] = name
	return nil
}

func (f *fakeTable) DeleteDNSName(k xdp.NameKey) error {
	for mac, rec := range f.named {
		if slices.Contains(recordKeys(rec), k) {
			return fmt.Errorf("name %q removed while the record of %s refers to it", f.names[k], mac)
		}
	}
	delete(f.names, k)
	return nil
}

// snapshot is what an enforcer restarting on the fake's maps adopts.
func (f *fakeTable) snapshot() Snapshot {
	snap := Snapshot{Devices: maps.Clone(f.devices), Slots: map[uint32][]xdp.Rule{}, AppliedIndex: f.applied, Named: map[string][]byte{}, DNSNames: maps.Clone(f.names)}
	for k, v := range f.slots {
		snap.Slots[k] = slices.Clone(v)
	}
	for k, v := range f.named {
		snap.Named[k] = slices.Clone(v)
	}
	return snap
}

func (f *fakeTable) WriteSlot(slot uint32, rules []xdp.Rule) error {
	for _, e := range f.devices {
		if e.Slot == slot {
			return fmt.Errorf("write to live slot %d", slot)
		}
	}
	f.slots[slot] = slices.Clone(rules)
	f.writes++
	return nil
}

func (f *fakeTable) ClearSlot(slot uint32, rules []xdp.Rule) error {
	for mac, e := range f.devices {
		if e.Slot == slot {
			return fmt.Errorf("clear slot %d still used by %s", slot, mac)
		}
	}
	if !slices.Equal(f.slots[slot], rules) {
		return fmt.Errorf("clear slot %d with rules that differ from its content", slot)
	}
	delete(f.slots, slot)
	return nil
}

func (f *fakeTable) SetDevice(mac net.HardwareAddr, e xdp.DeviceEntry) error {
	if int(e.NRules) != len(f.slots[e.Slot]) {
		return fmt.Errorf("device %s points at slot %d with %d rules, entry says %d", mac, e.Slot, len(f.slots[e.Slot]), e.NRules)
	}
	f.devices[mac.String()] = e
	return nil
}

func (f *fakeTable) DeleteDevice(mac net.HardwareAddr) error {
	delete(f.devices, mac.String())
	return nil
}

func (f *fakeTable) SetAppliedIndex(i uint64) error { f.applied = i; return nil }

const mac = "00:1b:44:11:3a:b7"

func policy(mode medmeshv1.PolicyMode, rules ...*medmeshv1.Rule) *medmeshv1.Policy {
	return &medmeshv1.Policy{Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: mode, Rules: rules}
}

func cidrRule(cidr string, proto, port uint32) *medmeshv1.Rule {
	return &medmeshv1.Rule{Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: cidr}, Protocol: proto, PortMin: port, PortMax: port, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND}
}

func dec(index uint64, action medmeshv1.DecisionAction, f func(*medmeshv1.Decision)) *medmeshv1.Decision {
	d := &medmeshv1.Decision{Id: fmt.Sprint("d", index), Index: index, Action: action, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac}
	if f != nil {
		f(d)
	}
	return d
}

func newState(t *testing.T, tab *fakeTable, snap Snapshot) *State {
	t.Helper()
	s, err := New(tab, snap, 8, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestApplySequence(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	steps := []struct {
		d        *medmeshv1.Decision
		mode     xdp.Mode
		flags    uint8
		nrules   int
		present  bool
		applied  bool
		errIsInv bool
	}{
		{dec(10, medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, func(d *medmeshv1.Decision) {
			d.Policy = policy(medmeshv1.PolicyMode_POLICY_MODE_MONITOR, cidrRule("10.2.0.0/16", 6, 443), cidrRule("10.0.0.53", 17, 53))
		}), xdp.ModeMonitor, 0, 2, true, true, false},
		{dec(12, medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY, nil), xdp.ModeEnforce, 0, 2, true, true, false},
		{dec(11, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, nil), xdp.ModeEnforce, 0, 2, true, false, false}, // fenced
		{dec(14, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "203.0.113.0/24" }), xdp.ModeEnforce, 0, 3, true, true, false},
		{dec(15, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "203.0.113.0/24" }), xdp.ModeEnforce, 0, 3, true, true, false}, // idempotent
		{dec(16, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, func(d *medmeshv1.Decision) {
			d.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
		}), xdp.ModeEnforce, 0, 3, true, true, false}, // pending: no effect
		{dec(18, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, func(d *medmeshv1.Decision) {
			d.State = medmeshv1.DecisionState_DECISION_STATE_APPROVED
			d.TargetDecisionId = "d16"
		}), xdp.ModeEnforce, xdp.FlagQuarantine, 3, true, true, false},
		{dec(19, medmeshv1.DecisionAction_DECISION_ACTION_RELEASE, nil), xdp.ModeEnforce, 0, 3, true, true, false},
		{dec(20, medmeshv1.DecisionAction_DECISION_ACTION_UNBLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "203.0.113.0/24" }), xdp.ModeEnforce, 0, 2, true, true, false},
		{dec(21, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "not-a-cidr" }), xdp.ModeEnforce, 0, 2, true, true, true},
		{dec(22, medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY, nil), 0, 0, 0, false, true, false},
	}
	for i, st := range steps {
		applied, err := s.Apply(st.d)
		if st.errIsInv != errors.Is(err, ErrInvalid) || (err != nil && !st.errIsInv) {
			t.Fatalf("step %d: err %v", i, err)
		}
		if applied != st.applied {
			t.Fatalf("step %d: applied %v, want %v", i, applied, st.applied)
		}
		e, ok := tab.devices[mac]
		if ok != st.present {
			t.Fatalf("step %d: device present %v, want %v", i, ok, st.present)
		}
		if ok && (e.Mode != st.mode || e.Flags != st.flags || int(e.NRules) != st.nrules) {
			t.Fatalf("step %d: entry %+v, want mode %d flags %d rules %d", i, e, st.mode, st.flags, st.nrules)
		}
	}
	if s.Applied() != 22 || tab.applied != 22 {
		t.Fatalf("applied %d / persisted %d, want 22", s.Applied(), tab.applied)
	}
	// Released slots keep their content (a packet that read an old entry
	// may still be reading its slot) and wait at the back of the free list.
	for slot := range tab.slots {
		if i := slices.Index(s.free, slot); i < 0 || i < len(s.free)-len(tab.slots) {
			t.Fatalf("slot %d with content is not among the last freed: free %v", slot, s.free)
		}
	}
	if len(tab.slots) == 0 {
		t.Fatal("no slot written")
	}
}

func TestReviewedOriginalWaitsForApprovalEntry(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	// Replayed from the log after the review: the original carries the
	// review's state at its own index.
	s.Apply(dec(5, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, func(d *medmeshv1.Decision) {
		d.State = medmeshv1.DecisionState_DECISION_STATE_APPROVED
	}))
	if len(tab.devices) != 0 {
		t.Fatal("reviewed original applied at its own index")
	}
	s.Apply(dec(9, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, func(d *medmeshv1.Decision) {
		d.State = medmeshv1.DecisionState_DECISION_STATE_APPROVED
		d.TargetDecisionId = "d5"
	}))
	if e, ok := tab.devices[mac]; !ok || e.Flags != xdp.FlagQuarantine {
		t.Fatalf("approval entry not applied: %v", tab.devices)
	}
}

func TestRejectedNeverApplies(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	s.Apply(dec(5, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, func(d *medmeshv1.Decision) {
		d.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
	}))
	s.Apply(dec(6, medmeshv1.DecisionAction_DECISION_ACTION_UNSPECIFIED, func(d *medmeshv1.Decision) {
		d.State = medmeshv1.DecisionState_DECISION_STATE_REJECTED
		d.TargetDecisionId = "d5"
	}))
	if len(tab.devices) != 0 {
		t.Fatalf("rejected decision took effect: %v", tab.devices)
	}
}

func TestAdoptAndReconcile(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	s.Apply(dec(3, medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, func(d *medmeshv1.Decision) {
		d.Policy = policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, cidrRule("10.2.0.0/16", 6, 443))
	}))
	s.Apply(dec(4, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "10.2.9.0/24" }))
	// A crashed enforcer left a written slot that no device points to.
	tab.slots[6] = []xdp.Rule{{Kind: xdp.KindAllow, Proto: 17}}
	snap := Snapshot{Devices: map[string]xdp.DeviceEntry{}, Slots: map[uint32][]xdp.Rule{}, AppliedIndex: tab.applied}
	for k, v := range tab.devices {
		snap.Devices[k] = v
	}
	for k, v := range tab.slots {
		snap.Slots[k] = slices.Clone(v)
	}
	s2 := newState(t, tab, snap)
	if _, ok := tab.slots[6]; ok {
		t.Fatal("orphan slot not reconciled")
	}
	if s2.Applied() != 4 {
		t.Fatalf("adopted applied index %d, want 4", s2.Applied())
	}
	if ok, _ := s2.Apply(dec(3, medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY, nil)); ok {
		t.Fatal("index 3 applied after adoption at 4")
	}
	// Which entries of index 4 were applied is not pinned: the watcher
	// resumes one index back and they are applied again, changing nothing.
	before := tab.devices[mac]
	block4 := dec(4, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "10.2.9.0/24" })
	if ok, err := s2.Apply(block4); !ok || err != nil || tab.devices[mac] != before {
		t.Fatalf("index 4 again after adoption: applied %v err %v entry %+v, was %+v", ok, err, tab.devices[mac], before)
	}
	if ok, _ := s2.Apply(block4); ok {
		t.Fatal("index 4 applied twice by one process")
	}
	// The adopted model matches the maps: unblocking keeps the policy rule.
	if _, err := s2.Apply(dec(7, medmeshv1.DecisionAction_DECISION_ACTION_UNBLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "10.2.9.0/24" })); err != nil {
		t.Fatal(err)
	}
	e := tab.devices[mac]
	if e.Mode != xdp.ModeEnforce || e.NRules != 1 || tab.slots[e.Slot][0].PortMin != 443 {
		t.Fatalf("after adopt+unblock: entry %+v rules %+v", e, tab.slots[e.Slot])
	}
}

// TestSlotsReusedOldestFirst: a released slot keeps its content and is
// taken again only after every slot that was free before it.
func TestSlotsReusedOldestFirst(t *testing.T) {
	tab := newFake()
	s, err := New(tab, Snapshot{}, 3, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var slots []uint32
	for i, port := range []uint32{443, 8443, 9443, 10443} {
		if _, err := s.Apply(dec(uint64(i+1), medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, func(d *medmeshv1.Decision) {
			d.Policy = policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, cidrRule("10.2.0.0/16", 6, port))
		})); err != nil {
			t.Fatal(err)
		}
		slots = append(slots, tab.devices[mac].Slot)
	}
	if !slices.Equal(slots, []uint32{0, 1, 2, 0}) {
		t.Fatalf("slots taken %v, want 0 1 2 0 (the oldest free first)", slots)
	}
	if got := tab.slots[2]; len(got) != 1 || got[0].PortMin != 9443 {
		t.Fatalf("released slot 2 holds %v, want its last policy until it is taken again", got)
	}
}

// TestOneIndexManyDevices: a class policy's decisions share their Raft
// entry's index, one per device: each is applied once, a resent one is
// fenced, and an earlier index still is.
func TestOneIndexManyDevices(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	macs := []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"}
	p := policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, cidrRule("10.2.0.0/16", 6, 443))
	p.Subject = &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}
	var ds []*medmeshv1.Decision
	for _, m := range macs {
		ds = append(ds, dec(9, medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, func(d *medmeshv1.Decision) {
			d.Id, d.DeviceMac, d.Policy = "d9/"+m, m, p
		}))
	}
	for _, d := range ds {
		if ok, err := s.Apply(d); !ok || err != nil {
			t.Fatalf("%s: applied %v err %v", d.GetId(), ok, err)
		}
	}
	for _, m := range macs {
		if e, ok := tab.devices[m]; !ok || e.Mode != xdp.ModeEnforce || e.NRules != 1 {
			t.Fatalf("%s: entry %+v present %v", m, e, ok)
		}
	}
	if ok, _ := s.Apply(ds[1]); ok {
		t.Fatal("resent entry applied twice")
	}
	if ok, _ := s.Apply(dec(8, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, nil)); ok {
		t.Fatal("earlier index applied")
	}
	// Without a MAC the decision is still invalid.
	bad := dec(10, medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, func(d *medmeshv1.Decision) { d.DeviceMac, d.Policy = "", p })
	if _, err := s.Apply(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("class decision without a device: %v", err)
	}
}

package fsm

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Class policies. A policy whose subject is a device class applies to every
// known device of that class, including devices classified into it later.
// Enforcers know devices, not classes, so the FSM fans a class policy out,
// inside the apply that changes it (or that classifies a device), into one
// self-contained decision per device, by MAC:
//
//   - activating an active class policy's change, or a device entering the
//     class, gives APPLY_POLICY decisions carrying the policy and the MAC;
//   - deleting it, or a device leaving the class, gives REMOVE_POLICY (or
//     the APPLY_POLICY of the class policy now in force).
//
// Precedence: a device's own active policy wins over its class's policy (a
// device with one gets no class decisions; when its own policy is deleted,
// its class policy is applied again). Among several active policies for one
// class, the first by name is in force.
//
// The approval logic is a device policy's: enforce mode on a life-critical
// device (or class) waits for a second approver. A device classified by a
// sensor has no approver behind it, so its decisions always follow the
// two-person rule.

// classPolicy reports whether p's subject is a device class.
func classPolicy(p *medmeshv1.Policy) bool {
	return p.GetDeviceMac() == "" && p.GetDeviceClass() != medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED
}

// activePolicies indexes the active policies for the class rules above:
// the MACs with an active policy of their own (how many), and the names of
// each class's active class policies. It is derived from the policies,
// kept in step by setPolicy and rebuilt on restore, so that a write or a
// device's classification costs no pass over every policy.
type activePolicies struct {
	own     map[string]int
	byClass map[medmeshv1.DeviceClass]map[string]struct{}
}

func newActivePolicies() activePolicies {
	return activePolicies{own: map[string]int{}, byClass: map[medmeshv1.DeviceClass]map[string]struct{}{}}
}

// add counts p if it is active; remove uncounts it.
func (a *activePolicies) add(p *medmeshv1.Policy)    { a.count(p, 1) }
func (a *activePolicies) remove(p *medmeshv1.Policy) { a.count(p, -1) }

func (a *activePolicies) count(p *medmeshv1.Policy, n int) {
	switch {
	case !p.GetActive():
	case p.GetDeviceMac() != "":
		mac := p.GetDeviceMac()
		if a.own[mac] += n; a.own[mac] <= 0 {
			delete(a.own, mac)
		}
	case classPolicy(p):
		names := a.byClass[p.GetDeviceClass()]
		if n > 0 {
			if names == nil {
				names = map[string]struct{}{}
				a.byClass[p.GetDeviceClass()] = names
			}
			names[p.GetName()] = struct{}{}
			return
		}
		delete(names, p.GetName())
		if len(names) == 0 {
			delete(a.byClass, p.GetDeviceClass())
		}
	}
}

// setPolicy stores p under name (nil deletes it) and keeps the index of
// active policies in step.
func (s *state) setPolicy(name string, p *medmeshv1.Policy) {
	if old := s.policies[name]; old != nil {
		s.active.remove(old)
	}
	if p == nil {
		delete(s.policies, name)
		return
	}
	s.policies[name] = p
	s.active.add(p)
}

// hasOwnPolicy reports whether device mac has an active policy of its own.
func (s *state) hasOwnPolicy(mac string) bool { return s.active.own[mac] > 0 }

// classPolicyInForce is the active policy of class c in force: the first
// by name; nil for none.
func (s *state) classPolicyInForce(c medmeshv1.DeviceClass) *medmeshv1.Policy {
	first := ""
	for name := range s.active.byClass[c] {
		if first == "" || name < first {
			first = name
		}
	}
	if first == "" {
		return nil
	}
	return s.policies[first]
}

// classView maps each known device of one of classes, without an active
// policy of its own, to the name of its class policy in force ("" for
// none).
func (s *state) classView(classes []medmeshv1.DeviceClass) map[string]string {
	out := map[string]string{}
	if len(classes) == 0 {
		return out
	}
	inForce := map[medmeshv1.DeviceClass]string{}
	for _, c := range classes {
		inForce[c] = s.classPolicyInForce(c).GetName()
	}
	for mac, d := range s.devices {
		name, ok := inForce[d.GetDeviceClass()]
		if !ok || d.GetDeviceClass() == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED || s.hasOwnPolicy(mac) {
			continue
		}
		out[mac] = name
	}
	return out
}

// deviceView is classView for one device.
func (s *state) deviceView(mac string) map[string]string {
	d := s.devices[mac]
	if d == nil {
		return map[string]string{}
	}
	if s.hasOwnPolicy(mac) || d.GetDeviceClass() == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
		return map[string]string{}
	}
	return map[string]string{mac: s.classPolicyInForce(d.GetDeviceClass()).GetName()}
}

// policyClasses are the classes the given policies (nil allowed) are
// about: their class, or the class of the device they belong to.
func (s *state) policyClasses(ps ...*medmeshv1.Policy) []medmeshv1.DeviceClass {
	var out []medmeshv1.DeviceClass
	for _, p := range ps {
		switch {
		case p == nil:
		case classPolicy(p):
			out = append(out, p.GetDeviceClass())
		case s.devices[p.GetDeviceMac()] != nil:
			out = append(out, s.devices[p.GetDeviceMac()].GetDeviceClass())
		}
	}
	return out
}

// trigger is what a class decision records about the command behind it.
type trigger struct {
	id      string // the ids are id + "/" + MAC
	actor   string
	reason  string
	comment string
	// twoPerson: enforce mode on a life-critical device waits for a second
	// approver.
	twoPerson bool
}

// reconcileClasses appends, for every device in before or after (views
// taken before and after the command changed the state), by MAC, the
// decision that moves enforcers from the class policy before[mac] to
// after[mac]: APPLY_POLICY when it differs or is the policy the command
// changed, REMOVE_POLICY when none is in force any more.
func (s *state) reconcileClasses(index uint64, now *timestamppb.Timestamp, t trigger, before, after map[string]string, changed string) []*medmeshv1.Decision {
	for mac := range before {
		if _, ok := after[mac]; !ok {
			after[mac] = "" // left the class, or got a policy of its own
		}
	}
	var out []*medmeshv1.Decision
	for _, mac := range sortedKeys(after) {
		was, is := before[mac], after[mac]
		id := s.freshID(t.id + "/" + mac)
		var d *medmeshv1.Decision
		switch {
		case is != "" && (is != was || is == changed):
			d = s.applyPolicyDecision(id, mac, s.policies[is], t.actor, t.reason, t.twoPerson)
		case is == "" && was != "" && !s.hasOwnPolicy(mac):
			d = &medmeshv1.Decision{
				Id:        id,
				Action:    medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY,
				DeviceMac: mac,
				Policy:    &medmeshv1.Policy{Name: was},
				Actor:     t.actor,
				Reason:    t.reason,
			}
		default:
			continue
		}
		out = append(out, s.appendDecision(index, now, d, false, t.comment))
	}
	return out
}

// freshID is id, or id with a suffix if a decision already has it (a
// device reclassified twice in one sensor batch).
func (s *state) freshID(id string) string {
	out := id
	for n := uint64(2); ; n++ {
		if _, dup := s.decisionAt[out]; !dup {
			return out
		}
		out = id + "/" + uitoa(n)
	}
}

// lifeCriticalDevice reports whether the device is life-critical; a device
// the store does not know has no known tier and counts as one.
func (s *state) lifeCriticalDevice(mac string) bool {
	dev := s.devices[mac]
	if dev == nil {
		return true
	}
	return safety.LifeCritical(dev.GetTier(), dev.GetDeviceClass())
}

package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func checkVersion(name string, old *medmeshv1.Policy, expected *uint64) error {
	if expected == nil {
		return nil
	}
	have := uint64(0)
	if old != nil {
		have = old.GetVersion()
	}
	if have != *expected {
		return fmt.Errorf("policy %q has version %d, expected %d: %w", name, have, *expected, ErrVersionMismatch)
	}
	return nil
}

// applyPolicyPut creates or replaces a policy (compare-and-set on version).
// A change to an active policy appends an APPLY_POLICY decision.
func (s *state) applyPolicyPut(index uint64, now *timestamppb.Timestamp, c *fsmpb.PolicyPut) *Result {
	in := c.GetPolicy()
	if in.GetName() == "" {
		return &Result{Err: fmt.Errorf("policy name: %w", ErrInvalid)}
	}
	old := s.policies[in.GetName()]
	if c.ExpectedVersion != nil {
		if err := checkVersion(in.GetName(), old, c.ExpectedVersion); err != nil {
			return &Result{Err: err}
		}
	}
	if c.GetMonitorOnly() && in.GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE {
		return &Result{Err: fmt.Errorf("policy %q: %s may write policies in monitor mode only; enforce mode needs an approver: %w", in.GetName(), c.GetActor(), ErrPermissionDenied)}
	}
	p := proto.CloneOf(in)
	p.Version, p.Active, p.CreateTime = 1, false, now
	if old != nil {
		p.Version = old.Version + 1
		p.Active = old.Active
		p.CreateTime = old.CreateTime
	}
	p.Revision, p.UpdateTime, p.UpdatedBy = index, now, c.GetActor()
	// A put keeps the policy's activation, so only an active policy's
	// change can move a device to another class policy.
	var classes []medmeshv1.DeviceClass
	if old.GetActive() {
		classes = s.policyClasses(old, p)
	}
	before := s.classView(classes)
	s.setPolicy(p.Name, p)
	s.appendAudit(index, now, c.GetActor(), "policy.put", "policy/"+p.Name, c.GetReason(), "", "", c.GetComment())
	res := &Result{Policy: p}
	if p.Active && !classPolicy(p) {
		res.Decision = s.appendDecision(index, now, s.applyPolicyDecision(c.GetDecisionId(), p.GetDeviceMac(), p, c.GetActor(), c.GetReason(), c.GetTwoPerson()), false, c.GetComment())
		res.Decisions = []*medmeshv1.Decision{res.Decision}
	}
	if old.GetActive() {
		t := trigger{id: decisionBase(c.GetDecisionId(), index), actor: c.GetActor(), reason: c.GetReason(), comment: c.GetComment(), twoPerson: c.GetTwoPerson()}
		res.addDecisions(s.reconcileClasses(index, now, t, before, s.classView(classes), p.Name))
	}
	return res
}

// applyPolicyDelete removes a policy; an active one gets a REMOVE_POLICY
// decision.
func (s *state) applyPolicyDelete(index uint64, now *timestamppb.Timestamp, c *fsmpb.PolicyDelete) *Result {
	old := s.policies[c.GetName()]
	if old == nil {
		return &Result{Err: fmt.Errorf("policy %q: %w", c.GetName(), ErrNotFound)}
	}
	if err := checkVersion(c.GetName(), old, c.ExpectedVersion); err != nil {
		return &Result{Err: err}
	}
	var classes []medmeshv1.DeviceClass
	if old.Active {
		classes = s.policyClasses(old)
	}
	before := s.classView(classes)
	s.setPolicy(c.GetName(), nil)
	s.appendAudit(index, now, c.GetActor(), "policy.delete", "policy/"+c.GetName(), c.GetReason(), "", "", c.GetComment())
	res := &Result{Policy: old}
	if old.Active && !classPolicy(old) {
		res.Decision = s.appendDecision(index, now, &medmeshv1.Decision{
			Id:        c.GetDecisionId(),
			Action:    medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY,
			DeviceMac: old.GetDeviceMac(),
			Policy:    &medmeshv1.Policy{Name: old.Name},
			Actor:     c.GetActor(),
			Reason:    c.GetReason(),
		}, false, c.GetComment())
		res.Decisions = []*medmeshv1.Decision{res.Decision}
	}
	if old.Active {
		// The devices of a deleted class policy lose it (or get the next
		// one of their class); a device whose own policy was deleted gets
		// its class's policy again.
		t := trigger{id: decisionBase(c.GetDecisionId(), index), actor: c.GetActor(), reason: c.GetReason(), comment: c.GetComment(), twoPerson: true}
		res.addDecisions(s.reconcileClasses(index, now, t, before, s.classView(classes), ""))
	}
	return res
}

// applyPolicyActivate activates a policy and appends its APPLY_POLICY
// decision, whose index is the fencing token enforcers follow.
func (s *state) applyPolicyActivate(index uint64, now *timestamppb.Timestamp, c *fsmpb.PolicyActivate) *Result {
	old := s.policies[c.GetName()]
	if old == nil {
		return &Result{Err: fmt.Errorf("policy %q: %w", c.GetName(), ErrNotFound)}
	}
	p := proto.CloneOf(old)
	p.Active = true
	if c.GetMode() != medmeshv1.PolicyMode_POLICY_MODE_UNSPECIFIED {
		p.Mode = c.GetMode()
	}
	if c.GetMonitorOnly() && p.GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE {
		return &Result{Err: fmt.Errorf("policy %q: only an approver activates enforce mode, not %s: %w", p.GetName(), c.GetActor(), ErrPermissionDenied)}
	}
	p.Version++
	p.Revision, p.UpdateTime, p.UpdatedBy = index, now, c.GetActor()
	classes := s.policyClasses(p)
	before := s.classView(classes)
	s.setPolicy(p.Name, p)
	s.appendAudit(index, now, c.GetActor(), "policy.activate", "policy/"+p.Name, c.GetReason(), "", "", c.GetComment())
	res := &Result{Policy: p}
	if !classPolicy(p) {
		res.Decision = s.appendDecision(index, now, s.applyPolicyDecision(c.GetDecisionId(), p.GetDeviceMac(), p, c.GetActor(), c.GetReason(), c.GetTwoPerson()), false, c.GetComment())
		res.Decisions = []*medmeshv1.Decision{res.Decision}
	}
	// A class policy: one decision per device of the class (see
	// state_classes.go).
	t := trigger{id: decisionBase(c.GetDecisionId(), index), actor: c.GetActor(), reason: c.GetReason(), comment: c.GetComment(), twoPerson: c.GetTwoPerson()}
	res.addDecisions(s.reconcileClasses(index, now, t, before, s.classView(classes), p.Name))
	return res
}

// decisionBase is the base of the ids of the decisions a command fans out
// to: its decision id, or one derived from its index.
func decisionBase(id string, index uint64) string {
	if id != "" {
		return id
	}
	return "i" + uitoa(index)
}

// applyPolicyDecision is the APPLY_POLICY decision of an active policy for
// device mac (its own, or a device of its class). Under the two-person
// rule, a policy in enforce mode for a life-critical device (by tier or
// class, or a life-critical class) waits for a second approver: one
// person's word never enforces against a pump.
func (s *state) applyPolicyDecision(id, mac string, p *medmeshv1.Policy, actor, reason string, twoPerson bool) *medmeshv1.Decision {
	d := &medmeshv1.Decision{
		Id:        id,
		Action:    medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY,
		DeviceMac: mac,
		Policy:    p,
		Actor:     actor,
		Reason:    reason,
	}
	if twoPerson && p.GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE && (s.lifeCriticalSubject(p) || s.lifeCriticalDevice(mac)) {
		d.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
		d.Reason += "; pending approval by a second approver: enforce mode on a life-critical device"
	}
	return d
}

// lifeCriticalSubject reports whether a policy applies to a life-critical
// device or class.
func (s *state) lifeCriticalSubject(p *medmeshv1.Policy) bool {
	if mac := p.GetDeviceMac(); mac != "" {
		dev := s.devices[mac]
		if dev == nil {
			return true // a device nobody has seen has no known tier
		}
		return safety.LifeCritical(dev.GetTier(), dev.GetDeviceClass())
	}
	// A class policy: an unknown class counts as life-critical too.
	return safety.LifeCritical(safety.TierForClass(p.GetDeviceClass()), p.GetDeviceClass())
}

// Policy returns a policy, or nil.
func (f *FSM) Policy(name string) *medmeshv1.Policy {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.policies[name]
}

// ListPolicies returns up to limit policies named after `after`, by name.
func (f *FSM) ListPolicies(after string, limit int, deviceMAC string) (page []*medmeshv1.Policy, more bool, index uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, k := range sortedKeys(f.st.policies) {
		p := f.st.policies[k]
		if k <= after || (deviceMAC != "" && p.GetDeviceMac() != deviceMAC) {
			continue
		}
		if len(page) == limit {
			return page, true, f.st.applied
		}
		page = append(page, p)
	}
	return page, false, f.st.applied
}

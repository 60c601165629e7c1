package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
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
	p := proto.CloneOf(in)
	p.Version, p.Active, p.CreateTime = 1, false, now
	if old != nil {
		p.Version = old.Version + 1
		p.Active = old.Active
		p.CreateTime = old.CreateTime
	}
	p.Revision, p.UpdateTime, p.UpdatedBy = index, now, c.GetActor()
	s.policies[p.Name] = p
	s.appendAudit(index, now, c.GetActor(), "policy.put", "policy/"+p.Name, c.GetReason(), "", "")
	res := &Result{Policy: p}
	if p.Active {
		res.Decision = s.appendDecision(index, now, &medmeshv1.Decision{
			Id:        c.GetDecisionId(),
			Action:    medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY,
			DeviceMac: p.GetDeviceMac(),
			Policy:    p,
			Actor:     c.GetActor(),
			Reason:    c.GetReason(),
		}, false)
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
	delete(s.policies, c.GetName())
	s.appendAudit(index, now, c.GetActor(), "policy.delete", "policy/"+c.GetName(), c.GetReason(), "", "")
	res := &Result{Policy: old}
	if old.Active {
		res.Decision = s.appendDecision(index, now, &medmeshv1.Decision{
			Id:        c.GetDecisionId(),
			Action:    medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY,
			DeviceMac: old.GetDeviceMac(),
			Policy:    &medmeshv1.Policy{Name: old.Name},
			Actor:     c.GetActor(),
			Reason:    c.GetReason(),
		}, false)
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
	p.Version++
	p.Revision, p.UpdateTime, p.UpdatedBy = index, now, c.GetActor()
	s.policies[p.Name] = p
	s.appendAudit(index, now, c.GetActor(), "policy.activate", "policy/"+p.Name, c.GetReason(), "", "")
	d := s.appendDecision(index, now, &medmeshv1.Decision{
		Id:        c.GetDecisionId(),
		Action:    medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY,
		DeviceMac: p.GetDeviceMac(),
		Policy:    p,
		Actor:     c.GetActor(),
		Reason:    c.GetReason(),
	}, false)
	return &Result{Policy: p, Decision: d}
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

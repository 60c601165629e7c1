package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/response"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The response rules are replicated state: a table ordered by name,
// evaluated inside the apply of every new alert, after the alert folded
// into its incident. The decisions it makes are appended in that same
// apply, at most one per incident and rule, with ids derived from both,
// so every replica derives the same decisions from the same log and no
// second command is needed.

func cmpRule(r *medmeshv1.ResponseRule, name string) int { return strings.Compare(r.GetName(), name) }

// putRule stores r in a new slice (snapshots share the old one).
func (s *state) putRule(r *medmeshv1.ResponseRule) {
	i, found := slices.BinarySearchFunc(s.rules, r.GetName(), cmpRule)
	rs := slices.Clone(s.rules)
	if found {
		rs[i] = r
	} else {
		rs = slices.Insert(rs, i, r)
	}
	s.rules = rs
}

func (s *state) rule(name string) (int, *medmeshv1.ResponseRule) {
	i, found := slices.BinarySearchFunc(s.rules, name, cmpRule)
	if !found {
		return -1, nil
	}
	return i, s.rules[i]
}

func (s *state) applyRulePut(index uint64, now *timestamppb.Timestamp, c *fsmpb.RulePut) *Result {
	in := c.GetRule()
	if err := response.Validate(in); err != nil {
		return &Result{Err: fmt.Errorf("%v: %w", err, ErrInvalid)}
	}
	_, old := s.rule(in.GetName())
	if ev := c.ExpectedVersion; ev != nil && *ev != old.GetVersion() {
		return &Result{Err: fmt.Errorf("rule %q is at version %d, not %d: %w", in.GetName(), old.GetVersion(), *ev, ErrVersionMismatch)}
	}
	r := proto.CloneOf(in)
	r.Version, r.Revision, r.UpdateTime, r.UpdatedBy = old.GetVersion()+1, index, now, c.GetActor()
	s.putRule(r)
	s.rulesSeeded = true // the table is operators' from now on
	s.appendAudit(index, now, c.GetActor(), "rule.put", "rule/"+r.Name, c.GetReason(), r.Name, "", c.GetComment())
	return &Result{Rule: r}
}

func (s *state) applyRuleDelete(index uint64, now *timestamppb.Timestamp, c *fsmpb.RuleDelete) *Result {
	i, old := s.rule(c.GetName())
	if old == nil {
		return &Result{Err: fmt.Errorf("rule %q: %w", c.GetName(), ErrNotFound)}
	}
	if ev := c.ExpectedVersion; ev != nil && *ev != old.GetVersion() {
		return &Result{Err: fmt.Errorf("rule %q is at version %d, not %d: %w", c.GetName(), old.GetVersion(), *ev, ErrVersionMismatch)}
	}
	s.rules = slices.Delete(slices.Clone(s.rules), i, i+1)
	s.rulesSeeded = true
	s.appendAudit(index, now, c.GetActor(), "rule.delete", "rule/"+old.Name, c.GetReason(), old.Name, "", c.GetComment())
	return &Result{Rule: old}
}

// applyRulesSeed installs the default rules once: a table that was seeded
// or changed by an operator is left alone.
func (s *state) applyRulesSeed(index uint64, now *timestamppb.Timestamp, c *fsmpb.RulesSeed) *Result {
	if s.rulesSeeded {
		return &Result{}
	}
	for _, in := range c.GetRules() {
		if err := response.Validate(in); err != nil {
			return &Result{Err: fmt.Errorf("default %v: %w", err, ErrInvalid)}
		}
	}
	for _, in := range c.GetRules() {
		_, old := s.rule(in.GetName())
		r := proto.CloneOf(in)
		r.Version, r.Revision, r.UpdateTime, r.UpdatedBy = old.GetVersion()+1, index, now, c.GetActor()
		s.putRule(r)
		s.appendAudit(index, now, c.GetActor(), "rule.put", "rule/"+r.Name, "default response rule", r.Name, "", "")
	}
	s.rulesSeeded = true
	return &Result{}
}

// respond evaluates the rule table against a newly committed alert and
// appends the decisions of its incident (inc, mutable in this apply) at
// the alert's index: one decision per incident and rule, with an id
// derived from both, so an incident's many alerts decide once. An
// enforcement decision is made only when it is stronger (response.Strength)
// than the incident's strongest decision not rejected: the incident
// escalates, it never piles up weaker decisions. A match that decides
// nothing is recorded on the incident with the reason. Life-critical and
// unknown-tier devices get pending decisions (appendDecision).
func (s *state) respond(index uint64, now *timestamppb.Timestamp, a *medmeshv1.Alert, inc *medmeshv1.Incident) {
	if len(s.rules) == 0 {
		return
	}
	props := response.Evaluate(s.rules, a, s.devices[a.GetDeviceMac()])
	// The strongest first: a weaker proposal of the same alert is then
	// not stronger than what the incident already has.
	slices.SortStableFunc(props, func(x, y *medmeshv1.Decision) int {
		return response.Strength(y.GetAction()) - response.Strength(x.GetAction())
	})
	for _, d := range props {
		fired, seen := false, false
		for _, r := range inc.Responses {
			if r.GetRule() == d.GetRule() {
				seen = true
				fired = fired || r.GetDecisionId() != ""
			}
		}
		if fired {
			continue
		}
		match := &medmeshv1.IncidentResponse{Rule: d.GetRule(), Action: d.GetAction(), AlertId: a.GetId(), Index: index}
		if st := response.Strength(d.GetAction()); st > 0 {
			if cur, curID := s.incidentStrength(inc); st <= cur {
				if !seen {
					match.Note = fmt.Sprintf("not stronger than the incident's %s (%s)", names.Enum(s.decisions[s.decisionAt[curID]].GetAction()), curID)
					inc.Responses = append(inc.Responses, match)
				}
				continue
			}
		}
		d.Id = response.IncidentDecisionID(inc.GetId(), d.GetRule())
		if _, dup := s.decisionAt[d.Id]; dup {
			continue
		}
		d.IncidentId = inc.GetId()
		d.Reason = "incident " + inc.GetId() + ": " + d.Reason
		s.appendDecision(index, now, d, true, "")
		s.ruleDecisions++
		match.DecisionId = d.Id
		inc.Responses = append(inc.Responses, match)
	}
}

// incidentStrength is the strongest action among the incident's decisions
// that an operator did not reject, and that decision's id.
func (s *state) incidentStrength(inc *medmeshv1.Incident) (int, string) {
	best, id := 0, ""
	for _, r := range inc.GetResponses() {
		if r.GetDecisionId() == "" {
			continue
		}
		pos, ok := s.decisionAt[r.GetDecisionId()]
		if !ok {
			continue // compacted: no longer in force
		}
		if s.decisions[pos].GetState() == medmeshv1.DecisionState_DECISION_STATE_REJECTED {
			continue
		}
		if st := response.Strength(r.GetAction()); st > best {
			best, id = st, r.GetDecisionId()
		}
	}
	return best, id
}

// Rules returns the response rules by name and the applied index.
func (f *FSM) Rules() ([]*medmeshv1.ResponseRule, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.st.rules), f.st.applied
}

// RuleDecisions counts the decisions the rules made in the entries this
// FSM applied since it was created or restored.
func (f *FSM) RuleDecisions() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.ruleDecisions
}

// RulesSeeded reports whether the default rules were installed (or an
// operator changed the table), after which a RulesSeed is a no-op.
func (f *FSM) RulesSeeded() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.rulesSeeded
}

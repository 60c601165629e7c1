package fsm

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// appendDecision appends d (owned by the caller) to the decision log at
// index. An automatic enforcement decision waits for an operator
// (PENDING_APPROVAL) when package safety says the device is life-critical
// (by tier, by class, or because its tier is unknown, which includes a
// device the store does not know): medmesh never blocks a life-critical
// device on its own. The tier is the store's, never the proposal's.
func (s *state) appendDecision(index uint64, now *timestamppb.Timestamp, d *medmeshv1.Decision, automatic bool, comment string) *medmeshv1.Decision {
	d.Index, d.CreateTime = index, now
	class := medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED
	if dev := s.devices[d.GetDeviceMac()]; dev != nil {
		d.Tier, class = dev.GetTier(), dev.GetDeviceClass()
		// No inline enforcer on the path of a device seen through flow
		// export: the decision is advice for a gateway or NAC.
		d.Advisory, d.Site = dev.GetAdvisory(), dev.GetSite()
	} else if automatic {
		d.Tier = medmeshv1.Tier_TIER_UNSPECIFIED
	}
	pending := automatic && d.Action != medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY && safety.LifeCritical(d.Tier, class)
	switch {
	case pending:
		d.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
		d.Reason += "; pending approval: " + safety.Why(d.Tier, class)
	case d.State == medmeshv1.DecisionState_DECISION_STATE_UNSPECIFIED:
		d.State = medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE
	}
	s.decisionAt[d.Id] = len(s.decisions)
	s.decisions = append(s.decisions, d)
	if d.State == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		if sensor := s.alertSensor(d.GetAlertId()); sensor != "" {
			s.pendingCause[d.Id] = sensor
		}
	}
	action := "decision.create"
	switch d.State {
	case medmeshv1.DecisionState_DECISION_STATE_APPROVED:
		action = "decision.approve"
	case medmeshv1.DecisionState_DECISION_STATE_REJECTED:
		action = "decision.reject"
	}
	s.appendAudit(index, now, d.Actor, action, "decision/"+d.Id, d.Reason, d.Rule, d.AlertId, comment)
	return d
}

func (s *state) applyDecisionCreate(index uint64, now *timestamppb.Timestamp, c *fsmpb.DecisionCreate) *Result {
	in := c.GetDecision()
	if in.GetId() == "" {
		return &Result{Err: fmt.Errorf("decision id: %w", ErrInvalid)}
	}
	if _, dup := s.decisionAt[in.GetId()]; dup {
		return &Result{Err: fmt.Errorf("decision %q already exists: %w", in.GetId(), ErrFailedPrecondition)}
	}
	d := proto.CloneOf(in)
	// A proposal may ask to wait for an operator; it can never make itself
	// effective past the safety rule, nor claim a review.
	if d.State != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		d.State = medmeshv1.DecisionState_DECISION_STATE_UNSPECIFIED
	}
	d.Tier, d.TargetDecisionId = medmeshv1.Tier_TIER_UNSPECIFIED, ""
	d.ReviewedBy, d.ReviewTime, d.ReviewIndex = "", nil, 0
	return &Result{Decision: s.appendDecision(index, now, d, c.GetAutomatic(), "")}
}

// applyDecisionReview approves or rejects a pending decision: a new log
// entry at its own index, plus the review recorded on the target.
func (s *state) applyDecisionReview(index uint64, now *timestamppb.Timestamp, c *fsmpb.DecisionReview) *Result {
	pos, ok := s.decisionAt[c.GetTargetId()]
	if !ok {
		return &Result{Err: fmt.Errorf("decision %q: %w", c.GetTargetId(), ErrNotFound)}
	}
	target := s.decisions[pos]
	if target.State != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		return &Result{Err: fmt.Errorf("decision %q is %s, not pending approval: %w", target.Id, target.State, ErrFailedPrecondition)}
	}
	if _, dup := s.decisionAt[c.GetDecisionId()]; dup || c.GetDecisionId() == "" {
		return &Result{Err: fmt.Errorf("review decision id %q: %w", c.GetDecisionId(), ErrInvalid)}
	}
	if c.GetTwoPerson() {
		for _, cause := range s.causes(target) {
			if cause == c.GetActor() {
				return &Result{Err: fmt.Errorf("decision %q was caused by %s, who may not also review it (two-person rule): %w", target.Id, cause, ErrPermissionDenied)}
			}
		}
	}
	st := medmeshv1.DecisionState_DECISION_STATE_REJECTED
	if c.GetApprove() {
		st = medmeshv1.DecisionState_DECISION_STATE_APPROVED
	}
	t := proto.CloneOf(target)
	t.State, t.ReviewedBy, t.ReviewTime, t.ReviewIndex = st, c.GetActor(), now, index
	s.decisions[pos] = t
	delete(s.pendingCause, t.Id)
	entry := &medmeshv1.Decision{
		Id:               c.GetDecisionId(),
		Action:           target.Action,
		State:            st,
		DeviceMac:        target.DeviceMac,
		PeerCidr:         target.PeerCidr,
		Policy:           target.Policy,
		Tier:             target.Tier,
		Actor:            c.GetActor(),
		Reason:           c.GetReason(),
		Rule:             target.Rule,
		AlertId:          target.AlertId,
		TargetDecisionId: target.Id,
	}
	return &Result{Decision: s.appendDecision(index, now, entry, false, c.GetComment())}
}

// causes are the identities that caused decision d: whoever made it and,
// for the response engine's decisions, the sensor whose alert triggered
// it. None of them may review it.
func (s *state) causes(d *medmeshv1.Decision) []string {
	out := []string{d.GetActor()}
	sensor, ok := s.pendingCause[d.GetId()]
	if !ok {
		sensor = s.alertSensor(d.GetAlertId())
	}
	if sensor != "" {
		out = append(out, sensor)
	}
	return out
}

// alertSensor is the identity of the sensor that reported an alert kept in
// the state, or "".
func (s *state) alertSensor(alertID string) string {
	pos, ok := s.alertAt[alertID]
	if !ok || alertID == "" {
		return ""
	}
	if sid := s.alerts[pos-int(s.alertBase)].GetSensorId(); sid != "" {
		return SensorIdentity(sid)
	}
	return ""
}

// SensorIdentity is the identity (role/name) a sensor id reports under.
func SensorIdentity(sensorID string) string { return "sensor/" + sensorID }

// Decision returns a decision by id, or nil.
func (f *FSM) Decision(id string) *medmeshv1.Decision {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if pos, ok := f.st.decisionAt[id]; ok {
		return f.st.decisions[pos]
	}
	return nil
}

// ListDecisions returns up to limit decisions with index > after that match
// keep, by index. One entry can append several decisions (a class policy,
// one per device) and callers resume after the last index they got, so a
// page never ends inside an index: it may hold more than limit.
// A nil keep keeps every one.
func (f *FSM) ListDecisions(after uint64, limit int, keep func(*medmeshv1.Decision) bool) (page []*medmeshv1.Decision, more bool, index uint64) {
	if keep == nil {
		keep = keepAll[*medmeshv1.Decision]
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	ds := f.st.decisions
	i := sort.Search(len(ds), func(i int) bool { return ds[i].Index > after })
	for ; i < len(ds); i++ {
		if !keep(ds[i]) {
			continue
		}
		if len(page) >= limit && ds[i].Index != page[len(page)-1].Index {
			return page, true, f.st.applied
		}
		page = append(page, ds[i])
	}
	return page, false, f.st.applied
}

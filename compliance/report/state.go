// Package report completes a compliance report with the replicated
// compliance state (risk exceptions, the daily trend) and renders it as
// self-contained HTML with server-side SVG charts, JSON, or PDF through
// headless Chromium.
package report

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// InForce reports whether an exception accepts its target at time now:
// it is active and its expiry is after now. An exception whose expiry
// passed is not in force even before the leader records the expiry.
func InForce(e *medmeshv1.RiskException, now time.Time) bool {
	return e.GetState() == medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE && e.GetExpireTime().AsTime().After(now)
}

// ApplyState completes r (a report as compliance.Evaluate computed it)
// with the exceptions and the trend, at time now: the plan's actions an
// exception in force accepts move to ExceptedActions, the findings it
// accepts are listed in ExceptedFindings, every exception is listed (in
// force first), and the trend is attached. An expired or revoked
// exception's action stays in the plan: it reappears. The plan's ranks
// are kept as computed (a gap shows what was accepted). r is not changed.
func ApplyState(r *medmeshv1.ComplianceReport, exceptions []*medmeshv1.RiskException, trend []*medmeshv1.TrendPoint, now time.Time) *medmeshv1.ComplianceReport {
	out := proto.CloneOf(r)
	if out.GenerateTime == nil {
		out.GenerateTime = timestamppb.New(now)
	}
	actions, findings := map[string]bool{}, map[string]bool{}
	for _, e := range exceptions {
		if !InForce(e, now) {
			continue
		}
		switch e.GetTargetKind() {
		case medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION:
			actions[e.GetTarget()] = true
		case medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING:
			findings[e.GetTarget()] = true
		}
	}
	if p := out.GetPlan(); p != nil {
		var kept []*medmeshv1.RemediationAction
		for _, a := range p.GetActions() {
			if actions[a.GetId()] {
				out.ExceptedActions = append(out.ExceptedActions, a)
			} else {
				kept = append(kept, a)
			}
		}
		p.Actions = kept
	}
	for f := range findings {
		out.ExceptedFindings = append(out.ExceptedFindings, f)
	}
	slices.Sort(out.ExceptedFindings)
	out.Exceptions = make([]*medmeshv1.RiskException, 0, len(exceptions))
	for _, e := range exceptions {
		out.Exceptions = append(out.Exceptions, proto.CloneOf(e))
	}
	slices.SortStableFunc(out.Exceptions, func(a, b *medmeshv1.RiskException) int {
		ia, ib := InForce(a, now), InForce(b, now)
		if ia != ib {
			if ia {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.GetIndex(), b.GetIndex())
	})
	out.Trend = make([]*medmeshv1.TrendPoint, 0, len(trend))
	for _, p := range trend {
		out.Trend = append(out.Trend, proto.CloneOf(p))
	}
	return out
}

// Point summarises a report as the day's trend point: devices by posture
// band, campus risk, controls by campus status, exceptions in force.
func Point(r *medmeshv1.ComplianceReport, exceptions []*medmeshv1.RiskException, now time.Time) *medmeshv1.TrendPoint {
	p := &medmeshv1.TrendPoint{
		Devices:              r.GetCoverage().GetDevices(),
		CampusRisk:           r.GetPlan().GetCampusRisk(),
		ControlsMet:          r.GetControlsMet(),
		ControlsUnmet:        r.GetControlsUnmet(),
		ControlsNotEvidenced: r.GetControlsNotEvidenced(),
	}
	for _, d := range r.GetDevices() {
		switch d.GetPosture() {
		case "critical":
			p.PostureCritical++
		case "high":
			p.PostureHigh++
		case "medium":
			p.PostureMedium++
		case "low":
			p.PostureLow++
		default:
			p.PostureNone++
		}
	}
	for _, e := range exceptions {
		if InForce(e, now) {
			p.ExceptionsActive++
		}
	}
	return p
}

package fsm

import (
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Retention bounds the replicated state. It is code, not configuration:
// every replica must prune identically, so a value that differed between
// coordinators would make their states diverge. Pruning is driven by the
// leader-stamped command time, never the local clock.
type Retention struct {
	// AlertAge: alerts older than this are evicted (90 days), whatever
	// their state; decisions and the audit trail keep what was done.
	AlertAge time.Duration
	// MaxAlerts bounds the alerts kept, oldest evicted first (200,000).
	MaxAlerts int
	// DecisionAge: a decision no longer in force (superseded by a later
	// decision for the same device and slot, reviewed, or without
	// enforcement effect) is dropped once this old (90 days). A pending
	// decision and the decisions in force are never dropped.
	DecisionAge time.Duration
	// MaxSuperseded bounds the decisions kept that are no longer in force
	// (100,000), oldest dropped first.
	MaxSuperseded int
	// AuditWindow is how many recent audit records the state (and every
	// snapshot) keeps (10,000); the whole trail is in the audit store on
	// each coordinator's disk.
	AuditWindow int
	// CompactEvery is how often, in leader time, the decision log is
	// compacted (one day).
	CompactEvery time.Duration

	// IncidentWindow: an alert joins an open incident of its device if
	// the incident's last alert is at most this old (30 minutes); an
	// incident closes once this passes without an alert. See
	// DefaultRetention for why 30 minutes.
	IncidentWindow time.Duration
	// IncidentAge: a closed incident is evicted once closed this long (90
	// days, as alerts). Open incidents are never evicted.
	IncidentAge time.Duration
	// MaxIncidents bounds the closed incidents kept (100,000), the oldest
	// closed evicted first.
	MaxIncidents int
}

// DefaultRetention is what a hospital would expect: 90 days of alerts and
// superseded decisions, everything in force kept, six years of audit on
// disk (auditlog.Retain).
//
// The incident window is 30 minutes since an incident's last alert. A
// device's hands-on attack (scan, login, upload) comes in seconds to
// minutes, and gaps of a few minutes between its steps (sensors fold a
// scan over a 60 s fan-out window, report every second, and a baseline
// miss can follow its flow by the report period) must not split the
// story; a quarantined device stops alerting, so its incident closes
// half an hour later and a new attempt after that is a new incident. A
// longer window keeps merging a busy device's unrelated alerts across a
// shift into one incident (an incident's score only grows), a shorter one
// splits slow, careful intrusions. Like the other values, it is code:
// replicas that disagreed would fold alerts differently and diverge.
func DefaultRetention() Retention {
	return Retention{
		AlertAge:       90 * 24 * time.Hour,
		MaxAlerts:      200_000,
		DecisionAge:    90 * 24 * time.Hour,
		MaxSuperseded:  100_000,
		AuditWindow:    10_000,
		CompactEvery:   24 * time.Hour,
		IncidentWindow: 30 * time.Minute,
		IncidentAge:    90 * 24 * time.Hour,
		MaxIncidents:   100_000,
	}
}

// prune evicts what is past retention at leader time now. Alert eviction
// is from the front and costs what it evicts; the decision log is compacted
// once per CompactEvery of leader time. Both are functions of the state and
// the command, so every replica prunes identically.
func (s *state) prune(now *timestamppb.Timestamp) {
	r := s.retention
	t := now.AsTime()
	horizon := t.Add(-r.AlertAge)
	n := 0
	for n < len(s.alerts) {
		a := s.alerts[n]
		if !(r.MaxAlerts > 0 && len(s.alerts)-n > r.MaxAlerts) &&
			!(r.AlertAge > 0 && a.GetCreateTime().AsTime().Before(horizon)) {
			break
		}
		delete(s.alertAt, a.GetId())
		n++
	}
	if n > 0 {
		s.alerts = s.alerts[n:]
		s.alertBase += uint64(n)
	}
	s.pruneIncidents(now)
	s.pruneSessions(now)
	if r.CompactEvery > 0 && (s.compacted == nil || t.Sub(s.compacted.AsTime()) >= r.CompactEvery) {
		s.compactDecisions(t)
		s.compacted = now
	}
}

// compactDecisions drops decisions that are no longer in force and older
// than DecisionAge (or beyond MaxSuperseded), keeping the order of the rest.
//
// The enforcers' state is a fold over the decision log, one slot per device
// and kind (quarantine; a block per peer; the policy; enforce mode after
// it). A decision is in force when no later effective decision fills its
// slot; dropping only decisions that are not in force leaves the fold — what
// an enforcer replaying the log from index 0 ends with — unchanged.
func (s *state) compactDecisions(now time.Time) {
	r := s.retention
	horizon := now.Add(-r.DecisionAge)
	ds := s.decisions
	keep := make([]bool, len(ds))
	filled := map[string]bool{}
	dropped, superseded := 0, 0
	for i := len(ds) - 1; i >= 0; i-- {
		d := ds[i]
		if inForce(d, filled) {
			keep[i] = true
			continue
		}
		superseded++
		keep[i] = !d.GetCreateTime().AsTime().Before(horizon) && (r.MaxSuperseded <= 0 || superseded <= r.MaxSuperseded)
		if !keep[i] {
			dropped++
		}
	}
	if dropped == 0 {
		return
	}
	out := make([]*medmeshv1.Decision, 0, len(ds)-dropped)
	for i, d := range ds {
		if keep[i] {
			out = append(out, d)
		} else {
			delete(s.decisionAt, d.GetId())
		}
	}
	for i, d := range out {
		s.decisionAt[d.GetId()] = i
	}
	s.decisions = out
}

// inForce reports whether d, visited newest first, still counts: pending,
// the latest effective decision of its slot, or one whose slot cannot be
// told (kept, to be safe). filled records the slots later decisions fill.
func inForce(d *medmeshv1.Decision, filled map[string]bool) bool {
	if d.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		return true
	}
	effective := d.GetState() == medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE ||
		(d.GetState() == medmeshv1.DecisionState_DECISION_STATE_APPROVED && d.GetTargetDecisionId() != "")
	if !effective {
		return false // rejected, or the reviewed original: its review entry carries the effect
	}
	mac := strings.ToLower(d.GetDeviceMac())
	if mac == "" {
		mac = strings.ToLower(d.GetPolicy().GetDeviceMac())
	}
	var slot string
	switch d.GetAction() {
	case medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY, medmeshv1.DecisionAction_DECISION_ACTION_UNSPECIFIED:
		return false // no enforcement effect
	case medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, medmeshv1.DecisionAction_DECISION_ACTION_RELEASE:
		slot = "quarantine"
	case medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, medmeshv1.DecisionAction_DECISION_ACTION_UNBLOCK_PEER:
		slot = "peer " + d.GetPeerCidr()
	case medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY:
		slot = "policy"
	case medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY:
		// Enforce mode lasts until the next policy is applied or removed.
		if mac == "" || filled[mac+"|policy"] || filled[mac+"|enforce"] {
			return mac == ""
		}
		filled[mac+"|enforce"] = true
		return true
	default:
		return true // an action this version does not know: keep
	}
	if mac == "" {
		return true
	}
	key := mac + "|" + slot
	if filled[key] {
		return false
	}
	filled[key] = true
	return true
}

package fsm

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// FlowRingSize bounds the flow summaries kept per device for simulation.
const FlowRingSize = 1000

// state is the replicated state. Stored values are immutable; every change
// stores a new value.
type state struct {
	applied uint64

	devices    map[string]*medmeshv1.Device
	policies   map[string]*medmeshv1.Policy
	active     activePolicies        // derived from policies (state_classes.go)
	decisions  []*medmeshv1.Decision // by index
	decisionAt map[string]int        // id -> position in decisions
	alerts     []*medmeshv1.Alert    // by index, from position alertBase
	alertAt    map[string]int        // id -> position in alerts (absolute)
	alertBase  uint64                // alerts evicted so far
	baselines  map[string]*medmeshv1.Baseline
	sensorSeq  map[string]uint64
	flows      map[string][]*medmeshv1.FlowSummary
	servers    map[string]*fsmpb.ServerRegister
	requests   requestTable

	// reqID is the client request id of the command being applied (empty
	// outside apply): its audit records carry it.
	reqID string

	// The audit chain: its head, and a window of recent records after
	// auditBase. The whole trail is in the audit store (auditlog).
	audit     []auditEntry
	auditBase auditlog.Head
	auditHead auditlog.Head
	// auditOut holds the entries chained by the command being applied,
	// for FSM.Apply to write to the audit store; not replicated state.
	auditOut []auditlog.Entry

	// pendingCause is the sensor identity that caused each pending
	// decision, kept while it is pending (the alert may be evicted).
	pendingCause map[string]string
	compacted    *timestamppb.Timestamp // leader time of the last decision compaction
	retention    Retention              // code, not state: the same on every replica

	// inc holds the incidents and the indexes derived from them
	// (state_incidents.go).
	inc incidentStore
	// deviceIPs maps each address (canonical form) to the devices holding
	// it, sorted: derived from devices, rebuilt on restore.
	deviceIPs map[string][]string

	// rules is the response rule table, ordered by name; replaced, never
	// changed in place.
	rules       []*medmeshv1.ResponseRule
	rulesSeeded bool

	// sinks is the outbound sink table, ordered by name, with each sink's
	// delivered positions (state_sinks.go); replaced, never changed in place.
	sinks []*medmeshv1.Sink

	// risk is the risk posture (state_risk.go).
	risk riskState
	// riskDirty and riskAll are what the command being applied changed
	// that the risk assessment reads; FSM.Apply moves them to the FSM for
	// the leader's assessor. Not replicated state.
	riskDirty map[string]bool
	riskAll   bool

	// comp is the compliance state: risk exceptions and the daily trend
	// (state_compliance.go).
	comp complianceState
	// accounts holds the console's accounts and sessions
	// (state_accounts.go).
	accounts accountState

	// ruleDecisions counts the decisions rules made since this process
	// started (a metric; not replicated, not in snapshots).
	ruleDecisions uint64
}

// auditEntry is an audit record in the window with its chain hash.
type auditEntry struct {
	rec  *medmeshv1.AuditRecord
	hash [32]byte
}

func newState() *state {
	return &state{
		devices:    map[string]*medmeshv1.Device{},
		policies:   map[string]*medmeshv1.Policy{},
		active:     newActivePolicies(),
		decisionAt: map[string]int{},
		alertAt:    map[string]int{},
		baselines:  map[string]*medmeshv1.Baseline{},
		sensorSeq:  map[string]uint64{},
		flows:      map[string][]*medmeshv1.FlowSummary{},
		servers:    map[string]*fsmpb.ServerRegister{},
		requests:   newRequestTable(),

		pendingCause: map[string]string{},
		retention:    DefaultRetention(),
		inc:          newIncidentStore(),
		deviceIPs:    map[string][]string{},
		risk:         newRiskState(),
		comp:         newComplianceState(),
		accounts:     newAccountState(),
	}
}

// shallowCopy copies the containers; the values are shared (immutable).
func (s *state) shallowCopy() *state {
	c := &state{
		applied:    s.applied,
		devices:    make(map[string]*medmeshv1.Device, len(s.devices)),
		policies:   make(map[string]*medmeshv1.Policy, len(s.policies)),
		decisions:  append([]*medmeshv1.Decision(nil), s.decisions...),
		decisionAt: make(map[string]int, len(s.decisionAt)),
		alerts:     append([]*medmeshv1.Alert(nil), s.alerts...),
		alertAt:    make(map[string]int, len(s.alertAt)),
		alertBase:  s.alertBase,
		baselines:  make(map[string]*medmeshv1.Baseline, len(s.baselines)),
		sensorSeq:  make(map[string]uint64, len(s.sensorSeq)),
		flows:      make(map[string][]*medmeshv1.FlowSummary, len(s.flows)),
		servers:    make(map[string]*fsmpb.ServerRegister, len(s.servers)),
		requests:   s.requests.copy(),

		audit:        append([]auditEntry(nil), s.audit...),
		auditBase:    s.auditBase,
		auditHead:    s.auditHead,
		pendingCause: make(map[string]string, len(s.pendingCause)),
		compacted:    s.compacted,
		retention:    s.retention,
		rules:        s.rules,
		rulesSeeded:  s.rulesSeeded,
		sinks:        s.sinks,

		ruleDecisions: s.ruleDecisions,
		risk:          s.risk.copy(),
		comp:          s.comp.copy(),
		accounts:      s.accounts.copy(),
	}
	for k, v := range s.pendingCause {
		c.pendingCause[k] = v
	}
	// Incidents are copied for writing only; the derived indexes are not.
	c.inc.byID = make(map[string]*medmeshv1.Incident, len(s.inc.byID))
	for k, v := range s.inc.byID {
		c.inc.byID[k] = v
	}
	for k, v := range s.devices {
		c.devices[k] = v
	}
	for k, v := range s.policies {
		c.policies[k] = v
	}
	for k, v := range s.decisionAt {
		c.decisionAt[k] = v
	}
	for k, v := range s.alertAt {
		c.alertAt[k] = v
	}
	for k, v := range s.baselines {
		c.baselines[k] = v
	}
	for k, v := range s.sensorSeq {
		c.sensorSeq[k] = v
	}
	for k, v := range s.flows {
		c.flows[k] = v
	}
	for k, v := range s.servers {
		c.servers[k] = v
	}
	return c
}

// apply applies one command, once per client request: a command whose
// request (identity, id) was applied before gets that first result back,
// with its index, and changes nothing.
func (s *state) apply(index uint64, cmd *fsmpb.Command) *Result {
	now := cmd.GetTime()
	if now == nil {
		now = &timestamppb.Timestamp{}
	}
	s.requests.evict(now)
	creq := cmd.GetRequest()
	if creq == nil {
		return s.dispatch(index, now, cmd)
	}
	if err := checkRequest(creq); err != nil {
		return &Result{Index: index, Err: err}
	}
	num := commandNumber(cmd)
	if prev, ok := s.requests.byKey[requestKey(creq)]; ok {
		res := prev.replay(num)
		if !res.Duplicate {
			res.Index = index
		}
		return res
	}
	s.reqID = creq.GetId()
	res := s.dispatch(index, now, cmd)
	s.reqID = ""
	first := *res
	s.requests.add(&request{key: requestKey(creq), req: creq, index: index, time: now, command: num, res: &first})
	return res
}

// dispatch applies one command. A command that fails changes nothing.
func (s *state) dispatch(index uint64, now *timestamppb.Timestamp, cmd *fsmpb.Command) *Result {
	s.closeIncidents(index, now)
	s.expireExceptions(index, now)
	var res *Result
	switch c := cmd.Command.(type) {
	case *fsmpb.Command_DeviceUpsert:
		res = s.applyDeviceUpsert(index, now, c.DeviceUpsert.GetSensorId(), c.DeviceUpsert.GetDevice())
	case *fsmpb.Command_DeviceUpdate:
		res = s.applyDeviceUpdate(index, now, c.DeviceUpdate)
	case *fsmpb.Command_DeviceImport:
		res = s.applyDeviceImport(index, now, c.DeviceImport)
	case *fsmpb.Command_PolicyPut:
		res = s.applyPolicyPut(index, now, c.PolicyPut)
	case *fsmpb.Command_PolicyDelete:
		res = s.applyPolicyDelete(index, now, c.PolicyDelete)
	case *fsmpb.Command_PolicyActivate:
		res = s.applyPolicyActivate(index, now, c.PolicyActivate)
	case *fsmpb.Command_DecisionCreate:
		res = s.applyDecisionCreate(index, now, c.DecisionCreate)
	case *fsmpb.Command_DecisionReview:
		res = s.applyDecisionReview(index, now, c.DecisionReview)
	case *fsmpb.Command_AlertIngest:
		res = s.applyAlertIngest(index, now, c.AlertIngest.GetAlert())
	case *fsmpb.Command_AlertAck:
		res = s.applyAlertAck(index, now, c.AlertAck)
	case *fsmpb.Command_BaselinePut:
		res = s.applyBaselinePut(index, now, c.BaselinePut.GetBaseline())
	case *fsmpb.Command_FlowSummaries:
		s.applyFlowSummaries(c.FlowSummaries.GetSummaries())
		res = &Result{}
	case *fsmpb.Command_SensorBatch:
		res = s.applySensorBatch(index, now, c.SensorBatch)
	case *fsmpb.Command_ServerRegister:
		res = s.applyServerRegister(c.ServerRegister)
	case *fsmpb.Command_RulePut:
		res = s.applyRulePut(index, now, c.RulePut)
	case *fsmpb.Command_RuleDelete:
		res = s.applyRuleDelete(index, now, c.RuleDelete)
	case *fsmpb.Command_RulesSeed:
		res = s.applyRulesSeed(index, now, c.RulesSeed)
	case *fsmpb.Command_IntelActivate:
		res = s.applyIntelActivate(index, now, c.IntelActivate)
	case *fsmpb.Command_SbomAttach:
		res = s.applySBOMAttach(index, now, c.SbomAttach)
	case *fsmpb.Command_FindingsPut:
		res = s.applyFindingsPut(index, c.FindingsPut)
	case *fsmpb.Command_ExceptionAccept:
		res = s.applyExceptionAccept(index, now, c.ExceptionAccept)
	case *fsmpb.Command_ExceptionRevoke:
		res = s.applyExceptionRevoke(index, now, c.ExceptionRevoke)
	case *fsmpb.Command_TrendRecord:
		res = s.applyTrendRecord(index, now, c.TrendRecord)
	case *fsmpb.Command_Mds2Attach:
		res = s.applyMDS2Attach(index, now, c.Mds2Attach)
	case *fsmpb.Command_ExceptionsExpire:
		res = &Result{} // expired above
	case *fsmpb.Command_SinkPut:
		res = s.applySinkPut(index, now, c.SinkPut)
	case *fsmpb.Command_SinkDelete:
		res = s.applySinkDelete(index, now, c.SinkDelete)
	case *fsmpb.Command_SinkProgress:
		res = s.applySinkProgress(index, c.SinkProgress)
	case *fsmpb.Command_SinkAlert:
		res = s.applySinkAlert(index, now, c.SinkAlert.GetAlert())
	case *fsmpb.Command_AccountPut:
		res = s.applyAccountPut(index, now, c.AccountPut)
	case *fsmpb.Command_AccountDelete:
		res = s.applyAccountDelete(index, now, c.AccountDelete)
	case *fsmpb.Command_AccountLogin:
		res = s.applyAccountLogin(index, now, c.AccountLogin)
	case *fsmpb.Command_SessionEnd:
		res = s.applySessionEnd(index, now, c.SessionEnd)
	case *fsmpb.Command_ExternalLogin:
		res = s.applyExternalLogin(index, now, c.ExternalLogin)
	case *fsmpb.Command_ServerDeregister:
		delete(s.servers, c.ServerDeregister.GetId())
		res = &Result{}
	default:
		res = &Result{Err: fmt.Errorf("unknown command %T: %w", cmd.Command, ErrInvalid)}
	}
	res.Index = index
	s.prune(now)
	return res
}

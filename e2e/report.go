package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// HistoryReport is what one history did and what its checkers found.
type HistoryReport struct {
	Name    string `json:"name"`
	Nemesis string `json:"nemesis"`
	Target  string `json:"target,omitempty"`
	// Ops counts the workload's operations: ok, failed (definitely not
	// applied), unknown (ambiguous writes).
	Ops        int `json:"ops"`
	OpsOK      int `json:"ops_ok"`
	OpsUnknown int `json:"ops_unknown"`
	// WritesDuringFault counts writes called and acknowledged while the
	// fault lasted (liveness, not checked).
	WritesDuringFault int `json:"writes_during_fault"`
	// WritesRetried counts writes sent more than once with their request
	// id (their first outcome was unknown).
	WritesRetried int `json:"writes_retried"`
	// FailoverMs is fault injection to the next acknowledged write (-1: none
	// measured); CatchUpMs heal to every enforcer at the last decision.
	FailoverMs float64 `json:"failover_ms"`
	CatchUpMs  float64 `json:"catch_up_ms"`
	// DatapathCatchUpMs is heal to every enforcer's datapath at the last
	// decision (its applied-index metric, scraped every 200 ms); CatchUpMs
	// is the same seen through the cluster status, which enforcers report
	// every 5 s.
	DatapathCatchUpMs float64 `json:"datapath_catch_up_ms"`
	// Checks maps a checker's name to its verdict ("ok" or the violation).
	Checks     map[string]string `json:"checks"`
	Violations []string          `json:"violations,omitempty"`
	Events     []string          `json:"events"`
	DurationMs int64             `json:"duration_ms"`
	History    []Op              `json:"history,omitempty"`
	Samples    []IndexSample     `json:"index_samples,omitempty"`
	Applied    []IndexSample     `json:"datapath_index_samples,omitempty"`
	// Refused are writes judged never proposed (not in History).
	Refused []Op `json:"refused,omitempty"`
}

// Report is a whole run: seed, histories and lab-wide measurements.
type Report struct {
	Seed      uint64          `json:"seed"`
	Start     time.Time       `json:"start"`
	Duration  string          `json:"duration"`
	Histories []HistoryReport `json:"histories"`
	// DetectionToDropMs is the compromised-device scenario's first external
	// packet to its enforcer's first drop, negative when the device's
	// packets were dropping before it sent one (-1: not measured).
	DetectionToDropMs float64 `json:"detection_to_drop_ms"`
	// DetectionToEnforceMs: to the decision in the enforcer's datapath.
	DetectionToEnforceMs float64 `json:"detection_to_enforce_ms"`
	ScenarioAlerts       int     `json:"scenario_alerts"`
	ScenarioDecisions    int     `json:"scenario_decisions"`
	ScenarioIncidents    int     `json:"scenario_incidents"`
	// ScenarioStory is the compromised device's incident: its stages and
	// the actions its rules decided.
	ScenarioStory string `json:"scenario_story,omitempty"`
	// ClassPolicy is the class-policy phase: the drops at the workstation's
	// enforcer. PumpScenario is compromised-pump: pending, approved, dropped.
	ClassPolicy  string `json:"class_policy,omitempty"`
	PumpScenario string `json:"pump_scenario,omitempty"`
	// SIEM is the syslog sink across a leader kill (issue 20).
	SIEM  *SIEMReport `json:"siem,omitempty"`
	Notes []string    `json:"notes,omitempty"`
}

// SIEMReport is what the SIEM step measured: a CEF syslog sink delivering
// the retained history to rsyslogd (TLS) while its leader is killed.
type SIEMReport struct {
	Receiver  string `json:"receiver"`
	Victim    string `json:"victim"`
	NewLeader string `json:"new_leader"`
	// Alerts are the cluster's alerts, every one received; DeviceAlerts
	// those of the compromised device; AuditRecords the distinct audit
	// events received.
	Alerts       int `json:"alerts"`
	DeviceAlerts int `json:"device_alerts"`
	AuditRecords int `json:"audit_records"`
	// Lines is what rsyslogd received; Resent the lines that repeated an
	// id already received (the same event, sent again by the new leader).
	Lines  int `json:"lines"`
	Resent int `json:"resent"`
	// LinesBy counts the lines by the coordinator that sent them.
	LinesBy map[string]int `json:"lines_by,omitempty"`
	// LinesAtKill were at rsyslogd when the leader died; CommittedAtKill
	// are the sink's positions the survivors had then.
	LinesAtKill     int    `json:"lines_at_kill"`
	CommittedAtKill string `json:"committed_at_kill"`
	// ElectionMs is the kill to the first answer of the new leader for the
	// sinks (elected and serving: the baseline); CatchUpMs the kill to the
	// new leader's sink delivered to the head (backlog 0). -1: not
	// measured.
	ElectionMs float64  `json:"election_ms"`
	CatchUpMs  float64  `json:"catch_up_ms"`
	Violations []string `json:"violations,omitempty"`
}

// Summary is the step in one line.
func (s *SIEMReport) Summary() string {
	ratio := "-"
	if s.ElectionMs > 0 && s.CatchUpMs >= 0 {
		ratio = fmt.Sprintf("%.2fx", s.CatchUpMs/s.ElectionMs)
	}
	return fmt.Sprintf("%s: killed %s with %d lines received (committed at the kill: %s); %s led after %s, its sink at the head %s after the kill (%s the election); "+
		"%d alerts (%d of the compromised device) and %d audit records in %d lines (%s), %d resent with their ids",
		s.Receiver, s.Victim, s.LinesAtKill, orNone(s.CommittedAtKill), orNone(s.NewLeader), ms(s.ElectionMs), ms(s.CatchUpMs), ratio,
		s.Alerts, s.DeviceAlerts, s.AuditRecords, s.Lines, byHost(s.LinesBy), s.Resent)
}

// byHost is "c1 412, c2 37", in name order.
func byHost(m map[string]int) string {
	var out []string
	for _, h := range sortedKeys(m) {
		out = append(out, fmt.Sprintf("%s %d", h, m[h]))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Violations lists every history's violations, prefixed by its name.
func (r *Report) Violations() []string {
	var v []string
	for _, h := range r.Histories {
		for _, x := range h.Violations {
			v = append(v, h.Name+": "+x)
		}
	}
	if r.SIEM != nil {
		for _, x := range r.SIEM.Violations {
			v = append(v, "siem: "+x)
		}
	}
	return v
}

// WriteSummary prints the readable summary.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "medmesh chaos report: seed %d, %d histories, %s (reproduce: SEED=%d)\n", r.Seed, len(r.Histories), r.Duration, r.Seed)
	fmt.Fprintf(w, "%-22s %-10s %-4s %6s %5s %7s %7s %9s %9s %9s %s\n", "HISTORY", "NEMESIS", "TGT", "OPS", "OK", "UNKNOWN", "W-FAULT", "FAILOVER", "CATCHUP", "DATAPATH", "VERDICT")
	for _, h := range r.Histories {
		verdict := "ok"
		if len(h.Violations) > 0 {
			verdict = fmt.Sprintf("%d VIOLATION(S)", len(h.Violations))
		}
		fmt.Fprintf(w, "%-22s %-10s %-4s %6d %5d %7d %7d %9s %9s %9s %s\n", h.Name, h.Nemesis, h.Target, h.Ops, h.OpsOK, h.OpsUnknown, h.WritesDuringFault, ms(h.FailoverMs), ms(h.CatchUpMs), ms(h.DatapathCatchUpMs), verdict)
	}
	if len(r.Histories) > 0 {
		fmt.Fprintf(w, "checkers run on every history: %s\n", strings.Join(sortedKeys(r.Histories[0].Checks), ", "))
	}
	retried := 0
	for _, h := range r.Histories {
		retried += h.WritesRetried
	}
	fmt.Fprintf(w, "writes retried with their request id after an unknown outcome: %d (checked by no-duplicated-effects)\n", retried)
	fmt.Fprintln(w, "W-FAULT: writes called and acknowledged during the fault")
	fmt.Fprintln(w, "FAILOVER: fault in place -> next acknowledged write; CATCHUP/DATAPATH: heal -> every enforcer at the last decision (cluster status, reported every 5 s / enforcer metrics); 0 = already there at heal")
	fmt.Fprintf(w, "compromised-device scenario: %d alerts, %d decisions, %d incidents, detection-to-drop %s, detection-to-enforce %s\n", r.ScenarioAlerts, r.ScenarioDecisions, r.ScenarioIncidents, signedMs(r.DetectionToDropMs), signedMs(r.DetectionToEnforceMs))
	if r.ScenarioStory != "" {
		fmt.Fprintf(w, "its incident: %s\n", r.ScenarioStory)
	}
	if r.ClassPolicy != "" {
		fmt.Fprintf(w, "class policy: %s\n", r.ClassPolicy)
	}
	if r.PumpScenario != "" {
		fmt.Fprintf(w, "compromised-pump scenario: %s\n", r.PumpScenario)
	}
	if r.SIEM != nil {
		fmt.Fprintf(w, "SIEM sink across a leader kill (CEF over TLS): %s\n", r.SIEM.Summary())
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	v := r.Violations()
	if len(v) == 0 {
		fmt.Fprintln(w, "violations: none")
		return
	}
	fmt.Fprintf(w, "violations (%d):\n", len(v))
	for _, x := range v {
		fmt.Fprintf(w, "  - %s\n", x)
	}
}

func ms(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fms", v)
}

// signedMs is ms for a figure that can be negative (the decision was in
// the datapath before the first external packet); -1 is "not measured".
func signedMs(v float64) string {
	if v == -1 {
		return "-"
	}
	return fmt.Sprintf("%.0fms", v)
}

// Write stores the report as JSON and the summary as text in dir, named by
// the start time and seed, and returns the two paths.
func (r *Report) Write(dir string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("report dir: %w", err)
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-seed%d", r.Start.UTC().Format("20060102T150405Z"), r.Seed))
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("marshal report: %w", err)
	}
	if err := os.WriteFile(base+".json", b, 0o644); err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	var s strings.Builder
	r.WriteSummary(&s)
	if err := os.WriteFile(base+".txt", []byte(s.String()), 0o644); err != nil {
		return "", "", fmt.Errorf("write summary: %w", err)
	}
	return base + ".json", base + ".txt", nil
}

// Package sink delivers committed events (alerts, audit records and the
// risk findings of committed device postures) to
// outbound sinks: syslog receivers (RFC 5424 over TCP or TLS with RFC 5425
// octet-counting framing, CEF or OCSF payloads) and webhooks (HTTP POST of
// JSON, HMAC-SHA256 signed, optional mutual TLS, a ServiceNow Import Set
// mode). The leader runs one worker per sink off the Raft apply path; the
// positions each worker delivered are committed through Raft in batches,
// so a new leader resumes where the old one stopped, and every event
// carries a stable id (alert/ID, audit/SEQ, finding/MAC/INDEX/ID) for
// receivers to deduplicate.
package sink

import (
	"strconv"
	"time"

	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Event is one committed alert, audit record or risk finding on its way
// to a sink.
type Event struct {
	// ID is stable across retries, leaders and restarts: "alert/" and the
	// alert's id, "audit/" and the record's sequence number in the trail,
	// or "finding/MAC/INDEX/ID" for a finding of the device posture that
	// Raft index INDEX committed. Receivers deduplicate by it.
	ID    string
	Alert *medmeshv1.Alert
	Audit *medmeshv1.AuditRecord
	// Posture and Finding are a risk finding and the posture it belongs
	// to; Finding is nil for a posture with no findings (delivered as
	// nothing, it only moves the position). IPs are the device's
	// addresses as the inventory knows them at delivery.
	Posture *medmeshv1.DevicePosture
	Finding *medmeshv1.Finding
	IPs     []string
	// Seq is an audit record's sequence number; Pos an alert's position
	// (1-based: the position to resume after).
	Seq, Pos uint64
	// last marks a posture's last event: delivering it delivers the
	// posture (the position moves past it).
	last bool
}

// AlertEvent wraps the alert at position pos (1-based).
func AlertEvent(a *medmeshv1.Alert, pos uint64) Event {
	return Event{ID: "alert/" + a.GetId(), Alert: a, Pos: pos}
}

// AuditEvent wraps the audit record with sequence number seq.
func AuditEvent(r *medmeshv1.AuditRecord, seq uint64) Event {
	return Event{ID: "audit/" + strconv.FormatUint(seq, 10), Audit: r, Seq: seq}
}

// PostureEvents expands a committed posture into one event per finding,
// in the posture's order (most urgent first); a posture without findings
// yields one event without a finding. ips are the device's addresses.
func PostureEvents(p *medmeshv1.DevicePosture, ips []string) []Event {
	if len(p.GetFindings()) == 0 {
		return []Event{{ID: FindingID(p, nil), Posture: p, IPs: ips, last: true}}
	}
	evs := make([]Event, len(p.GetFindings()))
	for i, f := range p.GetFindings() {
		evs[i] = Event{ID: FindingID(p, f), Posture: p, Finding: f, IPs: ips, last: i == len(p.GetFindings())-1}
	}
	return evs
}

// FindingID is the stable id of finding f of posture p.
func FindingID(p *medmeshv1.DevicePosture, f *medmeshv1.Finding) string {
	return "finding/" + p.GetDeviceMac() + "/" + strconv.FormatUint(p.GetIndex(), 10) + "/" + f.GetId()
}

// Kind is sinkcfg.EventAlert, sinkcfg.EventAudit or sinkcfg.EventFinding.
func (e Event) Kind() string {
	switch {
	case e.Alert != nil:
		return sinkcfg.EventAlert
	case e.Posture != nil:
		return sinkcfg.EventFinding
	}
	return sinkcfg.EventAudit
}

// Index is the Raft index that committed the event.
func (e Event) Index() uint64 {
	switch {
	case e.Alert != nil:
		return e.Alert.GetIndex()
	case e.Posture != nil:
		return e.Posture.GetIndex()
	}
	return e.Audit.GetIndex()
}

// Time is the leader's commit time of the event.
func (e Event) Time() time.Time {
	switch {
	case e.Alert != nil:
		return e.Alert.GetCreateTime().AsTime()
	case e.Posture != nil:
		return e.Posture.GetAssessTime().AsTime()
	}
	return e.Audit.GetTime().AsTime()
}

// findingScore is a finding's urgency (0-100): its CVSS base score when it
// has one, else its severity.
func findingScore(f *medmeshv1.Finding) uint32 {
	if c := f.GetCvss(); c > 0 {
		return min(uint32(c*10+0.5), 100)
	}
	switch f.GetSeverity() {
	case "critical":
		return 95
	case "high":
		return 75
	case "medium":
		return 50
	case "low":
		return 25
	}
	return 5
}

// score is an alert's risk (0-100), a finding's urgency; audit records
// rank by action.
func (e Event) score() uint32 {
	if e.Alert != nil {
		return min(e.Alert.GetRisk().GetScore(), 100)
	}
	if e.Posture != nil {
		return findingScore(e.Finding)
	}
	switch e.Audit.GetAction() {
	case "decision.create", "decision.approve", "policy.activate", "rule.put", "rule.delete", "sink.delete":
		return 50
	}
	return 30
}

// Severity on CEF's 0-10 scale.
func (e Event) cefSeverity() int { return int(e.score()+5) / 10 }

// syslogSeverity maps the score onto RFC 5424 severities: crit, err,
// warning, notice.
func (e Event) syslogSeverity() int {
	switch s := e.score(); {
	case s >= 80:
		return 2
	case s >= 60:
		return 3
	case s >= 40:
		return 4
	}
	return 5
}

func protoName(p uint32) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 1:
		return "ICMP"
	case 58:
		return "IPv6-ICMP"
	}
	return strconv.FormatUint(uint64(p), 10)
}

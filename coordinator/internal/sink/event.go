// Package sink delivers committed events (alerts and audit records) to
// outbound sinks: syslog receivers (RFC 5424 over TCP or TLS with RFC 5425
// octet-counting framing, CEF or OCSF payloads) and webhooks (HTTP POST of
// JSON, HMAC-SHA256 signed, optional mutual TLS, a ServiceNow Import Set
// mode). The leader runs one worker per sink off the Raft apply path; the
// positions each worker delivered are committed through Raft in batches,
// so a new leader resumes where the old one stopped, and every event
// carries a stable id (alert/ID, audit/SEQ) for receivers to deduplicate.
package sink

import (
	"strconv"
	"time"

	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Event is one committed alert or audit record on its way to a sink.
type Event struct {
	// ID is stable across retries, leaders and restarts: "alert/" and the
	// alert's id, or "audit/" and the record's sequence number in the
	// trail. Receivers deduplicate by it.
	ID    string
	Alert *medmeshv1.Alert
	Audit *medmeshv1.AuditRecord
	// Seq is an audit record's sequence number; Pos an alert's position
	// (1-based: the position to resume after).
	Seq, Pos uint64
}

// AlertEvent wraps the alert at position pos (1-based).
func AlertEvent(a *medmeshv1.Alert, pos uint64) Event {
	return Event{ID: "alert/" + a.GetId(), Alert: a, Pos: pos}
}

// AuditEvent wraps the audit record with sequence number seq.
func AuditEvent(r *medmeshv1.AuditRecord, seq uint64) Event {
	return Event{ID: "audit/" + strconv.FormatUint(seq, 10), Audit: r, Seq: seq}
}

// Kind is sinkcfg.EventAlert or sinkcfg.EventAudit.
func (e Event) Kind() string {
	if e.Alert != nil {
		return sinkcfg.EventAlert
	}
	return sinkcfg.EventAudit
}

// Index is the Raft index that committed the event.
func (e Event) Index() uint64 {
	if e.Alert != nil {
		return e.Alert.GetIndex()
	}
	return e.Audit.GetIndex()
}

// Time is the leader's commit time of the event.
func (e Event) Time() time.Time {
	if e.Alert != nil {
		return e.Alert.GetCreateTime().AsTime()
	}
	return e.Audit.GetTime().AsTime()
}

// score is an alert's risk (0-100); audit records rank by action.
func (e Event) score() uint32 {
	if e.Alert != nil {
		return min(e.Alert.GetRisk().GetScore(), 100)
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

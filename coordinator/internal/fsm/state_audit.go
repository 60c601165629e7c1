package fsm

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// appendAudit records an action. actor is the verified identity the leader
// stamped; comment what the request claimed about its author. The client
// request id of the command being applied, if any, goes with it.
//
// The record is chained (auditlog.Next) here, deterministically, so every
// replica computes the same head; the entry is queued for FSM.Apply to
// write to the audit store. The state keeps a window of recent records.
func (s *state) appendAudit(index uint64, now *timestamppb.Timestamp, actor, action, resource, reason, rule, alertID, comment string) {
	rec := &medmeshv1.AuditRecord{
		Index: index, Time: now, Actor: actor, Action: action,
		Resource: resource, Reason: reason, Rule: rule, AlertId: alertID, Comment: comment, RequestId: s.reqID,
	}
	e := auditlog.Next(s.auditHead, rec)
	s.auditHead = e.Head()
	s.audit = append(s.audit, auditEntry{rec: rec, hash: e.Hash})
	s.auditOut = append(s.auditOut, e)
	// Trim by a quarter at a time, into a fresh array: amortised, and
	// snapshots sharing the old one keep it.
	if w := s.retention.AuditWindow; w > 0 && len(s.audit) > w+w/4 {
		drop := len(s.audit) - w
		last := s.audit[drop-1]
		s.auditBase = auditlog.Head{Seq: s.auditBase.Seq + uint64(drop), Hash: last.hash}
		s.audit = append([]auditEntry(nil), s.audit[drop:]...)
	}
}

// AuditHead is the audit chain's head: records so far and the last hash.
func (f *FSM) AuditHead() auditlog.Head {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.auditHead
}

// ListAudit returns up to limit audit records after position `after` (a
// 1-based sequence number in the trail), optionally only for one resource,
// oldest first, and the sequence number of the last one returned. Only the
// recent window is served (Retention.AuditWindow records); older records
// are in the audit store on disk (medmesh audit verify reads it).
func (f *FSM) ListAudit(after uint64, limit int, resource string) (page []*medmeshv1.AuditRecord, last uint64, more bool, index uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, base := f.st.audit, f.st.auditBase.Seq
	i := int(min(max(after, base)-base, uint64(len(a))))
	for ; i < len(a); i++ {
		if resource != "" && a[i].rec.Resource != resource {
			continue
		}
		if len(page) == limit {
			return page, last, true, f.st.applied
		}
		page = append(page, a[i].rec)
		last = base + uint64(i+1)
	}
	return page, last, false, f.st.applied
}

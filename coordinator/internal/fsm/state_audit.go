package fsm

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// appendAudit records an action. actor is the verified identity the leader
// stamped; comment what the request claimed about its author. The client
// request id of the command being applied, if any, goes with it.
func (s *state) appendAudit(index uint64, now *timestamppb.Timestamp, actor, action, resource, reason, rule, alertID, comment string) {
	s.audit = append(s.audit, &medmeshv1.AuditRecord{
		Index: index, Time: now, Actor: actor, Action: action,
		Resource: resource, Reason: reason, Rule: rule, AlertId: alertID, Comment: comment, RequestId: s.reqID,
	})
}

// ListAudit returns up to limit audit records after position `after` (a
// 1-based sequence number in the trail), optionally only for one resource,
// oldest first, and the sequence number of the last one returned.
func (f *FSM) ListAudit(after uint64, limit int, resource string) (page []*medmeshv1.AuditRecord, last uint64, more bool, index uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a := f.st.audit
	i := int(min(after, uint64(len(a))))
	for ; i < len(a); i++ {
		if resource != "" && a[i].Resource != resource {
			continue
		}
		if len(page) == limit {
			return page, last, true, f.st.applied
		}
		page = append(page, a[i])
		last = uint64(i + 1)
	}
	return page, last, false, f.st.applied
}

package fsm

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// applyAlertIngest commits an alert; an alert id already committed is a
// no-op, so retried reports never duplicate.
func (s *state) applyAlertIngest(index uint64, now *timestamppb.Timestamp, in *medmeshv1.Alert) *Result {
	if in.GetId() == "" {
		return &Result{Err: fmt.Errorf("alert id: %w", ErrInvalid)}
	}
	if pos, dup := s.alertAt[in.GetId()]; dup {
		return &Result{Alert: s.alerts[pos-int(s.alertBase)]}
	}
	a := proto.CloneOf(in)
	a.Index, a.CreateTime, a.State = index, now, medmeshv1.AlertState_ALERT_STATE_OPEN
	a.AcknowledgedBy, a.AcknowledgeTime, a.AcknowledgeNote = "", nil, ""
	inc := s.foldAlert(index, now, a) // sets a.IncidentId
	s.alertAt[a.Id] = int(s.alertBase) + len(s.alerts)
	s.alerts = append(s.alerts, a)
	s.respond(index, now, a, inc)
	switch a.GetKind() {
	case "default_credentials", "external_destination", "known_bad_destination":
		// Kinds a device's posture reads (coordinator/intel.go): wake
		// the leader's assessor for the device.
		s.markRisk(a.GetDeviceMac())
	}
	return &Result{Alert: a}
}

func (s *state) applyAlertAck(index uint64, now *timestamppb.Timestamp, c *fsmpb.AlertAck) *Result {
	pos, ok := s.alertAt[c.GetId()]
	if !ok {
		return &Result{Err: fmt.Errorf("alert %q: %w", c.GetId(), ErrNotFound)}
	}
	pos -= int(s.alertBase)
	a := proto.CloneOf(s.alerts[pos])
	a.State, a.AcknowledgedBy, a.AcknowledgeTime, a.AcknowledgeNote = medmeshv1.AlertState_ALERT_STATE_ACKNOWLEDGED, c.GetActor(), now, c.GetNote()
	s.alerts[pos] = a
	s.appendAudit(index, now, c.GetActor(), "alert.ack", "alert/"+a.Id, c.GetNote(), "", "", c.GetComment())
	return &Result{Alert: a}
}

// Alert returns an alert by id, or nil.
func (f *FSM) Alert(id string) *medmeshv1.Alert {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if pos, ok := f.st.alertAt[id]; ok {
		return f.st.alerts[pos-int(f.st.alertBase)]
	}
	return nil
}

// ListAlerts returns up to limit alerts after position pos (in commit
// order; many alerts can share an index) that match keep, the position of
// the last one returned, whether more match, and the applied index.
// Positions count every alert ever committed, so they stay valid when old
// alerts are evicted; a position before the oldest kept alert starts there.
// A nil keep keeps every one.
func (f *FSM) ListAlerts(pos uint64, limit int, keep func(*medmeshv1.Alert) bool) (page []*medmeshv1.Alert, last uint64, more bool, index uint64) {
	if keep == nil {
		keep = keepAll[*medmeshv1.Alert]
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	as, base := f.st.alerts, f.st.alertBase
	for i := int(min(max(pos, base)-base, uint64(len(as)))); i < len(as); i++ {
		if !keep(as[i]) {
			continue
		}
		if len(page) == limit {
			return page, last, true, f.st.applied
		}
		page = append(page, as[i])
		last = base + uint64(i+1)
	}
	return page, last, false, f.st.applied
}

// AlertPosition is the number of alerts committed with index <= index: the
// position to resume after.
func (f *FSM) AlertPosition(index uint64) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	as := f.st.alerts
	return f.st.alertBase + uint64(sort.Search(len(as), func(i int) bool { return as[i].Index > index }))
}

// AlertsFrom returns up to limit alerts at positions after pos (alerts are
// append-only, so a position is stable; many alerts can share an index),
// the position of the first one returned, and the applied index. A
// position before the oldest kept alert starts there: the caller skips
// what retention evicted.
func (f *FSM) AlertsFrom(pos uint64, limit int) (page []*medmeshv1.Alert, first uint64, applied uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	as, base := f.st.alerts, f.st.alertBase
	pos = max(pos, base)
	i := pos - base
	if i >= uint64(len(as)) {
		return nil, pos, f.st.applied
	}
	end := min(uint64(len(as)), i+uint64(limit))
	return as[i:end], pos, f.st.applied
}

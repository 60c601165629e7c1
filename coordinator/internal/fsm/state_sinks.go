package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The outbound sinks are replicated state: a table ordered by name, each
// sink with the positions the leader committed it delivered up to
// (alert_position, audit_seq, and the posture position posture_index and
// posture_mac: the last device posture delivered, in (index, MAC) order). Configuration changes are audited; progress
// is not (an audit record per delivery batch would feed the sinks their
// own progress forever).

func cmpSink(s *medmeshv1.Sink, name string) int { return strings.Compare(s.GetName(), name) }

func (s *state) sink(name string) (int, *medmeshv1.Sink) {
	i, found := slices.BinarySearchFunc(s.sinks, name, cmpSink)
	if !found {
		return -1, nil
	}
	return i, s.sinks[i]
}

// putSink stores v in a new slice (snapshots share the old one).
func (s *state) putSink(v *medmeshv1.Sink) {
	i, found := slices.BinarySearchFunc(s.sinks, v.GetName(), cmpSink)
	ss := slices.Clone(s.sinks)
	if found {
		ss[i] = v
	} else {
		ss = slices.Insert(ss, i, v)
	}
	s.sinks = ss
}

func (s *state) applySinkPut(index uint64, now *timestamppb.Timestamp, c *fsmpb.SinkPut) *Result {
	in := c.GetSink()
	if err := sinkcfg.Validate(in); err != nil {
		return &Result{Err: fmt.Errorf("%v: %w", err, ErrInvalid)}
	}
	_, old := s.sink(in.GetName())
	if ev := c.ExpectedVersion; ev != nil && *ev != old.GetVersion() {
		return &Result{Err: fmt.Errorf("sink %q is at version %d, not %d: %w", in.GetName(), old.GetVersion(), *ev, ErrVersionMismatch)}
	}
	v := proto.CloneOf(in)
	v.Version, v.Revision, v.UpdateTime, v.UpdatedBy = old.GetVersion()+1, index, now, c.GetActor()
	switch {
	case old != nil:
		// A changed destination continues where the old one stopped.
		v.AlertPosition, v.AuditSeq = old.GetAlertPosition(), old.GetAuditSeq()
		v.PostureIndex, v.PostureMac = old.GetPostureIndex(), old.GetPostureMac()
	case c.GetStartAtBeginning():
		// Every device's current posture too (its latest version).
		v.AlertPosition, v.AuditSeq, v.PostureIndex, v.PostureMac = 0, 0, 0, ""
	default:
		// From now on: the audit record of this put is the first event,
		// and postures committed after this entry are the first findings.
		v.AlertPosition, v.AuditSeq = s.alertBase+uint64(len(s.alerts)), s.auditHead.Seq
		v.PostureIndex, v.PostureMac = index, ""
	}
	s.putSink(v)
	s.appendAudit(index, now, c.GetActor(), "sink.put", "sink/"+v.Name, c.GetReason(), "", "", c.GetComment())
	return &Result{Sink: v}
}

func (s *state) applySinkDelete(index uint64, now *timestamppb.Timestamp, c *fsmpb.SinkDelete) *Result {
	i, old := s.sink(c.GetName())
	if old == nil {
		return &Result{Err: fmt.Errorf("sink %q: %w", c.GetName(), ErrNotFound)}
	}
	if ev := c.ExpectedVersion; ev != nil && *ev != old.GetVersion() {
		return &Result{Err: fmt.Errorf("sink %q is at version %d, not %d: %w", c.GetName(), old.GetVersion(), *ev, ErrVersionMismatch)}
	}
	s.sinks = slices.Delete(slices.Clone(s.sinks), i, i+1)
	s.appendAudit(index, now, c.GetActor(), "sink.delete", "sink/"+old.Name, c.GetReason(), "", "", c.GetComment())
	return &Result{Sink: old}
}

// applySinkProgress moves sinks' delivered positions forward; a position
// behind the committed one (a deposed leader's late batch) and a sink
// that no longer exists are skipped. A posture position never reaches
// this entry's index (no posture is committed by it or later).
func (s *state) applySinkProgress(index uint64, c *fsmpb.SinkProgress) *Result {
	for _, p := range c.GetPositions() {
		_, old := s.sink(p.GetName())
		if old == nil {
			continue
		}
		a, q := max(old.GetAlertPosition(), p.GetAlertPosition()), max(old.GetAuditSeq(), p.GetAuditSeq())
		// Never past what is committed.
		a, q = min(a, s.alertBase+uint64(len(s.alerts))), min(q, s.auditHead.Seq)
		pi, pm := old.GetPostureIndex(), old.GetPostureMac()
		if postureAfter(p.GetPostureIndex(), p.GetPostureMac(), pi, pm) && p.GetPostureIndex() < index {
			pi, pm = p.GetPostureIndex(), p.GetPostureMac()
		}
		if a == old.GetAlertPosition() && q == old.GetAuditSeq() && pi == old.GetPostureIndex() && pm == old.GetPostureMac() {
			continue
		}
		v := proto.CloneOf(old)
		v.AlertPosition, v.AuditSeq, v.PostureIndex, v.PostureMac = a, q, pi, pm
		s.putSink(v)
	}
	return &Result{}
}

// postureAfter reports whether posture position (i, mac) comes after (j,
// jmac) in (index, MAC) order.
func postureAfter(i uint64, mac string, j uint64, jmac string) bool {
	return i > j || (i == j && mac > jmac)
}

// applySinkAlert commits an alert about the sinks: like a sensor's, but
// with no device, no incident and no response; an id committed before is
// a no-op.
func (s *state) applySinkAlert(index uint64, now *timestamppb.Timestamp, in *medmeshv1.Alert) *Result {
	if in.GetId() == "" || in.GetKind() != sinkcfg.KindStuck {
		return &Result{Err: fmt.Errorf("sink alert: an id and kind %s are required: %w", sinkcfg.KindStuck, ErrInvalid)}
	}
	if pos, dup := s.alertAt[in.GetId()]; dup {
		return &Result{Alert: s.alerts[pos-int(s.alertBase)]}
	}
	a := proto.CloneOf(in)
	a.Index, a.CreateTime, a.State = index, now, medmeshv1.AlertState_ALERT_STATE_OPEN
	a.DeviceMac, a.IncidentId, a.AcknowledgedBy, a.AcknowledgeTime, a.AcknowledgeNote = "", "", "", nil, ""
	s.alertAt[a.Id] = int(s.alertBase) + len(s.alerts)
	s.alerts = append(s.alerts, a)
	return &Result{Alert: a}
}

// Sinks returns the sinks by name (shared, immutable) and the applied
// index.
func (f *FSM) Sinks() ([]*medmeshv1.Sink, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.sinks, f.st.applied
}

// AlertEnd is the position after the last alert committed.
func (f *FSM) AlertEnd() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.alertBase + uint64(len(f.st.alerts))
}

package fsm

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Bounds of the compliance state (issue 19).
const (
	// MaxTrendDays is how many days of trend points are kept: a point
	// more than this many days older than the newest is dropped.
	MaxTrendDays = 90
	// MaxActiveExceptions bounds the exceptions in force.
	MaxActiveExceptions = 10_000
	// ExceptionMaxTerm is the longest an exception may be accepted for.
	ExceptionMaxTerm = 366 * 24 * time.Hour
	// EndedExceptionAge is how long an expired or revoked exception is
	// kept (for the report's history) after it ended, in leader time.
	EndedExceptionAge = 400 * 24 * time.Hour
	maxExceptionText  = 1024
)

// complianceState is the replicated compliance state: risk exceptions by
// id and the daily trend, oldest day first. Values are immutable once
// stored.
type complianceState struct {
	exceptions map[string]*medmeshv1.RiskException
	trend      []*medmeshv1.TrendPoint
	mds2       map[string]*medmeshv1.MDS2Attachment // by MDS2Key
}

func newComplianceState() complianceState {
	return complianceState{exceptions: map[string]*medmeshv1.RiskException{}, mds2: map[string]*medmeshv1.MDS2Attachment{}}
}

func (c complianceState) copy() complianceState {
	n := complianceState{exceptions: make(map[string]*medmeshv1.RiskException, len(c.exceptions)), trend: c.trend, mds2: make(map[string]*medmeshv1.MDS2Attachment, len(c.mds2))}
	for k, v := range c.exceptions {
		n.exceptions[k] = v
	}
	for k, v := range c.mds2 {
		n.mds2[k] = v
	}
	return n
}

// MDS2Key is how an MDS2 attachment is keyed: manufacturer and model,
// case-folded and trimmed.
func MDS2Key(manufacturer, model string) string { return SBOMKey(manufacturer, model, "") }

// MaxMDS2Answers bounds the answers one attachment keeps (the HN 1-2019
// form has about 200 questions).
const MaxMDS2Answers = 1000

func (s *state) applyMDS2Attach(index uint64, now *timestamppb.Timestamp, c *fsmpb.MDS2Attach) *Result {
	a := c.GetAttachment()
	if strings.TrimSpace(a.GetManufacturer()) == "" || strings.TrimSpace(a.GetModel()) == "" {
		return &Result{Err: fmt.Errorf("mds2 attachment: manufacturer and model are required: %w", ErrInvalid)}
	}
	if !isDigest(a.GetDigest()) {
		return &Result{Err: fmt.Errorf("mds2 digest %q: want 64 lower-case hex digits: %w", a.GetDigest(), ErrInvalid)}
	}
	if len(a.GetAnswers()) > MaxMDS2Answers {
		return &Result{Err: fmt.Errorf("mds2 attachment: %d answers, at most %d: %w", len(a.GetAnswers()), MaxMDS2Answers, ErrInvalid)}
	}
	na := proto.CloneOf(a)
	na.AttachedBy, na.AttachTime, na.Index = c.GetActor(), now, index
	s.comp.mds2[MDS2Key(a.GetManufacturer(), a.GetModel())] = na
	s.appendAudit(index, now, c.GetActor(), "mds2.attach", "mds2/"+strings.TrimSpace(a.GetManufacturer())+"/"+strings.TrimSpace(a.GetModel()), c.GetReason(), "", "",
		joinComment(c.GetComment(), fmt.Sprintf("%q, sha256 %s, %d answers", na.GetName(), na.GetDigest(), len(na.GetAnswers()))))
	return &Result{MDS2: na}
}

// MDS2s lists the MDS2 attachments by manufacturer and model, and the
// applied index.
func (f *FSM) MDS2s() ([]*medmeshv1.MDS2Attachment, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*medmeshv1.MDS2Attachment, 0, len(f.st.comp.mds2))
	for _, k := range sortedKeys(f.st.comp.mds2) {
		out = append(out, f.st.comp.mds2[k])
	}
	return out, f.st.applied
}

func (c complianceState) write(put func(*fsmpb.SnapshotItem) error) error {
	for _, k := range c.sortedIDs() {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Exception{Exception: c.exceptions[k]}}); err != nil {
			return err
		}
	}
	for _, p := range c.trend {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Trend{Trend: p}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(c.mds2) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Mds2{Mds2: c.mds2[k]}}); err != nil {
			return err
		}
	}
	return nil
}

// sortedIDs orders exceptions by the index that accepted them.
func (c complianceState) sortedIDs() []string {
	ids := sortedKeys(c.exceptions)
	sort.SliceStable(ids, func(i, j int) bool { return c.exceptions[ids[i]].GetIndex() < c.exceptions[ids[j]].GetIndex() })
	return ids
}

// exceptionTarget names what an exception accepts, for its audit records.
func exceptionTarget(e *medmeshv1.RiskException) string {
	kind := "action"
	if e.GetTargetKind() == medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING {
		kind = "finding"
	}
	return kind + " " + e.GetTarget()
}

func (s *state) applyExceptionAccept(index uint64, now *timestamppb.Timestamp, c *fsmpb.ExceptionAccept) *Result {
	e := c.GetException()
	switch e.GetTargetKind() {
	case medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION, medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING:
	default:
		return &Result{Err: fmt.Errorf("exception: target kind must be action or finding: %w", ErrInvalid)}
	}
	for _, f := range [...][2]string{{"target", e.GetTarget()}, {"owner", e.GetOwner()}, {"reason", e.GetReason()}} {
		name, v := f[0], f[1]
		if strings.TrimSpace(v) == "" || len(v) > maxExceptionText {
			return &Result{Err: fmt.Errorf("exception: %s is required (1-%d bytes): %w", name, maxExceptionText, ErrInvalid)}
		}
	}
	exp := e.GetExpireTime()
	if !exp.IsValid() || !exp.AsTime().After(now.AsTime()) {
		return &Result{Err: fmt.Errorf("exception: expiry %s is not after the leader's time %s: %w", exp.AsTime().Format(time.RFC3339), now.AsTime().Format(time.RFC3339), ErrInvalid)}
	}
	if exp.AsTime().Sub(now.AsTime()) > ExceptionMaxTerm {
		return &Result{Err: fmt.Errorf("exception: expiry %s is more than %v ahead: %w", exp.AsTime().Format(time.RFC3339), ExceptionMaxTerm, ErrInvalid)}
	}
	active := 0
	for _, k := range s.comp.sortedIDs() {
		o := s.comp.exceptions[k]
		if o.GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE {
			continue
		}
		active++
		if o.GetTargetKind() == e.GetTargetKind() && o.GetTarget() == e.GetTarget() {
			return &Result{Err: fmt.Errorf("exception: %s already accepts %s until %s: %w", o.GetId(), o.GetTarget(), o.GetExpireTime().AsTime().Format(time.RFC3339), ErrFailedPrecondition)}
		}
	}
	if active >= MaxActiveExceptions {
		return &Result{Err: fmt.Errorf("exception: %d exceptions in force, the most kept: %w", active, ErrFailedPrecondition)}
	}
	ne := &medmeshv1.RiskException{
		Id: fmt.Sprintf("exc-%d", index), TargetKind: e.GetTargetKind(), Target: e.GetTarget(),
		Owner: e.GetOwner(), Reason: e.GetReason(), ExpireTime: exp,
		State: medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE, AcceptedBy: c.GetActor(), AcceptTime: now, Index: index,
	}
	s.comp.exceptions[ne.Id] = ne
	s.appendAudit(index, now, c.GetActor(), "exception.accept", "exception/"+ne.GetId(), ne.GetReason(), "", "",
		joinComment(c.GetComment(), fmt.Sprintf("%s, owner %q, expires %s", exceptionTarget(ne), ne.GetOwner(), exp.AsTime().UTC().Format(time.RFC3339))))
	return &Result{Exception: ne}
}

func (s *state) applyExceptionRevoke(index uint64, now *timestamppb.Timestamp, c *fsmpb.ExceptionRevoke) *Result {
	o := s.comp.exceptions[c.GetId()]
	if o == nil {
		return &Result{Err: fmt.Errorf("exception %q: %w", c.GetId(), ErrNotFound)}
	}
	if o.GetState() != medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE {
		return &Result{Err: fmt.Errorf("exception %q is %s, not in force: %w", c.GetId(), strings.ToLower(strings.TrimPrefix(o.GetState().String(), "EXCEPTION_STATE_")), ErrFailedPrecondition)}
	}
	if strings.TrimSpace(c.GetReason()) == "" {
		return &Result{Err: fmt.Errorf("exception %q: a reason is required to revoke: %w", c.GetId(), ErrInvalid)}
	}
	ne := proto.CloneOf(o)
	ne.State, ne.EndTime, ne.EndedBy, ne.EndReason = medmeshv1.ExceptionState_EXCEPTION_STATE_REVOKED, now, c.GetActor(), c.GetReason()
	s.comp.exceptions[ne.Id] = ne
	s.appendAudit(index, now, c.GetActor(), "exception.revoke", "exception/"+ne.GetId(), c.GetReason(), "", "", joinComment(c.GetComment(), exceptionTarget(ne)))
	return &Result{Exception: ne}
}

// expireExceptions ends the exceptions whose expiry is at or before now
// (the leader time of the entry being applied), audited as the leader's,
// and forgets ended exceptions older than EndedExceptionAge. It runs
// before every command, so it depends only on the log.
func (s *state) expireExceptions(index uint64, now *timestamppb.Timestamp) {
	if len(s.comp.exceptions) == 0 {
		return
	}
	t := now.AsTime()
	for _, k := range s.comp.sortedIDs() {
		o := s.comp.exceptions[k]
		switch o.GetState() {
		case medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE:
			if o.GetExpireTime().AsTime().After(t) {
				continue
			}
			ne := proto.CloneOf(o)
			ne.State, ne.EndTime, ne.EndedBy, ne.EndReason = medmeshv1.ExceptionState_EXCEPTION_STATE_EXPIRED, now, "leader", "expired"
			s.comp.exceptions[k] = ne
			s.appendAudit(index, now, "leader", "exception.expire", "exception/"+ne.GetId(), "expiry "+o.GetExpireTime().AsTime().UTC().Format(time.RFC3339)+" passed", "", "",
				fmt.Sprintf("%s is back in the plan; accepted by %s, owner %q", exceptionTarget(o), o.GetAcceptedBy(), o.GetOwner()))
		default:
			if t.Sub(o.GetEndTime().AsTime()) > EndedExceptionAge {
				delete(s.comp.exceptions, k)
			}
		}
	}
}

// applyTrendRecord stores the day's point, the day being the entry's
// leader time in UTC, replacing the day's earlier point (a day has one
// point: its latest); points more than MaxTrendDays before the newest
// day are dropped.
func (s *state) applyTrendRecord(index uint64, now *timestamppb.Timestamp, c *fsmpb.TrendRecord) *Result {
	if c.GetPoint() == nil {
		return &Result{Err: fmt.Errorf("trend record without a point: %w", ErrInvalid)}
	}
	day := TrendDay(now.AsTime())
	pos := sort.Search(len(s.comp.trend), func(i int) bool { return s.comp.trend[i].GetDay() >= day })
	p := proto.CloneOf(c.GetPoint())
	p.Day, p.RecordTime, p.Index = day, now, index
	trend := make([]*medmeshv1.TrendPoint, 0, len(s.comp.trend)+1)
	trend = append(trend, s.comp.trend[:pos]...)
	trend = append(trend, p)
	if pos < len(s.comp.trend) && s.comp.trend[pos].GetDay() == day {
		pos++ // the day's point is replaced: it shows the day's latest state
	}
	trend = append(trend, s.comp.trend[pos:]...)
	newest, _ := time.Parse(time.DateOnly, trend[len(trend)-1].GetDay())
	oldest := TrendDay(newest.AddDate(0, 0, -(MaxTrendDays - 1)))
	drop := sort.Search(len(trend), func(i int) bool { return trend[i].GetDay() >= oldest })
	s.comp.trend = trend[drop:]
	return &Result{}
}

// TrendDay is the trend's day of t: its UTC date.
func TrendDay(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Exceptions returns every exception, in the order they were accepted,
// and the applied index.
func (f *FSM) Exceptions() ([]*medmeshv1.RiskException, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*medmeshv1.RiskException, 0, len(f.st.comp.exceptions))
	for _, k := range f.st.comp.sortedIDs() {
		out = append(out, f.st.comp.exceptions[k])
	}
	return out, f.st.applied
}

// ExceptionDue reports whether an exception in force has an expiry at or
// before t: the leader proposes ExceptionsExpire then.
func (f *FSM) ExceptionDue(t time.Time) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, e := range f.st.comp.exceptions {
		if e.GetState() == medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE && !e.GetExpireTime().AsTime().After(t) {
			return true
		}
	}
	return false
}

// Trend returns the daily points, oldest first, and the applied index.
func (f *FSM) Trend() ([]*medmeshv1.TrendPoint, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return append([]*medmeshv1.TrendPoint(nil), f.st.comp.trend...), f.st.applied
}

// TrendPointOf is the point of day ("YYYY-MM-DD"), or nil.
func (f *FSM) TrendPointOf(day string) *medmeshv1.TrendPoint {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.comp.trend
	i := sort.Search(len(t), func(i int) bool { return t[i].GetDay() >= day })
	if i < len(t) && t[i].GetDay() == day {
		return t[i]
	}
	return nil
}

// HasTrendDay reports whether day ("YYYY-MM-DD") has a point.
func (f *FSM) HasTrendDay(day string) bool { return f.TrendPointOf(day) != nil }

// ComplianceView is everything a compliance evaluation reads, taken under
// one lock so that all of it is the state at Index: a report stamped with
// an index describes exactly that index, even while alerts, devices and
// policies keep committing. Values are the FSM's own (immutable, shared).
type ComplianceView struct {
	Index   uint64
	Devices []*medmeshv1.Device // by MAC
	// Alerts maps a device's MAC to its retained alerts, in log order.
	Alerts   map[string][]*medmeshv1.Alert
	Postures map[string]*medmeshv1.DevicePosture // by MAC
	// DevicePolicies maps a device's MAC to its device policy ("device/MAC").
	DevicePolicies map[string]*medmeshv1.Policy
	MDS2           []*medmeshv1.MDS2Attachment // by id
	Intel          *medmeshv1.IntelBundle      // the active bundle, or nil
}

// ComplianceView returns the state a compliance evaluation reads, at one
// applied index.
func (f *FSM) ComplianceView() ComplianceView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st
	v := ComplianceView{
		Index:          st.applied,
		Devices:        make([]*medmeshv1.Device, 0, len(st.devices)),
		Alerts:         map[string][]*medmeshv1.Alert{},
		Postures:       make(map[string]*medmeshv1.DevicePosture, len(st.devices)),
		DevicePolicies: map[string]*medmeshv1.Policy{},
		MDS2:           make([]*medmeshv1.MDS2Attachment, 0, len(st.comp.mds2)),
		Intel:          st.risk.intel,
	}
	for _, k := range sortedKeys(st.devices) {
		v.Devices = append(v.Devices, st.devices[k])
		if p := st.risk.postures[k]; p != nil {
			v.Postures[k] = p
		}
		if p := st.policies["device/"+k]; p != nil {
			v.DevicePolicies[k] = p
		}
	}
	// Acknowledging replaces an alert in place: take the pointers now.
	for _, a := range st.alerts {
		if m := a.GetDeviceMac(); m != "" {
			v.Alerts[m] = append(v.Alerts[m], a)
		}
	}
	for _, k := range sortedKeys(st.comp.mds2) {
		v.MDS2 = append(v.MDS2, st.comp.mds2[k])
	}
	return v
}

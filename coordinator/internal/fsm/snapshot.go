package fsm

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
)

const snapshotFormat = 1

// snapshot is a point-in-time copy of the state, persisted as a stream of
// length-delimited SnapshotItem messages in a deterministic order.
type snapshot struct{ st *state }

var _ raft.FSMSnapshot = (*snapshot)(nil)

// Persist streams the snapshot to sink, cancelling it on any error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 256<<10)
	err := s.st.write(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return errors.Join(fmt.Errorf("persist snapshot: %w", err), sink.Cancel())
	}
	return sink.Close()
}

// Release is a no-op: the snapshot holds no resources.
func (s *snapshot) Release() {}

func (s *state) write(w io.Writer) error {
	opts := protodelim.MarshalOptions{MarshalOptions: proto.MarshalOptions{Deterministic: true}}
	put := func(it *fsmpb.SnapshotItem) error {
		_, err := opts.MarshalTo(w, it)
		return err
	}
	if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Meta{Meta: &fsmpb.SnapshotMeta{Format: snapshotFormat, AppliedIndex: s.applied, RulesSeeded: s.rulesSeeded}}}); err != nil {
		return err
	}
	if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Bounds{Bounds: &fsmpb.Bounds{
		AlertBase:    s.alertBase,
		AuditBaseSeq: s.auditBase.Seq, AuditBaseHash: s.auditBase.Hash[:],
		AuditHeadSeq: s.auditHead.Seq, AuditHeadHash: s.auditHead.Hash[:],
		DecisionsCompacted: s.compacted,
	}}}); err != nil {
		return err
	}
	for _, k := range sortedKeys(s.pendingCause) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_PendingCause{PendingCause: &fsmpb.PendingCause{DecisionId: k, Identity: s.pendingCause[k]}}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.servers) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Server{Server: s.servers[k]}}); err != nil {
			return err
		}
	}
	for _, r := range s.rules {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Rule{Rule: r}}); err != nil {
			return err
		}
	}
	for _, v := range s.sinks {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Sink{Sink: v}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.devices) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Device{Device: s.devices[k]}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.policies) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Policy{Policy: s.policies[k]}}); err != nil {
			return err
		}
	}
	for _, d := range s.decisions {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Decision{Decision: d}}); err != nil {
			return err
		}
	}
	for _, a := range s.alerts {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Alert{Alert: a}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.inc.byID) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Incident{Incident: s.inc.byID[k]}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.baselines) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Baseline{Baseline: s.baselines[k]}}); err != nil {
			return err
		}
	}
	for _, a := range s.audit {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Audit{Audit: a.rec}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.sensorSeq) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_SensorSeq{SensorSeq: &fsmpb.SensorSeq{SensorId: k, Seq: s.sensorSeq[k]}}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.flows) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Flows{Flows: &fsmpb.DeviceFlows{DeviceMac: k, Summaries: s.flows[k]}}}); err != nil {
			return err
		}
	}
	if err := s.risk.write(put); err != nil {
		return err
	}
	if err := s.comp.write(put); err != nil {
		return err
	}
	if err := s.accounts.write(put); err != nil {
		return err
	}
	for _, r := range s.requests.all() {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Dedup{Dedup: r.item()}}); err != nil {
			return err
		}
	}
	return nil
}

// rechain recomputes the audit window's hashes from its base and checks
// that they end at the head the snapshot recorded. A snapshot written
// before retention (no bounds) holds the whole trail: its head is where
// the records chain to.
func (s *state) rechain(legacy bool) error {
	h := s.auditBase
	for i := range s.audit {
		e := auditlog.Next(h, s.audit[i].rec)
		s.audit[i].hash, h = e.Hash, e.Head()
	}
	if legacy {
		s.auditHead = h
	}
	if h != s.auditHead {
		return fmt.Errorf("snapshot audit window chains to %v, its head says %v", h, s.auditHead)
	}
	return nil
}

// auditEntries are the window's records as chain entries, oldest first.
func (s *state) auditEntries() []auditlog.Entry {
	out := make([]auditlog.Entry, 0, len(s.audit))
	h := s.auditBase
	for _, a := range s.audit {
		e := auditlog.Next(h, a.rec)
		out = append(out, e)
		h = e.Head()
	}
	return out
}

func (s *state) hash() ([32]byte, error) {
	h := sha256.New()
	if err := s.write(h); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// readSnapshot builds a fresh state from a snapshot stream.
func readSnapshot(r io.Reader) (*state, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	st := newState()
	first, bounded := true, false
	for {
		var it fsmpb.SnapshotItem
		err := protodelim.UnmarshalFrom(br, &it)
		if errors.Is(err, io.EOF) {
			if first {
				return nil, errors.New("empty snapshot")
			}
			st.rebuildDerived()
			return st, st.rechain(!bounded)
		}
		if err != nil {
			return nil, fmt.Errorf("read item: %w", err)
		}
		if first {
			m := it.GetMeta()
			if m == nil || m.GetFormat() != snapshotFormat {
				return nil, fmt.Errorf("snapshot does not start with format %d metadata", snapshotFormat)
			}
			st.applied = m.GetAppliedIndex()
			st.rulesSeeded = m.GetRulesSeeded()
			first = false
			continue
		}
		switch x := it.Item.(type) {
		case *fsmpb.SnapshotItem_Server:
			st.servers[x.Server.GetId()] = x.Server
		case *fsmpb.SnapshotItem_Rule:
			st.rules = append(st.rules, x.Rule) // written in name order
		case *fsmpb.SnapshotItem_Sink:
			st.sinks = append(st.sinks, x.Sink) // written in name order
		case *fsmpb.SnapshotItem_Device:
			st.devices[x.Device.GetMac()] = x.Device
		case *fsmpb.SnapshotItem_Policy:
			st.policies[x.Policy.GetName()] = x.Policy
		case *fsmpb.SnapshotItem_Decision:
			st.decisionAt[x.Decision.GetId()] = len(st.decisions)
			st.decisions = append(st.decisions, x.Decision)
		case *fsmpb.SnapshotItem_Alert:
			st.alertAt[x.Alert.GetId()] = int(st.alertBase) + len(st.alerts)
			st.alerts = append(st.alerts, x.Alert)
		case *fsmpb.SnapshotItem_Bounds:
			b := x.Bounds
			if len(st.alerts) > 0 || len(st.audit) > 0 {
				return nil, errors.New("snapshot bounds after alerts or audit records")
			}
			bounded = true
			st.alertBase, st.compacted = b.GetAlertBase(), b.GetDecisionsCompacted()
			st.auditBase.Seq, st.auditHead.Seq = b.GetAuditBaseSeq(), b.GetAuditHeadSeq()
			if copy(st.auditBase.Hash[:], b.GetAuditBaseHash()) != 32 || copy(st.auditHead.Hash[:], b.GetAuditHeadHash()) != 32 {
				return nil, errors.New("snapshot bounds: audit hashes are not SHA-256")
			}
		case *fsmpb.SnapshotItem_PendingCause:
			st.pendingCause[x.PendingCause.GetDecisionId()] = x.PendingCause.GetIdentity()
		case *fsmpb.SnapshotItem_Incident:
			st.inc.byID[x.Incident.GetId()] = x.Incident
		case *fsmpb.SnapshotItem_Baseline:
			st.baselines[baselineKey(x.Baseline.GetDeviceMac(), x.Baseline.GetDeviceClass())] = x.Baseline
		case *fsmpb.SnapshotItem_Audit:
			st.audit = append(st.audit, auditEntry{rec: x.Audit})
		case *fsmpb.SnapshotItem_SensorSeq:
			st.sensorSeq[x.SensorSeq.GetSensorId()] = x.SensorSeq.GetSeq()
		case *fsmpb.SnapshotItem_Flows:
			st.flows[x.Flows.GetDeviceMac()] = x.Flows.GetSummaries()
		case *fsmpb.SnapshotItem_Intel:
			st.risk.intel = x.Intel
		case *fsmpb.SnapshotItem_Sbom:
			a := x.Sbom
			st.risk.sboms[SBOMKey(a.GetVendor(), a.GetModel(), a.GetVersion())] = a
		case *fsmpb.SnapshotItem_Posture:
			st.risk.postures[x.Posture.GetDeviceMac()] = x.Posture
		case *fsmpb.SnapshotItem_Exception:
			st.comp.exceptions[x.Exception.GetId()] = x.Exception
		case *fsmpb.SnapshotItem_Trend:
			st.comp.trend = append(st.comp.trend, x.Trend) // written oldest first
		case *fsmpb.SnapshotItem_Mds2:
			st.comp.mds2[MDS2Key(x.Mds2.GetManufacturer(), x.Mds2.GetModel())] = x.Mds2
		case *fsmpb.SnapshotItem_Account:
			st.accounts.byName[x.Account.GetAccount().GetName()] = x.Account
		case *fsmpb.SnapshotItem_Session:
			st.accounts.sessions[string(x.Session.GetHash())] = x.Session
		case *fsmpb.SnapshotItem_Dedup:
			r, err := requestFromItem(x.Dedup)
			if err != nil {
				return nil, fmt.Errorf("client request: %w", err)
			}
			st.requests.add(r)
		default:
			return nil, fmt.Errorf("unknown snapshot item %T", it.Item)
		}
	}
}

// rebuildDerived rebuilds what the state derives from its replicated
// parts: the address index of devices, the index of active policies and
// the incidents' indexes.
func (s *state) rebuildDerived() {
	s.active = newActivePolicies()
	for _, p := range s.policies {
		s.active.add(p)
	}
	for _, mac := range sortedKeys(s.devices) {
		s.indexDeviceIPs(nil, s.devices[mac])
	}
	s.inc.rebuild()
}

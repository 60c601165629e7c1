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
	for _, k := range sortedKeys(s.baselines) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Baseline{Baseline: s.baselines[k]}}); err != nil {
			return err
		}
	}
	for _, a := range s.audit {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Audit{Audit: a}}); err != nil {
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
	return nil
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
	first := true
	for {
		var it fsmpb.SnapshotItem
		err := protodelim.UnmarshalFrom(br, &it)
		if errors.Is(err, io.EOF) {
			if first {
				return nil, errors.New("empty snapshot")
			}
			return st, nil
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
		case *fsmpb.SnapshotItem_Device:
			st.devices[x.Device.GetMac()] = x.Device
		case *fsmpb.SnapshotItem_Policy:
			st.policies[x.Policy.GetName()] = x.Policy
		case *fsmpb.SnapshotItem_Decision:
			st.decisionAt[x.Decision.GetId()] = len(st.decisions)
			st.decisions = append(st.decisions, x.Decision)
		case *fsmpb.SnapshotItem_Alert:
			st.alertAt[x.Alert.GetId()] = len(st.alerts)
			st.alerts = append(st.alerts, x.Alert)
		case *fsmpb.SnapshotItem_Baseline:
			st.baselines[baselineKey(x.Baseline.GetDeviceMac(), x.Baseline.GetDeviceClass())] = x.Baseline
		case *fsmpb.SnapshotItem_Audit:
			st.audit = append(st.audit, x.Audit)
		case *fsmpb.SnapshotItem_SensorSeq:
			st.sensorSeq[x.SensorSeq.GetSensorId()] = x.SensorSeq.GetSeq()
		case *fsmpb.SnapshotItem_Flows:
			st.flows[x.Flows.GetDeviceMac()] = x.Flows.GetSummaries()
		default:
			return nil, fmt.Errorf("unknown snapshot item %T", it.Item)
		}
	}
}

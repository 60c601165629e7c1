package fsm

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func baselineKey(mac string, class medmeshv1.DeviceClass) string {
	if mac != "" {
		return mac
	}
	return "class/" + strconv.Itoa(int(class))
}

// applyBaselinePut stores a device (or class) baseline. An older version
// than the stored one is ignored.
func (s *state) applyBaselinePut(index uint64, now *timestamppb.Timestamp, in *medmeshv1.Baseline) *Result {
	if in.GetDeviceMac() == "" && in.GetDeviceClass() == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
		return &Result{Err: fmt.Errorf("baseline device_mac or device_class: %w", ErrInvalid)}
	}
	key := baselineKey(in.GetDeviceMac(), in.GetDeviceClass())
	if old := s.baselines[key]; old != nil && old.GetVersion() > in.GetVersion() {
		return &Result{}
	}
	s.baselines[key] = proto.CloneOf(in)
	s.appendAudit(index, now, in.GetSensorId(), "baseline.put", "baseline/"+key, "", "", "", "")
	return &Result{}
}

// Baseline returns a device's baseline, or nil.
func (f *FSM) Baseline(mac string) *medmeshv1.Baseline {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.baselines[baselineKey(mac, 0)]
}

// ClassBaseline returns a class baseline, or nil.
func (f *FSM) ClassBaseline(c medmeshv1.DeviceClass) *medmeshv1.Baseline {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.baselines[baselineKey("", c)]
}

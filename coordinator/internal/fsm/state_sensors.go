package fsm

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// applySensorBatch applies many sensors' records in one entry. A record
// whose seq is at most its sensor's last applied seq was applied before and
// is skipped: exactly-once across retries and leader changes. A report
// whose after_seq the sensor has not reached is skipped whole.
func (s *state) applySensorBatch(index uint64, now *timestamppb.Timestamp, c *fsmpb.SensorBatch) *Result {
	acks := map[string]uint64{}
	for _, rep := range c.GetReports() {
		sid := rep.GetSensorId()
		if sid == "" {
			continue
		}
		if rep.GetAfterSeq() > s.sensorSeq[sid] {
			// The report before it on its stream did not commit.
			acks[sid] = s.sensorSeq[sid]
			continue
		}
		for _, rec := range rep.GetRecords() {
			if rec.GetSeq() <= s.sensorSeq[sid] {
				continue
			}
			s.applySensorRecord(index, now, sid, rec)
			s.sensorSeq[sid] = rec.GetSeq()
		}
		acks[sid] = s.sensorSeq[sid]
	}
	return &Result{Acks: acks}
}

// applySensorRecord applies one record. A malformed record is skipped (and
// still consumes its seq) so that one bad record never wedges a sensor.
func (s *state) applySensorRecord(index uint64, now *timestamppb.Timestamp, sensorID string, rec *medmeshv1.SensorRecord) {
	switch r := rec.Record.(type) {
	case *medmeshv1.SensorRecord_Device:
		s.applyDeviceUpsert(index, now, sensorID, r.Device.GetDevice())
	case *medmeshv1.SensorRecord_Baseline:
		b := r.Baseline
		if b.GetSensorId() == "" {
			b.SensorId = sensorID
		}
		s.applyBaselinePut(index, now, b)
	case *medmeshv1.SensorRecord_Alert:
		a := r.Alert
		a.SensorId = sensorID
		if a.SensorSeq == 0 {
			a.SensorSeq = rec.GetSeq()
		}
		if a.Id == "" {
			a.Id = sensorID + "/" + uitoa(a.SensorSeq)
		}
		s.applyAlertIngest(index, now, a)
	case *medmeshv1.SensorRecord_FlowSummary:
		fs := r.FlowSummary
		if fs.SensorId == "" {
			fs.SensorId = sensorID
		}
		s.applyFlowSummaries([]*medmeshv1.FlowSummary{fs})
	}
}

// applyFlowSummaries appends to each device's bounded ring.
func (s *state) applyFlowSummaries(in []*medmeshv1.FlowSummary) {
	for _, fs := range in {
		mac := fs.GetDeviceMac()
		if mac == "" {
			continue
		}
		old := s.flows[mac]
		// Force a new backing array: snapshots may share the old one.
		ring := append(old[:len(old):len(old)], fs)
		if len(ring) > FlowRingSize {
			ring = ring[len(ring)-FlowRingSize:]
		}
		s.flows[mac] = ring
	}
}

// SensorSeq returns a sensor's last applied seq.
func (f *FSM) SensorSeq(sensorID string) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.sensorSeq[sensorID]
}

// FlowSummaries returns a device's recent flow summaries, oldest first.
func (f *FSM) FlowSummaries(mac string) []*medmeshv1.FlowSummary {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.flows[mac]
}

func uitoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

package fsm

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/response"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// countSink measures a snapshot.
type countSink struct{ n int64 }

func (c *countSink) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
func (c *countSink) Close() error                { return nil }
func (c *countSink) Cancel() error               { return nil }
func (c *countSink) ID() string                  { return "soak" }

func snapshotSize(t testing.TB, f *FSM) int64 {
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var c countSink
	if err := snap.Persist(&c); err != nil {
		t.Fatal(err)
	}
	return c.n
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// soakKinds are the alert kinds sensors emit (node/internal/detect and
// score), weighted by how often a campus sees them.
var soakKinds = []struct {
	kind   string
	weight int
}{
	{"new_peer", 30}, {"new_port", 20}, {"external_destination", 12}, {"volume_anomaly", 10},
	{"scan", 8}, {"cleartext_credentials", 6}, {"protocol_misuse", 5},
	{"default_credentials", 5}, {"known_bad_destination", 4},
}

// score is an alert's risk score: most findings are low, one in seven
// scores 70 or more.
func score(rng *rand.Rand) uint32 {
	if rng.IntN(7) == 0 {
		return uint32(70 + rng.IntN(31))
	}
	return uint32(20 + rng.IntN(50))
}

// TestSoakYear replays a simulated year (leader-stamped times, compressed)
// of a 2,000-device campus through the FSM: 20 sensors report every hour,
// devices raise about three alerts a week each, the default response rules
// decide, operators acknowledge alerts, approve or reject pending
// decisions the next day and release quarantines after two days. Every
// month it samples the live heap (after GC) and the snapshot size; after
// the 90-day horizon both must level off. The audit trail goes to a real
// segment store and must verify at the end.
//
// It runs when MEDMESH_SOAK is set. MEDMESH_SOAK_DIR keeps the audit store (DIR/audit) for `medmesh audit
// verify --data-dir DIR`; `make soak` does that.
func TestSoakYear(t *testing.T) {
	if os.Getenv("MEDMESH_SOAK") == "" {
		t.Skip("soak: a simulated year (about 90 s); run with `make soak` (MEDMESH_SOAK=1)")
	}
	const (
		devices       = 2000
		sensors       = 20
		alertsPerWeek = 3.0
	)
	dir := os.Getenv("MEDMESH_SOAK_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := auditlog.Open(filepath.Join(dir, "audit"), auditlog.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := New()
	f.SetAuditStore(store)
	rules := response.DefaultRules()
	rng := rand.New(rand.NewPCG(16, 4))
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var index uint64
	apply := func(at time.Time, cmd *fsmpb.Command) *Result {
		index++
		cmd.Time = timestamppb.New(at)
		res := f.ApplyCommand(index, cmd)
		if res.Err != nil {
			t.Fatalf("index %d: %v", index, res.Err)
		}
		return res
	}

	// The leader seeds the default response rules once, as a new
	// cluster does; they decide inside each batch's apply from then on.
	apply(start, &fsmpb.Command{Command: &fsmpb.Command_RulesSeed{RulesSeed: &fsmpb.RulesSeed{Rules: rules, Actor: "coordinator/c1"}}})

	classes := []struct {
		class medmeshv1.DeviceClass
		share int // per 100
	}{
		{medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, 10}, {medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR, 8},
		{medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, 4}, {medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL, 6},
		{medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION, 12}, {medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, 60},
	}
	seq := make([]uint64, sensors)
	macs := make([]string, devices)
	ips := make([]string, devices)
	batch := make([]*fsmpb.SensorReport, sensors)
	for i := range sensors {
		batch[i] = &fsmpb.SensorReport{SensorId: fmt.Sprintf("floor-%02d", i+1)}
	}
	for d := range devices {
		macs[d] = fmt.Sprintf("02:00:00:00:%02x:%02x", d>>8, d&0xff)
		ips[d] = fmt.Sprintf("10.%d.%d.%d", 20+d%sensors, d/250, 1+d%250)
		class, n := classes[len(classes)-1].class, d%100
		for _, c := range classes {
			if n < c.share {
				class = c.class
				break
			}
			n -= c.share
		}
		s := d % sensors
		seq[s]++
		batch[s].Records = append(batch[s].Records, &medmeshv1.SensorRecord{Seq: seq[s], Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{
			Device: &medmeshv1.Device{Mac: macs[d], IpAddresses: []string{ips[d]}, DeviceClass: class, Vendor: "Vendor", Model: "Model"},
		}}})
	}
	apply(start, &fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: batch}}})

	type later struct {
		at  time.Time
		cmd *fsmpb.Command
	}
	var queue []later // operator actions, in time order
	pickKind := func() string {
		n := rng.IntN(100)
		for _, k := range soakKinds {
			if n < k.weight {
				return k.kind
			}
			n -= k.weight
		}
		return soakKinds[0].kind
	}
	perHour := devices * alertsPerWeek / (7 * 24)
	var (
		alerts, decisions uint64
		heap, snap        []float64
		began             = time.Now()
	)
	for hour := 1; hour <= 365*24; hour++ {
		at := start.Add(time.Duration(hour) * time.Hour)
		for i := range batch {
			batch[i].Records = batch[i].Records[:0]
		}
		n := int(perHour)
		if rng.Float64() < perHour-float64(n) {
			n++
		}
		var fresh []*medmeshv1.Alert
		for range n {
			d := rng.IntN(devices)
			s := d % sensors
			seq[s]++
			a := &medmeshv1.Alert{
				Id: fmt.Sprintf("floor-%02d/%d", s+1, seq[s]), DeviceMac: macs[d], Kind: pickKind(),
				Risk:       &medmeshv1.RiskScore{Score: score(rng)},
				Summary:    "unusual traffic for this device class",
				Flow:       &medmeshv1.FlowRef{Src: ips[d], Dst: fmt.Sprintf("203.0.113.%d", rng.IntN(40)+1), Sport: 40000 + uint32(rng.IntN(20000)), Dport: 443, Proto: 6},
				DetectTime: timestamppb.New(at.Add(-time.Minute)),
			}
			batch[s].Records = append(batch[s].Records, &medmeshv1.SensorRecord{Seq: seq[s], Record: &medmeshv1.SensorRecord_Alert{Alert: a}})
			fresh = append(fresh, a)
		}
		apply(at, &fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: batch}}})
		alerts += uint64(len(fresh))
		// The rules decided in the batch's apply, once per incident and
		// rule; the operators follow up.
		seen := map[string]bool{}
		for _, a := range fresh {
			inc := f.Alert(a.GetId()).GetIncidentId()
			for _, r := range rules {
				id := response.IncidentDecisionID(inc, r.GetName())
				got := f.Decision(id)
				if got == nil || seen[id] {
					continue
				}
				seen[id] = true
				decisions++
				switch {
				case got.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL:
					queue = append(queue, later{at.Add(24 * time.Hour), &fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
						TargetId: got.GetId(), Approve: rng.IntN(2) == 0, Actor: "approver/charge-nurse", Reason: "reviewed", DecisionId: "review-" + got.GetId(),
					}}}})
				case got.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE:
					queue = append(queue, later{at.Add(48 * time.Hour), &fsmpb.Command{Command: &fsmpb.Command_DecisionCreate{DecisionCreate: &fsmpb.DecisionCreate{Decision: &medmeshv1.Decision{
						Id: "release-" + got.GetId(), Action: medmeshv1.DecisionAction_DECISION_ACTION_RELEASE, DeviceMac: got.GetDeviceMac(),
						Actor: "operator/biomed", Reason: "device reimaged",
					}}}}})
				}
			}
			if rng.IntN(2) == 0 {
				queue = append(queue, later{at.Add(8 * time.Hour), &fsmpb.Command{Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{
					Id: a.GetId(), Actor: "operator/soc", Note: "triaged",
				}}}})
			}
		}
		for len(queue) > 0 && !queue[0].at.After(at) {
			q := queue[0]
			queue = queue[1:]
			apply(at, q.cmd)
		}
		if hour%(30*24) == 0 {
			h, s := heapInUse(), snapshotSize(t, f)
			heap, snap = append(heap, float64(h)), append(snap, float64(s))
			f.mu.RLock()
			kept, keptD, window, keptI := len(f.st.alerts), len(f.st.decisions), len(f.st.audit), len(f.st.inc.byID)
			f.mu.RUnlock()
			t.Logf("month %2d: heap %6.1f MiB, snapshot %6.1f MiB; alerts %6d committed, %6d kept; decisions %6d committed, %6d kept; incidents %6d kept; audit %6d records, %5d in window (%.0fs)",
				len(heap), float64(h)/(1<<20), float64(s)/(1<<20), alerts, kept, decisions, keptD, keptI, f.AuditHead().Seq, window, time.Since(began).Seconds())
		}
	}

	// Flat after retention: months 5..12 within 20% of month 4, and the
	// snapshot far below the linear growth no retention would give.
	for m := 4; m < len(heap); m++ {
		if heap[m] > 1.2*heap[3] || heap[m] < 0.8*heap[3] {
			t.Errorf("month %d heap %.1f MiB, not within 20%% of month 4's %.1f MiB", m+1, heap[m]/(1<<20), heap[3]/(1<<20))
		}
		if snap[m] > 1.2*snap[3] || snap[m] < 0.8*snap[3] {
			t.Errorf("month %d snapshot %.1f MiB, not within 20%% of month 4's %.1f MiB", m+1, snap[m]/(1<<20), snap[3]/(1<<20))
		}
	}
	unbounded := snap[2] * 12 / 3 // three months of state, grown linearly for a year
	if last := snap[len(snap)-1]; last > unbounded/2 {
		t.Errorf("month 12 snapshot %.1f MiB is not far below the %.1f MiB a year without retention would reach", last/(1<<20), unbounded/(1<<20))
	}
	t.Logf("a year without retention would hold ~%.0f MiB of snapshot (month 3 x 4)", unbounded/(1<<20))

	// The audit chain verifies.
	if err := store.Sync(); err != nil {
		t.Fatal(err)
	}
	rep, err := auditlog.Verify(filepath.Join(dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Break != nil || rep.Records != f.AuditHead().Seq || rep.Head != f.AuditHead() {
		t.Fatalf("audit verify: %+v, break %v; FSM head %v", rep, rep.Break, f.AuditHead())
	}
	t.Logf("audit: %d records in %d segments verify; head %v", rep.Records, rep.Segments, rep.Head)
}

package spool

import (
	"fmt"
	"testing"

	"go.uber.org/goleak"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func alert(id string) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{Id: id, DeviceMac: "00:11:22:33:44:55"}}}
}
func summary(peer string) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{PeerIp: peer}}}
}
func device(mac string) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{Mac: mac}}}}
}
func baseline(mac string) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{DeviceMac: mac}}}
}

func open(t *testing.T, cfg Config) *Spool {
	t.Helper()
	s, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSeqMonotonicAcrossRestartAndAck(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	s := open(t, cfg)
	seqs, err := s.Append(alert("a1"), summary("10.0.0.1"), device("m1"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[1 2 3]" {
		t.Fatalf("seqs %v", seqs)
	}
	if _, err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, cfg)
	defer s.Close()
	st := s.Stats()
	if st.Records != 1 || st.LastSeq != 3 || st.AckedSeq != 2 {
		t.Fatalf("after restart: %+v", st)
	}
	seqs, err = s.Append(baseline("m1"), alert("a2"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[4 5]" {
		t.Fatalf("seqs after restart %v, want [4 5]", seqs)
	}
	recs, err := s.Pending(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		k, _ := KindOf(r)
		got = append(got, fmt.Sprintf("%d:%s", r.GetSeq(), k))
	}
	if fmt.Sprint(got) != "[3:device 4:baseline 5:alert]" {
		t.Fatalf("pending %v", got)
	}
	if recs, _ := s.Pending(4, 100); len(recs) != 1 || recs[0].GetAlert().GetId() != "a2" {
		t.Fatalf("pending after 4: %v", recs)
	}
	if n, err := s.Ack(5); err != nil || n != 3 {
		t.Fatalf("ack 5: %d %v", n, err)
	}
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("after full ack: %+v", st)
	}
}

func TestEvictionOrder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.MaxRecords = 8
	s := open(t, cfg)
	defer s.Close()
	// 2 alerts, 2 baselines, 2 devices, 2 summaries, interleaved.
	if _, err := s.Append(summary("p1"), alert("a1"), device("d1"), baseline("b1"),
		summary("p2"), device("d2"), alert("a2"), baseline("b2")); err != nil {
		t.Fatal(err)
	}
	step := func(rec *medmeshv1.SensorRecord, wantDropped string, wantLeft string) {
		t.Helper()
		if _, err := s.Append(rec); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if st.Records != 8 || fmt.Sprint(st.Dropped) != wantDropped {
			t.Fatalf("records %d dropped %v, want 8 and %s", st.Records, st.Dropped, wantDropped)
		}
		recs, err := s.Pending(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, r := range recs {
			switch x := r.GetRecord().(type) {
			case *medmeshv1.SensorRecord_Alert:
				left = append(left, x.Alert.GetId())
			case *medmeshv1.SensorRecord_FlowSummary:
				left = append(left, x.FlowSummary.GetPeerIp())
			case *medmeshv1.SensorRecord_Device:
				left = append(left, x.Device.GetDevice().GetMac())
			case *medmeshv1.SensorRecord_Baseline:
				left = append(left, x.Baseline.GetDeviceMac())
			}
		}
		if fmt.Sprint(left) != wantLeft {
			t.Fatalf("left %v, want %s", left, wantLeft)
		}
	}
	// Oldest flow summary goes first.
	step(alert("a3"), "map[flow_summary:1]", "[a1 d1 b1 p2 d2 a2 b2 a3]")
	step(alert("a4"), "map[flow_summary:2]", "[a1 d1 b1 d2 a2 b2 a3 a4]")
	// A new summary when full of better things is itself the one dropped.
	step(summary("p3"), "map[flow_summary:3]", "[a1 d1 b1 d2 a2 b2 a3 a4]")
	// Then device observations, oldest first.
	step(alert("a5"), "map[device:1 flow_summary:3]", "[a1 b1 d2 a2 b2 a3 a4 a5]")
	step(alert("a6"), "map[device:2 flow_summary:3]", "[a1 b1 a2 b2 a3 a4 a5 a6]")
	// Then baselines.
	step(alert("a7"), "map[baseline:1 device:2 flow_summary:3]", "[a1 a2 b2 a3 a4 a5 a6 a7]")
	step(alert("a8"), "map[baseline:2 device:2 flow_summary:3]", "[a1 a2 a3 a4 a5 a6 a7 a8]")
	// Alerts last, oldest first.
	step(alert("a9"), "map[alert:1 baseline:2 device:2 flow_summary:3]", "[a2 a3 a4 a5 a6 a7 a8 a9]")

	// Drop counts survive a restart.
	s.Close()
	s2 := open(t, cfg)
	defer s2.Close()
	if d := s2.Stats().Dropped; fmt.Sprint(d) != "map[alert:1 baseline:2 device:2 flow_summary:3]" {
		t.Fatalf("dropped after restart %v", d)
	}
}

func TestByteBound(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.MaxBytes = 4096
	s := open(t, cfg)
	defer s.Close()
	for i := range 500 {
		if _, err := s.Append(summary(fmt.Sprintf("10.0.%d.%d", i/256, i%256))); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Bytes > cfg.MaxBytes || st.Dropped["flow_summary"] == 0 || uint64(st.Records)+st.Dropped["flow_summary"] != 500 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.Append(&medmeshv1.SensorRecord{}); err == nil {
		t.Fatal("empty record accepted")
	}
	if st2 := s.Stats(); st2.LastSeq != st.LastSeq {
		t.Fatalf("failed append moved seq %d -> %d", st.LastSeq, st2.LastSeq)
	}
}

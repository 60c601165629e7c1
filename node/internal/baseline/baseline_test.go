package baseline

import (
	"math"
	"net/netip"
	"testing"
	"time"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"google.golang.org/protobuf/proto"
)

func TestWelford(t *testing.T) {
	xs := []float64{3, 7, 7, 19, 24, 1, 0, 12}
	var w Welford
	var sum float64
	for _, x := range xs {
		w.Add(x)
		sum += x
	}
	mean := sum / float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	if math.Abs(w.Mean-mean) > 1e-9 || math.Abs(w.Var()-ss/float64(len(xs)-1)) > 1e-9 {
		t.Fatalf("welford mean %v var %v, want %v %v", w.Mean, w.Var(), mean, ss/float64(len(xs)-1))
	}
	var a, b Welford
	for i, x := range xs {
		if i < 3 {
			a.Add(x)
		} else {
			b.Add(x)
		}
	}
	a.Merge(b)
	if a.N != w.N || math.Abs(a.Mean-w.Mean) > 1e-9 || math.Abs(a.M2-w.M2) > 1e-9 {
		t.Fatalf("merged %+v, want %+v", a, w)
	}
	if z := Z(w, w.Mean, 0); z != 0 {
		t.Errorf("z of the mean = %v", z)
	}
	if z := Z(Welford{N: 5, Mean: 100}, 100, 1); z != 0 {
		t.Errorf("z with zero variance = %v, want 0 at the mean", z)
	}
	if z := Z(Welford{N: 5, Mean: 100}, 200, 1); z != 10 {
		t.Errorf("z floored at a tenth of the mean = %v, want 10", z)
	}
}

var (
	gw   = netip.MustParseAddr("10.0.0.1")
	pacs = netip.MustParseAddr("10.0.0.7")
)

func learn(t *testing.T) *Baseline {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Window, cfg.Slot = 10*time.Second, time.Second
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	l, err := NewLearner(cfg, start)
	if err != nil {
		t.Fatal(err)
	}
	// 3 flows per second to the PACS, one per second in from the gateway,
	// for 10 seconds; seconds 4 and 5 are silent.
	for s := range 10 {
		if s == 4 || s == 5 {
			continue
		}
		ts := start + int64(s)*int64(time.Second)
		for i := range 3 {
			l.Observe(Key{Peer: pacs, Proto: 6, Port: 104, Dir: Outbound}, "dicom", nil, 1000, ts+int64(i))
		}
		l.Observe(Key{Peer: gw, Proto: 6, Port: 22, Dir: Inbound}, "", nil, 500, ts)
	}
	if l.Due(start + int64(9*time.Second)) {
		t.Error("due before the window elapsed")
	}
	if !l.Due(start + int64(10*time.Second)) {
		t.Error("not due when the window elapsed")
	}
	return l.Freeze("00:00:00:00:00:01", medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, 1, start+int64(10*time.Second))
}

func TestLearnFreezeLookup(t *testing.T) {
	b := learn(t)
	cases := []struct {
		k    Key
		want Match
	}{
		{Key{Peer: pacs, Proto: 6, Port: 104, Dir: Outbound}, Exact},
		{Key{Peer: gw, Proto: 6, Port: 22, Dir: Inbound}, Exact},
		{Key{Peer: netip.MustParseAddr("10.9.9.9"), Proto: 6, Port: 104, Dir: Outbound}, NewPeer},
		{Key{Peer: pacs, Proto: 6, Port: 4242, Dir: Outbound}, NewService},
		{Key{Peer: netip.MustParseAddr("10.9.9.9"), Proto: 17, Port: 53, Dir: Outbound}, NewPeerService},
		{Key{Peer: gw, Proto: 6, Port: 104, Dir: Outbound}, NewCombination},
	}
	for _, c := range cases {
		if got := b.Lookup(c.k); got != c.want {
			t.Errorf("Lookup(%+v) = %v, want %v", c.k, got, c.want)
		}
	}
	// Slots: seconds 0-3 and 6-9 had 4 flows, 4-5 had none (counted as 0).
	var flows float64
	var n uint64
	for _, v := range b.Volume {
		flows += v.Flows.Mean * float64(v.Flows.N)
		n += v.Flows.N
	}
	if n != 10 || flows != 32 {
		t.Errorf("volume: %d slot samples with %v flows, want 10 and 32", n, flows)
	}
	if got := b.SlotOf(b.LearnStart + int64(3*time.Second)); b.Volume[got].Flows.Mean != 4 {
		t.Errorf("slot of second 3 has mean %v flows, want 4", b.Volume[got].Flows.Mean)
	}
	rules := b.Rules()
	if len(rules) != 2 || rules[0].Prefix.String() != "10.0.0.1/32" || rules[1].Port != 104 {
		t.Errorf("rules = %v", rules)
	}
	if allocs := testing.AllocsPerRun(1000, func() { b.Lookup(cases[0].k) }); allocs != 0 {
		t.Errorf("Lookup allocates %v", allocs)
	}
}

func TestProtoRoundTrip(t *testing.T) {
	b := learn(t)
	pb := b.Proto("s1")
	if len(pb.GetEntries()) != 2 || pb.GetEntries()[1].GetApp() != "dicom" || pb.GetVersion() != 1 {
		t.Fatalf("proto = %v", pb)
	}
	back, err := FromProto(pb, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back.Proto("s1"), pb) {
		t.Fatalf("round trip differs:\n%v\n%v", back.Proto("s1"), pb)
	}
	bad := proto.Clone(pb).(*medmeshv1.Baseline)
	bad.Entries[0].PeerCidr = "not-a-prefix"
	if _, err := FromProto(bad, time.Second); err == nil {
		t.Error("bad prefix accepted")
	}
}

func TestMerge(t *testing.T) {
	a, b := learn(t), learn(t)
	m := Merge(medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, 3, []*Baseline{a, b})
	if m.Device != "" || m.Len() != 2 || m.Version != 3 {
		t.Fatalf("merged: device %q len %d version %d", m.Device, m.Len(), m.Version)
	}
	s := a.SlotOf(a.LearnStart)
	if m.Volume[s].Flows.N != 2*a.Volume[s].Flows.N {
		t.Errorf("merged slot samples %d, want %d", m.Volume[s].Flows.N, 2*a.Volume[s].Flows.N)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).validate(); err == nil {
		t.Error("zero config accepted")
	}
	if err := DefaultConfig().validate(); err != nil {
		t.Error(err)
	}
}

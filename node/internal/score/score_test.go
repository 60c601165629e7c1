package score

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/baseline"
	"github.com/medmesh/medmesh/node/internal/detect"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

type peerNames map[netip.Addr]string

func (n peerNames) PeerName(a netip.Addr) string { return n[a] }

func newScorer(t testing.TB, mod func(*Config)) *Scorer {
	t.Helper()
	c := DefaultConfig()
	if mod != nil {
		mod(&c)
	}
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	hl7Engine = netip.MustParseAddr("10.0.0.2")
	start     = time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC).UnixNano()
)

// pumpBaseline: 5 flows of 1000 bytes per second to the HL7 engine.
func pumpBaseline(t testing.TB) *baseline.Baseline {
	t.Helper()
	cfg := baseline.DefaultConfig()
	cfg.Window, cfg.Slot = 30*time.Second, time.Second
	l, err := baseline.NewLearner(cfg, start)
	if err != nil {
		t.Fatal(err)
	}
	for s := range 30 {
		for i := range 5 + s%2 {
			l.Observe(baseline.Key{Peer: hl7Engine, Proto: 6, Port: 2575, Dir: baseline.Outbound}, "hl7", nil, 1000,
				start+int64(s)*int64(time.Second)+int64(i)*int64(time.Millisecond))
		}
	}
	return l.Freeze("00:0a:f7:00:00:01", medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, 1, start+int64(30*time.Second))
}

func hitNames(r *Result) []string {
	var n []string
	for _, h := range r.Hits {
		n = append(n, h.Factor.String())
	}
	return n
}

func TestScoreFlowFactors(t *testing.T) {
	b := pumpBaseline(t)
	ext := netip.MustParseAddr("198.51.100.20")
	cases := []struct {
		name  string
		mod   func(*Config)
		flow  Flow
		want  []string
		score uint32
	}{
		{"in baseline", nil, Flow{Peer: hl7Engine, Proto: 6, Port: 2575, App: "hl7", Outbound: true}, nil, 0},
		{"new port", nil, Flow{Peer: hl7Engine, Proto: 6, Port: 22, Outbound: true}, []string{"new_port"}, 25},
		{"external", nil, Flow{Peer: ext, Names: peerNames{ext: "files.example"}, Proto: 6, Port: 443, Outbound: true},
			[]string{"external_destination", "new_peer", "new_port"}, 80},
		{"known bad by name", func(c *Config) { c.KnownBad = []string{"example"} },
			Flow{Peer: ext, Names: peerNames{ext: "c2.evil.example"}, Proto: 6, Port: 443, Outbound: true},
			[]string{"known_bad_destination", "external_destination", "new_peer", "new_port"}, 100},
		{"known bad by prefix", func(c *Config) { c.KnownBad = []string{"198.51.100.0/24"} },
			Flow{Peer: ext, Proto: 6, Port: 2575, App: "hl7", Outbound: true}, []string{"known_bad_destination", "cleartext_phi", "external_destination", "new_peer"}, 100},
		{"HL7 to a peer not in the baseline", nil, Flow{Peer: netip.MustParseAddr("10.0.0.77"), Proto: 6, Port: 2575, App: "hl7", Outbound: true},
			[]string{"cleartext_phi", "new_peer"}, 65},
		{"HL7 to the baseline's peer on another port", nil, Flow{Peer: hl7Engine, Proto: 6, Port: 2576, App: "hl7", Outbound: true},
			[]string{"new_port"}, 25},
		{"DICOM from a new campus client", nil, Flow{Peer: netip.MustParseAddr("10.0.0.78"), Proto: 6, Port: 104, App: "dicom", Answered: true},
			[]string{"new_peer", "new_port"}, 25},
		{"HL7 from an external client", nil, Flow{Peer: ext, Proto: 6, Port: 2575, App: "hl7", Answered: true},
			[]string{"cleartext_phi", "new_peer", "new_port"}, 90},
		{"DICOM from a pump", nil, Flow{Peer: hl7Engine, Proto: 6, Port: 104, App: "dicom", Outbound: true, Class: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP},
			[]string{"protocol_misuse", "new_port"}, 70},
		{"DICOM from a modality", nil, Flow{Peer: hl7Engine, Proto: 6, Port: 104, App: "dicom", Outbound: true, Class: medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY},
			[]string{"new_port"}, 25},
		{"HL7 from a workstation", nil, Flow{Peer: hl7Engine, Proto: 6, Port: 2575, App: "hl7", Outbound: true, Class: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
			[]string{"protocol_misuse"}, 45},
		// A probe the device did not answer: the prober deviates, not the
		// device (a scan's victim).
		{"inbound probe not answered", nil, Flow{Peer: netip.MustParseAddr("10.0.0.99"), Proto: 6, Port: 2575, Outbound: false},
			nil, 0},
		// A new campus client the device accepted: half of what the same
		// flow outbound would weigh, under the alert threshold alone.
		{"inbound new peer accepted", nil, Flow{Peer: netip.MustParseAddr("10.0.0.99"), Proto: 6, Port: 2575, Outbound: false, Answered: true},
			[]string{"new_peer", "new_port"}, 25},
		{"inbound from outside accepted", nil, Flow{Peer: ext, Proto: 6, Port: 2575, Outbound: false, Answered: true},
			[]string{"new_peer", "new_port"}, 50},
		// A device asking the campus's DHCP server for an address, never
		// seen doing so while it learned: not an anomaly.
		{"campus infrastructure", nil, Flow{Peer: netip.MustParseAddr("10.98.0.12"), Proto: 17, Port: 67, App: "dhcp", Outbound: true, Infra: true},
			nil, 0},
		{"the infrastructure server on another port", nil, Flow{Peer: netip.MustParseAddr("10.98.0.12"), Proto: 6, Port: 22, Outbound: true},
			[]string{"new_peer", "new_port"}, 50},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newScorer(t, c.mod)
			f := c.flow
			f.Baseline, f.TimeNs = b, start+int64(time.Hour)
			var r Result
			s.ScoreFlow(NewTracker(), &f, &r)
			if got := hitNames(&r); !slices.Equal(got, c.want) || r.Score != c.score {
				t.Errorf("hits %v score %d, want %v %d (%v)", got, r.Score, c.want, c.score, r.Hits)
			}
			for _, h := range r.Hits {
				if h.Detail == "" {
					t.Errorf("factor %s has no detail", h.Factor)
				}
			}
		})
	}
}

func TestExternalDetailNamesPeer(t *testing.T) {
	s := newScorer(t, nil)
	ext := netip.MustParseAddr("203.0.113.9")
	f := Flow{Peer: ext, Names: peerNames{ext: "exfil.example"}, Proto: 6, Port: 443, Outbound: true, Baseline: pumpBaseline(t)}
	var r Result
	s.ScoreFlow(NewTracker(), &f, &r)
	if h, ok := r.Top(); !ok || h.Factor != ExternalDestination || !strings.Contains(h.Detail, "203.0.113.9 (exfil.example)") {
		t.Fatalf("top hit %+v", h)
	}
}

func TestVolumeAnomaly(t *testing.T) {
	s := newScorer(t, nil)
	b := pumpBaseline(t)
	tr := NewTracker()
	var r Result
	slot := start + int64(time.Hour) // same slot of the day as start
	// The learned rate: nothing.
	for i := range 5 {
		f := Flow{Peer: hl7Engine, Proto: 6, Port: 2575, Outbound: true, Bytes: 1000, TimeNs: slot + int64(i), Baseline: b, CountVolume: true}
		s.ScoreFlow(tr, &f, &r)
		if len(r.Hits) != 0 {
			t.Fatalf("learned volume scored %v", r.Hits)
		}
	}
	// A burst of 50 large flows in the same slot: one volume anomaly.
	n := 0
	for i := range 50 {
		f := Flow{Peer: hl7Engine, Proto: 6, Port: 2575, Outbound: true, Bytes: 200000, TimeNs: slot + 10 + int64(i), Baseline: b, CountVolume: true}
		s.ScoreFlow(tr, &f, &r)
		if slices.Contains(hitNames(&r), "volume_anomaly") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("volume anomaly reported %d times in the slot, want 1", n)
	}
}

func TestScoreLogin(t *testing.T) {
	s := newScorer(t, nil)
	var r Result
	const peer = "10.0.0.9"
	rev := flow.Rev
	cases := []struct {
		login detect.Login
		want  []string
		score uint32
	}{
		{detect.Login{Protocol: "telnet", User: "admin", Cleartext: true, Default: true, Outcome: detect.Accepted, Subject: rev},
			[]string{"default_credentials", "cleartext_credentials"}, 100},
		{detect.Login{Protocol: "telnet", User: "admin", Cleartext: true, Default: true, Outcome: detect.Refused, Subject: rev},
			[]string{"cleartext_credentials"}, 50},
		{detect.Login{Protocol: "http", Method: "form", User: "admin", Cleartext: true, Default: true, Outcome: detect.NotSeen, Subject: rev},
			[]string{"cleartext_credentials"}, 50},
		{detect.Login{Protocol: "ftp", User: "root", Cleartext: true, Partial: true, Subject: rev}, []string{"cleartext_credentials"}, 50},
		{detect.Login{Protocol: "snmp", Cleartext: true, Default: true, Outcome: detect.Accepted, Subject: rev},
			[]string{"default_credentials", "cleartext_credentials"}, 100},
		{detect.Login{Protocol: "http", User: "alice", Cleartext: true, Outcome: detect.Accepted, Subject: rev}, []string{"cleartext_credentials"}, 50},
		{detect.Login{Protocol: "vnc", Method: "none", NoPassword: true, Default: true, Outcome: detect.Accepted, Subject: rev},
			[]string{"default_credentials"}, 60},
		{detect.Login{Protocol: "vnc", Method: "vnc-auth", Outcome: detect.Accepted, Subject: rev}, nil, 0},
		{detect.Login{Protocol: "ssh", Method: "banner", User: "pi", Default: true, Inferred: true, Subject: rev},
			[]string{"default_credentials"}, 50},
	}
	for _, c := range cases {
		s.ScoreLogin(&c.login, peer, false, &r)
		if got := hitNames(&r); !slices.Equal(got, c.want) || r.Score != c.score {
			t.Errorf("%v: hits %v score %d, want %v %d", c.login, got, r.Score, c.want, c.score)
		}
		for _, h := range r.Hits {
			if h.Detail == "" || !strings.Contains(h.Detail, c.login.Protocol) {
				t.Errorf("%v: detail %q", c.login, h.Detail)
			}
		}
	}
	s.ScoreFinding(Scan, "vertical scan", &r)
	if h, ok := r.Top(); !ok || h.Factor != Scan || r.Score != 60 || h.Detail != "vertical scan" {
		t.Fatalf("scan finding: %+v", r)
	}
}

func TestInBaselineDoesNotAllocate(t *testing.T) {
	s := newScorer(t, nil)
	b := pumpBaseline(t)
	tr := NewTracker()
	var r Result
	f := Flow{Peer: hl7Engine, Proto: 6, Port: 2575, App: "hl7", Outbound: true, Bytes: 1000, Baseline: b, CountVolume: true}
	if a := testing.AllocsPerRun(1000, func() {
		f.TimeNs += int64(time.Second) // one flow per slot: never anomalous
		s.ScoreFlow(tr, &f, &r)
	}); a != 0 {
		t.Fatalf("in-baseline scoring allocates %v", a)
	}
}

func BenchmarkScoreFlow(b *testing.B) {
	s := newScorer(b, nil)
	bl := pumpBaseline(b)
	tr := NewTracker()
	var r Result
	f := Flow{Peer: hl7Engine, Proto: 6, Port: 2575, App: "hl7", Outbound: true, Bytes: 1000, Baseline: bl, CountVolume: true}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.TimeNs = start + int64(i)*int64(200*time.Millisecond)
		s.ScoreFlow(tr, &f, &r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

func TestParseKnownBad(t *testing.T) {
	got, err := ParseKnownBad(strings.NewReader("# feed\n203.0.113.0/24\nevil.example # c2\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"203.0.113.0/24", "evil.example"}) {
		t.Errorf("parsed %v", got)
	}
}

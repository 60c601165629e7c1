package campus

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/policy"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const (
	pump    = "02:00:00:00:00:07"
	engine  = "02:00:00:00:09:05"
	monitor = "02:00:00:00:00:09"
	twinA   = "02:00:00:00:05:01"
	twinB   = "02:00:00:00:05:02"
)

var (
	out = medmeshv1.Direction_DIRECTION_OUTBOUND
	in  = medmeshv1.Direction_DIRECTION_INBOUND
)

// view is a small campus: a pump on floor 3's ICU talking HL7 to an
// engine in the basement (both sides learned it), to a monitor in its own
// zone, to an address outside, and to an address two devices claim.
func view() *fsm.TrafficView {
	loc := func(floor, zone string) *medmeshv1.Location { return &medmeshv1.Location{Floor: floor, Zone: zone} }
	dev := func(mac, ip string, t medmeshv1.Tier, l *medmeshv1.Location) *medmeshv1.Device {
		return &medmeshv1.Device{Mac: mac, IpAddresses: []string{ip}, Tier: t, Location: l}
	}
	at := timestamppb.New(time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC))
	return &fsm.TrafficView{
		Index: 42,
		Devices: map[string]*medmeshv1.Device{
			pump:    dev(pump, "10.1.0.7", medmeshv1.Tier_TIER_LIFE_CRITICAL, loc("3", "icu")),
			engine:  dev(engine, "10.9.0.5", medmeshv1.Tier_TIER_CLINICAL, loc("B1", "data-center")),
			monitor: dev(monitor, "10.1.0.9", medmeshv1.Tier_TIER_UNSPECIFIED, loc("3", "icu")),
			twinA:   dev(twinA, "10.5.0.5", medmeshv1.Tier_TIER_NON_CLINICAL, loc("10", "ward")),
			twinB:   dev(twinB, "10.5.0.5", medmeshv1.Tier_TIER_NON_CLINICAL, nil),
		},
		Baselines: map[string]*medmeshv1.Baseline{
			pump: {DeviceMac: pump, Version: 1, Entries: []*medmeshv1.BaselineEntry{
				{PeerCidr: "10.9.0.5/32", Protocol: 6, Port: 2575, App: "hl7", Direction: out},
				{PeerCidr: "10.1.0.9/32", Protocol: 6, Port: 80, Direction: out},
				{PeerCidr: "10.5.0.0/24", Protocol: 17, Port: 123, Direction: out},
			}},
			engine: {DeviceMac: engine, Version: 1, Entries: []*medmeshv1.BaselineEntry{
				{PeerCidr: "10.1.0.7/32", Protocol: 6, Port: 2575, App: "hl7", Direction: in},
			}},
		},
		Flows: map[string][]*medmeshv1.FlowSummary{
			pump: {
				{DeviceMac: pump, PeerIp: "10.9.0.5", Protocol: 6, Port: 2575, App: "hl7", Direction: out, Flows: 2, BytesOut: 100, WindowStart: at, WindowSeconds: 60},
				{DeviceMac: pump, PeerIp: "203.0.113.9", Protocol: 6, Port: 443, Direction: out, Flows: 1, WindowStart: at, WindowSeconds: 60},
				{DeviceMac: pump, PeerIp: "10.9.0.5", Protocol: 6, Port: 2575, App: "hl7", Direction: out, Flows: 1, BytesOut: 50, WindowStart: timestamppb.New(at.AsTime().Add(time.Minute)), WindowSeconds: 60},
				{DeviceMac: pump, PeerIp: "10.5.0.5", Protocol: 17, Port: 123, Direction: out, Flows: 1, WindowStart: at, WindowSeconds: 60},
			},
		},
		Holders: map[string]string{"10.1.0.7": pump, "10.9.0.5": engine, "10.1.0.9": monitor, "10.5.0.5": ""},
	}
}

func TestPeers(t *testing.T) {
	v := view()
	gen, err := policy.Generate(v.Baselines[pump], medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, policy.DefaultDefaults())
	if err != nil {
		t.Fatal(err)
	}
	peers := Peers(v, pump, v.Baselines[pump], gen)
	var got []string
	for _, p := range peers {
		got = append(got, fmt.Sprintf("%s %s base=%v flows=%d drop=%d mac=%s crosses=%v", p.GetPeer(), Service(p.GetProtocol(), p.GetPort(), p.GetApp()),
			p.GetInBaseline(), p.GetFlows(), p.GetWouldDrop(), p.GetPeerMac(), p.GetCrosses()))
	}
	want := []string{
		"10.9.0.5 tcp/2575 hl7 base=true flows=3 drop=0 mac=02:00:00:00:09:05 crosses=true",
		"203.0.113.9 tcp/443 base=false flows=1 drop=1 mac= crosses=true",
		"10.5.0.5 udp/123 base=true flows=1 drop=0 mac= crosses=true",
		"10.1.0.9 tcp/80 base=true flows=0 drop=0 mac=02:00:00:00:00:09 crosses=false",
		"10.5.0.0/24 udp/123 base=true flows=0 drop=0 mac= crosses=true",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("peers:\n%q\nwant\n%q", got, want)
	}
	if p := peers[0]; p.GetBytesOut() != 150 || !p.GetLastSeen().AsTime().Equal(time.Date(2026, 12, 5, 8, 2, 0, 0, time.UTC)) || p.GetPeerSegment().GetZone() != "data-center" {
		t.Errorf("HL7 peer totals: %v", p)
	}
	if !peers[1].GetPeerSegment().GetOutside() {
		t.Errorf("an address no device holds is outside the inventory: %v", peers[1].GetPeerSegment())
	}
}

func TestMap(t *testing.T) {
	segs, crossings, truncated := Map(view(), 10)
	var got []string
	for _, s := range segs {
		got = append(got, fmt.Sprintf("%s/%s: %d devices, %d lc %d cl %d nc %d unknown, %d crossings", s.GetSegment().GetFloor(), s.GetSegment().GetZone(),
			s.GetDevices(), s.GetLifeCritical(), s.GetClinical(), s.GetNonClinical(), s.GetUnknownTier(), s.GetCrossings()))
	}
	// Floors in number order, names after; the device without a location
	// last.
	want := []string{
		"3/icu: 2 devices, 1 lc 0 cl 0 nc 1 unknown, 2 crossings",
		"10/ward: 1 devices, 0 lc 0 cl 1 nc 0 unknown, 0 crossings",
		"B1/data-center: 1 devices, 0 lc 1 cl 0 nc 0 unknown, 1 crossings",
		"/: 1 devices, 0 lc 0 cl 1 nc 0 unknown, 0 crossings",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("segments:\n%q\nwant\n%q", got, want)
	}
	got = nil
	for _, c := range crossings {
		got = append(got, fmt.Sprintf("%s/%s -> %s pairs=%d flows=%d %v %v", c.GetFrom().GetFloor(), c.GetFrom().GetZone(), segText(c.GetTo()),
			c.GetDevicePairs(), c.GetFlows(), c.GetServices(), c.GetExamples()))
	}
	// The HL7 traffic both sides learned counts once; the two prefixes and
	// addresses no single device holds go outside.
	want = []string{
		"3/icu -> B1/data-center pairs=1 flows=3 [tcp/2575 hl7] [02:00:00:00:00:07 -> 02:00:00:00:09:05]",
		"3/icu -> outside pairs=3 flows=2 [tcp/443 udp/123] [02:00:00:00:00:07 -> 10.5.0.0/24 02:00:00:00:00:07 -> 10.5.0.5 02:00:00:00:00:07 -> 203.0.113.9]",
	}
	if !slices.Equal(got, want) || truncated != 0 {
		t.Fatalf("crossings (truncated %d):\n%q\nwant\n%q", truncated, got, want)
	}
	if _, c, n := Map(view(), 1); len(c) != 1 || n != 1 {
		t.Errorf("at most 1 crossing: %d listed, %d truncated", len(c), n)
	}
}

func segText(s *medmeshv1.Segment) string {
	if s.GetOutside() {
		return "outside"
	}
	return s.GetFloor() + "/" + s.GetZone()
}

func TestSegmentDevices(t *testing.T) {
	v := view()
	icu := &medmeshv1.Segment{Floor: "3", Zone: "icu"}
	page, more, total := SegmentDevices(v, icu, "", 1)
	if len(page) != 1 || !more || total != 2 || page[0].GetMac() != pump || len(page[0].GetPeers()) != 5 {
		t.Fatalf("first page: %v more=%v total=%d", page, more, total)
	}
	page, more, total = SegmentDevices(v, icu, page[0].GetMac(), 1)
	// The monitor learned nothing itself: the pump's baseline names it.
	if len(page) != 1 || more || total != 2 || page[0].GetMac() != monitor || len(page[0].GetPeers()) != 1 {
		t.Fatalf("second page: %v more=%v total=%d", page, more, total)
	}
	if p := page[0].GetPeers()[0]; !p.GetReportedByPeer() || p.GetPeer() != "10.1.0.7" || p.GetPeerMac() != pump || p.GetDirection() != in || p.GetPort() != 80 || p.GetCrosses() {
		t.Errorf("the monitor's peer: %v", p)
	}
	// The engine's own baseline has the pump, with no flow of its own: the
	// pump's flows count.
	page, _, _ = SegmentDevices(v, &medmeshv1.Segment{Floor: "B1", Zone: "data-center"}, "", 10)
	if ps := page[0].GetPeers(); len(ps) != 1 || ps[0].GetFlows() != 3 || ps[0].GetBytesIn() != 150 || !ps[0].GetInBaseline() || ps[0].GetReportedByPeer() || !ps[0].GetCrosses() {
		t.Errorf("the engine's peers: %v", ps)
	}
	if page, _, total := SegmentDevices(v, &medmeshv1.Segment{}, "", 10); total != 1 || page[0].GetMac() != twinB {
		t.Errorf("the segment of no location: %v", page)
	}
}

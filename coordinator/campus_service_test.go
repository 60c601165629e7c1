package coordinator

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestCampusService asks a follower (forwarded to the leader) for the
// pump's traffic, the campus map and a zone's devices on a 3-node
// cluster seeded as the browser test seeds it: the HL7 peer in the
// basement, the flow out of the inventory, what a generated policy would
// drop, and the same answers from every replica with stale reads.
func TestCampusService(t *testing.T) {
	cl := newCluster(t, 3, nil)
	pump := "02:00:00:00:00:07"
	const n = 40
	seedDevices(t, cl, n, pump)
	ctx := ctxT(t, time.Minute)
	f := medmeshv1.NewCampusServiceClient(cl.followers()[0].conn)

	tr, err := f.GetDeviceTraffic(ctx, &medmeshv1.GetDeviceTrafficRequest{DeviceMac: "02-00-00-00-00-07"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.GetHasBaseline() || tr.GetClassBaseline() || tr.GetBaselineVersion() != 1 || !slices.Equal(tr.GetBaselineProtocols(), []string{"hl7"}) {
		t.Errorf("baseline: has %v class %v version %d protocols %v", tr.GetHasBaseline(), tr.GetClassBaseline(), tr.GetBaselineVersion(), tr.GetBaselineProtocols())
	}
	if tr.GetFlowSummaries() != 2 || tr.GetFlows() != 4 {
		t.Errorf("flows: %d summaries, %d flows; want 2, 4", tr.GetFlowSummaries(), tr.GetFlows())
	}
	if len(tr.GetPeers()) != 2 {
		t.Fatalf("peers: %v", tr.GetPeers())
	}
	hl7, ext := tr.GetPeers()[0], tr.GetPeers()[1]
	if hl7.GetPeer() != "10.9.0.5" || hl7.GetPeerMac() != hl7Engine || !hl7.GetInBaseline() || hl7.GetFlows() != 3 || hl7.GetWouldDrop() != 0 ||
		!hl7.GetCrosses() || hl7.GetPeerSegment().GetFloor() != "B1" || hl7.GetPeerSegment().GetZone() != "data-center" {
		t.Errorf("HL7 peer: %v", hl7)
	}
	if ext.GetPeer() != "203.0.113.9" || ext.GetPeerMac() != "" || ext.GetInBaseline() || ext.GetWouldDrop() != 1 || !ext.GetPeerSegment().GetOutside() {
		t.Errorf("external peer: %v", ext)
	}
	if g := tr.GetGenerated(); g.GetFlowsTotal() != 4 || g.GetFlowsDropped() != 1 || tr.GetGenerateError() != "" {
		t.Errorf("generated policy simulation: %v (%s)", g, tr.GetGenerateError())
	}
	if tr.GetSegment().GetFloor() != "3" || tr.GetSegment().GetZone() != "icu" || len(tr.GetPolicies()) != 0 || tr.GetClassPolicy() != nil {
		t.Errorf("segment %v, policies %v, class policy %v", tr.GetSegment(), tr.GetPolicies(), tr.GetClassPolicy())
	}
	if _, err := f.GetDeviceTraffic(ctx, &medmeshv1.GetDeviceTrafficRequest{DeviceMac: "02:00:00:00:99:99"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown device: %v, want NotFound", err)
	}

	m, err := f.GetCampusMap(ctx, &medmeshv1.GetCampusMapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var devices uint32
	for _, s := range m.GetSegments() {
		devices += s.GetDevices()
	}
	if m.GetDevices() != n+seededExtra || devices != m.GetDevices() {
		t.Errorf("map counts %d devices (segments %d), want %d", m.GetDevices(), devices, n+seededExtra)
	}
	if len(m.GetCrossings()) != 2 {
		t.Fatalf("crossings: %v", m.GetCrossings())
	}
	if c := m.GetCrossings()[0]; c.GetFrom().GetZone() != "icu" || c.GetTo().GetZone() != "data-center" || c.GetFlows() != 3 || c.GetDevicePairs() != 1 ||
		!slices.Equal(c.GetServices(), []string{"tcp/2575 hl7"}) {
		t.Errorf("first crossing: %v", c)
	}
	if c := m.GetCrossings()[1]; !c.GetTo().GetOutside() || c.GetFlows() != 1 || !slices.Equal(c.GetServices(), []string{"tcp/443"}) {
		t.Errorf("second crossing: %v", c)
	}

	dc, err := f.ListSegmentDevices(ctx, &medmeshv1.ListSegmentDevicesRequest{Segment: &medmeshv1.Segment{Floor: "B1", Zone: "data-center"}})
	if err != nil {
		t.Fatal(err)
	}
	if dc.GetTotalSize() != 1 || dc.GetDevices()[0].GetMac() != hl7Engine {
		t.Fatalf("data centre: %v", dc.GetDevices())
	}
	if ps := dc.GetDevices()[0].GetPeers(); len(ps) != 1 || ps[0].GetPeerMac() != pump || !ps[0].GetReportedByPeer() || ps[0].GetFlows() != 3 ||
		ps[0].GetDirection() != medmeshv1.Direction_DIRECTION_INBOUND {
		t.Errorf("the engine's peers: %v", ps)
	}
	// Paging through floor 3's ICU (the pump and the recalled pump).
	var macs []string
	for tok := ""; ; {
		r, err := f.ListSegmentDevices(ctx, &medmeshv1.ListSegmentDevicesRequest{Segment: &medmeshv1.Segment{Floor: "3", Zone: "icu"}, PageSize: 1, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range r.GetDevices() {
			macs = append(macs, d.GetMac())
		}
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if !slices.Equal(macs, []string{pump, recalledPump}) {
		t.Errorf("floor 3 ICU paged: %v", macs)
	}
	if _, err := f.ListSegmentDevices(ctx, &medmeshv1.ListSegmentDevicesRequest{Segment: &medmeshv1.Segment{Outside: true}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("outside segment: %v, want InvalidArgument", err)
	}

	// Every replica answers a stale read the same (once it applied the seed).
	for _, nd := range cl.nodes {
		c := medmeshv1.NewCampusServiceClient(nd.conn)
		var got *medmeshv1.GetCampusMapResponse
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			got, err = c.GetCampusMap(ctx, &medmeshv1.GetCampusMapRequest{Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
			if err == nil && got.GetDevices() == m.GetDevices() || time.Now().After(end) {
				break
			}
		}
		if err != nil || len(got.GetSegments()) != len(m.GetSegments()) || len(got.GetCrossings()) != len(m.GetCrossings()) || !got.GetReadInfo().GetStale() {
			t.Errorf("stale map from a replica: %v, %d segments, %d crossings", err, len(got.GetSegments()), len(got.GetCrossings()))
		}
	}
}

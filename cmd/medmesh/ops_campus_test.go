package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestCampusCommands runs `medmesh campus` against a real --dev
// coordinator fed as a sensor feeds it: two pumps and a monitor in the ICU
// of floor 3, the HL7 engine in the basement's data centre, a workstation
// on floor 4 of no known building, one in another campus and one with no
// location at all; the pumps' HL7 flows cross to the
// basement, one pump talks to an address outside the inventory. map,
// devices and traffic print what the RPCs return (-o json equal to the
// RPC's answer, the tables' counts taken from it), devices pages with
// --page-size 1 and stops at --limit; a bad MAC is a usage error, an
// unknown device or zone a failure that says so.
func TestCampusCommands(t *testing.T) {
	addr, conn := devClient(t)
	t.Setenv("MEDMESH_ADDR", addr)
	const (
		pump1, pump2, mon = "02:00:00:00:03:01", "02:00:00:00:03:02", "02:00:00:00:03:03"
		hl7, ws           = "02:00:00:00:0b:01", "02:00:00:00:04:01"
		south, lost       = "02:00:00:00:05:01", "02:00:00:00:06:01"
		hl7IP, extIP      = "10.9.0.5", "203.0.113.9"
	)
	out := medmeshv1.Direction_DIRECTION_OUTBOUND
	icu := &medmeshv1.Location{Building: "north", Floor: "3", Zone: "icu"}
	dc := &medmeshv1.Location{Building: "north", Floor: "B1", Zone: "data-center"}
	dev := func(mac, ip string, c medmeshv1.DeviceClass, l *medmeshv1.Location) *medmeshv1.SensorRecord_Device {
		return &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{Mac: mac, IpAddresses: []string{ip},
			DeviceClass: c, ClassConfidence: 0.9, Location: l}}}
	}
	window := timestamppb.New(time.Now().Add(-2 * time.Minute).Truncate(time.Second))
	flow := func(mac, ip, peer string, port uint32, app string, flows, bout, bin uint64) *medmeshv1.SensorRecord_FlowSummary {
		return &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{DeviceMac: mac, DeviceIp: ip, PeerIp: peer, Protocol: 6, Port: port,
			App: app, Direction: out, Flows: flows, BytesOut: bout, BytesIn: bin, WindowStart: window, WindowSeconds: 60}}
	}
	frozen := timestamppb.New(time.Now().Add(-time.Hour).Truncate(time.Second))
	pumpClass := medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP
	report(t, conn, "s1",
		dev(pump1, "10.3.0.1", pumpClass, icu),
		dev(pump2, "10.3.0.2", pumpClass, icu),
		dev(mon, "10.3.0.3", medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR, icu),
		dev(hl7, hl7IP, medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE, dc),
		dev(ws, "10.4.0.1", medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, &medmeshv1.Location{Floor: "4", Zone: "ward"}),
		dev(south, "10.5.0.1", medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, &medmeshv1.Location{Campus: "south", Building: "a", Floor: "1", Zone: "er"}),
		dev(lost, "10.6.0.1", medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, nil),
		&medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{DeviceMac: pump1, DeviceClass: pumpClass, Version: 1, FreezeTime: frozen,
			Entries: []*medmeshv1.BaselineEntry{{PeerCidr: hl7IP + "/32", Protocol: 6, Port: 2575, App: "hl7", Direction: out}}}},
		flow(pump1, "10.3.0.1", hl7IP, 2575, "hl7", 3, 1200, 300),
		flow(pump1, "10.3.0.1", extIP, 443, "", 1, 500, 100),
		flow(pump2, "10.3.0.2", hl7IP, 2575, "hl7", 2, 800, 200),
		flow(mon, "10.3.0.3", "10.3.0.1", 8000, "", 5, 50, 50),
	)
	cl := medmeshv1.NewCampusServiceClient(conn)
	cols := regexp.MustCompile(` {2,}`)
	flat := func(s string) string { return cols.ReplaceAllString(s, " | ") }
	cli := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		return stdout
	}

	// map: -o json is the RPC's answer; the table's rows are its counts.
	m, err := cl.GetCampusMap(t.Context(), &medmeshv1.GetCampusMapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var gotMap medmeshv1.GetCampusMapResponse
	if err := protojson.Unmarshal([]byte(cli("campus", "map", "-o", "json")), &gotMap); err != nil {
		t.Fatal(err)
	}
	gotMap.ReadInfo = m.GetReadInfo() // the same index: nothing was written between
	sameProto(t, "campus map -o json", m, &gotMap)
	if m.GetDevices() != 7 || len(m.GetSegments()) != 5 || len(m.GetCrossings()) != 2 {
		t.Fatalf("the map: %d devices, %d segments, %d crossings; want 7, 5, 2:\n%v", m.GetDevices(), len(m.GetSegments()), len(m.GetCrossings()), m)
	}
	text := flat(cli("campus", "map"))
	var north [5]uint32
	for _, s := range m.GetSegments() {
		if s.GetSegment().GetBuilding() == "north" {
			north[0] += s.GetDevices()
			north[1] += s.GetLifeCritical()
			north[2] += s.GetClinical()
			north[3] += s.GetNonClinical()
			north[4] += s.GetUnknownTier()
		}
	}
	wantRows := []string{
		"7 devices in 5 segments\n",
		"\ncampus (unknown) | 6 | ",
		fmt.Sprintf("\n | building north | %d | %d | %d | %d | %d | -\n", north[0], north[1], north[2], north[3], north[4]),
		"\n | building (unknown) | 2 | ",
		"\n | floor 4 | 1 | ",
		"\n | floor (unknown) | 1 | ",
		"\ncampus south | 1 | 0 | 0 | 1 | 0 | -\n | building a | 1 | ",
	}
	if north[0] != 4 {
		t.Errorf("building north holds %d devices, want 4", north[0])
	}
	for _, s := range m.GetSegments() {
		zone := s.GetSegment().GetZone()
		if zone == "" {
			zone = "(unknown)"
		}
		wantRows = append(wantRows, fmt.Sprintf(" | zone %s | %d | %d | %d | %d | %d | %d\n", zone, s.GetDevices(), s.GetLifeCritical(),
			s.GetClinical(), s.GetNonClinical(), s.GetUnknownTier(), s.GetCrossings()))
	}
	for _, c := range m.GetCrossings() {
		wantRows = append(wantRows, fmt.Sprintf("\n%s | %s | %d | %d | %s | %s\n", segmentName(c.GetFrom()), segmentName(c.GetTo()), c.GetDevicePairs(),
			c.GetFlows(), strings.Join(c.GetServices(), ", "), strings.Join(c.GetExamples(), ", ")))
	}
	// And what the seed says the first two crossings are.
	wantRows = append(wantRows,
		"\nbuilding north, floor 3, zone icu | building north, floor B1, zone data-center | 2 | 5 | tcp/2575 hl7 | ",
		"\nbuilding north, floor 3, zone icu | outside the inventory | 1 | 1 | tcp/443 | "+pump1+" -> "+extIP+"\n")
	for _, want := range wantRows {
		if !strings.Contains(text, want) {
			t.Errorf("campus map lacks %q:\n%s", want, text)
		}
	}

	// devices: pages of one through the CLI are the RPC's one page.
	seg := &medmeshv1.Segment{Building: "north", Floor: "3", Zone: "icu"}
	all, err := cl.ListSegmentDevices(t.Context(), &medmeshv1.ListSegmentDevicesRequest{Segment: seg, PageSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	if all.GetTotalSize() != 3 || len(all.GetDevices()) != 3 || all.GetDevices()[0].GetMac() != pump1 {
		t.Fatalf("the ICU: %v", all)
	}
	devicesJSON := func(args ...string) *medmeshv1.ListSegmentDevicesResponse {
		t.Helper()
		var r medmeshv1.ListSegmentDevicesResponse
		if err := protojson.Unmarshal([]byte(cli(append([]string{"campus", "devices", "-o", "json"}, args...)...)), &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	icuFlags := []string{"--building", "north", "--floor", "3", "--zone", "icu"}
	paged := devicesJSON(append(icuFlags, "--page-size", "1")...)
	sameProto(t, "devices in pages of one", &medmeshv1.ListSegmentDevicesResponse{Devices: all.GetDevices(), TotalSize: 3},
		&medmeshv1.ListSegmentDevicesResponse{Devices: paged.GetDevices(), TotalSize: paged.GetTotalSize(), NextPageToken: paged.GetNextPageToken()})
	limited := devicesJSON(append(icuFlags, "--page-size", "1", "--limit", "2")...)
	if limited.GetNextPageToken() == "" {
		t.Errorf("--limit 2 of 3: no next page token")
	}
	sameProto(t, "devices --limit 2", &medmeshv1.ListSegmentDevicesResponse{Devices: all.GetDevices()[:2]}, &medmeshv1.ListSegmentDevicesResponse{Devices: limited.GetDevices()})
	text = flat(cli(append([]string{"campus", "devices", "--peers", "--page-size", "2"}, icuFlags...)...))
	if !strings.Contains(text, "building north, floor 3, zone icu: 3 of 3 devices\n") {
		t.Errorf("devices header:\n%s", text)
	}
	for _, d := range all.GetDevices() {
		var crossing int
		var flows uint64
		for _, p := range d.GetPeers() {
			if p.GetCrosses() {
				crossing++
			}
			flows += p.GetFlows()
		}
		want := fmt.Sprintf("\n%s | %s | - | %s | %s | - | - | %d | %d | %d\n", d.GetMac(), d.GetIpAddresses()[0], names.Enum(d.GetDeviceClass()),
			names.Enum(d.GetTier()), len(d.GetPeers()), crossing, flows)
		if !strings.Contains(text, want) {
			t.Errorf("devices lacks %q:\n%s", want, text)
		}
	}
	for _, want := range []string{
		"\n" + pump1 + " | " + hl7IP + " | " + hl7 + " | building north, floor B1, zone data-center | tcp/2575 hl7 | outbound | yes | 3 | no\n",
		"\n" + pump1 + " | " + extIP + " | - | outside the inventory | tcp/443 | outbound | no | 1 | no\n",
		// The monitor's flow to the pump, seen from the pump's side.
		"\n" + pump1 + " | 10.3.0.3 | " + mon + " | building north, floor 3, zone icu | tcp/8000 | inbound | no | 5 | yes\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("devices --peers lacks %q:\n%s", want, text)
		}
	}
	// No segment flags: the devices with no location.
	if nowhere := devicesJSON(); nowhere.GetTotalSize() != 1 || nowhere.GetDevices()[0].GetMac() != lost {
		t.Errorf("devices with no location: %v", nowhere)
	}
	if text := cli("campus", "devices"); !strings.HasPrefix(text, "no location: 1 of 1 devices\n") || !strings.Contains(text, "\n"+lost+"  ") {
		t.Errorf("campus devices with no flags:\n%s", text)
	}
	// The engine's peers are the pumps, known from their side.
	eng := devicesJSON("--building", "north", "--floor", "B1", "--zone", "data-center")
	if eng.GetTotalSize() != 1 || len(eng.GetDevices()[0].GetPeers()) != 2 || !eng.GetDevices()[0].GetPeers()[0].GetReportedByPeer() {
		t.Errorf("the data centre: %v", eng)
	}

	// traffic: -o json is the RPC's; the peers' figures are in the table.
	tr, err := cl.GetDeviceTraffic(t.Context(), &medmeshv1.GetDeviceTrafficRequest{DeviceMac: pump1})
	if err != nil {
		t.Fatal(err)
	}
	var gotTr medmeshv1.GetDeviceTrafficResponse
	if err := protojson.Unmarshal([]byte(cli("campus", "traffic", "02-00-00-00-03-01", "-o", "json")), &gotTr); err != nil {
		t.Fatal(err)
	}
	gotTr.ReadInfo = tr.GetReadInfo()
	sameProto(t, "campus traffic -o json", tr, &gotTr)
	if len(tr.GetPeers()) != 2 || tr.GetFlows() != 4 {
		t.Fatalf("the pump's traffic: %d peers, %d flows; want 2, 4: %v", len(tr.GetPeers()), tr.GetFlows(), tr)
	}
	text = flat(cli("campus", "traffic", pump1))
	for _, want := range []string{
		"device | " + pump1 + " | building north, floor 3, zone icu\n",
		fmt.Sprintf("baseline | its own, version 1, frozen %s by sensor s1; protocols hl7\n", frozen.AsTime().UTC().Format(time.RFC3339)),
		fmt.Sprintf("flows | %d in %d flow summaries since %s\n", tr.GetFlows(), tr.GetFlowSummaries(), window.AsTime().UTC().Format(time.RFC3339)),
		"policies | -\n",
		fmt.Sprintf("generated policy (from the baseline, not stored) would drop %d of %d recent flows\n", tr.GetGenerated().GetFlowsDropped(), tr.GetGenerated().GetFlowsTotal()),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("campus traffic lacks %q:\n%s", want, text)
		}
	}
	for _, p := range tr.GetPeers() {
		want := fmt.Sprintf("\n%s | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d | %s | %d\n", p.GetPeer(), dash(p.GetPeerName()), dash(p.GetPeerMac()), segmentName(p.GetPeerSegment()),
			yesNo(p.GetCrosses()), service(p), names.Enum(p.GetDirection()), yesNo(p.GetInBaseline()), p.GetFlows(), p.GetBytesOut(), p.GetBytesIn(), dash(ts(p.GetLastSeen())), p.GetWouldDrop())
		if !strings.Contains(text, want) {
			t.Errorf("campus traffic lacks peer row %q:\n%s", want, text)
		}
	}
	// The seed, independently of the RPC: the HL7 peer in the baseline with
	// its flows and bytes, the outside address dropped by a generated policy.
	for _, want := range []string{
		"\n" + hl7IP + " | - | " + hl7 + " | building north, floor B1, zone data-center | yes | tcp/2575 hl7 | outbound | yes | 3 | 1200 | 300 | ",
		"\n" + extIP + " | - | - | outside the inventory | yes | tcp/443 | outbound | no | 1 | 500 | 100 | ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("campus traffic lacks %q:\n%s", want, text)
		}
	}
	if !strings.HasSuffix(strings.SplitAfter(text[strings.Index(text, "\n"+extIP)+1:], "\n")[0], " | 1\n") {
		t.Errorf("the outside peer's flow is not one a generated policy would drop:\n%s", text)
	}

	// Bad input and unknown things.
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"campus", "traffic", "zz:zz"}, exitUsage, `invalid MAC "zz:zz"`},
		{[]string{"campus", "traffic", "02:00:00:00:03"}, exitUsage, "invalid MAC"},
		{[]string{"campus", "traffic", "02:00:00:00:99:99"}, exitFailure, "NotFound: device_mac: device 02:00:00:00:99:99 not found"},
		{[]string{"campus", "devices", "--building", "north", "--floor", "3", "--zone", "ICU"}, exitFailure,
			`no devices in segment campus "", building "north", floor "3", zone "ICU"`},
		{[]string{"campus", "devices", "--page-size", "500"}, exitUsage, "invalid --page-size 500"},
		{[]string{"campus", "map", "--max-crossings", "-1"}, exitUsage, "invalid --max-crossings -1"},
	} {
		code, stdout, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(oneLine(t, stderr), c.want) || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, stdout, stderr, c.code, c.want)
		}
	}
}

// sameProto fails the test unless the CLI's answer equals the RPC's.
func sameProto(t *testing.T, what string, rpc, cli proto.Message) {
	t.Helper()
	if !proto.Equal(rpc, cli) {
		t.Errorf("%s differs from the RPC's answer:\nrpc: %s\ncli: %s", what, protojson.Format(rpc), protojson.Format(cli))
	}
}

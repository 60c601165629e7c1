package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/replay"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestPoliciesGenerateSpellsNames stores a pump, its frozen baseline and its
// recent flows in a real --dev coordinator, as a sensor reports them, and
// checks how `policies generate` prints the policy it builds: protocols by
// name, single ports as one port, the class as the CLI spells it, and no
// "updated:  by " for a policy that was never stored.
func TestPoliciesGenerateSpellsNames(t *testing.T) {
	addr, conn := devClient(t)
	const mac = "58:46:e1:00:01:0a"
	out, in := medmeshv1.Direction_DIRECTION_OUTBOUND, medmeshv1.Direction_DIRECTION_INBOUND
	frozen := timestamppb.New(time.Now().Add(-time.Minute))
	report(t, conn, "s1",
		&medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: mac, IpAddresses: []string{"10.101.0.10"}, Vendor: "Baxter",
			DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, ClassConfidence: 0.9}}},
		&medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{
			DeviceMac: mac, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Version: 1, SensorId: "s1",
			LearnStart: timestamppb.New(time.Now().Add(-time.Hour)), FreezeTime: frozen,
			Entries: []*medmeshv1.BaselineEntry{
				{PeerCidr: "10.98.0.10/32", Protocol: 6, Port: 6661, App: "hl7", Direction: out},
				{PeerCidr: "10.98.0.14/32", Protocol: 17, Port: 17000, Direction: out},
				{PeerCidr: "10.98.0.14/32", Protocol: 1, Direction: in},
			}}},
		&medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: mac, DeviceIp: "10.101.0.10", PeerIp: "10.98.0.10", Protocol: 6, Port: 6661, App: "hl7", Direction: out}},
		&medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: mac, DeviceIp: "10.101.0.10", PeerIp: "203.0.113.10", Protocol: 6, Port: 443, Direction: out, Flows: 3}},
		&medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: mac, DeviceIp: "10.101.0.10", PeerIp: "203.0.113.10", Protocol: 58, Direction: out}},
	)

	code, stdout, stderr := runCLI(t, "policies", "generate", "--device", mac, "--addr", addr)
	if code != 0 {
		t.Fatalf("policies generate: exit %d: %s", code, stderr)
	}
	defer func() {
		if t.Failed() {
			t.Logf("policies generate:\n%s", stdout)
		}
	}()
	rules := tableRows(t, stdout, "RULE")
	byPeer := map[string][]string{}
	for _, r := range rules {
		byPeer[r[1]+" "+r[2]] = r
		if r[2] != "any" && !regexp.MustCompile(`^[a-z][a-z0-9-]*$`).MatchString(r[2]) {
			t.Errorf("rule %s: protocol %q is not a name", r[0], r[2])
		}
		if m := regexp.MustCompile(`^(\d+)-(\d+)$`).FindStringSubmatch(r[3]); m != nil && m[1] == m[2] {
			t.Errorf("rule %s: port range %q is one port", r[0], r[3])
		}
	}
	for _, want := range [][]string{
		{"10.98.0.10/32 tcp", "6661"},
		{"10.98.0.14/32 udp", "17000"},
		{"10.98.0.14/32 icmp", "any"},
	} {
		if r, ok := byPeer[want[0]]; !ok || r[3] != want[1] {
			t.Errorf("no rule %s port %s from the baseline: %v", want[0], want[1], rules)
		}
	}
	// The class defaults: DHCP is one port on udp.
	dhcp := false
	for _, r := range rules {
		dhcp = dhcp || (r[2] == "udp" && r[3] == "67")
	}
	if !dhcp {
		t.Errorf("no udp 67 (DHCP) rule from the class defaults: %v", rules)
	}
	for _, bad := range []string{"updated:", " by \n", "infusion_pump", "INFUSION", "version: 0"} {
		if strings.Contains(stdout, bad) {
			t.Errorf("output has %q", bad)
		}
	}
	if !strings.Contains(stdout, "infusion-pump defaults") {
		t.Errorf("description does not name the class as the CLI does")
	}
	// The simulation: the two flows to the internet would be dropped, by
	// protocol name.
	dropped := map[string]bool{}
	for _, r := range tableRows(t, stdout, "PEER") {
		dropped[r[0]+" "+r[2]+" "+r[3]] = true
	}
	for _, want := range []string{"203.0.113.10 tcp 443", "203.0.113.10 icmpv6 -"} {
		if !dropped[want] {
			t.Errorf("simulation lacks dropped flow %q: %v", want, dropped)
		}
	}
}

// report sends records as one batch from sensor.
func report(t *testing.T, conn *grpc.ClientConn, sensor string, recs ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: sensor}
	for i, r := range recs {
		sr := &medmeshv1.SensorRecord{Seq: uint64(i + 1)}
		switch r := r.(type) {
		case *medmeshv1.SensorRecord_Device:
			sr.Record = r
		case *medmeshv1.SensorRecord_Baseline:
			sr.Record = r
		case *medmeshv1.SensorRecord_FlowSummary:
			sr.Record = r
		case *medmeshv1.SensorRecord_Alert:
			sr.Record = r
		default:
			t.Fatalf("record %T", r)
		}
		req.Records = append(req.Records, sr)
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	if resp.GetAckedSeq() != uint64(len(recs)) {
		t.Fatalf("acked %d of %d records", resp.GetAckedSeq(), len(recs))
	}
	_ = stream.CloseSend()
}

// tableRows returns the rows under the table whose header starts with
// first, split on runs of two or more spaces, up to the next blank line.
func tableRows(t *testing.T, out, first string) [][]string {
	t.Helper()
	var rows [][]string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case !in && strings.HasPrefix(line, first+" "):
			in = true
		case in && strings.TrimSpace(line) == "":
			return rows
		case in:
			rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
		}
	}
	if !in {
		t.Fatalf("no table with header %s in:\n%s", first, out)
	}
	return rows
}

// TestReplayReportSpellsProtocols runs `replay --report` over a real HL7
// capture: flows are shown with their protocol's name and devices with
// their class and tier spelled as the CLI spells them.
func TestReplayReportSpellsProtocols(t *testing.T) {
	testutil.RequireRoot(t)
	var buf bytes.Buffer
	o := replayOptions{pcap: "../../../shared/testdata/pcap/tapirx/HL7-ADT-UDI-OBX.pcap", report: true, output: "table",
		flows: replay.DefaultOptions().FlowEntries}
	if err := runReplay(context.Background(), o, &buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	defer func() {
		if t.Failed() {
			t.Logf("replay --report:\n%s", out)
		}
	}()
	if !regexp.MustCompile(`:\d+ -> [0-9.]+:\d+/tcp\s`).MatchString(out) {
		t.Errorf("no detection on a tcp flow spelled /tcp")
	}
	if m := regexp.MustCompile(`:\d+/\d+\s`).FindString(out); m != "" {
		t.Errorf("a flow's protocol is a number: %q", m)
	}
	devs := tableRows(t, out, "DEVICE")
	if len(devs) == 0 {
		t.Fatal("no devices found in the capture")
	}
	pump := false
	for _, d := range devs {
		// DEVICE IPS VENDOR MODEL FIRMWARE CLASS CONF TIER ...
		if len(d) < 8 {
			continue // evidence lines
		}
		pump = pump || (d[5] == "infusion-pump" && d[7] == "life-critical" && d[3] == "Hospira Plum A+")
		for _, col := range []string{d[5], d[7]} {
			if strings.ContainsAny(col, "_ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
				t.Errorf("device %s: %q is not spelled like the CLI", d[0], col)
			}
		}
	}
	if !pump {
		t.Errorf("the Hospira pump is not shown as a Hospira Plum A+ infusion-pump, life-critical: %v", devs)
	}
}

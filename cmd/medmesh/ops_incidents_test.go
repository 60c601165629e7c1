package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestIncidentsCommands runs `medmesh incidents` against a real --dev
// coordinator fed as a sensor feeds it: a nurse-call box scans its floor,
// logs into a workstation with default credentials and sends data out; a
// pump scans too. list shows one incident per scanner with its stages;
// get prints the timeline with ATT&CK ids, the devices and their roles,
// the decisions with their approval state (the pump's waits, then is
// approved); the filters and --since work; a bad flag is a usage error and
// an unknown id a failure.
func TestIncidentsCommands(t *testing.T) {
	addr, conn := devClient(t)
	t.Setenv("MEDMESH_ADDR", addr)
	const (
		nurse, ws, pump = "02:00:00:00:09:01", "98:e7:43:00:01:0e", "58:46:e1:00:01:0a"
		ipN, ipW, ipP   = "10.101.0.30", "10.101.0.11", "10.101.0.10"
	)
	out, in := medmeshv1.Direction_DIRECTION_OUTBOUND, medmeshv1.Direction_DIRECTION_INBOUND
	dev := func(mac, ip string, c medmeshv1.DeviceClass) *medmeshv1.SensorRecord_Device {
		return &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{Mac: mac, IpAddresses: []string{ip}, DeviceClass: c, ClassConfidence: 0.9}}}
	}
	alert := func(mac, kind string, score uint32, dir medmeshv1.Direction, src, dst string, dport uint32, app string, peers ...string) *medmeshv1.SensorRecord_Alert {
		a := &medmeshv1.Alert{DeviceMac: mac, Kind: kind, Direction: dir, Summary: kind + " seen",
			Risk: &medmeshv1.RiskScore{Score: score, Factors: []*medmeshv1.RiskFactor{{Name: kind, Weight: float64(score)}}},
			Flow: &medmeshv1.FlowRef{Src: src, Dst: dst, Sport: 40001, Dport: dport, Proto: 6, App: app}, Peers: peers, PeerCount: uint32(len(peers))}
		return &medmeshv1.SensorRecord_Alert{Alert: a}
	}
	report(t, conn, "s1",
		dev(nurse, ipN, medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL),
		dev(ws, ipW, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION),
		dev(pump, ipP, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP),
		alert(nurse, "scan", 100, out, ipN, ipP, 23, "", ipW, ipP),
		alert(ws, "default_credentials", 80, in, ipN, ipW, 23, "telnet"),
		alert(nurse, "external_destination", 85, out, ipN, "203.0.113.9", 8443, ""),
		alert(pump, "scan", 100, out, ipP, ipW, 22, "", ipW),
	)

	list := func(args ...string) []*medmeshv1.Incident {
		t.Helper()
		code, stdout, stderr := runCLI(t, append([]string{"incidents", "list", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("incidents list %v: exit %d: %s", args, code, stderr)
		}
		var resp medmeshv1.ListIncidentsResponse
		if err := protojson.Unmarshal([]byte(stdout), &resp); err != nil {
			t.Fatalf("incidents list %v: %v\n%s", args, err, stdout)
		}
		return resp.GetIncidents()
	}
	incs := list()
	if len(incs) != 2 {
		t.Fatalf("%d incidents, want one per scanner: %v", len(incs), incs)
	}
	byDev := map[string]*medmeshv1.Incident{}
	for _, inc := range incs {
		byDev[inc.GetDeviceMac()] = inc
	}
	story, pumps := byDev[nurse], byDev[pump]
	if story == nil || pumps == nil {
		t.Fatalf("incidents about %v", byDev)
	}
	// Pages of one, through the API's tokens: the same incidents, in order.
	var paged []string
	token := ""
	for range 10 {
		resp, err := medmeshv1.NewIncidentServiceClient(conn).ListIncidents(t.Context(), &medmeshv1.ListIncidentsRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, inc := range resp.GetIncidents() {
			paged = append(paged, inc.GetId())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(paged) != 2 || paged[0] != incs[0].GetId() || paged[1] != incs[1].GetId() {
		t.Errorf("pages of one: %v, want %s %s", paged, incs[0].GetId(), incs[1].GetId())
	}
	if n := len(list("--device", ws)); n != 2 {
		t.Errorf("--device %s (affected in both): %d incidents", ws, n)
	}
	if got := list("--device", "02-00-00-00-09-01"); len(got) != 1 || got[0].GetId() != story.GetId() {
		t.Errorf("--device in another notation: %v", got)
	}
	if n := len(list("--state", "closed")); n != 0 {
		t.Errorf("--state closed: %d incidents", n)
	}
	if n := len(list("--state", "open", "--since", "1h")); n != 2 {
		t.Errorf("--since 1h: %d incidents", n)
	}
	if n := len(list("--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))); n != 0 {
		t.Errorf("--since an hour ahead: %d incidents", n)
	}

	code, stdout, stderr := runCLI(t, "incidents", "list")
	if code != 0 || !strings.Contains(stdout, story.GetId()) || !strings.Contains(stdout, "reconnaissance > lateral-movement > exfiltration") ||
		!strings.Contains(stdout, "quarantine, notify") {
		t.Fatalf("incidents list: exit %d\n%s%s", code, stdout, stderr)
	}

	// Table columns are two or more spaces apart: compare them as " | ".
	cols := regexp.MustCompile(` {2,}`)
	code, stdout, stderr = runCLI(t, "incidents", "get", story.GetId())
	if code != 0 {
		t.Fatalf("incidents get: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"INCIDENT " + story.GetId() + " | open | device " + nurse,
		"reconnaissance | ICS TA0102 Discovery / T0846 Remote System Discovery | ",
		"lateral-movement | ICS TA0109 Lateral Movement / T0812 Default Credentials | ",
		"exfiltration | Enterprise TA0010 Exfiltration | ",
		nurse + " | source",
		ws + " | affected",
		"peers: | 10.101.0.10, 10.101.0.11, 203.0.113.9\n",
		"ports: | tcp/23, tcp/8443\n",
		"quarantine-scanner | quarantine | r-",
		" | effective | " + nurse,
		"enforce-on-default-credentials | enforce-policy | - | - | - | ",
		"not stronger than the incident's quarantine",
	} {
		if !strings.Contains(cols.ReplaceAllString(stdout, " | "), want) {
			t.Errorf("incidents get lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "seen") {
		t.Errorf("incidents get prints alert summaries; it shows evidence only:\n%s", stdout)
	}

	// The pump's quarantine waits for approval; get says how to give it.
	code, stdout, _ = runCLI(t, "incidents", "get", pumps.GetId(), "-o", "json")
	var got medmeshv1.GetIncidentResponse
	if err := protojson.Unmarshal([]byte(stdout), &got); code != 0 || err != nil {
		t.Fatalf("incidents get -o json: exit %d, %v", code, err)
	}
	var pending *medmeshv1.Decision
	for _, d := range got.GetDecisions() {
		if d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE {
			pending = d
		}
	}
	if pending.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL || pending.GetDeviceMac() != pump || pending.GetIncidentId() != pumps.GetId() {
		t.Fatalf("the pump's quarantine: %v", pending)
	}
	_, stdout, _ = runCLI(t, "incidents", "get", pumps.GetId())
	if !strings.Contains(stdout, "pending-approval") || !strings.Contains(stdout, "medmesh decisions approve "+pending.GetId()) {
		t.Errorf("incidents get of the pump's incident does not show the pending decision:\n%s", stdout)
	}
	if code, _, stderr := runCLI(t, "decisions", "approve", pending.GetId(), "--reason", "pump confirmed compromised"); code != 0 {
		t.Fatalf("approve: %s", stderr)
	}
	_, stdout, _ = runCLI(t, "incidents", "get", pumps.GetId())
	if !strings.Contains(stdout, "approved") || !strings.Contains(stdout, "local/") {
		t.Errorf("after approval, incidents get shows:\n%s", stdout)
	}

	if code, _, _ := runCLI(t, "incidents", "list", "--since", "yesterday"); code != exitUsage {
		t.Errorf("--since yesterday: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := runCLI(t, "incidents", "list", "--state", "ajar"); code != exitUsage {
		t.Errorf("--state ajar: exit %d, want %d", code, exitUsage)
	}
	if code, _, stderr := runCLI(t, "incidents", "get", "inc-0000000000000000"); code != exitFailure || !strings.Contains(stderr, "not found") {
		t.Errorf("get of an unknown incident: exit %d, %q", code, stderr)
	}
}

package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// checkDevicePagesInBrowser opens the device page of the pump and of the
// recalled pump, and the campus map, as the logged-in viewer, and checks
// what they show against the same cluster asked over gRPC: the evidence's
// sources, the HL7 peer on another floor, the flow summary, the findings
// (the CISA advisories of the bundle) and the recall, what a generated policy would drop; the map's floors,
// zones and devices (opened with the keyboard) and the crossing from
// floor 3's ICU to the basement data centre and out of the inventory.
func checkDevicePagesInBrowser(t *testing.T, cl *cluster, origin, pump string, devices int,
	run func(string, ...chromedp.Action[chromedp.Void]), get func(string, chromedp.Action[string]) string,
	ready, shot, poll func(string) chromedp.Action[chromedp.Void]) {
	t.Helper()
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	ctx := context.Background()
	conn := cl.leader().conn
	traffic, err := medmeshv1.NewCampusServiceClient(conn).GetDeviceTraffic(ctx, &medmeshv1.GetDeviceTrafficRequest{DeviceMac: pump})
	if err != nil {
		t.Fatal(err)
	}

	// The pump: evidence, peers, flows, findings, would-drop, policy.
	run("device page", chromedp.Navigate(origin+"/#/device?mac="+pump), ready("device"), shot("13-device"))
	raw := get("device page", chromedp.Evaluate[string](`JSON.stringify({
		sources: [...document.querySelectorAll("#identity tr[data-source]")].map((r) => r.dataset.source),
		peers: Object.fromEntries([...document.querySelectorAll("#peers tr[data-peer]")].map((r) => [r.dataset.peer, r.textContent])),
		flows: document.getElementById("flows-summary").textContent,
		baseline: document.getElementById("baseline-info").textContent,
		findings: [...document.querySelectorAll("#findings tr[data-finding]")].map((r) => r.dataset.finding),
		drop: Object.fromEntries([...document.querySelectorAll("#would-drop tr[data-drop]")].map((r) => [r.dataset.drop, r.textContent])),
		wouldDrop: document.getElementById("would-drop").textContent,
		policy: document.getElementById("policy-in-force").textContent,
		generate: document.getElementById("generate") !== null })`))
	var dp struct {
		Sources   []string
		Peers     map[string]string
		Flows     string
		Baseline  string
		Findings  []string
		Drop      map[string]string
		WouldDrop string
		Policy    string
		Generate  bool
	}
	if err := json.Unmarshal([]byte(raw), &dp); err != nil {
		t.Fatal(err)
	}
	if strings.Join(dp.Sources, ",") != "oui,hl7" {
		t.Errorf("pump evidence sources %v, want oui,hl7", dp.Sources)
	}
	hl7 := dp.Peers["10.9.0.5"]
	for _, want := range []string{hl7Engine, "tcp/2575 hl7", "outbound", "yes: floor B1 / zone data-center"} {
		if !strings.Contains(hl7, want) {
			t.Errorf("pump's HL7 peer row %q lacks %q", hl7, want)
		}
	}
	if ext := dp.Peers["203.0.113.9"]; !strings.Contains(ext, "not an inventory device") || !strings.Contains(ext, "outside the inventory") || !strings.Contains(ext, "no (not learned)") {
		t.Errorf("pump's external peer row %q", ext)
	}
	if want := fmt.Sprintf("%d flow summaries counting %d flows", traffic.GetFlowSummaries(), traffic.GetFlows()); traffic.GetFlowSummaries() != 2 || !strings.Contains(dp.Flows, want) {
		t.Errorf("flows summary %q, GetDeviceTraffic says %q", dp.Flows, want)
	}
	if !strings.Contains(dp.Baseline, "Baseline version 1") || !strings.Contains(dp.Baseline, "Protocols: hl7") {
		t.Errorf("baseline line %q", dp.Baseline)
	}
	posture, err := medmeshv1.NewRiskServiceClient(conn).GetPosture(ctx, &medmeshv1.GetPostureRequest{DeviceMac: pump})
	if err != nil {
		t.Fatal(err)
	}
	var wantFindings []string
	for _, f := range posture.GetPosture().GetFindings() {
		if f.GetKind() != "recall" {
			wantFindings = append(wantFindings, f.GetKind()+":"+f.GetId())
		}
	}
	// The bundle's CISA advisories for the Sigma Spectrum.
	if fmt.Sprint(dp.Findings) != fmt.Sprint(wantFindings) || !strings.Contains(strings.Join(dp.Findings, " "), "vulnerability:CVE-") {
		t.Errorf("pump findings shown %v, GetPosture says %v (with a vulnerability)", dp.Findings, wantFindings)
	}
	if d := dp.Drop["203.0.113.9"]; !strings.Contains(d, "tcp/443") || !strings.Contains(d, "1 of 1") || len(dp.Drop) != 1 {
		t.Errorf("would drop per peer %v, want only 203.0.113.9 tcp/443 (1 of 1)", dp.Drop)
	}
	sim := traffic.GetGenerated()
	if want := fmt.Sprintf("allow %d and drop %d of the %d recent flows", sim.GetFlowsAllowed(), sim.GetFlowsDropped(), sim.GetFlowsTotal()); sim.GetFlowsDropped() != 1 || !strings.Contains(dp.WouldDrop, want) {
		t.Errorf("would-drop says %q, GetDeviceTraffic %q", dp.WouldDrop, want)
	}
	if !strings.HasPrefix(dp.Policy, "No policy applies") || dp.Generate {
		t.Errorf("viewer's policy section: %q, generate button shown %v", dp.Policy, dp.Generate)
	}

	// The recalled pump: its recall, as GetPosture has it.
	rp, err := medmeshv1.NewRiskServiceClient(conn).GetPosture(ctx, &medmeshv1.GetPostureRequest{DeviceMac: recalledPump})
	if err != nil {
		t.Fatal(err)
	}
	var recalls []string
	for _, f := range rp.GetPosture().GetFindings() {
		if f.GetKind() == "recall" {
			recalls = append(recalls, cmp.Or(f.GetRecallNumber(), f.GetId()))
		}
	}
	if len(recalls) == 0 {
		t.Fatalf("the recalled pump has no recall finding: %v", findingIDs(rp.GetPosture()))
	}
	// Same document, another device: wait for its page, not the pump's.
	run("recall page", chromedp.Navigate(origin+"/#/device?mac="+recalledPump), ready("device"),
		poll(fmt.Sprintf(`document.title.startsWith(%q)`, "Device "+recalledPump)), shot("14-device-recall"))
	shown := get("recalls", chromedp.Evaluate[string](`[...document.querySelectorAll("#recalls tr[data-recall]")].map((r) => r.dataset.recall).join(",")`))
	if shown != strings.Join(recalls, ",") {
		t.Errorf("recalls shown %q, GetPosture says %v", shown, recalls)
	}
	if udi := get("identifiers", chromedp.Text(css("#identity"))); !strings.Contains(udi, "(01)10885403801512(17)280101(10)A123") {
		t.Errorf("identity section lacks the HL7 UDI: %.400s", udi)
	}

	// The campus map: floors and zones, a crossing, and a zone's devices
	// opened with the keyboard.
	run("campus map", chromedp.Navigate(origin+"/#/campus"), ready("campus"))
	// From the route change to the map on screen (GetCampusMap included).
	mapMS := get("map time", chromedp.Evaluate[string](`String(Math.round(window.medmeshLastRender.ms))`))
	m, err := medmeshv1.NewCampusServiceClient(conn).GetCampusMap(ctx, &medmeshv1.GetCampusMapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetDevices() != uint32(devices) {
		t.Errorf("GetCampusMap counts %d devices, want %d", m.GetDevices(), devices)
	}
	if s := get("summary", chromedp.Text(css("#campus-summary"))); !strings.HasPrefix(s, fmt.Sprintf("%d devices in %d zones", devices, len(m.GetSegments()))) {
		t.Errorf("campus summary %q, want %d devices in %d zones", s, devices, len(m.GetSegments()))
	}
	cross := get("crossings", chromedp.Evaluate[string](`JSON.stringify([...document.querySelectorAll("#campus-crossings tr[data-from]")].map((r) => r.dataset.from + " => " + r.dataset.to + " | " + r.textContent))`))
	var rows []string
	if err := json.Unmarshal([]byte(cross), &rows); err != nil {
		t.Fatal(err)
	}
	find := func(prefix string) string {
		for _, r := range rows {
			if strings.HasPrefix(r, prefix) {
				return r
			}
		}
		return ""
	}
	if r := find("floor 3 / zone icu => floor B1 / zone data-center | "); !strings.Contains(r, "tcp/2575 hl7") || !strings.Contains(r, pump+" -> "+hl7Engine) {
		t.Errorf("no HL7 crossing from floor 3 ICU to the data centre in %v", rows)
	}
	if r := find("floor 3 / zone icu => outside the inventory | "); !strings.Contains(r, "tcp/443") {
		t.Errorf("no crossing out of the inventory in %v", rows)
	}
	if len(rows) != len(m.GetCrossings()) {
		t.Errorf("%d crossings shown, GetCampusMap has %d", len(rows), len(m.GetCrossings()))
	}
	// Keyboard: Tab-reachable summaries; Enter opens floor 3, then its ICU.
	floor3 := `#campus-tree li[data-floor="3"] > details > summary`
	icu := `#campus-tree li[data-floor="3"] details[data-zone="icu"]`
	run("open floor 3 and its icu with the keyboard",
		chromedp.Focus(css(floor3)), chromedp.KeyEvent(kb.Enter),
		chromedp.Focus(css(icu+" > summary")), chromedp.KeyEvent(kb.Enter),
		poll(fmt.Sprintf(`document.querySelector(%q).dataset.loaded === "true"`, icu)), shot("15-campus-map"))
	dev := get("pump in the map", chromedp.Text(css(fmt.Sprintf(`%s li[data-mac=%q]`, icu, pump))))
	if !strings.Contains(dev, "life-critical") || !strings.Contains(dev, "crosses to floor B1 / zone data-center") || !strings.Contains(dev, "3 recent flows") {
		t.Errorf("the map's pump entry: %q", dev)
	}
	// A link to a zone opens it: the engine, which learned nothing itself,
	// shows the pump that talks to it.
	dc := `#campus-tree details[data-zone="data-center"]`
	run("data centre by link", chromedp.Navigate(origin+"/#/campus?floor=B1&zone=data-center"), ready("campus"),
		poll(fmt.Sprintf(`(document.querySelector(%q) || {dataset: {}}).dataset.loaded === "true"`, dc)))
	eng := get("engine in the map", chromedp.Text(css(fmt.Sprintf(`%s li[data-mac=%q]`, dc, hl7Engine))))
	if !strings.Contains(eng, "from 10.1.0.7 tcp/2575 hl7, 3 recent flows") || !strings.Contains(eng, "crosses to floor 3 / zone icu") {
		t.Errorf("the map's engine entry: %q", eng)
	}
	t.Logf("device page and campus map: %d devices, %d segments, %d crossings, pump peers %d, recalls %v; the map on screen %s ms after the route change",
		devices, len(m.GetSegments()), len(m.GetCrossings()), len(traffic.GetPeers()), recalls, mapMS)
}

package coordinator

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/internal/consoletest"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// consoleDevices is how many devices the browser test seeds: issue 21's
// 10,000, or MEDMESH_CONSOLE_DEVICES.
func consoleDevices() int {
	n := 10000
	if v := os.Getenv("MEDMESH_CONSOLE_DEVICES"); v != "" {
		fmt.Sscan(v, &n)
	}
	return n
}

// The devices seedDevices adds to the count it is given: the pump the test
// works on, its HL7 peer and a recalled pump.
const (
	seededExtra  = 3
	hl7Engine    = "02:00:00:00:09:05"
	recalledPump = "02:00:00:00:18:02"
)

// seedDevices reports n devices as sensor "seed" in batches, plus the
// infusion pump the test works on, with a frozen baseline and flows, its
// HL7 peer on another floor and a pump with a recall.
func seedDevices(t *testing.T, cl *cluster, count int, pump string) {
	t.Helper()
	classes := []medmeshv1.DeviceClass{medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP}
	seq := uint64(0)
	var last uint64
	// send reports one batch to the current leader, again after a failure:
	// a sensor's records apply exactly once by their seq.
	send := func(recs []*medmeshv1.SensorRecord) {
		t.Helper()
		var err error
		for range 10 {
			var st medmeshv1.SensorService_ReportClient
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			st, err = medmeshv1.NewSensorServiceClient(cl.leader().conn).Report(ctx)
			if err == nil {
				err = st.Send(&medmeshv1.ReportRequest{SensorId: "seed", Records: recs})
			}
			var ack *medmeshv1.ReportResponse
			if err == nil {
				ack, err = st.Recv()
			}
			cancel()
			if err == nil {
				last = ack.GetAckedSeq()
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("seed: %v", err)
	}
	var batch []*medmeshv1.SensorRecord
	for i := range count {
		seq++
		mac := fmt.Sprintf("02:10:%02x:%02x:%02x:%02x", (i>>24)&0xff, (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		batch = append(batch, &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: mac, DeviceClass: classes[i%len(classes)], ClassConfidence: 0.9, Vendor: []string{"Acme Medical", "Globex", "Initech"}[i%3],
			IpAddresses: []string{fmt.Sprintf("10.%d.%d.%d", 20+(i>>16)&0xff, (i>>8)&0xff, i&0xff)},
			Location:    &medmeshv1.Location{Floor: fmt.Sprint(1 + i%8), Zone: []string{"icu", "ward", "er", "lab"}[i%4]}}}}})
		if len(batch) == 2000 {
			send(batch)
			batch = nil
		}
	}
	out := medmeshv1.Direction_DIRECTION_OUTBOUND
	batch = append(batch,
		&medmeshv1.SensorRecord{Seq: seq + 1, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: pump, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, ClassConfidence: 0.99, Vendor: "Baxter", Model: "Sigma Spectrum", IpAddresses: []string{"10.1.0.7"},
			ClassEvidence: []*medmeshv1.Evidence{{Source: "oui", Detail: "IEEE OUI registry: Baxter Healthcare", Weight: 0.3}, {Source: "hl7", Detail: "HL7 sending application PUMP_GW", Weight: 0.69}},
			Location:      &medmeshv1.Location{Floor: "3", Zone: "icu"}}}}},
		&medmeshv1.SensorRecord{Seq: seq + 2, Record: &medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{
			DeviceMac: pump, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Version: 1,
			Entries: []*medmeshv1.BaselineEntry{{PeerCidr: "10.9.0.5/32", Protocol: 6, Port: 2575, App: "hl7", Direction: out}}}}},
		&medmeshv1.SensorRecord{Seq: seq + 3, Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: pump, DeviceIp: "10.1.0.7", PeerIp: "10.9.0.5", Protocol: 6, Port: 2575, App: "hl7", Direction: out, Flows: 3, WindowSeconds: 60}}},
		&medmeshv1.SensorRecord{Seq: seq + 4, Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: pump, DeviceIp: "10.1.0.7", PeerIp: "203.0.113.9", Protocol: 6, Port: 443, Direction: out, Flows: 1, WindowSeconds: 60}}},
		// The pump's HL7 peer, in the basement's data centre: the map's
		// crossing from floor 3.
		&medmeshv1.SensorRecord{Seq: seq + 5, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: hl7Engine, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE, ClassConfidence: 0.9, Hostname: "hl7-engine", IpAddresses: []string{"10.9.0.5"},
			Location: &medmeshv1.Location{Floor: "B1", Zone: "data-center"}}}}},
		// A pump the intelligence bundle's recall fixture names (openFDA
		// recall through its GUDID UDI-DI), as riskDevices has it.
		&medmeshv1.SensorRecord{Seq: seq + 6, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: recalledPump, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, ClassConfidence: 0.95, Vendor: "BD", Model: "Alaris 8015 PC unit", IpAddresses: []string{"10.1.0.8"},
			ClassEvidence: []*medmeshv1.Evidence{{Source: "oui", Detail: "IEEE OUI registry: Becton Dickinson", Weight: 0.3}, {Source: "hl7", Detail: "HL7 PRT-16 UDI (01)10885403801512", Weight: 0.65}},
			Identifiers:   &medmeshv1.Identifiers{Hl7Udis: []string{"(01)10885403801512(17)280101(10)A123"}},
			Location:      &medmeshv1.Location{Floor: "3", Zone: "icu"}}}}})
	send(batch)
	if last != seq+6 {
		t.Fatalf("seed acked %d, want %d", last, seq+6)
	}
}

// TestConsoleInBrowser drives the console in real headless Chromium
// against a real 3-node cluster with 10,000 devices: log in, the
// inventory's first useful paint and a filtered search (timed in the
// browser), an alert appearing live, a policy generated, simulated,
// monitored and enforced, the pending decision refused to its causer, a
// viewer and an operator and approved by a second approver. No console
// error or exception, and no request leaves the page's origin.
// Screenshots go to MEDMESH_SCREENSHOTS (default bin/console-screenshots).
// e2e.TestConsoleLab does the same against the campus lab.
func TestConsoleInBrowser(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium is not installed (deploy/deps.txt has it: make deps)")
	}
	shots := os.Getenv("MEDMESH_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join("..", "bin", "console-screenshots")
	}
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	const pw = "correct horse battery staple"
	for _, a := range [][2]string{{"ann", "approver"}, {"bob", "approver"}, {"otto", "operator"}, {"vic", "viewer"}} {
		addAccount(t, leader, a[0], a[1], pw)
	}
	pump := "02:00:00:00:00:07"
	nDev := consoleDevices()
	seedDevices(t, cl, nDev, pump)
	// The intelligence bundle (real advisories and the recall fixture):
	// the recalled pump's page shows its recall.
	bundle, digest := writeTestBundle(t, testIntelDirs...)
	if _, err := importBundle(ctxT(t, time.Minute), cl.leader().conn, bundle, "console-bundle"); err != nil {
		t.Fatal(err)
	}
	waitPostures(t, cl, digest, pump, recalledPump)
	// The console of a follower: reads and writes are forwarded as the
	// person's identity.
	web := serveWeb(t, cl.followers()[0])
	origin := web.srv.URL
	b := consoletest.Start(t, consoletest.Options{Origin: origin, Shots: shots, Timeout: 6 * time.Minute})
	run, get, num, shot := b.Run, b.Get, b.Num, b.Shot
	poll, eval, ready, css := consoletest.Poll, consoletest.Eval, consoletest.Ready, consoletest.CSS
	login := func(name string) consoletest.Step { return b.Login(name, pw) }
	logout := consoletest.Logout()

	run("open and log in", chromedp.Navigate(origin+"/"), ready("login"), shot("01-login"), login("vic"), ready("overview"), shot("02-overview"))
	if diffs := b.Overview(cl.leader().conn); len(diffs) > 0 {
		t.Error(strings.Join(diffs, "\n"))
	}

	// Time to first useful paint of the inventory: a fresh page load of
	// #/inventory until its first page of devices is on screen, measured by
	// the browser from navigation start.
	run("inventory", chromedp.Navigate("about:blank"), chromedp.Navigate(origin+"/#/inventory"), ready("inventory"), shot("03-inventory"))
	firstPaint := num("first paint", `window.medmeshLastRender.at`)
	count := get("count", chromedp.Text(css("#result-count")))
	if !strings.HasPrefix(count, fmt.Sprint(nDev+seededExtra)+" ") {
		t.Fatalf("inventory says %q, want %d devices", count, nDev+seededExtra)
	}
	// A filtered search: the time from submitting the form to the
	// filtered page on screen.
	before := num("renders", `window.medmeshRenders`)
	run("search", chromedp.SetValue(css(`input[name="query"]`), "sigma"),
		eval(`window.medmeshSearchStart = performance.now(); document.querySelector("form.filters button").click()`),
		poll(fmt.Sprintf(`window.medmeshRenders > %v`, before)), shot("04-search"))
	search := num("search", `window.medmeshLastRender.at - window.medmeshSearchStart`)
	if count := get("count", chromedp.Text(css("#result-count"))); !strings.HasPrefix(count, "1 ") {
		t.Fatalf("search for the pump: %q", count)
	}
	t.Logf("console with %d devices: first useful paint of the inventory %.0f ms, filtered search %.0f ms", nDev+seededExtra, firstPaint, search)
	if f := os.Getenv("MEDMESH_CONSOLE_PERF"); f != "" {
		_ = os.WriteFile(f, fmt.Appendf(nil, "devices=%d first_paint_ms=%.0f search_ms=%.0f\n", nDev+seededExtra, firstPaint, search), 0o644)
	}
	// The device page and the campus map, as the viewer.
	checkDevicePagesInBrowser(t, cl, origin, pump, nDev+seededExtra, run, get, ready, shot, poll)

	// An alert appears live on the alerts page.
	run("alerts page", chromedp.Navigate(origin+"/#/alerts"), ready("alerts"))
	reportAlerts(t, cl.leader(), "s9", 1, &medmeshv1.Alert{Id: "s9/1", SensorId: "s9", DeviceMac: pump, Kind: "known_bad_destination",
		Risk: &medmeshv1.RiskScore{Score: 90}, Summary: "the pump contacted a known-bad address",
		Flow: &medmeshv1.FlowRef{Src: "10.1.0.7", Dst: "203.0.113.9", Proto: 6, Dport: 443}})
	if err := b.Try(poll(`document.getElementById("alert-s9/1") !== null`)); err != nil {
		_ = b.Try(shot("05-alert-live-failed"))
		st := get("page", chromedp.Evaluate[string](`document.getElementById("status").textContent + " | " + window.medmeshStreamError + " | " + document.getElementById("page").textContent.slice(0, 500)`))
		t.Fatalf("the alert did not appear live: %v; page: %s", err, st)
	}
	run("live alert", shot("05-alert-live"), logout)

	// Generate, simulate, monitor and enforce the pump's policy as an
	// approver: enforcement of a life-critical device waits for a second one.
	run("log in ann", login("ann"))
	sim, id := b.PolicyFlow(pump, "06-policy")
	if !strings.Contains(sim, "1 would be dropped") {
		t.Fatalf("simulation shown: %q", sim)
	}
	pending := cl.leader().c.FSM().Decision(id)
	if pending.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("enforcing the life-critical pump's policy: decision %q is %v, want pending approval", id, pending)
	}
	for _, who := range []string{"ann", "vic", "otto"} {
		if who != "ann" {
			run("log in "+who, logout, login(who))
		}
		if result := b.Approve(pending.GetId(), "07-refused-"+who); !strings.HasPrefix(result, "Refused:") {
			t.Fatalf("%s approving the decision: %q", who, result)
		}
	}
	// The operator acknowledges the live alert: audited as operator/otto.
	run("otto acknowledges", chromedp.Navigate(origin+"/#/alerts"), ready("alerts"),
		chromedp.Click(css(`button[aria-label="Acknowledge alert s9/1"]`)),
		poll(`document.getElementById("alert-s9/1").textContent.includes("acknowledged")`), shot("07-acknowledged"))
	if a := cl.leader().c.FSM().Alert("s9/1"); a.GetAcknowledgedBy() != "operator/otto" {
		t.Fatalf("alert acknowledged by %q, want operator/otto", a.GetAcknowledgedBy())
	}
	run("log in bob", logout, login("bob"))
	if result := b.Approve(pending.GetId(), "08-approved"); !strings.Contains(result, "approved") {
		t.Fatalf("bob approving the decision: %q", result)
	}
	run("audit and policies", chromedp.Navigate(origin+"/#/audit"), ready("audit"), shot("09-audit"),
		chromedp.Navigate(origin+"/#/policies"), ready("policies"), shot("10-policies"))
	if d := cl.leader().c.FSM().Decision(pending.GetId()); d.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || d.GetReviewedBy() != "approver/bob" {
		t.Fatalf("decision after bob: %v", d)
	}
	b.Compliance(cl.leader().conn, "11-compliance")
	// The overview again, now that the pump has a posture (its external
	// communication): a band other than none is counted.
	run("overview again", chromedp.Navigate(origin+"/#/approvals"), ready("approvals"), chromedp.Navigate(origin+"/#/overview"), ready("overview"), shot("12-overview-postures"))
	if diffs := b.Overview(cl.leader().conn); len(diffs) > 0 {
		t.Error(strings.Join(diffs, "\n"))
	}
	b.CheckClean()
}

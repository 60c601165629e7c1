package coordinator

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/compliance"
	compreport "github.com/medmesh/medmesh/compliance/report"
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
func TestConsoleInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (deploy/deps.txt has it: make deps)")
	}
	shots := os.Getenv("MEDMESH_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join("..", "bin", "console-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
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

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var problems []string
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value))
				}
				problems = append(problems, "console error: "+strings.Join(args, " "))
			}
		case *network.EventRequestWillBeSent:
			u := e.Request.URL
			if !strings.HasPrefix(u, origin+"/") && u != origin && !strings.HasPrefix(u, "data:") {
				problems = append(problems, "request left the origin: "+u)
			}
		}
	}
	type step = chromedp.Action[chromedp.Void]
	run := func(what string, steps ...step) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			st, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " | ready=" + document.body.dataset.ready + " | login-error=" + document.getElementById("login-error").textContent + " | " + (document.getElementById("status") || {}).textContent + " | " + ((document.getElementById("page") || {}).textContent || "").slice(0, 300)`))
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s: %v\npage: %s\nbrowser: %s", what, err, st, strings.Join(problems, "\n"))
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	num := func(what, expr string) float64 {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	shot := func(name string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg) // 100: PNG
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	poll := func(expr string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second))(ctx, tg)
			return err
		})
	}
	eval := func(expr string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[chromedp.Void](expr)(ctx, tg)
			return err
		})
	}
	ready := func(page string) step { return poll(fmt.Sprintf(`document.body.dataset.ready === %q`, page)) }
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	login := func(name string) step {
		return chromedp.Steps(
			ready("login"),
			chromedp.SetValue(css("#login-name"), name),
			chromedp.SetValue(css("#login-password"), pw),
			chromedp.Click(css(`#login-form button[type="submit"]`)),
			poll(`document.body.dataset.ready !== "login"`),
		)
	}
	logout := chromedp.Steps(chromedp.Click(css("#logout")), ready("login"))

	run("start", chromedp.Navigate("about:blank"))
	if err := chromedp.Listen(ctx, listen); err != nil {
		t.Fatal(err)
	}
	run("open and log in", chromedp.Navigate(origin+"/"), ready("login"), shot("01-login"), login("vic"), ready("overview"), shot("02-overview"))
	checkOverview(t, cl, get)

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
	if err := chromedp.Do(ctx, poll(`document.getElementById("alert-s9/1") !== null`)); err != nil {
		_ = chromedp.Do(ctx, shot("05-alert-live-failed"))
		st, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent + " | " + window.medmeshStreamError + " | " + document.getElementById("page").textContent.slice(0, 500)`))
		t.Fatalf("the alert did not appear live: %v; page: %s", err, st)
	}
	run("live alert", shot("05-alert-live"), logout)

	// Generate, simulate, monitor and enforce the pump's policy as an
	// approver: enforcement of a life-critical device waits for a second one.
	run("policy flow", login("ann"), chromedp.Navigate(origin+"/#/device?mac="+pump), ready("device"),
		chromedp.Click(css("#generate")), chromedp.WaitVisible(css("#simulation")),
		chromedp.Click(css("#simulate")),
		chromedp.Click(css("#monitor")), chromedp.WaitVisible(css("#monitor-result")),
		chromedp.Click(css("#enforce")), chromedp.WaitVisible(css("#enforce-result")), shot("06-policy"))
	if sim := get("simulation", chromedp.Text(css("#simulation"))); !strings.Contains(sim, "1 would be dropped") {
		t.Fatalf("simulation shown: %q", sim)
	}
	id := get("decision id", chromedp.Evaluate[string](`document.getElementById("enforce-result").dataset.decision`))
	pending := cl.leader().c.FSM().Decision(id)
	if pending.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("enforcing the life-critical pump's policy: decision %q is %v, want pending approval", id, pending)
	}
	approve := css(fmt.Sprintf(`button[data-approve=%q]`, pending.GetId()))
	for _, who := range []string{"ann", "vic", "otto"} {
		if who != "ann" {
			run("log in "+who, logout, login(who))
		}
		run(who+" approves", chromedp.Navigate(origin+"/#/approvals"), ready("approvals"),
			chromedp.Click(approve),
			poll(`document.querySelector("#approval-result").textContent !== ""`), shot("07-refused-"+who))
		if result := get("result", chromedp.Text(css("#approval-result"))); !strings.HasPrefix(result, "Refused:") {
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
	run("bob approves", logout, login("bob"), chromedp.Navigate(origin+"/#/approvals"), ready("approvals"),
		chromedp.Click(approve),
		poll(`document.querySelector("#approval-result") && document.querySelector("#approval-result").textContent.includes("approved")`),
		shot("08-approved"),
		chromedp.Navigate(origin+"/#/audit"), ready("audit"), shot("09-audit"),
		chromedp.Navigate(origin+"/#/policies"), ready("policies"), shot("10-policies"))
	if d := cl.leader().c.FSM().Decision(pending.GetId()); d.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || d.GetReviewedBy() != "approver/bob" {
		t.Fatalf("decision after bob: %v", d)
	}
	checkComplianceInBrowser(t, cl, origin, shots, run, get, ready, shot)
	// The overview again, now that the pump has a posture (its external
	// communication): a band other than none is counted.
	run("overview again", chromedp.Navigate(origin+"/#/approvals"), ready("approvals"), chromedp.Navigate(origin+"/#/overview"), ready("overview"), shot("12-overview-postures"))
	checkOverview(t, cl, get)
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the browser reported:\n%s", strings.Join(problems, "\n"))
	}
}

var figureRE = regexp.MustCompile(`data-figure="([a-z0-9-]+)"[^>]*>([^<]*)<`)

// checkComplianceInBrowser opens the console's compliance page, pages its
// device table, and downloads the report the way its link does (same
// origin, the session's cookie): the page's figures and devices, and the
// downloaded HTML's figures and devices, equal those of the whole report
// fetched in pages over gRPC (compliance/report.Fetch, as the CLI does).
// The Raft index is left out: it moves between two reads of a live
// cluster.
func checkComplianceInBrowser(t *testing.T, cl *cluster, origin, shots string,
	run func(string, ...chromedp.Action[chromedp.Void]), get func(string, chromedp.Action[string]) string,
	ready, shot func(string) chromedp.Action[chromedp.Void]) {
	t.Helper()
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	poll := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(60*time.Second))(ctx, tg)
			return err
		})
	}
	run("compliance page", chromedp.Navigate(origin+"/#/compliance"), ready("compliance"), shot("11-compliance"))
	client := medmeshv1.NewComplianceServiceClient(cl.leader().conn)
	rep, err := compreport.Fetch(context.Background(), medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED,
		func(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
			return client.GetReport(ctx, req)
		})
	if err != nil {
		t.Fatal(err)
	}
	want := compreport.Summary(rep)
	onPage := get("page figures", chromedp.Evaluate[string](`JSON.stringify(Object.fromEntries([...document.querySelectorAll("#compliance-summary [data-figure]")].map((e) => [e.dataset.figure, e.textContent])))`))
	var shown map[string]string
	if err := json.Unmarshal([]byte(onPage), &shown); err != nil || len(shown) == 0 {
		t.Fatalf("compliance page figures %q: %v", onPage, err)
	}
	for k, v := range shown {
		if want[k] != v {
			t.Errorf("compliance page shows %s=%s, GetReport says %s", k, v, want[k])
		}
	}
	// The device table, page by page for two pages: the report's devices
	// in its order.
	macs := func() []string {
		var out []string
		raw := get("device rows", chromedp.Evaluate[string](`JSON.stringify([...document.querySelectorAll("table[data-devices] tbody tr td:first-child a")].map((a) => a.textContent))`))
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	devices := rep.GetDevices()
	for pg, from := 1, 0; from < len(devices) && pg <= 2; pg++ {
		n := min(100, len(devices)-from)
		wantRange := fmt.Sprintf("Devices %d–%d of %d", from+1, from+n, len(devices))
		run(fmt.Sprintf("device table page %d", pg), poll(fmt.Sprintf(`(document.getElementById("report-devices-range") || {}).textContent === %q`, wantRange)))
		got := macs()
		if len(got) != n {
			t.Fatalf("device table page %d: %d rows, want %d", pg, len(got), n)
		}
		for i, m := range got {
			if m != devices[from+i].GetDeviceMac() {
				t.Fatalf("device table page %d row %d: %s, the report has %s", pg, i+1, m, devices[from+i].GetDeviceMac())
			}
		}
		from += n
		if from < len(devices) && pg < 2 {
			run("next devices", chromedp.Click(css("#report-devices-next")))
		} else if pg == 2 {
			run("second page", shot("11-compliance-devices-2"))
		}
	}
	if len(devices) > 100 {
		// A page token the cluster no longer holds: the page says so and
		// offers the summary again.
		gone := base64.RawURLEncoding.EncodeToString([]byte("r/" + strings.Repeat("0", 32) + "/100"))
		run("expired page", chromedp.Navigate(origin+"/#/compliance?framework=all&page="+gone),
			poll(`document.getElementById("report-expired") !== null`))
	}
	renders := get("renders", chromedp.Evaluate[string](`String(window.medmeshRenders)`))
	run("back to the summary", chromedp.Navigate(origin+"/#/compliance?framework=all"),
		poll(`window.medmeshRenders > `+renders+` && document.getElementById("report-download") !== null`))
	if get("download attribute", chromedp.Evaluate[string](`String(document.getElementById("report-download").hasAttribute("download"))`)) != "true" {
		t.Error("the report link is not a download")
	}
	// The download is read in the page (at 10,000 devices it is tens of
	// MB): its figures, the MACs in its device table, its size, and the
	// whole body when small enough to keep beside the screenshots.
	pageMS := get("page time", chromedp.Evaluate[string](`String(Math.round(window.medmeshLastRender.ms))`))
	raw := get("download", chromedp.Evaluate[string](`((t0) => fetch(document.getElementById("report-download").href, { credentials: "same-origin" }).then(async (r) => {
		const body = await r.text();
		const ms = Math.round(performance.now() - t0);
		const figures = Object.fromEntries([...body.matchAll(/data-figure="([a-z0-9-]+)"[^>]*>([^<]*)</g)].map((m) => [m[1], m[2]]));
		const macs = [...body.matchAll(/<tr><td>([0-9a-f:]{17})/g)].map((m) => m[1]);
		return JSON.stringify({ status: r.status, url: r.url, type: r.headers.get("content-type"), disposition: r.headers.get("content-disposition"),
			size: body.length, ms, figures, macs, body: body.length < (8 << 20) ? body : "" });
	}))(performance.now())`, chromedp.EvalAwaitPromise))
	var dl struct {
		Status                 int
		URL, Type, Disposition string
		Size, MS               int
		Figures                map[string]string
		Macs                   []string
		Body                   string
	}
	if err := json.Unmarshal([]byte(raw), &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Status != 200 || !strings.HasPrefix(dl.URL, origin+"/") || !strings.HasPrefix(dl.Type, "text/html") || !strings.HasPrefix(dl.Disposition, "attachment; filename=\"medmesh-compliance-all-") {
		t.Fatalf("report download: status %d, url %s, type %q, disposition %q: %.300s", dl.Status, dl.URL, dl.Type, dl.Disposition, dl.Body)
	}
	for k, v := range want {
		if k == "raft-index" {
			continue
		}
		if dl.Figures[k] != v {
			t.Errorf("downloaded report: %s=%q, GetReport says %q", k, dl.Figures[k], v)
		}
	}
	if len(dl.Macs) != len(devices) {
		t.Fatalf("the downloaded report lists %d devices, the report has %d", len(dl.Macs), len(devices))
	}
	for i, m := range dl.Macs {
		if m != devices[i].GetDeviceMac() {
			t.Fatalf("downloaded report's device %d: %s, the report has %s", i+1, m, devices[i].GetDeviceMac())
		}
	}
	if dl.Body != "" {
		// The downloaded report is kept beside the screenshots.
		if err := os.WriteFile(filepath.Join(shots, "11-compliance-report.html"), []byte(dl.Body), 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Logf("compliance report: page and download agree with the paged report on %d figures and %d devices; summary page rendered in %s ms, download %.1f MB in %d ms",
		len(want)-1, len(devices), pageMS, float64(dl.Size)/1e6, dl.MS)
}

// checkOverview compares the overview's devices by class and by posture
// band with ListDevices and RiskService.Top asked over gRPC.
func checkOverview(t *testing.T, cl *cluster, get func(string, chromedp.Action[string]) string) {
	t.Helper()
	raw := get("overview counts", chromedp.Evaluate[string](`JSON.stringify({
		class: Object.fromEntries([...document.querySelectorAll("tr[data-class]")].map((r) => [r.dataset.class, r.querySelector("td").textContent])),
		band: Object.fromEntries([...document.querySelectorAll("tr[data-band]")].map((r) => [r.dataset.band, r.querySelector("td").textContent])) })`))
	var shown struct{ Class, Band map[string]string }
	if err := json.Unmarshal([]byte(raw), &shown); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inv := medmeshv1.NewInventoryServiceClient(cl.leader().conn)
	all, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for v, name := range medmeshv1.DeviceClass_name {
		if v == 0 {
			continue
		}
		r, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1, DeviceClass: medmeshv1.DeviceClass(v)})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetTotalSize() > 0 {
			want[name] = fmt.Sprint(r.GetTotalSize())
		}
	}
	if fmt.Sprint(shown.Class) != fmt.Sprint(want) || len(want) == 0 {
		t.Errorf("overview devices by class %v, ListDevices says %v", shown.Class, want)
	}
	top, err := medmeshv1.NewRiskServiceClient(cl.leader().conn).Top(ctx, &medmeshv1.TopRequest{N: 1000})
	if err != nil {
		t.Fatal(err)
	}
	bands := map[string]int{"critical": 0, "high": 0, "medium": 0, "low": 0}
	for _, p := range top.GetPostures() {
		bands[compliance.PostureBand(p.GetScore().GetScore())]++
	}
	wantBands := map[string]string{"none": fmt.Sprint(int(all.GetTotalSize()) - len(top.GetPostures()))}
	for b, n := range bands {
		wantBands[b] = fmt.Sprint(n)
	}
	if len(top.GetPostures()) < 1000 && fmt.Sprint(shown.Band) != fmt.Sprint(wantBands) {
		t.Errorf("overview devices by posture band %v, RiskService.Top says %v", shown.Band, wantBands)
	}
	t.Logf("overview: %d classes and posture bands %v agree with ListDevices and Top", len(want), wantBands)
}

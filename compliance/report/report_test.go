package report

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// campus is a small report as compliance.Evaluate produces it, with three
// plan actions, and exceptions: one in force (its action leaves the
// plan), one whose expiry passed but the leader has not applied yet (its
// action stays: it reappeared), one on a finding.
func campus() (*medmeshv1.ComplianceReport, []*medmeshv1.RiskException, []*medmeshv1.TrendPoint) {
	r := &medmeshv1.ComplianceReport{
		GenerateTime: timestamppb.New(now), RaftIndex: 4242, BundleDigest: strings.Repeat("ab", 32), BundleDate: timestamppb.New(now.AddDate(0, 0, -3)),
		Coverage:    &medmeshv1.ComplianceCoverage{Devices: 4, Classified: 4, Identified: 3, Assessed: 3, Observed: 4},
		ControlsMet: 5, ControlsUnmet: 3, ControlsNotEvidenced: 2,
		Controls: []*medmeshv1.ControlSummary{{Control: &medmeshv1.ComplianceControl{Id: "hipaa-164.312(e)", Citation: "45 CFR 164.312(e)(1)", Title: "Transmission security <script>"}, Unmet: 2, Met: 2, Status: medmeshv1.ControlStatus_CONTROL_STATUS_UNMET}},
		Devices: []*medmeshv1.DeviceCompliance{
			{DeviceMac: "00:00:00:00:00:01", RiskScore: 82, Posture: "critical", Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL, Results: []*medmeshv1.ControlResult{{ControlId: "hipaa-164.312(e)", Status: medmeshv1.ControlStatus_CONTROL_STATUS_UNMET, Evidence: []*medmeshv1.ComplianceEvidence{{Text: "HL7 in clear", Source: "tapirx/hl7.pcap"}}}}},
			{DeviceMac: "00:00:00:00:00:02", RiskScore: 45, Posture: "high"},
			{DeviceMac: "00:00:00:00:00:03", RiskScore: 10, Posture: "low"},
			{DeviceMac: "00:00:00:00:00:04", Posture: "none"},
		},
		Plan: &medmeshv1.RemediationPlan{CampusRisk: 137, Actions: []*medmeshv1.RemediationAction{
			{Id: "patch:A/X@2", Rank: 1, Title: "Patch X to 2", ExpectedRiskDrop: 60},
			{Id: "change-credentials:00:00:00:00:00:02", Rank: 2, Title: "Change credentials", ExpectedRiskDrop: 30},
			{Id: "enable-tls:00:00:00:00:00:03", Rank: 3, Title: "Enable TLS", ExpectedRiskDrop: 5},
		}},
	}
	exc := []*medmeshv1.RiskException{
		{Id: "exc-10", TargetKind: medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION, Target: "patch:A/X@2", Owner: "biomed", Reason: "vendor validation", Index: 10, State: medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE, AcceptedBy: "approver/carol", AcceptTime: timestamppb.New(now.AddDate(0, 0, -1)), ExpireTime: timestamppb.New(now.AddDate(0, 0, 30))},
		{Id: "exc-11", TargetKind: medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION, Target: "change-credentials:00:00:00:00:00:02", Owner: "it", Reason: "r", Index: 11, State: medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE, ExpireTime: timestamppb.New(now.Add(-time.Minute))},
		{Id: "exc-12", TargetKind: medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING, Target: "CVE-2026-0001", Owner: "it", Reason: "r", Index: 12, State: medmeshv1.ExceptionState_EXCEPTION_STATE_ACTIVE, ExpireTime: timestamppb.New(now.AddDate(0, 0, 1))},
	}
	var trend []*medmeshv1.TrendPoint
	for d := range 5 {
		trend = append(trend, &medmeshv1.TrendPoint{Day: now.AddDate(0, 0, d-5).Format(time.DateOnly), CampusRisk: float64(160 - 5*d), ControlsMet: uint32(3 + d/2), ControlsUnmet: 4})
	}
	return r, exc, trend
}

func TestApplyStateExceptions(t *testing.T) {
	r, exc, trend := campus()
	out := ApplyState(r, exc, trend, now)
	var ids []string
	for _, a := range out.GetPlan().GetActions() {
		ids = append(ids, a.GetId())
	}
	if strings.Join(ids, ",") != "change-credentials:00:00:00:00:00:02,enable-tls:00:00:00:00:00:03" {
		t.Fatalf("plan after exceptions: %v (the in-force one must leave, the expired one must stay)", ids)
	}
	if len(out.GetExceptedActions()) != 1 || out.GetExceptedActions()[0].GetId() != "patch:A/X@2" {
		t.Fatalf("excepted %v", out.GetExceptedActions())
	}
	if strings.Join(out.GetExceptedFindings(), ",") != "CVE-2026-0001" {
		t.Fatalf("excepted findings %v", out.GetExceptedFindings())
	}
	if out.GetExceptions()[0].GetId() != "exc-10" || out.GetExceptions()[2].GetId() != "exc-11" || len(out.GetTrend()) != 5 {
		t.Fatalf("exceptions not in force first: %v", out.GetExceptions())
	}
	if len(r.GetPlan().GetActions()) != 3 {
		t.Fatal("ApplyState changed its input")
	}
	// A day after the finding's expiry, everything but exc-10 is back.
	later := ApplyState(r, exc, trend, now.AddDate(0, 0, 2))
	if len(later.GetPlan().GetActions()) != 2 || len(later.GetExceptedFindings()) != 0 {
		t.Fatalf("after expiry: %d actions, excepted findings %v", len(later.GetPlan().GetActions()), later.GetExceptedFindings())
	}
	if p := Point(out, exc, now); p.PostureCritical != 1 || p.PostureHigh != 1 || p.PostureLow != 1 || p.PostureNone != 1 || p.ExceptionsActive != 2 || p.CampusRisk != 137 {
		t.Fatalf("point %v", p)
	}
}

// TestHTMLInChromium renders the report and loads it in headless Chromium
// (chromedp): no console error, no exception, no request but the page
// itself, and every figure on the page equals the JSON report's.
func TestHTMLInChromium(t *testing.T) {
	bin := ChromiumPath()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed: deploy/deps.txt lists it")
		}
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	r, exc, trend := campus()
	full := ApplyState(r, exc, trend, now)
	js, err := JSON(full)
	if err != nil {
		t.Fatal(err)
	}
	var back medmeshv1.ComplianceReport
	if err := protojson.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	want := Summary(&back)
	var page bytes.Buffer
	if err := HTML(&page, full); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.String(), "<script") {
		t.Fatal("the page has a script (or an unescaped one)")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	figures := checkInChromium(t, file, want)
	if figures["actions"] != "2" || figures["excepted-actions"] != "1" || figures["raft-index"] != "4242" {
		t.Errorf("figures %v", figures)
	}
}

// loadInChromium loads the page at file in headless Chromium and returns
// its figures (data-figure), the problems it logged (console errors and
// warnings, exceptions, failed loads, a wrong title) and every URL it
// requested.
func loadInChromium(t *testing.T, file string) (figures map[string]string, problems, requests []string, err error) {
	t.Helper()
	bin := ChromiumPath()
	if bin == "" {
		t.Fatal("chromium is not installed")
	}
	dir := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.UserDataDir(filepath.Join(dir, "profile")))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	var mu sync.Mutex
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning || e.Type == runtime.ConsoleAPICalledTypeAssert {
				problems = append(problems, "console "+string(e.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception "+e.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError || e.Entry.Level == cdplog.EntryLevelWarning {
				problems = append(problems, "log "+string(e.Entry.Level)+": "+e.Entry.Text)
			}
		case *network.EventRequestWillBeSent:
			requests = append(requests, e.Request.URL)
		case *network.EventLoadingFailed:
			problems = append(problems, "load failed "+e.ErrorText)
		}
	}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(listen))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+file)); err != nil {
		return nil, nil, nil, err
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		return nil, nil, nil, err
	}
	figures, err = chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(e => [e.dataset.figure, e.textContent.trim()]))`))
	if err != nil {
		return nil, nil, nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if title != "medmesh compliance report" {
		problems = append(problems, "title "+title)
	}
	return figures, problems, requests, nil
}

// checkInChromium fails on a problem, a request for anything but the
// page, or a figure unlike want's.
func checkInChromium(t *testing.T, file string, want map[string]string) map[string]string {
	t.Helper()
	figures, problems, requests, err := loadInChromium(t, file)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("the page logged problems: %v", problems)
	}
	for _, u := range requests {
		if u != "file://"+file {
			t.Errorf("external request %s", u)
		}
	}
	if len(figures) != len(want) {
		t.Errorf("page has %d figures, the JSON summary %d: %v", len(figures), len(want), figures)
	}
	for k, v := range want {
		if figures[k] != v {
			t.Errorf("figure %s: page %q, JSON %q", k, figures[k], v)
		}
	}
	return figures
}

// TestChromiumCheckSeesProblems: the check is not blind: a page with a
// console error, an exception and an external image is caught.
func TestChromiumCheckSeesProblems(t *testing.T) {
	if ChromiumPath() == "" {
		t.Skip("chromium is not installed")
	}
	file := filepath.Join(t.TempDir(), "bad.html")
	os.WriteFile(file, []byte(`<!DOCTYPE html><html><head><title>medmesh compliance report</title></head><body><img src="http://127.0.0.1:9/x.png"><script>console.error("boom"); undefinedCall();</script></body></html>`), 0o644)
	_, problems, requests, err := loadInChromium(t, file)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(problems, "; ")
	if !strings.Contains(joined, "console error") || !strings.Contains(joined, "exception") {
		t.Fatalf("problems seen: %q", joined)
	}
	external := false
	for _, u := range requests {
		external = external || strings.HasPrefix(u, "http://127.0.0.1:9/")
	}
	if !external {
		t.Fatalf("the external request was not seen: %v", requests)
	}
}

// TestPDF prints the report with Chromium's --print-to-pdf.
func TestPDF(t *testing.T) {
	if ChromiumPath() == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed: deploy/deps.txt lists it")
		}
		t.Skip("chromium is not installed")
	}
	r, exc, trend := campus()
	out := filepath.Join(t.TempDir(), "r.pdf")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := PDF(ctx, ApplyState(r, exc, trend, now), out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("%PDF-")) || len(b) < 2000 {
		t.Fatalf("not a PDF: %d bytes", len(b))
	}
}

// TestDemoReportInChromium checks the report make demo wrote
// (MEDMESH_DEMO_REPORT names demo-report.html; demo-report.json beside it
// is the report it was rendered from, fetched from the lab's cluster):
// it loads in headless Chromium with no console error and no request but
// itself, and its figures equal the JSON report's.
func TestDemoReportInChromium(t *testing.T) {
	html := os.Getenv("MEDMESH_DEMO_REPORT")
	if html == "" {
		t.Skip("MEDMESH_DEMO_REPORT is not set: make demo sets it to the demo-report.html it wrote")
	}
	js, err := os.ReadFile(strings.TrimSuffix(html, ".html") + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var r medmeshv1.ComplianceReport
	if err := protojson.Unmarshal(js, &r); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(html)
	if err != nil {
		t.Fatal(err)
	}
	checkInChromium(t, abs, Summary(&r))
}

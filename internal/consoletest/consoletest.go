// Package consoletest drives the web console in real headless Chromium
// (Debian's chromium, driven by chromedp) for tests: one tab on the
// console's origin, a watch on every console error, uncaught exception
// and request that leaves that origin, screenshots, and the checks the
// in-process cluster's browser test and the lab's share (the overview's
// counts, the compliance page and its download against GetReport). It is
// test support: only tests import it.
package consoletest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/compliance"
	compreport "github.com/medmesh/medmesh/compliance/report"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Step is one browser action without a result.
type Step = chromedp.Action[chromedp.Void]

// Options configure a Browser.
type Options struct {
	// Origin is the console's origin, "https://127.0.0.1:7404".
	Origin string
	// Shots is the folder screenshots go to (made if missing).
	Shots string
	// Timeout bounds the whole browser session.
	Timeout time.Duration
	// TrustCerts are PEM certificate files whose keys the browser accepts
	// for TLS though no CA it knows signed them (a lab's own CA): Chromium
	// pins their public keys (--ignore-certificate-errors-spki-list).
	// Every other certificate error stays an error.
	TrustCerts []string
	// Others are origins besides Origin the page may reach (a hospital's
	// identity provider during single sign-on).
	Others []string
}

// Browser is a headless Chromium tab on the console.
type Browser struct {
	t      testing.TB
	ctx    context.Context
	Origin string
	Shots  string
	others []string

	mu       sync.Mutex
	problems []string
}

// Start opens a tab on about:blank and starts watching it. The test
// skips when chromium is not installed; the browser ends with the test.
func Start(t testing.TB, o Options) *Browser {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (deploy/deps.txt has it: make deps)")
	}
	if err := os.MkdirAll(o.Shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000))
	if len(o.TrustCerts) > 0 {
		var pins []string
		for _, f := range o.TrustCerts {
			pin, err := spkiPin(f)
			if err != nil {
				t.Fatal(err)
			}
			pins = append(pins, pin)
		}
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(pins, ",")))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	t.Cleanup(func() { cancel(); cancelTab(); cancelAlloc() })
	b := &Browser{t: t, ctx: ctx, Origin: o.Origin, Shots: o.Shots, others: o.Others}
	b.Run("start", chromedp.Navigate("about:blank"))
	if err := chromedp.Listen(ctx, b.listen); err != nil {
		t.Fatal(err)
	}
	return b
}

// spkiPin is the base64 SHA-256 of the public key of the certificate in
// PEM file f, as Chromium's SPKI list takes it.
func spkiPin(f string) (string, error) {
	raw, err := os.ReadFile(f)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return "", fmt.Errorf("%s: no PEM certificate", f)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", f, err)
	}
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(h[:]), nil
}

func (b *Browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		b.problems = append(b.problems, "exception: "+e.ExceptionDetails.Text)
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range e.Args {
				args = append(args, string(a.Value))
			}
			b.problems = append(b.problems, "console error: "+strings.Join(args, " "))
		}
	case *network.EventRequestWillBeSent:
		if u := e.Request.URL; !b.allowed(u) {
			b.problems = append(b.problems, "request left the origin: "+u)
		}
	}
}

// allowed reports whether the page may request u: the console's origin,
// the other origins of Options, data: URLs and about:blank.
func (b *Browser) allowed(u string) bool {
	if strings.HasPrefix(u, "data:") || u == "about:blank" {
		return true
	}
	for _, o := range append([]string{b.Origin}, b.others...) {
		if u == o || strings.HasPrefix(u, o+"/") {
			return true
		}
	}
	return false
}

// Problems are the console errors, exceptions and requests off the
// origin seen so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// CheckClean fails the test if the browser reported any problem.
func (b *Browser) CheckClean() {
	b.t.Helper()
	if p := b.Problems(); len(p) > 0 {
		b.t.Fatalf("the browser reported:\n%s", strings.Join(p, "\n"))
	}
}

// Run runs steps; on failure the test fails with where the page was.
func (b *Browser) Run(what string, steps ...Step) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		st, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`location.href + " | ready=" + document.body.dataset.ready + " | login-error=" + (document.getElementById("login-error") || {}).textContent + " | " + (document.getElementById("status") || {}).textContent + " | " + ((document.getElementById("page") || {}).textContent || "").slice(0, 300)`))
		b.t.Fatalf("%s: %v\npage: %s\nbrowser: %s", what, err, st, strings.Join(b.Problems(), "\n"))
	}
}

// Try runs steps and returns their error: for what may fail and be
// reported by the caller.
func (b *Browser) Try(steps ...Step) error { return chromedp.Do(b.ctx, steps...) }

// Get runs an action with a string result.
func (b *Browser) Get(what string, a chromedp.Action[string]) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// Num evaluates a JavaScript expression with a number result.
func (b *Browser) Num(what, expr string) float64 {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[float64](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// Shot writes a full-page PNG screenshot NAME.png to the shots folder.
func (b *Browser) Shot(name string) Step {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		buf, err := chromedp.FullScreenshot(100)(ctx, tg) // 100: PNG
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(b.Shots, name+".png"), buf, 0o644)
	})
}

// Login logs in on the login page as name.
func (b *Browser) Login(name, password string) Step {
	return chromedp.Steps(
		Ready("login"),
		chromedp.SetValue(CSS("#login-name"), name),
		chromedp.SetValue(CSS("#login-password"), password),
		chromedp.Click(CSS(`#login-form button[type="submit"]`)),
		Poll(`document.body.dataset.ready !== "login"`),
	)
}

// Logout logs out and waits for the login page.
func Logout() Step { return chromedp.Steps(chromedp.Click(CSS("#logout")), Ready("login")) }

// CSS is a CSS selector.
func CSS(s string) chromedp.CSS { return chromedp.CSS(s) }

// Poll waits up to 30 s for a JavaScript expression to be true.
func Poll(expr string) Step { return PollFor(expr, 30*time.Second) }

// PollFor waits up to d for a JavaScript expression to be true.
func PollFor(expr string, d time.Duration) Step {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d))(ctx, tg)
		return err
	})
}

// PollAcross is Poll that goes on across navigations between origins (a
// page being replaced destroys the context an evaluation ran in), for 30 s.
func PollAcross(expr string) Step {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline)))(ctx, tg)
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// Eval evaluates a JavaScript expression for its effect.
func Eval(expr string) Step {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[chromedp.Void](expr)(ctx, tg)
		return err
	})
}

// Ready waits until the console rendered page ("login", "overview", ...),
// across a navigation still replacing the document: after
// Navigate("about:blank") and Navigate(url), chromedp can return on the
// blank page's late load event and the evaluation then runs in a context
// the real page destroys ("Cannot find context with specified id", seen in
// a fresh-clone CI run).
func Ready(page string) Step {
	return PollAcross(fmt.Sprintf(`document.body.dataset.ready === %q`, page))
}

// PolicyFlow opens device mac's page as the person logged in and clicks
// generate, simulate, monitor and enforce, one after the other, then
// takes screenshot shot. It returns the simulation the page showed and
// the id of the decision the enforcement committed.
func (b *Browser) PolicyFlow(mac, shot string) (simulation, decision string) {
	b.t.Helper()
	// From one device's page to another's, "device" is ready already:
	// forget it, so Ready waits for this device's page.
	b.Run("policy flow on "+mac, Eval(`delete document.body.dataset.ready`), chromedp.Navigate(b.Origin+"/#/device?mac="+mac), Ready("device"),
		chromedp.Click(CSS("#generate")), chromedp.WaitVisible(CSS("#simulation")),
		chromedp.Click(CSS("#simulate")),
		chromedp.Click(CSS("#monitor")), chromedp.WaitVisible(CSS("#monitor-result")),
		chromedp.Click(CSS("#enforce")), chromedp.WaitVisible(CSS("#enforce-result")), b.Shot(shot))
	return b.Get("simulation", chromedp.Text(CSS("#simulation"))),
		b.Get("decision id", chromedp.Evaluate[string](`document.getElementById("enforce-result").dataset.decision`))
}

// Approve clicks Approve on decision id in the approvals queue as the
// person logged in, takes screenshot shot and returns what the page
// says: "Refused: why" or "Decision ID approved.".
func (b *Browser) Approve(id, shot string) string {
	b.t.Helper()
	b.Run("approve "+id, chromedp.Navigate(b.Origin+"/#/approvals"), Ready("approvals"),
		chromedp.Click(CSS(fmt.Sprintf(`button[data-approve=%q]`, id))),
		Poll(`(document.querySelector("#approval-result") || {}).textContent?.startsWith("Refused:") || (document.querySelector("#approval-result") || {}).textContent?.includes(" approved")`),
		b.Shot(shot))
	return b.Get("approval result", chromedp.Text(CSS("#approval-result")))
}

// Compliance opens the console's compliance page and downloads the report
// the way its link does (same origin, the session's cookie): the page's
// figures and the downloaded HTML's figures must equal those of GetReport
// asked over gRPC on conn. The Raft index is left out: it moves between
// two reads of a live cluster. A live campus may change a figure between
// the page's read and GetReport's: the comparison is tried up to three
// times, the page reloaded each time. The downloaded report is written
// beside the screenshots as shot + "-report.html".
func (b *Browser) Compliance(conn grpc.ClientConnInterface, shot string) {
	b.t.Helper()
	var diffs []string
	for try := 0; try < 3; try++ {
		if try > 0 {
			b.Run("leave the compliance page", chromedp.Navigate(b.Origin+"/#/overview"), Ready("overview"))
		}
		var done bool
		if done, diffs = b.compliance(conn, shot); done || len(diffs) == 0 {
			return
		}
		b.t.Logf("compliance figures differ from GetReport (try %d of 3): %s", try+1, strings.Join(diffs, "; "))
	}
	b.t.Errorf("compliance: %s", strings.Join(diffs, "; "))
}

// compliance is one try of Compliance: the figures that differ. The
// report is fetched in pages over gRPC (compliance/report.Fetch, as the CLI
// does); the page's device table is checked for its first two pages, an
// expired page token must say so, and the download's figures and devices
// must equal the report's.
func (b *Browser) compliance(conn grpc.ClientConnInterface, shot string) (bool, []string) {
	b.t.Helper()
	b.Run("compliance page", chromedp.Navigate(b.Origin+"/#/compliance"), Ready("compliance"), b.Shot(shot))
	client := medmeshv1.NewComplianceServiceClient(conn)
	rep, err := compreport.Fetch(context.Background(), medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED,
		func(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
			return client.GetReport(ctx, req)
		})
	if err != nil {
		b.t.Fatal(err)
	}
	want := compreport.Summary(rep)
	var diffs []string
	onPage := b.Get("page figures", chromedp.Evaluate[string](`JSON.stringify(Object.fromEntries([...document.querySelectorAll("#compliance-summary [data-figure]")].map((e) => [e.dataset.figure, e.textContent])))`))
	var shown map[string]string
	if err := json.Unmarshal([]byte(onPage), &shown); err != nil || len(shown) == 0 {
		b.t.Fatalf("compliance page figures %q: %v", onPage, err)
	}
	for k, v := range shown {
		if k != "raft-index" && want[k] != v {
			diffs = append(diffs, fmt.Sprintf("page shows %s=%s, GetReport says %s", k, v, want[k]))
		}
	}
	if len(diffs) > 0 {
		return false, diffs
	}
	// The device table, page by page for two pages: the report's devices
	// in its order.
	macs := func() []string {
		var out []string
		raw := b.Get("device rows", chromedp.Evaluate[string](`JSON.stringify([...document.querySelectorAll("table[data-devices] tbody tr td:first-child a")].map((a) => a.textContent))`))
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			b.t.Fatal(err)
		}
		return out
	}
	devices := rep.GetDevices()
	for pg, from := 1, 0; from < len(devices) && pg <= 2; pg++ {
		n := min(100, len(devices)-from)
		wantRange := fmt.Sprintf("Devices %d–%d of %d", from+1, from+n, len(devices))
		b.Run(fmt.Sprintf("device table page %d", pg), PollFor(fmt.Sprintf(`(document.getElementById("report-devices-range") || {}).textContent === %q`, wantRange), time.Minute))
		got := macs()
		if len(got) != n {
			return false, []string{fmt.Sprintf("device table page %d: %d rows, want %d", pg, len(got), n)}
		}
		for i, m := range got {
			if m != devices[from+i].GetDeviceMac() {
				return false, []string{fmt.Sprintf("device table page %d row %d: %s, the report has %s", pg, i+1, m, devices[from+i].GetDeviceMac())}
			}
		}
		from += n
		if from < len(devices) && pg < 2 {
			b.Run("next devices", chromedp.Click(CSS("#report-devices-next")))
		} else if pg == 2 {
			b.Run("second page", b.Shot(shot+"-devices-2"))
		}
	}
	if len(devices) > 100 {
		// A page token the cluster no longer holds: the page says so and
		// offers the summary again.
		gone := base64.RawURLEncoding.EncodeToString([]byte("r/" + strings.Repeat("0", 32) + "/100"))
		b.Run("expired page", chromedp.Navigate(b.Origin+"/#/compliance?framework=all&page="+gone),
			PollFor(`document.getElementById("report-expired") !== null`, time.Minute))
	}
	renders := b.Get("renders", chromedp.Evaluate[string](`String(window.medmeshRenders)`))
	b.Run("back to the summary", chromedp.Navigate(b.Origin+"/#/compliance?framework=all"),
		PollFor(`window.medmeshRenders > `+renders+` && document.getElementById("report-download") !== null`, time.Minute))
	if b.Get("download attribute", chromedp.Evaluate[string](`String(document.getElementById("report-download").hasAttribute("download"))`)) != "true" {
		b.t.Error("the report link is not a download")
	}
	// The download is read in the page (at 10,000 devices it is tens of
	// MB): its figures, the MACs in its device table, its size, and the
	// whole body when small enough to keep beside the screenshots.
	pageMS := b.Get("page time", chromedp.Evaluate[string](`String(Math.round(window.medmeshLastRender.ms))`))
	raw := b.Get("download", chromedp.Evaluate[string](`((t0) => fetch(document.getElementById("report-download").href, { credentials: "same-origin" }).then(async (r) => {
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
		b.t.Fatal(err)
	}
	if dl.Status != 200 || !strings.HasPrefix(dl.URL, b.Origin+"/") || !strings.HasPrefix(dl.Type, "text/html") || !strings.HasPrefix(dl.Disposition, "attachment; filename=\"medmesh-compliance-all-") {
		b.t.Fatalf("report download: status %d, url %s, type %q, disposition %q: %.300s", dl.Status, dl.URL, dl.Type, dl.Disposition, dl.Body)
	}
	for k, v := range want {
		if k != "raft-index" && dl.Figures[k] != v {
			diffs = append(diffs, fmt.Sprintf("downloaded report: %s=%q, GetReport says %q", k, dl.Figures[k], v))
		}
	}
	if len(dl.Macs) != len(devices) {
		diffs = append(diffs, fmt.Sprintf("the downloaded report lists %d devices, the report has %d", len(dl.Macs), len(devices)))
	} else {
		for i, m := range dl.Macs {
			if m != devices[i].GetDeviceMac() {
				diffs = append(diffs, fmt.Sprintf("downloaded report's device %d: %s, the report has %s", i+1, m, devices[i].GetDeviceMac()))
				break
			}
		}
	}
	if dl.Body != "" {
		// The downloaded report is kept beside the screenshots.
		if err := os.WriteFile(filepath.Join(b.Shots, shot+"-report.html"), []byte(dl.Body), 0o644); err != nil {
			b.t.Error(err)
		}
	}
	if len(diffs) == 0 {
		b.t.Logf("compliance report: page and download agree with the paged report on %d figures and %d devices; summary page rendered in %s ms, download %.1f MB in %d ms",
			len(want)-1, len(devices), pageMS, float64(dl.Size)/1e6, dl.MS)
	}
	return false, diffs
}

// Overview compares the overview's devices by class and by posture band
// (the page must be on screen) with ListDevices and RiskService.Top asked
// over gRPC on conn, and returns what differs.
func (b *Browser) Overview(conn grpc.ClientConnInterface) []string {
	b.t.Helper()
	raw := b.Get("overview counts", chromedp.Evaluate[string](`JSON.stringify({
		class: Object.fromEntries([...document.querySelectorAll("tr[data-class]")].map((r) => [r.dataset.class, r.querySelector("td").textContent])),
		band: Object.fromEntries([...document.querySelectorAll("tr[data-band]")].map((r) => [r.dataset.band, r.querySelector("td").textContent])) })`))
	var shown struct{ Class, Band map[string]string }
	if err := json.Unmarshal([]byte(raw), &shown); err != nil {
		b.t.Fatal(err)
	}
	ctx := context.Background()
	inv := medmeshv1.NewInventoryServiceClient(conn)
	all, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1})
	if err != nil {
		b.t.Fatal(err)
	}
	want := map[string]string{}
	for v, name := range medmeshv1.DeviceClass_name {
		if v == 0 {
			continue
		}
		r, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1, DeviceClass: medmeshv1.DeviceClass(v)})
		if err != nil {
			b.t.Fatal(err)
		}
		if r.GetTotalSize() > 0 {
			want[name] = fmt.Sprint(r.GetTotalSize())
		}
	}
	var diffs []string
	if fmt.Sprint(shown.Class) != fmt.Sprint(want) || len(want) == 0 {
		diffs = append(diffs, fmt.Sprintf("overview devices by class %v, ListDevices says %v", shown.Class, want))
	}
	top, err := medmeshv1.NewRiskServiceClient(conn).Top(ctx, &medmeshv1.TopRequest{N: 1000})
	if err != nil {
		b.t.Fatal(err)
	}
	bands := map[string]int{"critical": 0, "high": 0, "medium": 0, "low": 0}
	for _, p := range top.GetPostures() {
		bands[compliance.PostureBand(p.GetScore().GetScore())]++
	}
	wantBands := map[string]string{"none": fmt.Sprint(int(all.GetTotalSize()) - len(top.GetPostures()))}
	for k, n := range bands {
		wantBands[k] = fmt.Sprint(n)
	}
	if len(top.GetPostures()) < 1000 && fmt.Sprint(shown.Band) != fmt.Sprint(wantBands) {
		diffs = append(diffs, fmt.Sprintf("overview devices by posture band %v, RiskService.Top says %v", shown.Band, wantBands))
	}
	if len(diffs) == 0 {
		b.t.Logf("overview: %d classes and posture bands %v agree with ListDevices and Top", len(want), wantBands)
	}
	return diffs
}

package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// JSON is the report as protojson, the form every number in the HTML
// comes from.
func JSON(r *medmeshv1.ComplianceReport) ([]byte, error) {
	return protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(r)
}

// Summary is the figures the HTML shows, named so that a test can compare
// them with the JSON report (data-figure attributes in the page).
func Summary(r *medmeshv1.ComplianceReport) map[string]string {
	p := Point(r, r.GetExceptions(), r.GetGenerateTime().AsTime())
	return map[string]string{
		"raft-index":             fmt.Sprint(r.GetRaftIndex()),
		"devices":                fmt.Sprint(r.GetCoverage().GetDevices()),
		"controls-met":           fmt.Sprint(r.GetControlsMet()),
		"controls-unmet":         fmt.Sprint(r.GetControlsUnmet()),
		"controls-not-evidenced": fmt.Sprint(r.GetControlsNotEvidenced()),
		"posture-critical":       fmt.Sprint(p.PostureCritical),
		"posture-high":           fmt.Sprint(p.PostureHigh),
		"posture-medium":         fmt.Sprint(p.PostureMedium),
		"posture-low":            fmt.Sprint(p.PostureLow),
		"posture-none":           fmt.Sprint(p.PostureNone),
		"campus-risk":            fmt.Sprintf("%.0f", r.GetPlan().GetCampusRisk()),
		"actions":                fmt.Sprint(len(r.GetPlan().GetActions())),
		"excepted-actions":       fmt.Sprint(len(r.GetExceptedActions())),
		"exceptions-active":      fmt.Sprint(p.ExceptionsActive),
		"trend-days":             fmt.Sprint(len(r.GetTrend())),
	}
}

type bar struct {
	Label string
	Value float64
	Color string
}

// barChart draws labelled horizontal bars as inline SVG.
func barChart(title string, bars []bar) template.HTML {
	const w, rowH, labelW = 520, 24, 150
	maxV := 0.0
	for _, b := range bars {
		maxV = max(maxV, b.Value)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">`, template.HTMLEscapeString(title), w, rowH*len(bars)+8, w, rowH*len(bars)+8)
	for i, b := range bars {
		y := 4 + i*rowH
		bw := 0.0
		if maxV > 0 {
			bw = (w - labelW - 60) * b.Value / maxV
		}
		fmt.Fprintf(&sb, `<text x="0" y="%d" font-size="12" dominant-baseline="middle">%s</text>`, y+rowH/2, template.HTMLEscapeString(b.Label))
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelW, y+3, bw, rowH-6, b.Color)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d" font-size="12" dominant-baseline="middle">%g</text>`, float64(labelW)+bw+6, y+rowH/2, b.Value)
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

// lineChart draws the trend's series over days as inline SVG.
func lineChart(title string, days []string, series map[string][]float64, colors map[string]string, order []string) template.HTML {
	const w, h, padL, padB = 560, 200, 40, 30
	maxV := 1.0
	for _, s := range series {
		for _, v := range s {
			maxV = max(maxV, v)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">`, template.HTMLEscapeString(title), w, h+20, w, h+20)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/><line x1="%d" y1="4" x2="%d" y2="%d" stroke="#888"/>`, padL, h-padB, w-4, h-padB, padL, padL, h-padB)
	fmt.Fprintf(&sb, `<text x="0" y="10" font-size="11">%g</text><text x="0" y="%d" font-size="11">0</text>`, maxV, h-padB)
	x := func(i int) float64 {
		if len(days) < 2 {
			return padL + 10
		}
		return padL + 10 + float64(i)*float64(w-padL-24)/float64(len(days)-1)
	}
	y := func(v float64) float64 { return float64(h-padB) - v*float64(h-padB-8)/maxV }
	if len(days) > 0 {
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11">%s</text>`, padL, h-padB+16, days[0])
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>`, w-4, h-padB+16, days[len(days)-1])
	}
	for k, name := range order {
		s := series[name]
		var pts []string
		for i, v := range s {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, colors[name], strings.Join(pts, " "))
		for i, v := range s {
			fmt.Fprintf(&sb, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, x(i), y(v), colors[name])
		}
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`, padL+k*130, h+4, colors[name], padL+k*130+14, h+13, template.HTMLEscapeString(name))
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

var pageTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"ts": func(t interface {
		AsTime() time.Time
		IsValid() bool
	}) string {
		if t == nil || !t.IsValid() {
			return "none"
		}
		return t.AsTime().UTC().Format("2006-01-02 15:04 UTC")
	},
	"lower": func(s fmt.Stringer) string {
		v := s.String()
		if i := strings.LastIndex(v, "_"); i >= 0 {
			for _, p := range []string{"TIER_", "CONTROL_STATUS_", "EXCEPTION_STATE_", "EXCEPTION_TARGET_KIND_", "REMEDIATION_KIND_", "COMPLIANCE_FRAMEWORK_"} {
				if strings.HasPrefix(v, p) {
					v = v[len(p):]
				}
			}
		}
		return strings.ToLower(strings.ReplaceAll(v, "_", " "))
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medmesh compliance report</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#1b1f24;max-width:1100px}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}th,td{border:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa}.meta{color:#57606a;font-size:.9em}.figures{display:flex;flex-wrap:wrap;gap:1em}
.fig{border:1px solid #d0d7de;border-radius:6px;padding:.5em 1em;min-width:8em}.fig b{display:block;font-size:1.5em}
.charts{display:flex;flex-wrap:wrap;gap:2em}.unmet{color:#a40e26}.met{color:#1a7f37}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,tr,svg,.fig{break-inside:avoid}a{color:inherit;text-decoration:none}}
</style></head><body>
<h1>medmesh compliance report</h1>
<p class="meta">Framework: <span id="framework">{{if eq (printf "%d" .R.Framework) "0"}}all frameworks{{else}}{{lower .R.Framework}}{{end}}</span>.
Generated {{ts .R.GenerateTime}} at Raft index <span data-figure="raft-index">{{.R.RaftIndex}}</span>.
Intelligence bundle: {{if .R.BundleDigest}}dated {{ts .R.BundleDate}}, sha256 {{.R.BundleDigest}}{{else}}none active{{end}}.</p>

<h2>Campus summary</h2>
<div class="figures">
<div class="fig">Devices<b data-figure="devices">{{index .S "devices"}}</b></div>
<div class="fig">Controls met<b class="met" data-figure="controls-met">{{index .S "controls-met"}}</b></div>
<div class="fig">Controls unmet<b class="unmet" data-figure="controls-unmet">{{index .S "controls-unmet"}}</b></div>
<div class="fig">Not evidenced<b data-figure="controls-not-evidenced">{{index .S "controls-not-evidenced"}}</b></div>
<div class="fig">Campus risk<b data-figure="campus-risk">{{index .S "campus-risk"}}</b></div>
<div class="fig">Plan actions<b data-figure="actions">{{index .S "actions"}}</b></div>
<div class="fig">Exceptions in force<b data-figure="exceptions-active">{{index .S "exceptions-active"}}</b></div>
</div>
{{with .R.Coverage}}<p>Coverage: {{.Devices}} devices, {{.Classified}} classified, {{.Identified}} identified, {{.Assessed}} assessed against a bundle, {{.WithMds2}} with an MDS2, {{.Observed}} observed by a sensor.</p>{{end}}

<div class="charts">
<figure><figcaption>Posture distribution</figcaption>{{.PostureChart}}
<span hidden data-figure="posture-critical">{{index .S "posture-critical"}}</span><span hidden data-figure="posture-high">{{index .S "posture-high"}}</span><span hidden data-figure="posture-medium">{{index .S "posture-medium"}}</span><span hidden data-figure="posture-low">{{index .S "posture-low"}}</span><span hidden data-figure="posture-none">{{index .S "posture-none"}}</span></figure>
<figure><figcaption>Controls</figcaption>{{.ControlChart}}</figure>
</div>
<figure><figcaption>Risk and controls over time: <span data-figure="trend-days">{{index .S "trend-days"}}</span> day(s) recorded (one point a day, its latest state; 90 days kept)</figcaption>{{if .R.Trend}}{{.TrendChart}}{{else}}<p>No trend recorded yet: the leader records one point a day.</p>{{end}}</figure>

{{if .DeviceCounts}}<h2>Devices by tier and posture</h2>
<table><tr><th>Tier</th><th>Posture</th><th>Devices</th></tr>{{range .DeviceCounts}}<tr><td>{{lower .Tier}}</td><td>{{.Posture}}</td><td>{{.Devices}}</td></tr>{{end}}</table>{{end}}

{{if .R.Controls}}<h2>Controls</h2>
<table><tr><th>Control</th><th>Citation</th><th>Status</th><th>Met</th><th>Unmet</th><th>Not evidenced</th></tr>
{{range .R.Controls}}<tr><td>{{.Control.Title}}{{if .Control.Proposed}} (proposed){{end}}</td><td>{{.Control.Citation}}</td><td>{{lower .Status}}</td><td>{{.Met}}</td><td>{{.Unmet}}</td><td>{{.NotEvidenced}}</td></tr>{{end}}</table>{{end}}

<h2>Remediation plan</h2>
{{if .R.Plan.Method}}<p>{{.R.Plan.Method}}</p>{{end}}
{{if .R.Plan.Actions}}<table><tr><th>#</th><th>Action</th><th>Devices</th><th>Effort</th><th>Risk drop</th><th>Why here</th></tr>
{{range .R.Plan.Actions}}<tr><td>{{.Rank}}</td><td>{{.Title}}<br><small>{{.Id}}</small></td><td>{{len .DeviceMacs}}</td><td>{{.Effort}}</td><td>{{printf "%.0f" .ExpectedRiskDrop}}</td><td>{{.Explanation}}</td></tr>{{end}}</table>{{else}}<p>No open action.</p>{{end}}
<p>Actions left out of the plan by an exception in force: <span data-figure="excepted-actions">{{index .S "excepted-actions"}}</span>{{range $i, $a := .R.ExceptedActions}}{{if $i}},{{else}}:{{end}} {{$a.Id}}{{end}}.{{if .R.ExceptedFindings}} Findings accepted: {{range $i, $f := .R.ExceptedFindings}}{{if $i}}, {{end}}{{$f}}{{end}}.{{end}}</p>

<h2>Risk exceptions</h2>
{{if .R.Exceptions}}<table><tr><th>Id</th><th>Accepts</th><th>Owner</th><th>Reason</th><th>Accepted</th><th>Expires</th><th>State</th></tr>
{{range .R.Exceptions}}<tr><td>{{.Id}}</td><td>{{lower .TargetKind}} {{.Target}}</td><td>{{.Owner}}</td><td>{{.Reason}}</td><td>{{.AcceptedBy}}, {{ts .AcceptTime}}</td><td>{{ts .ExpireTime}}</td><td>{{lower .State}}{{if .EndedBy}} ({{.EndedBy}}, {{ts .EndTime}}){{end}}</td></tr>{{end}}</table>{{else}}<p>No exception.</p>{{end}}

{{if .R.Devices}}<h2>Per-device evidence</h2>
<table><tr><th>Device</th><th>Class / tier</th><th>Model</th><th>Risk</th><th>Results</th></tr>
{{range .R.Devices}}<tr><td>{{.DeviceMac}}{{if .Hostname}}<br>{{.Hostname}}{{end}}</td><td>{{lower .Class}} / {{lower .Tier}}</td><td>{{.Vendor}} {{.Model}} {{.Version}}</td><td>{{.RiskScore}} ({{.Posture}})</td><td>{{range .Results}}<div><b>{{.ControlId}}</b>: {{lower .Status}}{{range .Evidence}}<br><small>{{.Text}} [{{.Source}}]</small>{{end}}</div>{{end}}</td></tr>{{end}}</table>{{end}}
</body></html>
`))

// HTML renders the report as one self-contained page: inline CSS and SVG,
// no script, no external asset; it prints on A4 and Letter.
func HTML(w io.Writer, r *medmeshv1.ComplianceReport) error {
	s := Summary(r)
	p := Point(r, r.GetExceptions(), r.GetGenerateTime().AsTime())
	posture := barChart("devices by posture", []bar{
		{"critical", float64(p.PostureCritical), "#a40e26"}, {"high", float64(p.PostureHigh), "#d1242f"},
		{"medium", float64(p.PostureMedium), "#bf8700"}, {"low", float64(p.PostureLow), "#0969da"}, {"none", float64(p.PostureNone), "#1a7f37"},
	})
	controls := barChart("controls by status", []bar{
		{"met", float64(r.GetControlsMet()), "#1a7f37"}, {"unmet", float64(r.GetControlsUnmet()), "#a40e26"}, {"not evidenced", float64(r.GetControlsNotEvidenced()), "#8c959f"},
	})
	var days []string
	series := map[string][]float64{}
	for _, t := range r.GetTrend() {
		days = append(days, t.GetDay())
		series["campus risk"] = append(series["campus risk"], t.GetCampusRisk())
		series["controls met"] = append(series["controls met"], float64(t.GetControlsMet()))
		series["controls unmet"] = append(series["controls unmet"], float64(t.GetControlsUnmet()))
	}
	trend := lineChart("risk and controls over time", days, series,
		map[string]string{"campus risk": "#d1242f", "controls met": "#1a7f37", "controls unmet": "#8250df"},
		[]string{"campus risk", "controls met", "controls unmet"})
	var buf bytes.Buffer
	err := pageTmpl.Execute(&buf, map[string]any{
		"R": r, "S": s, "PostureChart": posture, "ControlChart": controls, "TrendChart": trend, "DeviceCounts": r.GetDeviceCounts(),
	})
	if err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// ErrNoChromium: PDF output needs headless Chromium.
var ErrNoChromium = errors.New("PDF output needs headless Chromium (Debian package chromium: apt-get install chromium); --format html writes the same report, which prints to PDF from any browser")

// ChromiumPath is the Chromium binary on PATH, or "".
func ChromiumPath() string {
	p, err := exec.LookPath("chromium")
	if err != nil {
		return ""
	}
	return p
}

// PDF renders the report's HTML to PDF with headless Chromium's
// --print-to-pdf, into out.
func PDF(ctx context.Context, r *medmeshv1.ComplianceReport, out string) error {
	bin := ChromiumPath()
	if bin == "" {
		return ErrNoChromium
	}
	dir, err := os.MkdirTemp("", "medmesh-report-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	page := filepath.Join(dir, "report.html")
	f, err := os.Create(page)
	if err != nil {
		return err
	}
	if err := HTML(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--print-to-pdf="+abs, "file://"+page)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chromium --print-to-pdf: %v: %s", err, bytes.TrimSpace(b))
	}
	if st, err := os.Stat(abs); err != nil || st.Size() == 0 {
		return fmt.Errorf("chromium wrote no PDF to %s", abs)
	}
	return nil
}

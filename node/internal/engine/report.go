package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/detect"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Field is a named value a detector extracted.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Detection is one detector finding: the flow, the application protocol
// and the named fields. Logins appear as "PROTOCOL user NAME (what was
// found, outcome)"; their passwords are never kept.
type Detection struct {
	TimeNs int64    `json:"time_ns"`
	Src    string   `json:"src"`
	Dst    string   `json:"dst"`
	Sport  uint16   `json:"sport"`
	Dport  uint16   `json:"dport"`
	Proto  uint8    `json:"proto"`
	App    string   `json:"app"`
	Fields []Field  `json:"fields,omitempty"`
	Logins []string `json:"logins,omitempty"`
}

// AppCount is how many flows each application protocol was detected in.
type AppCount struct {
	App   string `json:"app"`
	Flows uint64 `json:"flows"`
}

// countApp counts one more flow in which app was detected.
func (e *Engine) countApp(app string) {
	e.detCounts[app]++
	e.metrics.detections.WithLabelValues(app).Inc()
}

// firstSeen reports whether k is new, remembering it while the set is
// below its bound (past it, duplicates are no longer suppressed).
func (e *Engine) firstSeen(k detKey) bool {
	if _, ok := e.detSeen[k]; ok {
		return false
	}
	if len(e.detSeen) < 8*e.cfg.MaxDetections {
		e.detSeen[k] = struct{}{}
	}
	return true
}

// record keeps a detection's new named fields. Secrets never leave det.
func (e *Engine) record(timeNs int64, t flow.Tuple, det *detect.Detection) {
	if len(e.dets) >= e.cfg.MaxDetections {
		return
	}
	var fresh []Field
	for _, f := range det.Fields {
		if e.firstSeen(detKey{flow: t, name: f.Name, value: f.Value}) {
			fresh = append(fresh, Field{Name: f.Name, Value: f.Value})
		}
	}
	var logins []string
	for _, c := range det.Logins {
		if l := c.String(); e.firstSeen(detKey{flow: t, name: "login", value: l}) {
			logins = append(logins, l)
		}
	}
	if len(fresh) == 0 && len(logins) == 0 {
		return
	}
	e.dets = append(e.dets, Detection{
		TimeNs: timeNs, Src: t.Src.String(), Dst: t.Dst.String(), Sport: t.SrcPort, Dport: t.DstPort,
		Proto: t.Proto, App: det.App, Fields: fresh, Logins: logins,
	})
}

// Detections returns the detector findings with new named fields, in
// order, and the number of flows per application protocol.
func (e *Engine) Detections() ([]Detection, []AppCount) {
	e.mu.Lock()
	defer e.mu.Unlock()
	counts := make([]AppCount, 0, len(e.detCounts))
	for app, n := range e.detCounts {
		counts = append(counts, AppCount{App: app, Flows: n})
	}
	slices.SortFunc(counts, func(a, b AppCount) int { return strings.Compare(a.App, b.App) })
	return slices.Clone(e.dets), counts
}

// Report is what `medmesh replay --report` prints: the devices found, the
// detections and the alerts.
type Report struct {
	Sensor     string
	Mode       string
	Devices    []*medmeshv1.Device
	Apps       []AppCount
	Detections []Detection
	Alerts     []*medmeshv1.Alert
}

// Report snapshots the engine's findings.
func (e *Engine) Report() *Report {
	dets, apps := e.Detections()
	e.mu.Lock()
	mode := e.mode.String()
	e.mu.Unlock()
	return &Report{
		Sensor: e.cfg.SensorID, Mode: mode,
		Devices: e.Devices(), Apps: apps, Detections: dets, Alerts: e.Alerts(),
	}
}

// WriteJSON writes the report as one JSON document. Output is
// deterministic for the same input.
func (r *Report) WriteJSON(w io.Writer) error {
	msgs := func(list []proto.Message) ([]json.RawMessage, error) {
		out := make([]json.RawMessage, 0, len(list))
		for _, m := range list {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				return nil, err
			}
			var c bytes.Buffer
			if err := json.Compact(&c, b); err != nil {
				return nil, err
			}
			out = append(out, c.Bytes())
		}
		return out, nil
	}
	devs, err := msgs(toMsgs(r.Devices))
	if err != nil {
		return fmt.Errorf("marshal devices: %w", err)
	}
	alerts, err := msgs(toMsgs(r.Alerts))
	if err != nil {
		return fmt.Errorf("marshal alerts: %w", err)
	}
	doc := struct {
		Sensor     string            `json:"sensor"`
		Mode       string            `json:"mode"`
		Devices    []json.RawMessage `json:"devices"`
		Apps       []AppCount        `json:"apps"`
		Detections []Detection       `json:"detections"`
		Alerts     []json.RawMessage `json:"alerts"`
	}{r.Sensor, r.Mode, devs, r.Apps, r.Detections, alerts}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func toMsgs[T proto.Message](list []T) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

// WriteTable writes the report as aligned text tables for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	p("DEVICES (%d)\n", len(r.Devices))
	p("DEVICE\tIPS\tVENDOR\tMODEL\tFIRMWARE\tCLASS\tCONF\tTIER\tPROTOCOLS\tIDENTIFIERS\tRISK\n")
	for _, d := range r.Devices {
		p("%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%d\n", d.GetMac(), strings.Join(d.GetIpAddresses(), ","), dash(d.GetVendor()),
			dash(d.GetModel()), dash(d.GetFirmware()),
			dash(names.Enum(d.GetDeviceClass())), d.GetClassConfidence(), dash(names.Enum(d.GetTier())),
			dash(strings.Join(d.GetProtocols(), ",")), dash(identifiers(d.GetIdentifiers(), d.GetHostname())), d.GetRisk().GetScore())
		for _, ev := range d.GetClassEvidence() {
			p("\t\t\t\t\t  evidence\t%.2f\t\t\t\t%s: %s\n", ev.GetWeight(), ev.GetSource(), ev.GetDetail())
		}
	}
	p("\nDETECTIONS\n")
	p("APP\tFLOWS\n")
	for _, a := range r.Apps {
		p("%s\t%d\n", a.App, a.Flows)
	}
	p("\nTIME\tFLOW\tAPP\tFIELDS\n")
	for _, d := range r.Detections {
		var parts []string
		for _, f := range d.Fields {
			parts = append(parts, f.Name+"="+f.Value)
		}
		parts = append(parts, d.Logins...)
		p("%s\t%s:%d -> %s:%d/%s\t%s\t%s\n", stamp(d.TimeNs), d.Src, d.Sport, d.Dst, d.Dport, names.Protocol(uint32(d.Proto)), dash(d.App), strings.Join(parts, "; "))
	}
	p("\nALERTS (%d)\n", len(r.Alerts))
	p("ID\tTIME\tDEVICE\tKIND\tSCORE\tTIER\tSUMMARY\n")
	for _, a := range r.Alerts {
		p("%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.GetId(), a.GetDetectTime().AsTime().Format(time.RFC3339Nano), a.GetDeviceMac(), a.GetKind(),
			a.GetRisk().GetScore(), dash(names.Enum(a.GetTier())), a.GetSummary())
		for _, f := range a.GetRisk().GetFactors() {
			p("\t\t\t  %s\t+%.0f\t\t%s\n", f.GetName(), f.GetWeight(), f.GetDetail())
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func identifiers(ids *medmeshv1.Identifiers, host string) string {
	var parts []string
	add := func(k string, vs ...string) {
		for _, v := range vs {
			if v != "" {
				parts = append(parts, k+"="+v)
			}
		}
	}
	add("host", host)
	add("dhcp.vendor", ids.GetDhcpVendorClass())
	add("ae", ids.GetDicomAeTitles()...)
	add("hl7.app", ids.GetHl7SendingApplications()...)
	add("udi", ids.GetHl7Udis()...)
	add("name", ids.GetFriendlyNames()...)
	add("hl7.software", ids.GetHl7Software()...)
	add("snmp.name", ids.GetSnmpSysName())
	add("http.server", ids.GetHttpServers()...)
	add("ssdp.server", ids.GetSsdpServers()...)
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(ns int64) string { return time.Unix(0, ns).UTC().Format("15:04:05.000000") }

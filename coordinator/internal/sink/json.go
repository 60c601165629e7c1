package sink

import (
	"encoding/json"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/internal/names"
)

// OCSF schema version the events follow.
const ocsfVersion = "1.3.0"

// OCSF renders an event as one OCSF JSON object: an alert as a Detection
// Finding (class 2004, category Findings), a risk finding as a
// Vulnerability Finding (class 2002, category Findings), an audit record as an API
// Activity (class 6003, category Application Activity): who called which
// operation on which resource.
func OCSF(e Event, host, version string) ([]byte, error) {
	t := e.Time().UnixMilli()
	sev := ocsfSeverity(e.score())
	meta := map[string]any{
		"version":     ocsfVersion,
		"uid":         e.ID,
		"product":     map[string]any{"name": "medmesh", "vendor_name": "medmesh", "version": version},
		"logged_time": t,
		"log_name":    e.Kind(),
		"sequence":    e.Index(),
	}
	if a := e.Alert; a != nil {
		title := a.GetSummary()
		if title == "" {
			title = a.GetKind()
		}
		ev := map[string]any{
			"class_uid": 2004, "class_name": "Detection Finding",
			"category_uid": 2, "category_name": "Findings",
			"activity_id": 1, "activity_name": "Create", "type_uid": 200401,
			"time": t, "severity_id": sev, "severity": ocsfSeverityName(sev),
			"status_id": 1, "status": "New", "is_alert": true,
			"message":  title,
			"metadata": meta,
			"finding_info": map[string]any{
				"uid": a.GetId(), "title": title, "types": []string{a.GetKind()},
				"created_time": t, "desc": a.GetSummary(),
			},
			"risk_score": a.GetRisk().GetScore(),
			"device": map[string]any{
				"mac": a.GetDeviceMac(), "type_id": 99, "type": names.Enum(a.GetDeviceClass()), "hostname": host,
			},
			"unmapped": map[string]any{
				"sensor_id": a.GetSensorId(), "tier": names.Enum(a.GetTier()), "incident_id": a.GetIncidentId(),
			},
		}
		if f := a.GetFlow(); f != nil {
			ev["evidences"] = []any{map[string]any{
				"src_endpoint":    map[string]any{"ip": f.GetSrc(), "port": f.GetSport()},
				"dst_endpoint":    map[string]any{"ip": f.GetDst(), "port": f.GetDport(), "hostname": a.GetPeerName()},
				"connection_info": map[string]any{"protocol_num": f.GetProto(), "protocol_name": strings.ToLower(protoName(f.GetProto()))},
			}}
		}
		return json.Marshal(ev)
	}
	if e.Posture != nil {
		return json.Marshal(ocsfFinding(e, t, sev, meta, host))
	}
	r := e.Audit
	act, actName := 99, "Other"
	switch {
	case strings.HasSuffix(r.GetAction(), ".create"):
		act, actName = 1, "Create"
	case strings.HasSuffix(r.GetAction(), ".put"), strings.HasSuffix(r.GetAction(), ".update"),
		strings.HasSuffix(r.GetAction(), ".activate"), strings.HasSuffix(r.GetAction(), ".approve"),
		strings.HasSuffix(r.GetAction(), ".reject"), strings.HasSuffix(r.GetAction(), ".ack"):
		act, actName = 3, "Update"
	case strings.HasSuffix(r.GetAction(), ".delete"):
		act, actName = 4, "Delete"
	}
	ev := map[string]any{
		"class_uid": 6003, "class_name": "API Activity",
		"category_uid": 6, "category_name": "Application Activity",
		"activity_id": act, "activity_name": actName, "type_uid": 600300 + act,
		"time": t, "severity_id": sev, "severity": ocsfSeverityName(sev),
		"status_id": 1, "status": "Success",
		"message":  r.GetReason(),
		"metadata": meta,
		"actor":    map[string]any{"user": map[string]any{"name": r.GetActor()}},
		"api": map[string]any{
			"operation": r.GetAction(),
			"request":   map[string]any{"uid": r.GetRequestId()},
			"service":   map[string]any{"name": "medmesh"},
		},
		"resources":    []any{map[string]any{"uid": r.GetResource(), "type": strings.SplitN(r.GetResource(), "/", 2)[0]}},
		"src_endpoint": map[string]any{"hostname": host},
		"unmapped":     map[string]any{"rule": r.GetRule(), "alert_id": r.GetAlertId(), "comment": r.GetComment(), "audit_seq": e.Seq},
	}
	return json.Marshal(ev)
}

// ocsfFinding is a risk finding as an OCSF 1.3.0 Vulnerability Finding
// (class 2002): finding_info names the finding, vulnerabilities carries
// it (cve.uid for a CVE, with its CVSS and EPSS), resources and device the
// device it is on. Findings that are not CVEs (default credentials, end of
// life, recalls, observed behaviour) are vulnerabilities without a cve.
// A VEX-suppressed finding has status Suppressed.
func ocsfFinding(e Event, t int64, sev int, meta map[string]any, host string) map[string]any {
	p, f := e.Posture, e.Finding
	title := f.GetSummary()
	if title == "" {
		title = f.GetKind() + " " + f.GetId()
	}
	vuln := map[string]any{"title": title, "desc": f.GetSummary(), "severity": ocsfSeverityName(sev)}
	if strings.HasPrefix(f.GetId(), "CVE-") {
		cve := map[string]any{"uid": f.GetId()}
		if f.GetCvss() > 0 {
			cvss := map[string]any{"base_score": f.GetCvss()}
			if v := f.GetCvssVector(); v != "" {
				cvss["vector_string"] = v
				if strings.HasPrefix(v, "CVSS:") {
					cvss["version"] = strings.TrimPrefix(strings.SplitN(v, "/", 2)[0], "CVSS:")
				}
			}
			cve["cvss"] = []any{cvss}
		}
		if f.GetEpss() > 0 {
			cve["epss"] = map[string]any{"score": strconv.FormatFloat(f.GetEpss(), 'f', -1, 64)}
		}
		vuln["cve"] = cve
	}
	if r := f.GetRemediation(); r != "" {
		vuln["remediation"] = map[string]any{"desc": r}
	}
	if c := f.GetComponent(); c != "" {
		pkg := map[string]any{"name": c, "purl": c}
		if v := f.GetFixedVersion(); v != "" {
			pkg["fixed_in_version"] = v
		}
		vuln["affected_packages"] = []any{pkg}
	}
	if f.GetFixedVersion() != "" {
		vuln["fix_available"] = true
	}
	statusID, status := 1, "New"
	if f.GetSuppressed() != "" {
		statusID, status = 3, "Suppressed"
	}
	dev := map[string]any{"mac": p.GetDeviceMac(), "type_id": 99, "type": "Medical device"}
	if h := p.GetHostname(); h != "" {
		dev["hostname"] = h
	}
	if len(e.IPs) > 0 {
		dev["ip"] = e.IPs[0]
	}
	return map[string]any{
		"class_uid": 2002, "class_name": "Vulnerability Finding",
		"category_uid": 2, "category_name": "Findings",
		"activity_id": 1, "activity_name": "Create", "type_uid": 200201,
		"time": t, "severity_id": sev, "severity": ocsfSeverityName(sev),
		"status_id": statusID, "status": status,
		"message":  title,
		"metadata": meta,
		"finding_info": map[string]any{
			"uid": e.ID, "title": title, "types": []string{f.GetKind()}, "desc": f.GetSummary(),
			"created_time": t,
		},
		"vulnerabilities": []any{vuln},
		"resources":       []any{map[string]any{"uid": p.GetDeviceMac(), "type": "Device", "name": p.GetHostname()}},
		"device":          dev,
		"unmapped": map[string]any{
			"finding_id": f.GetId(), "source": f.GetSource(), "confidence": f.GetConfidence(), "kev": f.GetKev(),
			"tier": names.Enum(p.GetTier()), "device_score": p.GetScore().GetScore(), "posture_index": p.GetIndex(),
			"account": f.GetAccount(), "protocol": f.GetProtocol(), "recall_number": f.GetRecallNumber(),
			"eol_date": f.GetEolDate(), "suppressed": f.GetSuppressed(), "coordinator": host,
		},
	}
}

// ocsfSeverity maps a score onto OCSF severity_id: 1 Informational, 2 Low,
// 3 Medium, 4 High, 5 Critical.
func ocsfSeverity(score uint32) int {
	switch {
	case score >= 90:
		return 5
	case score >= 70:
		return 4
	case score >= 40:
		return 3
	case score >= 20:
		return 2
	}
	return 1
}

func ocsfSeverityName(id int) string {
	return [...]string{"Unknown", "Informational", "Low", "Medium", "High", "Critical"}[id]
}

// JSON renders medmesh's own webhook body: the event id and kind, and the
// alert or audit record in the API's JSON form.
func JSON(e Event, host string) ([]byte, error) {
	m := map[string]any{"id": e.ID, "kind": e.Kind(), "index": e.Index(), "coordinator": host, "time": e.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	var err error
	var raw []byte
	switch {
	case e.Alert != nil:
		raw, err = protojson.Marshal(e.Alert)
	case e.Posture != nil:
		// The finding, and its posture without the other findings.
		raw, err = protojson.Marshal(e.Finding)
		if err == nil {
			p := proto.CloneOf(e.Posture)
			p.Findings = nil
			var praw []byte
			if praw, err = protojson.Marshal(p); err == nil {
				m["posture"] = json.RawMessage(praw)
				m["ip_addresses"] = e.IPs
			}
		}
	default:
		raw, err = protojson.Marshal(e.Audit)
	}
	if err != nil {
		return nil, err
	}
	m[e.Kind()] = json.RawMessage(raw)
	return json.Marshal(m)
}

// ServiceNow renders one Import Set API row (POST
// /api/now/import/{staging_table}): flat u_ columns, u_correlation_id the
// event id, which a transform map coalesces on so a retried row updates
// the record it created instead of making a second one.
func ServiceNow(e Event, host string) ([]byte, error) {
	row := map[string]any{
		"u_correlation_id": e.ID,
		"u_source":         "medmesh",
		"u_kind":           e.Kind(),
		"u_coordinator":    host,
		"u_raft_index":     strconv.FormatUint(e.Index(), 10),
		"u_time":           e.Time().UTC().Format("2006-01-02 15:04:05"),
		"u_severity":       strconv.Itoa(snowSeverity(e.score())),
	}
	if a := e.Alert; a != nil {
		row["u_short_description"] = "medmesh " + a.GetKind() + " on " + a.GetDeviceMac()
		row["u_description"] = a.GetSummary()
		row["u_category"] = a.GetKind()
		row["u_device_mac"] = a.GetDeviceMac()
		row["u_device_class"] = names.Enum(a.GetDeviceClass())
		row["u_tier"] = names.Enum(a.GetTier())
		row["u_risk_score"] = strconv.FormatUint(uint64(a.GetRisk().GetScore()), 10)
		row["u_incident_id"] = a.GetIncidentId()
		if f := a.GetFlow(); f != nil {
			row["u_src"], row["u_dst"], row["u_dport"] = f.GetSrc(), f.GetDst(), strconv.FormatUint(uint64(f.GetDport()), 10)
		}
	} else if p, f := e.Posture, e.Finding; p != nil {
		row["u_short_description"] = "medmesh " + f.GetKind() + " " + f.GetId() + " on " + p.GetDeviceMac()
		row["u_description"] = f.GetSummary()
		row["u_category"] = "finding:" + f.GetKind()
		row["u_device_mac"] = p.GetDeviceMac()
		row["u_tier"] = names.Enum(p.GetTier())
		row["u_risk_score"] = strconv.FormatUint(uint64(p.GetScore().GetScore()), 10)
		row["u_finding_id"] = f.GetId()
		row["u_advisory"] = f.GetSource()
		row["u_remediation"] = f.GetRemediation()
	} else {
		r := e.Audit
		row["u_short_description"] = "medmesh " + r.GetAction() + " " + r.GetResource()
		row["u_description"] = r.GetReason()
		row["u_category"] = r.GetAction()
		row["u_actor"] = r.GetActor()
		row["u_resource"] = r.GetResource()
	}
	return json.Marshal(row)
}

// snowSeverity is ServiceNow's 1 (critical) to 5 (info).
func snowSeverity(score uint32) int {
	switch {
	case score >= 90:
		return 1
	case score >= 70:
		return 2
	case score >= 40:
		return 3
	case score >= 20:
		return 4
	}
	return 5
}

package sink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var t0 = time.Date(2026, 12, 5, 5, 20, 1, 123456000, time.UTC)

func testAlert() *medmeshv1.Alert {
	return &medmeshv1.Alert{Id: "s-icu/42", SensorId: "s-icu", DeviceMac: "00:1b:44:11:3a:b7", Kind: "default_credentials",
		Summary: "default credentials accepted", Risk: &medmeshv1.RiskScore{Score: 92}, Index: 1234, CreateTime: timestamppb.New(t0),
		Flow: &medmeshv1.FlowRef{Src: "10.1.0.20", Dst: "10.9.9.9", Dport: 23, Proto: 6}, IncidentId: "inc-1",
		DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL}
}

// get walks a decoded JSON object by a dotted path.
func get(m map[string]any, path string) any {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = o[k]
	}
	return cur
}

// TestOCSFRequiredAttributes checks the attributes the OCSF schema marks
// required for the base event (activity_id, category_uid, class_uid,
// metadata with product.vendor_name and version, severity_id, time,
// type_uid = class_uid*100 + activity_id), for a Finding (finding_info with
// uid and title) and for an API Activity (actor, api.operation,
// src_endpoint).
func TestOCSFRequiredAttributes(t *testing.T) {
	b, err := OCSF(AlertEvent(testAlert(), 7), "c1", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"class_uid": 2004.0, "category_uid": 2.0, "activity_id": 1.0, "type_uid": 200401.0, "severity_id": 5.0,
		"time": float64(t0.UnixMilli()), "metadata.version": ocsfVersion, "metadata.product.vendor_name": "medmesh",
		"metadata.uid": "alert/s-icu/42", "finding_info.uid": "s-icu/42", "finding_info.title": "default credentials accepted",
		"device.mac": "00:1b:44:11:3a:b7", "is_alert": true,
	} {
		if got := get(m, path); got != want {
			t.Errorf("detection finding %s = %v, want %v", path, got, want)
		}
	}
	ev := get(m, "evidences").([]any)[0].(map[string]any)
	if get(ev, "dst_endpoint.port") != 23.0 || get(ev, "connection_info.protocol_num") != 6.0 {
		t.Errorf("evidence %v", ev)
	}
	r := &medmeshv1.AuditRecord{Index: 9, Time: timestamppb.New(t0), Actor: "approver/carol", Action: "policy.delete", Resource: "policy/p1", Reason: "retire"}
	b, err = OCSF(AuditEvent(r, 12), "c1", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	m = nil
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"class_uid": 6003.0, "category_uid": 6.0, "activity_id": 4.0, "type_uid": 600304.0, "actor.user.name": "approver/carol",
		"api.operation": "policy.delete", "src_endpoint.hostname": "c1", "metadata.uid": "audit/12", "metadata.product.vendor_name": "medmesh",
	} {
		if got := get(m, path); got != want {
			t.Errorf("api activity %s = %v, want %v", path, got, want)
		}
	}
}

func TestSyslogHeaderAndWebhookBodies(t *testing.T) {
	s := &medmeshv1.Sink{Name: "siem", Kind: medmeshv1.SinkKind_SINK_KIND_SYSLOG, Address: "h:1"}
	msg, err := Syslog(s, AlertEvent(testAlert(), 7), "c 1", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	// facility 10, severity crit (score 92): PRI 82; a space in the host
	// name is not PRINTUSASCII.
	if want := "<82>1 2026-12-05T05:20:01.123456Z c_1 medmesh - alert - CEF:0|medmesh|medmesh|1.0|default_credentials|"; !strings.HasPrefix(string(msg), want) {
		t.Fatalf("syslog %q, want prefix %q", msg, want)
	}
	s.Format = medmeshv1.SinkFormat_SINK_FORMAT_OCSF
	if msg, _ = Syslog(s, AlertEvent(testAlert(), 7), "c1", "1.0"); !strings.Contains(string(msg), ` - alert - {"`) {
		t.Fatalf("OCSF over syslog: %q", msg)
	}
	w := &medmeshv1.Sink{Name: "t", Kind: medmeshv1.SinkKind_SINK_KIND_WEBHOOK, Url: "https://h/x"}
	body, _ := WebhookBody(w, AlertEvent(testAlert(), 7), "c1", "1.0")
	var m map[string]any
	json.Unmarshal(body, &m)
	if m["id"] != "alert/s-icu/42" || m["kind"] != "alert" || get(m, "alert.deviceMac") != "00:1b:44:11:3a:b7" {
		t.Errorf("json body %s", body)
	}
	w.Format = medmeshv1.SinkFormat_SINK_FORMAT_SERVICENOW
	body, _ = WebhookBody(w, AlertEvent(testAlert(), 7), "c1", "1.0")
	m = nil
	json.Unmarshal(body, &m)
	if m["u_correlation_id"] != "alert/s-icu/42" || m["u_severity"] != "1" || m["u_tier"] != "life-critical" || m["u_dport"] != "23" {
		t.Errorf("servicenow row %s", body)
	}
	// The signature is HMAC-SHA256 over "TS.BODY".
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte("1700000000.{}"))
	if got := Sign([]byte("k"), 1700000000, []byte("{}")); got != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("Sign = %s", got)
	}
}

func testPosture() *medmeshv1.DevicePosture {
	return &medmeshv1.DevicePosture{DeviceMac: "00:1b:44:11:3a:b7", Score: &medmeshv1.RiskScore{Score: 88}, Index: 321,
		AssessTime: timestamppb.New(t0), Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL, Hostname: "pump-7",
		Findings: []*medmeshv1.Finding{
			{Kind: "vulnerability", Id: "CVE-2020-25165", Source: "ICSMA-20-296-01", Confidence: "exact", Severity: "critical",
				Summary: "Alaris PCU session fixation", Cvss: 9.8, CvssVector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", Epss: 0.12,
				Component: "pkg:generic/bd/alaris-pcu@9.33", FixedVersion: "12.1.2", Remediation: "upgrade"},
			{Kind: "default_credentials", Id: "default-credentials:telnet/admin", Source: "sensor alert s1/7", Confidence: "observed",
				Severity: "high", Summary: "telnet accepted the default account admin", Protocol: "telnet", Account: "admin"},
		}}
}

// TestFindingEvents: a posture is one event per finding with a stable id;
// OCSF renders a Vulnerability Finding (class 2002) with the CVE, CVSS,
// the device as resource; default credentials name account and protocol.
func TestFindingEvents(t *testing.T) {
	p := testPosture()
	evs := PostureEvents(p, []string{"10.1.0.6"})
	if len(evs) != 2 || evs[0].ID != "finding/00:1b:44:11:3a:b7/321/CVE-2020-25165" || evs[0].last || !evs[1].last || evs[1].Kind() != "finding" {
		t.Fatalf("events %+v", evs)
	}
	if e := PostureEvents(&medmeshv1.DevicePosture{DeviceMac: "m", Index: 4}, nil); len(e) != 1 || e[0].Finding != nil || !e[0].last {
		t.Fatalf("empty posture: %+v", e)
	}
	b, err := OCSF(evs[0], "c1", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"class_uid": 2002.0, "category_uid": 2.0, "activity_id": 1.0, "type_uid": 200201.0, "severity_id": 5.0,
		"time": float64(t0.UnixMilli()), "metadata.version": ocsfVersion, "metadata.product.vendor_name": "medmesh",
		"metadata.uid": evs[0].ID, "finding_info.uid": evs[0].ID, "finding_info.title": "Alaris PCU session fixation",
		"device.mac": "00:1b:44:11:3a:b7", "device.ip": "10.1.0.6", "status_id": 1.0,
	} {
		if got := get(m, path); got != want {
			t.Errorf("vulnerability finding %s = %v, want %v", path, got, want)
		}
	}
	v := get(m, "vulnerabilities").([]any)[0].(map[string]any)
	if get(v, "cve.uid") != "CVE-2020-25165" || get(v, "cve.cvss").([]any)[0].(map[string]any)["version"] != "3.1" {
		t.Errorf("vulnerability %v", v)
	}
	if r := get(m, "resources").([]any)[0].(map[string]any); r["uid"] != "00:1b:44:11:3a:b7" {
		t.Errorf("resources %v", r)
	}
	line := CEF(evs[1], "c1", "1.0")
	for _, want := range []string{"|finding:default_credentials|telnet accepted the default account admin|8|", "cs5Label=account cs5=admin", "app=telnet", "smac=00:1b:44:11:3a:b7", "src=10.1.0.6"} {
		if !strings.Contains(line, want) {
			t.Errorf("CEF %q lacks %q", line, want)
		}
	}
	body, _ := WebhookBody(&medmeshv1.Sink{Kind: medmeshv1.SinkKind_SINK_KIND_WEBHOOK}, evs[1], "c1", "1.0")
	m = nil
	json.Unmarshal(body, &m)
	if m["kind"] != "finding" || get(m, "finding.account") != "admin" || get(m, "posture.deviceMac") != "00:1b:44:11:3a:b7" || get(m, "posture.findings") != nil {
		t.Errorf("json body %s", body)
	}
	if strings.Contains(strings.ToLower(string(body)+line), "password") {
		t.Errorf("a finding event mentions a password: %s %s", body, line)
	}
}

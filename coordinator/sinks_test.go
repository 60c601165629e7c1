package coordinator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/coordinator/internal/sink"
	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/internal/testutil/siem"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestCEFEscapingAgainstTheSpecParser: hostile text in every field the
// sink writes survives the trip through the spec's escaping rules.
func TestCEFEscapingAgainstTheSpecParser(t *testing.T) {
	nasty := `a|b\c=d` + "\nline2\r\n= |"
	a := &medmeshv1.Alert{Id: "s1/7", SensorId: "s1", DeviceMac: "00:1b:44:11:3a:b7", Kind: "scan|x\\y", Summary: nasty,
		Risk: &medmeshv1.RiskScore{Score: 87}, Index: 42, Flow: &medmeshv1.FlowRef{Src: "10.1.0.20", Dst: "10.9.9.9", Dport: 445, Proto: 6},
		PeerName: "x=y z=w", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL}
	line := sink.CEF(sink.AlertEvent(a, 7), "c1", "1.2|3")
	ev, err := siem.ParseCEF(line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	want := map[string]string{"externalId": "alert/s1/7", "msg": nasty, "smac": a.DeviceMac, "src": "10.1.0.20", "dst": "10.9.9.9",
		"dpt": "445", "proto": "TCP", "dhost": "x=y z=w", "cn2": "87", "cn2Label": "riskScore", "cn1": "42", "cs1": "infusion-pump", "cs2": "life-critical", "dvchost": "c1"}
	for k, v := range want {
		if ev.Ext[k] != v {
			t.Errorf("%s = %q, want %q", k, ev.Ext[k], v)
		}
	}
	if ev.Version != "0" || ev.Vendor != "medmesh" || ev.DeviceVersion != "1.2|3" || ev.ClassID != "scan|x\\y" || ev.Severity != 9 {
		t.Errorf("header %+v", ev)
	}
	if ev.Name != strings.NewReplacer("\r", " ", "\n", " ").Replace(nasty) {
		t.Errorf("name %q", ev.Name)
	}
	r := &medmeshv1.AuditRecord{Index: 9, Actor: "approver/carol", Action: "policy.put", Resource: "policy/p=1", Reason: "why\\ | =", RequestId: "r-1"}
	ev, err = siem.ParseCEF(sink.CEF(sink.AuditEvent(r, 12), "c2", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Ext["externalId"] != "audit/12" || ev.Ext["suser"] != "approver/carol" || ev.Ext["cs1"] != "policy/p=1" || ev.Ext["msg"] != "why\\ | =" || ev.Ext["act"] != "policy.put" {
		t.Errorf("audit extension %v", ev.Ext)
	}
}

// TestSinkSyslogTLSExactlyOnceAcrossLeaderKill is issue 20's SIEM
// acceptance: a real rsyslogd, TLS on loopback, receives every alert of a
// compromised-device scenario (a sensor's reports to a 3-coordinator
// cluster) exactly once in effect although the leader is killed while it
// delivers: the new leader resumes from the committed position, and an
// event sent again carries the same id, which this receiver dedupes by.
// The sink also takes findings: the risk postures the leader commits for
// the pump (cleartext HL7, default credentials seen on the wire before
// and after the kill) reach the receiver as CEF lines, every finding of
// the last posture by its id, and the posture position is committed; an
// OCSF webhook that takes findings only receives each as an OCSF 2002
// Vulnerability Finding.
func TestSinkSyslogTLSExactlyOnceAcrossLeaderKill(t *testing.T) {
	rcv := siem.StartRsyslog(t)
	cl := newCluster(t, 3, func(c *Config) { c.SinkCommitInterval = 100 * time.Millisecond })
	lead := cl.leader()
	ctx := ctxT(t, 60*time.Second)
	sinks := medmeshv1.NewSinkServiceClient(lead.conn)
	if _, err := sinks.PutSink(ctx, &medmeshv1.PutSinkRequest{Reason: "SIEM", RequestId: "put-siem", Sink: &medmeshv1.Sink{
		Name: "siem", Kind: medmeshv1.SinkKind_SINK_KIND_SYSLOG, Address: rcv.Addr, Tls: true, CaFile: rcv.CAFile,
		Events: []string{"alert", "audit", "finding"},
	}}); err != nil {
		t.Fatal(err)
	}
	// An OCSF webhook takes the findings only, keyed by metadata.uid.
	var ocsfMu sync.Mutex
	ocsf := map[string]map[string]any{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, "not JSON", http.StatusBadRequest)
			return
		}
		meta, _ := m["metadata"].(map[string]any)
		uid, _ := meta["uid"].(string)
		if uid == "" || uid != r.Header.Get("X-Medmesh-Event-Id") {
			http.Error(w, "no metadata.uid", http.StatusBadRequest)
			return
		}
		ocsfMu.Lock()
		ocsf[uid] = m
		ocsfMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	if _, err := sinks.PutSink(ctx, &medmeshv1.PutSinkRequest{Reason: "vulnerability management", RequestId: "put-vulns", Sink: &medmeshv1.Sink{
		Name: "vulns", Kind: medmeshv1.SinkKind_SINK_KIND_WEBHOOK, Url: hook.URL, Format: medmeshv1.SinkFormat_SINK_FORMAT_OCSF,
		Events: []string{"finding"},
	}}); err != nil {
		t.Fatal(err)
	}
	const pump = "00:1b:44:11:3a:b7"
	kinds := []string{"scan", "default_credentials", "cleartext_credentials", "known_bad_destination", "external_destination", "protocol_misuse"}
	seq := uint64(0)
	reportAlerts := func(n *node, count int) {
		t.Helper()
		var recs []*medmeshv1.SensorRecord
		for range count {
			seq++
			k := kinds[int(seq)%len(kinds)]
			r := alertRecord(seq, pump, k, uint32(40+seq%60))
			r.GetAlert().Summary = fmt.Sprintf("%s #%d: user=admin | pass\\word not shown", k, seq)
			recs = append(recs, r)
		}
		testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, func() bool {
			acked, err := sensorReport(t, n.conn, "s-icu", recs...)
			return err == nil && acked == seq
		}, "report alerts up to %d", seq)
	}
	// A login with the factory-default password, as a sensor reports it
	// (account and protocol; the password is never sent or kept).
	reportLogin := func(n *node, proto string, port uint32) {
		t.Helper()
		seq++
		r := &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
			DeviceMac: pump, Kind: "default_credentials", Summary: proto + ` server accepted user "admin" with a factory-default password`,
			Flow:  &medmeshv1.FlowRef{Src: "10.0.0.9", Dst: "10.1.0.20", Sport: 40001, Dport: port, Proto: 6},
			Login: &medmeshv1.LoginEvidence{Protocol: proto, Account: "admin", DefaultPassword: true, Cleartext: proto == "telnet", Outcome: "accepted"},
			Risk:  &medmeshv1.RiskScore{Score: 60, Factors: []*medmeshv1.RiskFactor{{Name: "default_credentials", Weight: 60}}}}}}
		testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, func() bool {
			acked, err := sensorReport(t, n.conn, "s-icu", r)
			return err == nil && acked == seq
		}, "report login %d", seq)
	}
	dev := deviceRecord(1, pump, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP)
	dev.GetDevice().GetDevice().Protocols = []string{"hl7"} // cleartext PHI: a finding
	if _, err := sensorReport(t, lead.conn, "s-icu", dev); err != nil {
		t.Fatal("device record:", err)
	}
	seq = 1
	for i := range 5 {
		reportAlerts(lead, 8)
		if i == 2 {
			reportLogin(lead, "telnet", 23)
		}
	}
	// Kill the leader while it delivers: its last positions may not be
	// committed.
	t.Logf("before the kill: %d events at the receiver", len(readReceived(t, rcv).ByID))
	lead.stop(true)
	next := cl.leader()
	t.Logf("killed %s; %s leads", lead.cfg.ID, next.cfg.ID)
	for i := range 5 {
		reportAlerts(next, 8)
		if i == 1 {
			reportLogin(next, "ftp", 21)
		}
	}
	// Every alert committed, by id.
	var want []string
	alerts, err := medmeshv1.NewAlertServiceClient(next.conn).ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts.GetAlerts() {
		want = append(want, "alert/"+a.GetId())
	}
	if len(want) != 82 {
		t.Fatalf("%d alerts committed, want 82", len(want))
	}
	var missing []string
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, func() bool {
		got := readReceived(t, rcv)
		missing = missing[:0]
		for _, id := range want {
			if got.ByID[id] == nil {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	}, "the receiver lacks %d alerts: %v", len(missing), missing)
	rec := readReceived(t, rcv)
	got := rec.ByID
	byID := map[string]*medmeshv1.Alert{}
	for _, a := range alerts.GetAlerts() {
		byID["alert/"+a.GetId()] = a
	}
	for id, a := range byID {
		ev := got[id]
		if ev.Ext["smac"] != pump || ev.Ext["cn2"] != strconv.Itoa(int(a.GetRisk().GetScore())) || ev.ClassID != a.GetKind() ||
			ev.Ext["msg"] != a.GetSummary() || ev.Ext["dpt"] != strconv.Itoa(int(a.GetFlow().GetDport())) || ev.Ext["cn1"] != strconv.FormatUint(a.GetIndex(), 10) {
			t.Errorf("%s: CEF %v does not say what alert %v says", id, ev, a)
		}
	}
	audits, findings := 0, 0
	for id := range got {
		if strings.HasPrefix(id, "audit/") {
			audits++
		}
		if strings.HasPrefix(id, "finding/") {
			findings++
		}
	}
	if audits == 0 {
		t.Error("no audit record reached the receiver (the sink.put at least)")
	}
	t.Logf("receiver: %d distinct events (%d alerts, %d audit records, %d findings), %d duplicate lines (same id)", len(got), len(want), audits, findings, rec.Duplicates())

	// Findings: the pump's last committed posture (it has both logins and
	// the cleartext HL7) reaches the receiver, every finding by its id,
	// and the CEF says what the finding says.
	var last *medmeshv1.DevicePosture
	var lacking []string
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, func() bool {
		last = next.c.FSM().Posture(pump)
		ids := findingIDs(last)
		if !slices.Contains(ids, "default_credentials:seen:telnet/23/admin") || !slices.Contains(ids, "default_credentials:seen:ftp/21/admin") ||
			!slices.Contains(ids, "cleartext_phi_protocol:cleartext:hl7") {
			lacking = ids
			return false
		}
		got = readReceived(t, rcv).ByID
		lacking = lacking[:0]
		for _, f := range last.GetFindings() {
			if got["finding/"+pump+"/"+strconv.FormatUint(last.GetIndex(), 10)+"/"+f.GetId()] == nil {
				lacking = append(lacking, f.GetId())
			}
		}
		return len(lacking) == 0
	}, "the receiver lacks findings of the last posture: %v", lacking)
	for _, f := range last.GetFindings() {
		id := "finding/" + pump + "/" + strconv.FormatUint(last.GetIndex(), 10) + "/" + f.GetId()
		ev := got[id]
		if ev.ClassID != "finding:"+f.GetKind() || ev.Ext["cat"] != "finding" || ev.Ext["smac"] != pump || ev.Ext["src"] != "10.1.0.20" ||
			ev.Ext["cs1"] != f.GetId() || ev.Ext["cn1"] != strconv.FormatUint(last.GetIndex(), 10) || ev.Ext["msg"] != f.GetSummary() {
			t.Errorf("%s: CEF %v does not say what finding %v says", id, ev, f)
		}
		if f.GetKind() == "default_credentials" && (ev.Ext["cs5Label"] != "account" || ev.Ext["cs5"] != "admin" || ev.Ext["app"] != f.GetProtocol()) {
			t.Errorf("%s: default credentials CEF %v lacks account and protocol", id, ev.Ext)
		}
	}
	count := readReceived(t, rcv).Count
	fdups := 0
	for id, n := range count {
		if strings.HasPrefix(id, "finding/") {
			fdups += n - 1
		}
	}
	t.Logf("findings: last posture index %d with %d findings; %d finding lines sent again (same id, same content)", last.GetIndex(), len(last.GetFindings()), fdups)

	// The OCSF webhook has every finding of the pump's posture as a
	// Vulnerability Finding (class 2002) and nothing else.
	var cur *medmeshv1.DevicePosture
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, func() bool {
		cur = next.c.FSM().Posture(pump)
		ocsfMu.Lock()
		defer ocsfMu.Unlock()
		lacking = lacking[:0]
		for _, f := range cur.GetFindings() {
			if ocsf[fmt.Sprintf("finding/%s/%d/%s", pump, cur.GetIndex(), f.GetId())] == nil {
				lacking = append(lacking, f.GetId())
			}
		}
		return len(lacking) == 0
	}, "the OCSF webhook lacks findings: %v", lacking)
	ocsfMu.Lock()
	for uid := range ocsf {
		if !strings.HasPrefix(uid, "finding/"+pump+"/") {
			t.Errorf("OCSF webhook received %s: it takes findings only", uid)
		}
	}
	for _, f := range cur.GetFindings() {
		id := fmt.Sprintf("finding/%s/%d/%s", pump, cur.GetIndex(), f.GetId())
		m := ocsf[id]
		fi, _ := m["finding_info"].(map[string]any)
		dev, _ := m["device"].(map[string]any)
		vs, _ := m["vulnerabilities"].([]any)
		rs, _ := m["resources"].([]any)
		if m["class_uid"] != 2002.0 || m["category_uid"] != 2.0 || m["type_uid"] != 200201.0 || m["activity_id"] != 1.0 ||
			fi["uid"] != id || fi["title"] != f.GetSummary() || dev["mac"] != pump || dev["ip"] != "10.1.0.20" || len(vs) != 1 || len(rs) != 1 {
			t.Errorf("%s: OCSF %v does not say what finding %v says", id, m, f)
			continue
		}
		if r, _ := rs[0].(map[string]any); r["uid"] != pump {
			t.Errorf("%s: OCSF resources %v", id, rs)
		}
		un, _ := m["unmapped"].(map[string]any)
		if f.GetKind() == "default_credentials" && (un["account"] != "admin" || un["protocol"] != f.GetProtocol()) {
			t.Errorf("%s: OCSF default credentials %v lack account and protocol", id, un)
		}
	}
	t.Logf("OCSF webhook: %d distinct finding events", len(ocsf))
	ocsfMu.Unlock()

	// The new leader committed positions at the end, and reports them.
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
		st, err := medmeshv1.NewSinkServiceClient(next.conn).GetSinkStatus(ctx, &medmeshv1.GetSinkStatusRequest{})
		if err != nil || len(st.GetSinks()) != 2 {
			return false
		}
		p := next.c.FSM().Posture(pump)
		for _, s := range st.GetSinks() {
			if s.GetBacklog() != 0 || s.GetPostureIndex() != p.GetIndex() || s.GetPostureMac() != pump ||
				(s.GetName() == "siem" && s.GetAlertPosition() != 82) {
				return false
			}
		}
		return true
	}, "sink status does not show everything delivered and committed")
}

// readReceived parses what rsyslogd received so far; a line that does not
// parse, or one id with two contents, fails the test.
func readReceived(t *testing.T, rcv *siem.Receiver) *siem.Received {
	t.Helper()
	rec, err := rcv.Read()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

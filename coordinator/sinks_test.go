package coordinator

import (
	"fmt"
	"strconv"
	"strings"
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
func TestSinkSyslogTLSExactlyOnceAcrossLeaderKill(t *testing.T) {
	rcv := siem.StartRsyslog(t)
	cl := newCluster(t, 3, func(c *Config) { c.SinkCommitInterval = 100 * time.Millisecond })
	lead := cl.leader()
	ctx := ctxT(t, 60*time.Second)
	sinks := medmeshv1.NewSinkServiceClient(lead.conn)
	if _, err := sinks.PutSink(ctx, &medmeshv1.PutSinkRequest{Reason: "SIEM", RequestId: "put-siem", Sink: &medmeshv1.Sink{
		Name: "siem", Kind: medmeshv1.SinkKind_SINK_KIND_SYSLOG, Address: rcv.Addr, Tls: true, CaFile: rcv.CAFile,
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
	if _, err := sensorReport(t, lead.conn, "s-icu", deviceRecord(1, pump, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP)); err != nil {
		t.Fatal("device record:", err)
	}
	seq = 1
	for range 5 {
		reportAlerts(lead, 8)
	}
	// Kill the leader while it delivers: its last positions may not be
	// committed.
	t.Logf("before the kill: %d events at the receiver", len(readReceived(t, rcv).ByID))
	lead.stop(true)
	next := cl.leader()
	t.Logf("killed %s; %s leads", lead.cfg.ID, next.cfg.ID)
	for range 5 {
		reportAlerts(next, 8)
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
	if len(want) != 80 {
		t.Fatalf("%d alerts committed, want 80", len(want))
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
			ev.Ext["msg"] != a.GetSummary() || ev.Ext["dpt"] != "445" || ev.Ext["cn1"] != strconv.FormatUint(a.GetIndex(), 10) {
			t.Errorf("%s: CEF %v does not say what alert %v says", id, ev, a)
		}
	}
	audits := 0
	for id := range got {
		if strings.HasPrefix(id, "audit/") {
			audits++
		}
	}
	if audits == 0 {
		t.Error("no audit record reached the receiver (the sink.put at least)")
	}
	t.Logf("receiver: %d distinct events (%d alerts, %d audit records), %d duplicate lines (same id)", len(got), len(want), audits, rec.Duplicates())

	// The new leader committed positions at the end, and reports them.
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
		st, err := medmeshv1.NewSinkServiceClient(next.conn).GetSinkStatus(ctx, &medmeshv1.GetSinkStatusRequest{})
		return err == nil && len(st.GetSinks()) == 1 && st.GetSinks()[0].GetBacklog() == 0 && st.GetSinks()[0].GetAlertPosition() == 80
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

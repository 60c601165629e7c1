package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/testutil/siem"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// siemFixture: two alerts and a trail of four audit records of which
// retention evicted the first ten (sequence numbers 11-14), all received.
func siemFixture() (*siem.Received, []*medmeshv1.Alert, []*medmeshv1.AuditRecord) {
	alerts := []*medmeshv1.Alert{
		{Id: "s1/1", Kind: "scan", DeviceMac: "00:1b:44:11:3a:b7", Index: 40, Summary: "scan of ward 3", Risk: &medmeshv1.RiskScore{Score: 87}},
		{Id: "s1/2", Kind: "external_destination", DeviceMac: "00:1b:44:11:3a:b7", Index: 41, Summary: "to 203.0.113.10", Risk: &medmeshv1.RiskScore{Score: 60}},
	}
	var audit []*medmeshv1.AuditRecord
	for i, a := range []string{"sink.put", "decision.create", "decision.approve", "policy.put"} {
		audit = append(audit, &medmeshv1.AuditRecord{Index: uint64(50 + i), Actor: "approver/lab-approver", Action: a, Resource: "x/" + strconv.Itoa(i), Reason: "why " + a})
	}
	got := &siem.Received{ByID: map[string]*siem.CEF{}, Count: map[string]int{}}
	add := func(id string, ext map[string]string, class string) {
		ext["externalId"] = id
		got.ByID[id] = &siem.CEF{Version: "0", Vendor: "medmesh", Product: "medmesh", ClassID: class, Ext: ext}
		got.Count[id]++
		got.Lines++
	}
	for _, a := range alerts {
		add("alert/"+a.GetId(), map[string]string{"cat": "alert", "cs4": a.GetId(), "cn1": strconv.FormatUint(a.GetIndex(), 10),
			"cn2": strconv.Itoa(int(a.GetRisk().GetScore())), "smac": a.GetDeviceMac(), "msg": a.GetSummary()}, a.GetKind())
	}
	for i, r := range audit {
		add("audit/"+strconv.Itoa(11+i), map[string]string{"cat": "audit", "act": r.GetAction(), "suser": r.GetActor(), "cs1": r.GetResource(),
			"msg": r.GetReason(), "cn1": strconv.FormatUint(r.GetIndex(), 10)}, r.GetAction())
	}
	return got, alerts, audit
}

func TestCheckSIEM(t *testing.T) {
	got, alerts, audit := siemFixture()
	if v := CheckSIEM(got, alerts, audit); len(v) != 0 {
		t.Fatalf("a faithful receiver: %v", v)
	}
	// The trail grew after the receiver was read: still fine.
	if v := CheckSIEM(got, alerts, append(audit, &medmeshv1.AuditRecord{Index: 60, Action: "sink.delete"})); len(v) != 0 {
		t.Errorf("a longer trail: %v", v)
	}
	for _, tc := range []struct {
		name, want string
		change     func(*siem.Received)
	}{
		{"foreign alert", "alert/s9/9, no alert of the cluster", func(g *siem.Received) {
			g.ByID["alert/s9/9"] = &siem.CEF{Ext: map[string]string{"cat": "alert"}}
		}},
		{"test event", "test/1, neither an alert nor an audit record", func(g *siem.Received) {
			g.ByID["test/1"] = &siem.CEF{Ext: map[string]string{"cat": "audit"}}
		}},
		{"alert says another score", "alert/s1/2: CEF", func(g *siem.Received) { g.ByID["alert/s1/2"].Ext["cn2"] = "61" }},
		{"audit record out of place", "audit/13: CEF", func(g *siem.Received) {
			g.ByID["audit/13"], g.ByID["audit/14"] = g.ByID["audit/14"], g.ByID["audit/13"]
		}},
		{"audit beyond the trail", "audit/15: no such record", func(g *siem.Received) {
			g.ByID["audit/15"] = g.ByID["audit/14"]
		}},
		{"no audit record", "no audit record reached", func(g *siem.Received) {
			for id := range g.ByID {
				if strings.HasPrefix(id, "audit/") {
					delete(g.ByID, id)
				}
			}
		}},
	} {
		g, alerts, audit := siemFixture()
		tc.change(g)
		v := CheckSIEM(g, alerts, audit)
		if !strings.Contains(strings.Join(v, "; "), tc.want) {
			t.Errorf("%s: violations %v, want one with %q", tc.name, v, tc.want)
		}
	}
}

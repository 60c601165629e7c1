package response

import (
	"strings"
	"testing"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func alert(kind string, score uint32, class medmeshv1.DeviceClass, tier medmeshv1.Tier) *medmeshv1.Alert {
	return &medmeshv1.Alert{
		Id: "s1/7", DeviceMac: "00:1b:44:11:3a:b7", Kind: kind, Risk: &medmeshv1.RiskScore{Score: score},
		DeviceClass: class, Tier: tier, Summary: "to 203.0.113.9",
		Flow: &medmeshv1.FlowRef{Src: "10.1.0.10", Dst: "203.0.113.9", Sport: 40000, Dport: 443, Proto: 6},
	}
}

type want struct {
	action medmeshv1.DecisionAction
	state  medmeshv1.DecisionState
	rule   string
}

func TestEvaluate(t *testing.T) {
	e, err := New(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	const (
		notify     = medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY
		block      = medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER
		quarantine = medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
		enforce    = medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY
		eff        = medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE
		pend       = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
		ws         = medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION
		pump       = medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP
		nonclin    = medmeshv1.Tier_TIER_NON_CLINICAL
		clin       = medmeshv1.Tier_TIER_CLINICAL
		life       = medmeshv1.Tier_TIER_LIFE_CRITICAL
	)
	cases := []struct {
		name   string
		a      *medmeshv1.Alert
		device *medmeshv1.Device
		want   []want
	}{
		{"low score: nothing", alert("new_peer", 20, ws, nonclin), nil, nil},
		{"medium: notify only", alert("new_peer", 50, ws, nonclin), nil, []want{{notify, eff, "notify-medium"}}},
		{"high new peer: block", alert("new_peer", 85, ws, nonclin), nil, []want{{notify, eff, "notify-medium"}, {block, eff, "block-suspicious-peer"}}},
		{"scan on clinical device: quarantine", alert("scan", 95, medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, clin), nil, []want{{notify, eff, "notify-medium"}, {quarantine, eff, "quarantine-scanner"}}},
		{"scan on life-critical: pending", alert("scan", 95, pump, life), nil, []want{{notify, eff, "notify-medium"}, {quarantine, pend, "quarantine-scanner"}}},
		{"life-critical class with clinical tier: pending", alert("new_peer", 85, pump, clin), nil, []want{{notify, eff, "notify-medium"}, {block, pend, "block-suspicious-peer"}}},
		{"unknown tier: pending", alert("default_credentials", 70, ws, 0), nil, []want{{notify, eff, "notify-medium"}, {enforce, pend, "enforce-on-default-credentials"}}},
		{"store's device tier wins over the alert's", alert("scan", 95, ws, nonclin), &medmeshv1.Device{Tier: life}, []want{{notify, eff, "notify-medium"}, {quarantine, pend, "quarantine-scanner"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := e.Evaluate(c.a, c.device)
			if len(got) != len(c.want) {
				t.Fatalf("%d decisions %v, want %d", len(got), got, len(c.want))
			}
			for i, w := range c.want {
				d := got[i]
				if d.GetAction() != w.action || d.GetState() != w.state || d.GetRule() != w.rule {
					t.Errorf("decision %d: %v %v %s, want %v %v %s", i, d.GetAction(), d.GetState(), d.GetRule(), w.action, w.state, w.rule)
				}
				if d.GetActor() != Actor || d.GetAlertId() != "s1/7" || d.GetDeviceMac() != c.a.GetDeviceMac() || !strings.Contains(d.GetReason(), w.rule) {
					t.Errorf("decision %d audit fields %v", i, d)
				}
				if d.GetAction() == block && d.GetPeerCidr() != "203.0.113.9/32" {
					t.Errorf("block peer %q", d.GetPeerCidr())
				}
			}
		})
	}
}

func TestPeerIsTheOtherEnd(t *testing.T) {
	e, _ := New([]Rule{{Name: "block", Action: medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER}})
	a := alert("new_peer", 90, 0, medmeshv1.Tier_TIER_NON_CLINICAL)
	a.Flow = &medmeshv1.FlowRef{Src: "2001:db8::66", Dst: "10.1.0.10"} // peer-initiated
	got := e.Evaluate(a, &medmeshv1.Device{IpAddresses: []string{"10.1.0.10"}, Tier: medmeshv1.Tier_TIER_NON_CLINICAL})
	if len(got) != 1 || got[0].GetPeerCidr() != "2001:db8::66/128" {
		t.Fatalf("got %v", got)
	}
	a.Flow = nil
	if got := e.Evaluate(a, nil); len(got) != 0 {
		t.Fatalf("block without a peer proposed %v", got)
	}
}

func TestNewRejects(t *testing.T) {
	for name, rules := range map[string][]Rule{
		"bad name":  {{Name: "Bad Name", Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}},
		"duplicate": {{Name: "a", Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}, {Name: "a", Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}},
		"not auto":  {{Name: "a", Action: medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY}},
		"score":     {{Name: "a", MinScore: 101, Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}},
	} {
		if _, err := New(rules); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

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
	rule   string
}

// sorted is the default table in the FSM's order (by name).
func sorted() []*medmeshv1.ResponseRule {
	rs := DefaultRules()
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Name < rs[j-1].Name; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
	return rs
}

func TestEvaluateDefaults(t *testing.T) {
	const (
		notify     = medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY
		block      = medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER
		quarantine = medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
		enforce    = medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY
		ws         = medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION
		nonclin    = medmeshv1.Tier_TIER_NON_CLINICAL
	)
	for _, r := range DefaultRules() {
		if err := Validate(r); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		a    *medmeshv1.Alert
		want []want
	}{
		{"low score: nothing", alert("new_peer", 20, ws, nonclin), nil},
		{"medium: notify only", alert("new_peer", 50, ws, nonclin), []want{{notify, "notify-medium"}}},
		{"high new peer: block", alert("new_peer", 85, ws, nonclin), []want{{block, "block-suspicious-peer"}, {notify, "notify-medium"}}},
		{"known bad: block", alert("known_bad_destination", 80, ws, nonclin), []want{{block, "block-known-bad"}, {notify, "notify-medium"}}},
		{"scan: quarantine", alert("scan", 50, ws, nonclin), []want{{notify, "notify-medium"}, {quarantine, "quarantine-scanner"}}},
		{"default credentials: enforce", alert("default_credentials", 70, ws, nonclin), []want{{enforce, "enforce-on-default-credentials"}, {notify, "notify-medium"}}},
		{"login burst: block the other end", alert("failed_login_burst", 50, ws, nonclin), []want{{block, "block-login-burst"}, {notify, "notify-medium"}}},
		{"cleartext PHI to a new peer: notify", alert("cleartext_phi", 65, ws, nonclin), []want{{notify, "notify-medium"}}},
		{"cleartext PHI outside: block", alert("cleartext_phi", 95, ws, nonclin), []want{{block, "block-cleartext-phi-peer"}, {notify, "notify-medium"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Evaluate(sorted(), c.a, nil)
			if len(got) != len(c.want) {
				t.Fatalf("%d decisions %v, want %d", len(got), got, len(c.want))
			}
			for i, w := range c.want {
				d := got[i]
				if d.GetAction() != w.action || d.GetRule() != w.rule {
					t.Errorf("decision %d: %v %s, want %v %s", i, d.GetAction(), d.GetRule(), w.action, w.rule)
				}
				if d.GetActor() != Actor || d.GetAlertId() != "s1/7" || d.GetDeviceMac() != c.a.GetDeviceMac() ||
					!strings.Contains(d.GetReason(), w.rule) || d.GetId() != DecisionID("s1/7", w.rule) {
					t.Errorf("decision %d audit fields %v", i, d)
				}
				if d.GetAction() == block && d.GetPeerCidr() != "203.0.113.9/32" {
					t.Errorf("block peer %q", d.GetPeerCidr())
				}
			}
		})
	}
}

func TestStoreClassDecidesMatching(t *testing.T) {
	rules := []*medmeshv1.ResponseRule{{Name: "ws-only", DeviceClasses: []medmeshv1.DeviceClass{medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
		Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE}}
	a := alert("scan", 90, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, medmeshv1.Tier_TIER_NON_CLINICAL)
	if got := Evaluate(rules, a, nil); len(got) != 1 {
		t.Fatalf("alert's class: %v", got)
	}
	if got := Evaluate(rules, a, &medmeshv1.Device{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP}); len(got) != 0 {
		t.Fatalf("the store's class must win over the alert's: %v", got)
	}
}

func TestPeerIsTheOtherEnd(t *testing.T) {
	rules := []*medmeshv1.ResponseRule{{Name: "block", Action: medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER}}
	a := alert("new_peer", 90, 0, medmeshv1.Tier_TIER_NON_CLINICAL)
	a.Flow = &medmeshv1.FlowRef{Src: "2001:db8::66", Dst: "10.1.0.10"} // peer-initiated
	got := Evaluate(rules, a, &medmeshv1.Device{IpAddresses: []string{"10.1.0.10"}, Tier: medmeshv1.Tier_TIER_NON_CLINICAL})
	if len(got) != 1 || got[0].GetPeerCidr() != "2001:db8::66/128" {
		t.Fatalf("got %v", got)
	}
	a.Flow = nil
	if got := Evaluate(rules, a, nil); len(got) != 0 {
		t.Fatalf("block without a peer proposed %v", got)
	}
}

func TestValidateRejects(t *testing.T) {
	for name, r := range map[string]*medmeshv1.ResponseRule{
		"bad name":   {Name: "Bad Name", Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY},
		"not auto":   {Name: "a", Action: medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY},
		"no action":  {Name: "a"},
		"score":      {Name: "a", MinScore: 101, Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY},
		"empty kind": {Name: "a", Kinds: []string{""}, Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY},
	} {
		if err := Validate(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

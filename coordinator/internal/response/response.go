// Package response is medmesh's response engine: a pure rule table that
// maps an alert (kind, score, device class, tier) to proposed decisions —
// notify, quarantine, block the peer, switch the device's policy to
// enforce. The coordinator commits the proposals through Raft, which stamps
// ids, indexes and times. Against a life-critical device (or one whose tier
// is unknown) every action other than notify is proposed as pending
// approval: an automatic block could hurt a patient.
package response

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Actor is the actor of every automatic decision.
const Actor = "response-engine"

// Rule maps matching alerts to one action. Empty match lists match any.
type Rule struct {
	// Name identifies the rule in decisions and audit records.
	Name string
	// Kinds are alert kinds ("new_peer", "scan", ...).
	Kinds []string
	// MinScore is the lowest risk score that matches (0-100).
	MinScore uint32
	// Classes and Tiers restrict the device.
	Classes []medmeshv1.DeviceClass
	Tiers   []medmeshv1.Tier
	// Action is NOTIFY, QUARANTINE, BLOCK_PEER or ENFORCE_POLICY.
	Action medmeshv1.DecisionAction
}

var ruleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

func (r Rule) validate() error {
	if !ruleNameRE.MatchString(r.Name) {
		return fmt.Errorf("response rule name %q: want 1-64 of [a-z0-9_.-]", r.Name)
	}
	switch r.Action {
	case medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE,
		medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY:
	default:
		return fmt.Errorf("response rule %s: action %v is not automatic", r.Name, r.Action)
	}
	if r.MinScore > 100 {
		return fmt.Errorf("response rule %s: min score %d above 100", r.Name, r.MinScore)
	}
	return nil
}

func (r Rule) matches(a *medmeshv1.Alert, class medmeshv1.DeviceClass, tier medmeshv1.Tier) bool {
	return (len(r.Kinds) == 0 || slices.Contains(r.Kinds, a.GetKind())) &&
		a.GetRisk().GetScore() >= r.MinScore &&
		(len(r.Classes) == 0 || slices.Contains(r.Classes, class)) &&
		(len(r.Tiers) == 0 || slices.Contains(r.Tiers, tier))
}

// DefaultRules is the shipped rule table: notify on anything scored 40 or
// more; block the peer of a high-scoring external destination or new peer;
// quarantine a device caught scanning or exfiltrating with a very high
// score; enforce the policy of a device logging in with default credentials.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "notify-medium", MinScore: 40, Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY},
		{Name: "block-suspicious-peer", Kinds: []string{"external_destination", "new_peer"}, MinScore: 80, Action: medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER},
		{Name: "quarantine-scanner", Kinds: []string{"scan", "exfiltration", "protocol_misuse"}, MinScore: 90, Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE},
		{Name: "enforce-on-default-credentials", Kinds: []string{"default_credentials"}, MinScore: 60, Action: medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY},
	}
}

// Engine evaluates alerts against a rule table.
type Engine struct{ rules []Rule }

// New validates a rule table.
func New(rules []Rule) (*Engine, error) {
	names := map[string]bool{}
	for _, r := range rules {
		if err := r.validate(); err != nil {
			return nil, err
		}
		if names[r.Name] {
			return nil, fmt.Errorf("response rule %s defined twice", r.Name)
		}
		names[r.Name] = true
	}
	return &Engine{rules: slices.Clone(rules)}, nil
}

// lifeCriticalClasses are never blocked automatically, whatever their
// recorded tier says.
var lifeCriticalClasses = []medmeshv1.DeviceClass{
	medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR,
	medmeshv1.DeviceClass_DEVICE_CLASS_VENTILATOR, medmeshv1.DeviceClass_DEVICE_CLASS_CENTRAL_STATION,
}

// NeedsApproval reports whether automatic enforcement against a device of
// this tier and class must wait for an operator: life-critical tier or
// class, or a tier nobody established yet.
func NeedsApproval(tier medmeshv1.Tier, class medmeshv1.DeviceClass) bool {
	return tier == medmeshv1.Tier_TIER_LIFE_CRITICAL || tier == medmeshv1.Tier_TIER_UNSPECIFIED ||
		slices.Contains(lifeCriticalClasses, class)
}

// ErrNoPeer is why a block-peer rule proposed nothing.
var ErrNoPeer = errors.New("alert names no peer address")

// Evaluate proposes one decision per matching rule, in rule order, at most
// one per action. device may be nil (not yet known to the store); the
// alert's class and tier then decide. Proposals carry action, state,
// device, tier, peer, actor, reason, rule and alert id; the leader stamps
// the rest.
func (e *Engine) Evaluate(a *medmeshv1.Alert, device *medmeshv1.Device) []*medmeshv1.Decision {
	class, tier := a.GetDeviceClass(), a.GetTier()
	if device != nil {
		if device.GetDeviceClass() != medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
			class = device.GetDeviceClass()
		}
		if device.GetTier() != medmeshv1.Tier_TIER_UNSPECIFIED {
			tier = device.GetTier()
		}
	}
	var out []*medmeshv1.Decision
	done := map[medmeshv1.DecisionAction]bool{}
	for _, r := range e.rules {
		if done[r.Action] || !r.matches(a, class, tier) {
			continue
		}
		d := &medmeshv1.Decision{
			Action:    r.Action,
			State:     medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE,
			DeviceMac: a.GetDeviceMac(),
			Tier:      tier,
			Actor:     Actor,
			Rule:      r.Name,
			AlertId:   a.GetId(),
			Reason:    fmt.Sprintf("rule %s: %s alert scored %d: %s", r.Name, a.GetKind(), a.GetRisk().GetScore(), a.GetSummary()),
		}
		if r.Action == medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER {
			peer, err := peerOf(a, device)
			if err != nil {
				continue
			}
			d.PeerCidr = peer.String()
		}
		if r.Action != medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY && NeedsApproval(tier, class) {
			d.State = medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
			d.Reason += "; pending approval: " + approvalReason(tier, class)
		}
		if r.Action == medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY {
			d.Policy = &medmeshv1.Policy{Name: "device/" + a.GetDeviceMac()}
		}
		done[r.Action] = true
		out = append(out, d)
	}
	return out
}

func approvalReason(tier medmeshv1.Tier, class medmeshv1.DeviceClass) string {
	if tier == medmeshv1.Tier_TIER_UNSPECIFIED {
		return "device tier unknown"
	}
	if tier == medmeshv1.Tier_TIER_LIFE_CRITICAL {
		return "life-critical device"
	}
	return "life-critical class " + names.Enum(class)
}

// peerOf returns the host prefix of the alert flow's end that is not the
// device: the end not among the device's addresses, else the destination.
func peerOf(a *medmeshv1.Alert, device *medmeshv1.Device) (netip.Prefix, error) {
	src, errS := netip.ParseAddr(a.GetFlow().GetSrc())
	dst, errD := netip.ParseAddr(a.GetFlow().GetDst())
	own := func(x netip.Addr) bool {
		for _, s := range device.GetIpAddresses() {
			if y, err := netip.ParseAddr(s); err == nil && y.Unmap() == x.Unmap() {
				return true
			}
		}
		return false
	}
	var peer netip.Addr
	switch {
	case errS == nil && errD == nil && own(dst) && !own(src):
		peer = src
	case errD == nil:
		peer = dst
	default:
		return netip.Prefix{}, ErrNoPeer
	}
	peer = peer.Unmap()
	return netip.PrefixFrom(peer, peer.BitLen()), nil
}

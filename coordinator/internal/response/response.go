// Package response is medmesh's response rule language: a pure rule table
// that maps an alert (kind, score, device class, tier) to proposed
// decisions — notify, quarantine, block the peer, switch the device's
// policy to enforce. The table is replicated state: the FSM evaluates it
// inside the apply of every new alert, so the same log gives the same
// decisions on every replica. Nothing here reads the clock or depends on
// map order. Whether a decision waits for approval (life-critical or
// unknown tier) is the FSM's to decide, through package safety.
package response

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Actor is the actor of every automatic decision.
const Actor = "response-engine"

var ruleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Validate checks a rule's user fields.
func Validate(r *medmeshv1.ResponseRule) error {
	if !ruleNameRE.MatchString(r.GetName()) {
		return fmt.Errorf("response rule name %q: want 1-64 of [a-z0-9_.-]", r.GetName())
	}
	switch r.GetAction() {
	case medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY, medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE,
		medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY:
	default:
		return fmt.Errorf("response rule %s: action %v is not automatic (want NOTIFY, QUARANTINE, BLOCK_PEER or ENFORCE_POLICY)", r.GetName(), r.GetAction())
	}
	if r.GetMinScore() > 100 {
		return fmt.Errorf("response rule %s: min score %d above 100", r.GetName(), r.GetMinScore())
	}
	for _, k := range r.GetKinds() {
		if k == "" {
			return fmt.Errorf("response rule %s: empty alert kind", r.GetName())
		}
	}
	return nil
}

func matches(r *medmeshv1.ResponseRule, a *medmeshv1.Alert, class medmeshv1.DeviceClass, tier medmeshv1.Tier) bool {
	return (len(r.GetKinds()) == 0 || slices.Contains(r.GetKinds(), a.GetKind())) &&
		a.GetRisk().GetScore() >= r.GetMinScore() &&
		(len(r.GetDeviceClasses()) == 0 || slices.Contains(r.GetDeviceClasses(), class)) &&
		(len(r.GetTiers()) == 0 || slices.Contains(r.GetTiers(), tier))
}

// DefaultRules is the shipped rule table, written against the alert kinds
// the sensors emit (node/internal/score: known_bad_destination,
// default_credentials, cleartext_credentials, protocol_misuse,
// cleartext_phi, failed_login_burst, scan, external_destination, new_peer,
// new_port, volume_anomaly):
//   - notify on anything scored 40 or more;
//   - quarantine a device that scans (scan: many ports of one host, one
//     port of many hosts, or many addresses swept, by connections that
//     carried nothing, within a window);
//   - quarantine a device that misuses a clinical protocol with a very high
//     score;
//   - block the peer of a known-bad destination, or of a high-scoring
//     external destination or new peer;
//   - enforce the policy of a device that accepted a login with default
//     credentials;
//   - block the other end of a burst of refused logins (the service a
//     device on the campus tries password after password against, or the
//     outside address trying them against the device);
//   - block the peer of HL7 or DICOM sent in cleartext outside the
//     device's baseline when the alert scores 70 or more: sent to a new
//     peer on a service the device already uses it scores 65 (with the
//     default weights) and only notifies; to a new peer on a new service
//     (90) or outside the hospital (95 and more) it blocks that peer.
//
// Against a life-critical device, or one whose tier is unknown, all but
// NOTIFY wait for an operator's approval.
func DefaultRules() []*medmeshv1.ResponseRule {
	const (
		notify     = medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY
		quarantine = medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
		block      = medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER
		enforce    = medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY
	)
	return []*medmeshv1.ResponseRule{
		{Name: "notify-medium", MinScore: 40, Action: notify,
			Description: "tell people about every alert scored 40 or more"},
		{Name: "quarantine-scanner", Kinds: []string{"scan"}, MinScore: 50, Action: quarantine,
			Description: "isolate a device scanning its neighbours (scan)"},
		{Name: "quarantine-protocol-misuse", Kinds: []string{"protocol_misuse"}, MinScore: 90, Action: quarantine,
			Description: "isolate a device speaking a clinical protocol it has no business speaking, with a very high score"},
		{Name: "block-known-bad", Kinds: []string{"known_bad_destination"}, MinScore: 80, Action: block,
			Description: "block a known-bad destination"},
		{Name: "block-suspicious-peer", Kinds: []string{"external_destination", "new_peer"}, MinScore: 80, Action: block,
			Description: "block a high-scoring external destination or new peer"},
		{Name: "enforce-on-default-credentials", Kinds: []string{"default_credentials"}, MinScore: 60, Action: enforce,
			Description: "switch the policy of a device accepting default credentials to enforce"},
		{Name: "block-login-burst", Kinds: []string{"failed_login_burst"}, MinScore: 50, Action: block,
			Description: "block the other end of a burst of refused logins (password guessing)"},
		{Name: "block-cleartext-phi-peer", Kinds: []string{"cleartext_phi"}, MinScore: 70, Action: block,
			Description: "block the peer of HL7 or DICOM sent in cleartext outside the device's baseline, scored 70 or more"},
	}
}

// ErrNoPeer is why a block-peer rule proposed nothing.
var ErrNoPeer = errors.New("alert names no peer address")

// Evaluate proposes one decision per matching rule, in the order given (the
// FSM keeps its table ordered by name), at most one per action. device is
// the store's record of the device, or nil; its class and tier decide
// matching, else the alert's. Proposals carry id, action, device, peer,
// actor, reason, rule and alert id; the FSM sets tier and approval state
// from its own record of the device.
func Evaluate(rules []*medmeshv1.ResponseRule, a *medmeshv1.Alert, device *medmeshv1.Device) []*medmeshv1.Decision {
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
	var done []medmeshv1.DecisionAction
	for _, r := range rules {
		if slices.Contains(done, r.GetAction()) || !matches(r, a, class, tier) {
			continue
		}
		d := &medmeshv1.Decision{
			Id:        DecisionID(a.GetId(), r.GetName()),
			Action:    r.GetAction(),
			DeviceMac: a.GetDeviceMac(),
			Actor:     Actor,
			Rule:      r.GetName(),
			AlertId:   a.GetId(),
			Reason:    fmt.Sprintf("rule %s: %s alert scored %d: %s", r.GetName(), a.GetKind(), a.GetRisk().GetScore(), a.GetSummary()),
		}
		if r.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER {
			peer, err := peerOf(a, device)
			if err != nil {
				continue
			}
			d.PeerCidr = peer.String()
		}
		if r.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY {
			d.Policy = &medmeshv1.Policy{Name: "device/" + a.GetDeviceMac()}
		}
		done = append(done, r.GetAction())
		out = append(out, d)
	}
	return out
}

// DecisionID is the id of rule's decision on alert: derived from both, so
// an alert committed twice (a retried report) never decides twice.
func DecisionID(alertID, rule string) string {
	h := sha256.Sum256([]byte(alertID + "\x00" + rule))
	return "r-" + hex.EncodeToString(h[:10])
}

// IncidentDecisionID is the id of rule's decision for an incident: a rule
// decides at most once per incident, however many of its alerts match.
func IncidentDecisionID(incidentID, rule string) string {
	h := sha256.Sum256([]byte("incident\x00" + incidentID + "\x00" + rule))
	return "r-" + hex.EncodeToString(h[:10])
}

// Strength orders the automatic actions by how much they isolate a device:
// notify (nothing) < block one peer < enforce the device's policy (only
// what the policy allows) < quarantine (nothing but DHCP and DNS). An
// incident's decision escalates only to a stronger action. Actions a rule
// cannot take are 0.
func Strength(a medmeshv1.DecisionAction) int {
	switch a {
	case medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER:
		return 1
	case medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY:
		return 2
	case medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE:
		return 3
	default:
		return 0
	}
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

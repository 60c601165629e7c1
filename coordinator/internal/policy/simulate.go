package policy

import (
	"fmt"
	"net/netip"
	"strings"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Simulate replays observed flow summaries against a policy and lists what
// it would drop, with the enforcer's semantics: a summary is allowed when a
// rule matches its peer, protocol, port and direction; a quarantined policy
// allows only DHCP and DNS. Counts are in flows (a summary with no flow
// count counts as one).
func Simulate(p *medmeshv1.Policy, flows []*medmeshv1.FlowSummary) *medmeshv1.Simulation {
	sim := &medmeshv1.Simulation{}
	for _, f := range flows {
		n := max(f.GetFlows(), 1)
		sim.FlowsTotal += n
		if _, ok := Match(p, f); ok {
			sim.FlowsAllowed += n
			continue
		}
		sim.FlowsDropped += n
		sim.Dropped = append(sim.Dropped, &medmeshv1.SimulatedFlow{Flow: f, Verdict: "drop"})
	}
	return sim
}

// Match returns the name (or "#index") of the first rule of p allowing f.
func Match(p *medmeshv1.Policy, f *medmeshv1.FlowSummary) (string, bool) {
	if p.GetQuarantine() {
		if infraFlow(f) {
			return "quarantine-infra", true
		}
		return "", false
	}
	peer, _ := netip.ParseAddr(f.GetPeerIp())
	peer = peer.Unmap()
	for i, r := range p.GetRules() {
		if ruleMatches(r, f, peer) {
			if r.GetName() != "" {
				return r.GetName(), true
			}
			return fmt.Sprintf("#%d", i), true
		}
	}
	return "", false
}

func infraFlow(f *medmeshv1.FlowSummary) bool {
	out := f.GetDirection() != medmeshv1.Direction_DIRECTION_INBOUND
	switch {
	case f.GetProtocol() == protoUDP && out && (f.GetPort() == 67 || f.GetPort() == 547):
		return true
	case (f.GetProtocol() == protoUDP || f.GetProtocol() == protoTCP) && out && f.GetPort() == 53:
		return true
	}
	return false
}

func ruleMatches(r *medmeshv1.Rule, f *medmeshv1.FlowSummary, peer netip.Addr) bool {
	switch pp := r.GetPeer().(type) {
	case *medmeshv1.Rule_PeerCidr:
		pfx, err := parsePeer(pp.PeerCidr)
		if err != nil || !peer.IsValid() || !pfx.Contains(peer) {
			return false
		}
	case *medmeshv1.Rule_PeerDnsName:
		if !strings.EqualFold(strings.TrimSuffix(pp.PeerDnsName, "."), strings.TrimSuffix(f.GetPeerName(), ".")) {
			return false
		}
	}
	if r.GetProtocol() != 0 && r.GetProtocol() != f.GetProtocol() {
		return false
	}
	if !dirCovers(r.GetDirection(), f.GetDirection()) && f.GetDirection() != medmeshv1.Direction_DIRECTION_UNSPECIFIED {
		return false
	}
	if r.GetPortMax() == 0 {
		return true
	}
	return f.GetPort() >= r.GetPortMin() && f.GetPort() <= r.GetPortMax()
}

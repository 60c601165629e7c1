package api

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/policy"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Bounds of an enforcer's report of resolved DNS-named peers.
const (
	maxResolvedPeers = 10_000
	maxResolvedAddrs = 64
)

// resolvedTable keeps what each enforcer last reported installing for the
// DNS-named peers of the policies it enforces. Like the member table it
// lives in the leader's memory and is not replicated: it is observed
// state, renewed by every report.
type resolvedTable struct {
	mu sync.Mutex
	m  map[string][]*medmeshv1.ResolvedPeer // by enforcer id
}

func newResolvedTable() *resolvedTable {
	return &resolvedTable{m: map[string][]*medmeshv1.ResolvedPeer{}}
}

// put replaces enforcer's report.
func (t *resolvedTable) put(enforcer string, peers []*medmeshv1.ResolvedPeer, now time.Time) {
	out := make([]*medmeshv1.ResolvedPeer, 0, len(peers))
	for _, p := range peers {
		p = proto.CloneOf(p)
		p.EnforcerId, p.ReportTime = enforcer, timestamppb.New(now)
		out = append(out, p)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(out) == 0 {
		delete(t.m, enforcer)
		return
	}
	t.m[enforcer] = out
}

// forPolicy returns every enforcer's entries for the policy, by enforcer
// and name.
func (t *resolvedTable) forPolicy(name string) []*medmeshv1.ResolvedPeer {
	t.mu.Lock()
	var out []*medmeshv1.ResolvedPeer
	for _, peers := range t.m {
		for _, p := range peers {
			if p.GetPolicy() == name {
				out = append(out, proto.CloneOf(p))
			}
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b *medmeshv1.ResolvedPeer) int {
		if c := strings.Compare(a.GetEnforcerId(), b.GetEnforcerId()); c != 0 {
			return c
		}
		return strings.Compare(a.GetDnsName(), b.GetDnsName())
	})
	return out
}

// validateResolvedPeers checks an enforcer's report: bounded, policy
// names and DNS names as policies have them, addresses that parse, each
// (policy, name) once.
func validateResolvedPeers(peers []*medmeshv1.ResolvedPeer) error {
	if len(peers) > maxResolvedPeers {
		return invalid("resolved_peers", "%d entries, at most %d", len(peers), maxResolvedPeers)
	}
	seen := make(map[[2]string]bool, len(peers))
	for i, p := range peers {
		field := func(f string) string { return "resolved_peers[" + strconv.Itoa(i) + "]." + f }
		if !policyNameRE.MatchString(p.GetPolicy()) {
			return invalid(field("policy"), "%q is not a policy name", p.GetPolicy())
		}
		if !policy.ValidDNSName(p.GetDnsName()) {
			return invalid(field("dns_name"), "%q is not a DNS name", p.GetDnsName())
		}
		k := [2]string{p.GetPolicy(), p.GetDnsName()}
		if seen[k] {
			return invalid(field("dns_name"), "%q of policy %q reported twice", p.GetDnsName(), p.GetPolicy())
		}
		seen[k] = true
		if len(p.GetAddresses()) > maxResolvedAddrs {
			return invalid(field("addresses"), "%d addresses, at most %d", len(p.GetAddresses()), maxResolvedAddrs)
		}
		for _, a := range p.GetAddresses() {
			if _, err := netip.ParseAddr(a); err != nil {
				return invalid(field("addresses"), "%q is not an IP address", a)
			}
		}
		if len(p.GetError()) > maxTextField {
			return invalid(field("error"), "longer than %d bytes", maxTextField)
		}
		for name, ts := range map[string]*timestamppb.Timestamp{"resolve_time": p.GetResolveTime(), "refresh_time": p.GetRefreshTime()} {
			if ts != nil && ts.CheckValid() != nil {
				return invalid(field(name), "not a valid time")
			}
		}
	}
	return nil
}

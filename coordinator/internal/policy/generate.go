package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Defaults are the rules every generated policy starts with: what any
// device needs to function on the campus network.
type Defaults struct {
	// DNSServers and NTPServers restrict those rules to these servers;
	// empty means any peer.
	DNSServers []netip.Addr
	NTPServers []netip.Addr
	// DHCP adds the DHCP client rule (UDP 67, any peer: discovery is
	// broadcast).
	DHCP bool
	// ClassRules are extra rules for devices of a class, e.g. a patient
	// monitor's central station.
	ClassRules map[medmeshv1.DeviceClass][]*medmeshv1.Rule
}

// DefaultDefaults returns DHCP, DNS and NTP to any server.
func DefaultDefaults() Defaults { return Defaults{DHCP: true} }

func (d Defaults) rules(class medmeshv1.DeviceClass) []*medmeshv1.Rule {
	out := []*medmeshv1.Rule{}
	out0 := medmeshv1.Direction_DIRECTION_OUTBOUND
	if d.DHCP {
		out = append(out, &medmeshv1.Rule{Name: "dhcp", Protocol: protoUDP, PortMin: 67, PortMax: 67, Direction: out0})
	}
	add := func(name string, servers []netip.Addr, proto, port uint32) {
		if len(servers) == 0 {
			out = append(out, &medmeshv1.Rule{Name: name, Protocol: proto, PortMin: port, PortMax: port, Direction: out0})
			return
		}
		for i, s := range servers {
			n := name
			if len(servers) > 1 {
				n = fmt.Sprintf("%s-%d", name, i+1)
			}
			out = append(out, &medmeshv1.Rule{Name: n, Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: netip.PrefixFrom(s, s.BitLen()).String()},
				Protocol: proto, PortMin: port, PortMax: port, Direction: out0})
		}
	}
	add("dns", d.DNSServers, protoUDP, 53)
	add("dns-tcp", d.DNSServers, protoTCP, 53)
	add("ntp", d.NTPServers, protoUDP, 123)
	for _, r := range d.ClassRules[class] {
		out = append(out, cloneRule(r))
	}
	return out
}

func cloneRule(r *medmeshv1.Rule) *medmeshv1.Rule {
	c := &medmeshv1.Rule{Name: r.GetName(), Protocol: r.GetProtocol(), PortMin: r.GetPortMin(), PortMax: r.GetPortMax(), Direction: r.GetDirection()}
	switch p := r.GetPeer().(type) {
	case *medmeshv1.Rule_PeerCidr:
		c.Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: p.PeerCidr}
	case *medmeshv1.Rule_PeerDnsName:
		c.Peer = &medmeshv1.Rule_PeerDnsName{PeerDnsName: p.PeerDnsName}
	}
	return c
}

// learned is one baseline behaviour being turned into a rule.
type learned struct {
	prefix netip.Prefix // invalid: by name or any
	name   string
	proto  uint32
	port   uint32
	dir    medmeshv1.Direction
	app    string
}

// Generate builds a device's least-privilege policy from its frozen
// baseline plus the defaults for its class, in monitor mode. Each learned
// behaviour becomes an allow rule for that peer, protocol, port and
// direction. When that exceeds MaxRules, peers are widened step by step (to
// their /24 or /64, then to any peer for that service) until it fits.
func Generate(b *medmeshv1.Baseline, class medmeshv1.DeviceClass, d Defaults) (*medmeshv1.Policy, error) {
	if b.GetDeviceMac() == "" {
		return nil, invalid("baseline has no device")
	}
	if class == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
		class = b.GetDeviceClass()
	}
	base := d.rules(class)
	var ls []learned
	for _, e := range b.GetEntries() {
		l := learned{proto: e.GetProtocol(), port: e.GetPort(), dir: e.GetDirection(), app: e.GetApp()}
		if !hasPorts(l.proto) {
			l.port = 0
		}
		if c := e.GetPeerCidr(); c != "" {
			p, err := parsePeer(c)
			if err != nil {
				return nil, invalid("baseline entry: %v", err)
			}
			l.prefix = p
		} else {
			l.name = strings.ToLower(strings.TrimSuffix(e.GetPeerName(), "."))
		}
		if coveredBy(l, base) {
			continue
		}
		ls = append(ls, l)
	}
	budget := MaxRules - len(base)
	ls = dedupe(ls)
	if budget < 0 {
		return nil, invalid("%d default rules leave no room for learned ones", len(base))
	}
	steps := []func(learned) learned{
		func(l learned) learned { return l },
		func(l learned) learned { // widen to the /24 or /64
			if l.prefix.IsValid() {
				bits := 24
				if l.prefix.Addr().Is6() {
					bits = 64
				}
				if l.prefix.Bits() > bits {
					l.prefix = netip.PrefixFrom(l.prefix.Addr(), bits).Masked()
				}
			}
			return l
		},
		func(l learned) learned { l.prefix, l.name = netip.Prefix{}, ""; return l }, // any peer for the service
	}
	fits := false
	for _, widen := range steps {
		w := make([]learned, len(ls))
		for i, l := range ls {
			w[i] = widen(l)
		}
		if w = dedupe(w); len(w) <= budget {
			ls, fits = w, true
			break
		}
	}
	if !fits {
		return nil, invalid("baseline of %s needs more than %d rules even with any-peer rules", b.GetDeviceMac(), budget)
	}
	rules := base
	used := map[string]int{}
	for _, r := range base {
		used[r.GetName()]++
	}
	for _, l := range ls {
		r := &medmeshv1.Rule{Protocol: l.proto, PortMin: l.port, PortMax: l.port, Direction: l.dir}
		switch {
		case l.prefix.IsValid():
			r.Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: l.prefix.String()}
		case l.name != "":
			r.Peer = &medmeshv1.Rule_PeerDnsName{PeerDnsName: l.name}
		}
		stem := l.app
		if stem == "" {
			stem = names.Protocol(l.proto)
		}
		if l.port != 0 {
			stem = fmt.Sprintf("%s-%d", stem, l.port)
		}
		used[stem]++
		r.Name = fmt.Sprintf("%s-%d", stem, used[stem])
		rules = append(rules, r)
	}
	p := &medmeshv1.Policy{
		Name:        "device/" + b.GetDeviceMac(),
		Subject:     &medmeshv1.Policy_DeviceMac{DeviceMac: b.GetDeviceMac()},
		Rules:       rules,
		Mode:        medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
		Description: fmt.Sprintf("generated from baseline version %d (%d entries) and %s defaults", b.GetVersion(), len(b.GetEntries()), names.Enum(class)),
	}
	if err := Validate(p); err != nil {
		return nil, fmt.Errorf("generated policy: %w", err)
	}
	return p, nil
}

// dedupe sorts and removes duplicates and entries another entry covers.
func dedupe(ls []learned) []learned {
	slices.SortFunc(ls, func(a, b learned) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port), cmp.Compare(a.dir, b.dir),
			cmp.Compare(a.prefix.Bits(), b.prefix.Bits()), a.prefix.Addr().Compare(b.prefix.Addr()), cmp.Compare(a.name, b.name))
	})
	var out []learned
	for _, l := range ls {
		dup := false
		for _, o := range out {
			if o.proto == l.proto && o.port == l.port && o.dir == l.dir && peerCovers(o, l) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, l)
		}
	}
	return out
}

// peerCovers reports whether o's peer includes l's peer.
func peerCovers(o, l learned) bool {
	switch {
	case !o.prefix.IsValid() && o.name == "":
		return true
	case o.name != "":
		return o.name == l.name
	case l.prefix.IsValid():
		return o.prefix.Bits() <= l.prefix.Bits() && o.prefix.Contains(l.prefix.Addr())
	}
	return false
}

// coveredBy reports whether a default rule already allows l.
func coveredBy(l learned, rules []*medmeshv1.Rule) bool {
	for _, r := range rules {
		if r.GetPeer() != nil || r.GetProtocol() != l.proto || !dirCovers(r.GetDirection(), l.dir) {
			continue
		}
		if r.GetPortMax() == 0 || (l.port >= r.GetPortMin() && l.port <= r.GetPortMax()) {
			return true
		}
	}
	return false
}

func dirCovers(rule, flow medmeshv1.Direction) bool {
	return rule == medmeshv1.Direction_DIRECTION_UNSPECIFIED || rule == medmeshv1.Direction_DIRECTION_BOTH || rule == flow
}

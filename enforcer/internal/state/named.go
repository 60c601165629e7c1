package state

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/medmesh/medmesh/enforcer/internal/xdp"
)

// named is what a device's allow rules are built from when its policy
// names peers by DNS name: the policy's other rules, installed first as
// they are, then one rule per address the enforcer resolved for each named
// rule, in policy order. A name without an answer yet installs nothing:
// in enforce mode its traffic is dropped until the first answer, never
// let through.
type named struct {
	policy string     // the policy's name, for reports
	static []xdp.Rule // the policy's rules with a CIDR or any peer
	rules  []namedRule
}

// namedRule is a policy rule whose peer is a DNS name.
type namedRule struct {
	name             string // lower case, without the final dot
	proto, dir       uint8
	portMin, portMax uint16
}

func (r namedRule) rule(a netip.Addr) xdp.Rule {
	return xdp.Rule{Kind: xdp.KindAllow, Proto: r.proto, Dir: r.dir, Prefix: netip.PrefixFrom(a, a.BitLen()), PortMin: r.portMin, PortMax: r.portMax}
}

// template reports whether x is a host rule of r's protocol, direction
// and ports: one of the rules r expands to.
func (r namedRule) template(x xdp.Rule) bool {
	return x.Kind == xdp.KindAllow && x.Proto == r.proto && x.Dir == r.dir && x.PortMin == r.portMin && x.PortMax == r.portMax &&
		x.Prefix.IsValid() && x.Prefix.Bits() == x.Prefix.Addr().BitLen()
}

// names returns the distinct names n uses, sorted.
func (n *named) names() []string {
	if n == nil {
		return nil
	}
	var out []string
	for _, r := range n.rules {
		out = append(out, r.name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (n *named) uses(name string) bool {
	return slices.ContainsFunc(n.rules, func(r namedRule) bool { return r.name == name })
}

// expand returns n's allow rules for the addresses resolved so far, at
// most budget of them: the static rules (which the caller checked fit),
// then each named rule's addresses in order. Addresses that do not fit
// are left out (closed, never open) and counted.
func expand(n *named, resolved map[string][]netip.Addr, budget int) (rules []xdp.Rule, leftOut int) {
	rules = slices.Clone(n.static)
	for _, r := range n.rules {
		for _, a := range resolved[r.name] {
			if len(rules) >= budget {
				leftOut++
				continue
			}
			rules = append(rules, r.rule(a))
		}
	}
	return rules, leftOut
}

// adopt splits allow rules installed by an earlier enforcer for n: the
// static rules first, then, per named rule in order, the run of host
// rules of its template, which are the addresses installed for its name.
// Two named rules of one template in a row cannot be told apart: the
// first takes the whole run, which opens nothing (the rules are installed
// already) and lasts until the names are resolved again.
func adopt(allow []xdp.Rule, n *named) (map[string][]netip.Addr, error) {
	if len(allow) < len(n.static) || !slices.Equal(allow[:len(n.static)], n.static) {
		return nil, errors.New("installed rules do not start with the record's static rules")
	}
	rest := allow[len(n.static):]
	out := map[string][]netip.Addr{}
	for _, r := range n.rules {
		i := 0
		for i < len(rest) && r.template(rest[i]) {
			out[r.name] = append(out[r.name], rest[i].Prefix.Addr())
			i++
		}
		if _, ok := out[r.name]; !ok {
			out[r.name] = nil
		}
		rest = rest[i:]
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%d installed rules match no rule of the record", len(rest))
	}
	return out, nil
}

// nameKey is the key a name is stored under.
func nameKey(name string) xdp.NameKey {
	h := sha256.Sum256([]byte(name))
	return xdp.NameKey(h[:16])
}

// The record of a device's named rules, kept in the datapath's pinned maps
// so a restarted enforcer can rebuild them (xdp.Datapath.SetNamed):
//
//	version (1) | static rule count | policy name length | policy name |
//	named rule count | per named rule: protocol, direction,
//	port min (2, big endian), port max (2), name key (16)
//
// Names are stored once each under their key (xdp.Datapath.SetDNSName).
// The record does not hold addresses: those are in the device's installed
// rules, and it changes only when the device's policy does.
const (
	recordVersion  = 1
	namedRuleBytes = 6 + len(xdp.NameKey{})
)

func encodeRecord(n *named) ([]byte, error) {
	if len(n.policy) > 255 || len(n.static) > 255 || len(n.rules) > 255 {
		return nil, fmt.Errorf("policy %q: name or rules too long to record", n.policy)
	}
	b := make([]byte, 0, 4+len(n.policy)+len(n.rules)*namedRuleBytes)
	b = append(b, recordVersion, uint8(len(n.static)), uint8(len(n.policy)))
	b = append(b, n.policy...)
	b = append(b, uint8(len(n.rules)))
	for _, r := range n.rules {
		b = append(b, r.proto, r.dir)
		b = binary.BigEndian.AppendUint16(b, r.portMin)
		b = binary.BigEndian.AppendUint16(b, r.portMax)
		k := nameKey(r.name)
		b = append(b, k[:]...)
	}
	if len(b) > xdp.MaxNamedRecord {
		return nil, fmt.Errorf("policy %q: record of %d bytes, at most %d", n.policy, len(b), xdp.MaxNamedRecord)
	}
	return b, nil
}

// decodeRecord reads a record written by encodeRecord, taking the static
// rules from the device's installed rules and the names from names. It
// accepts nothing else: a record it cannot read is dropped by the caller.
func decodeRecord(b []byte, allow []xdp.Rule, names map[xdp.NameKey]string) (*named, error) {
	if len(b) < 4 || b[0] != recordVersion {
		return nil, errors.New("not a version 1 record")
	}
	nStatic, plen := int(b[1]), int(b[2])
	b = b[3:]
	if len(b) < plen+1 {
		return nil, errors.New("record cut in the policy name")
	}
	n := &named{policy: string(b[:plen])}
	nRules := int(b[plen])
	b = b[plen+1:]
	if len(b) != nRules*namedRuleBytes {
		return nil, fmt.Errorf("record holds %d bytes for %d named rules", len(b), nRules)
	}
	if nRules == 0 {
		return nil, errors.New("record without named rules")
	}
	if nStatic > len(allow) {
		return nil, fmt.Errorf("record counts %d static rules, the device has %d rules", nStatic, len(allow))
	}
	n.static = slices.Clone(allow[:nStatic])
	for i := range nRules {
		e := b[i*namedRuleBytes:]
		r := namedRule{proto: e[0], dir: e[1], portMin: binary.BigEndian.Uint16(e[2:]), portMax: binary.BigEndian.Uint16(e[4:])}
		key := xdp.NameKey(e[6:namedRuleBytes])
		name, ok := names[key]
		if !ok || nameKey(name) != key {
			return nil, fmt.Errorf("named rule %d: its name is not stored", i)
		}
		r.name = name
		n.rules = append(n.rules, r)
	}
	return n, nil
}

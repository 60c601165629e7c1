package policy

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// MaxMUDBytes bounds an imported MUD file.
const MaxMUDBytes = 1 << 20

// ExportMUD renders a device policy as an RFC 8520 MUD file. Each rule
// becomes a from-device ACE (the device's packets; its name is the rule's
// name plus "-frdev") and the mirrored to-device ACE ("-todev"). Outbound
// rules match the peer's port, inbound rules the device's own port, with
// ietf-mud:direction-initiated for TCP. A rule for both directions becomes
// two ACE pairs. Rules with a DNS name or no peer appear in both the IPv4
// and the IPv6 access lists.
func ExportMUD(p *medmeshv1.Policy, mudURL string) ([]byte, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	if p.GetDeviceMac() == "" {
		return nil, invalid("only device policies export as MUD files")
	}
	if mudURL == "" {
		mudURL = "https://medmesh.invalid/mud/" + strings.ReplaceAll(p.GetName(), "/", "_")
	}
	h := fnv.New32a()
	h.Write([]byte(p.GetName()))
	id := fmt.Sprintf("mud-%05d", h.Sum32()%100000)
	acls := map[string][]any{} // "v4fr" ...
	for i, r := range Canonical(p).GetRules() {
		name := r.GetName()
		if name == "" {
			name = fmt.Sprintf("rule%d", i)
		}
		fams := []string{"v4", "v6"}
		if c := r.GetPeerCidr(); c != "" {
			pfx, _ := parsePeer(c)
			fams = []string{"v4"}
			if pfx.Addr().Is6() {
				fams = []string{"v6"}
			}
		}
		dirs := []medmeshv1.Direction{r.GetDirection()}
		suffix := []string{""}
		if r.GetDirection() == medmeshv1.Direction_DIRECTION_UNSPECIFIED && r.GetPortMax() != 0 {
			dirs = []medmeshv1.Direction{medmeshv1.Direction_DIRECTION_OUTBOUND, medmeshv1.Direction_DIRECTION_INBOUND}
			suffix = []string{".out", ".in"}
		}
		for _, fam := range fams {
			for k, dir := range dirs {
				acls[fam+"fr"] = append(acls[fam+"fr"], exportACE(name+suffix[k]+"-frdev", fam, r, dir, true))
				acls[fam+"to"] = append(acls[fam+"to"], exportACE(name+suffix[k]+"-todev", fam, r, dir, false))
			}
		}
	}
	var aclList []any
	var from, to []any
	for _, key := range []string{"v4to", "v4fr", "v6to", "v6fr"} {
		if len(acls[key]) == 0 {
			continue
		}
		typ := "ipv4-acl-type"
		if strings.HasPrefix(key, "v6") {
			typ = "ipv6-acl-type"
		}
		name := id + "-" + key
		aclList = append(aclList, map[string]any{"name": name, "type": typ, "aces": map[string]any{"ace": acls[key]}})
		if strings.HasSuffix(key, "fr") {
			from = append(from, map[string]any{"name": name})
		} else {
			to = append(to, map[string]any{"name": name})
		}
	}
	updated := time.Now().UTC()
	if p.GetUpdateTime() != nil {
		updated = p.GetUpdateTime().AsTime().UTC()
	}
	sysinfo := p.GetDescription()
	if sysinfo == "" {
		sysinfo = p.GetName()
	}
	doc := map[string]any{
		"ietf-mud:mud": map[string]any{
			"mud-version":        1,
			"mud-url":            mudURL,
			"last-update":        updated.Format(time.RFC3339),
			"cache-validity":     48,
			"is-supported":       true,
			"systeminfo":         sysinfo,
			"from-device-policy": map[string]any{"access-lists": map[string]any{"access-list": from}},
			"to-device-policy":   map[string]any{"access-lists": map[string]any{"access-list": to}},
		},
		"ietf-access-control-list:acls": map[string]any{"acl": aclList},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func exportACE(name, fam string, r *medmeshv1.Rule, dir medmeshv1.Direction, fromDevice bool) map[string]any {
	l3 := map[string]any{}
	if r.GetProtocol() != 0 {
		l3["protocol"] = r.GetProtocol()
	}
	peerSide, ownSide := "destination", "source"
	dnsKey := "ietf-acldns:dst-dnsname"
	if !fromDevice {
		peerSide, ownSide = "source", "destination"
		dnsKey = "ietf-acldns:src-dnsname"
	}
	switch {
	case r.GetPeerCidr() != "":
		pfx, _ := parsePeer(r.GetPeerCidr())
		l3[peerSide+"-ip"+fam+"-network"] = pfx.String()
	case r.GetPeerDnsName() != "":
		l3[dnsKey] = r.GetPeerDnsName()
	}
	matches := map[string]any{"ip" + fam: l3}
	l4 := map[string]any{}
	if r.GetPortMax() != 0 {
		pr := map[string]any{"operator": "eq", "port": r.GetPortMin()}
		if r.GetPortMin() != r.GetPortMax() {
			pr = map[string]any{"lower-port": r.GetPortMin(), "upper-port": r.GetPortMax()}
		}
		side := peerSide // outbound: the peer's port
		if dir == medmeshv1.Direction_DIRECTION_INBOUND {
			side = ownSide // inbound: the device's own port
		}
		l4[side+"-port"] = pr
	}
	if r.GetProtocol() == protoTCP {
		switch dir {
		case medmeshv1.Direction_DIRECTION_OUTBOUND:
			l4["ietf-mud:direction-initiated"] = "from-device"
		case medmeshv1.Direction_DIRECTION_INBOUND:
			l4["ietf-mud:direction-initiated"] = "to-device"
		}
	}
	if len(l4) > 0 {
		switch r.GetProtocol() {
		case protoTCP:
			matches["tcp"] = l4
		case protoUDP:
			matches["udp"] = l4
		default:
			matches["l4"] = l4 // ports on "any protocol": not expressible in RFC 8519; kept for round trips
		}
	}
	return map[string]any{"name": name, "matches": matches, "actions": map[string]any{"forwarding": "accept"}}
}

// Canonical returns a copy of p with its rules in the form an import of
// its export yields: directions that cannot matter (no ports, not TCP) and
// DIRECTION_BOTH become DIRECTION_UNSPECIFIED, peers are masked prefixes,
// and rules are ordered by name (rule order has no effect on verdicts: a
// flow passes when any rule allows it).
func Canonical(p *medmeshv1.Policy) *medmeshv1.Policy {
	c := proto.Clone(p).(*medmeshv1.Policy)
	for _, r := range c.Rules {
		if r.Direction == medmeshv1.Direction_DIRECTION_BOTH ||
			(r.GetPortMax() == 0 && r.GetProtocol() != protoTCP) {
			r.Direction = medmeshv1.Direction_DIRECTION_UNSPECIFIED
		}
		if cidr := r.GetPeerCidr(); cidr != "" {
			if pfx, err := parsePeer(cidr); err == nil {
				r.Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: pfx.String()}
			}
		}
		if n := r.GetPeerDnsName(); n != "" {
			r.Peer = &medmeshv1.Rule_PeerDnsName{PeerDnsName: strings.ToLower(strings.TrimSuffix(n, "."))}
		}
	}
	sort.SliceStable(c.Rules, func(i, j int) bool {
		a, b := c.Rules[i], c.Rules[j]
		if a.GetName() != b.GetName() {
			return a.GetName() < b.GetName()
		}
		return ruleKey(a) < ruleKey(b)
	})
	return c
}

func ruleKey(r *medmeshv1.Rule) string {
	return fmt.Sprintf("%v|%s|%s|%d|%d-%d|%d", r.GetPeer() != nil, r.GetPeerCidr(), r.GetPeerDnsName(), r.GetProtocol(), r.GetPortMin(), r.GetPortMax(), r.GetDirection())
}

// mergeRules drops rules equal to an earlier one (ignoring names), strips
// the ".out"/".in" halves ExportMUD writes for two-way rules and merges an
// outbound and an inbound rule that are otherwise equal into one rule for
// both directions.
func mergeRules(rules []*medmeshv1.Rule) []*medmeshv1.Rule {
	key := func(r *medmeshv1.Rule, dir medmeshv1.Direction) string {
		c := proto.Clone(r).(*medmeshv1.Rule)
		c.Direction = dir
		return ruleKey(c)
	}
	var out []*medmeshv1.Rule
	seen := map[string]*medmeshv1.Rule{}
	for _, r := range rules {
		half := ""
		if n, ok := strings.CutSuffix(r.Name, ".out"); ok {
			r.Name, half = n, "out"
		} else if n, ok := strings.CutSuffix(r.Name, ".in"); ok {
			r.Name, half = n, "in"
		}
		k := key(r, r.Direction)
		if seen[k] != nil {
			continue
		}
		if half == "in" {
			if o := seen[key(r, medmeshv1.Direction_DIRECTION_OUTBOUND)]; o != nil && o.Name == r.Name && o.Direction == medmeshv1.Direction_DIRECTION_OUTBOUND {
				o.Direction = medmeshv1.Direction_DIRECTION_UNSPECIFIED
				seen[k] = o
				seen[key(o, o.Direction)] = o
				continue
			}
		}
		seen[k] = r
		out = append(out, r)
	}
	return out
}

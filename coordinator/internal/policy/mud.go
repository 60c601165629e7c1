package policy

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
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

// ace is one access-control entry, from either MUD form.
type ace struct {
	name             string
	proto            uint32
	srcNet, dstNet   string
	srcDNS, dstDNS   string
	srcPort, dstPort [2]uint32
	initiated        string
	accept           bool
	unsupported      []string
}

// ImportMUD parses a MUD file, RFC 8520 or the older draft form
// (ietf-access-control-list:access-lists, access-list-entries, rule-name,
// ipv4-acl / ipv6-acl, *-port-range-or-operator), into a monitor-mode
// policy for device mac. The from-device access lists give the rules; the
// to-device lists add any rule they imply that is missing. Constructs a
// policy cannot express (my-controller, local-networks, manufacturer,
// drop actions, ...) are skipped with a warning each.
func ImportMUD(mac string, data []byte) (*medmeshv1.Policy, []string, error) {
	if len(data) > MaxMUDBytes {
		return nil, nil, invalid("MUD file of %d bytes: at most %d", len(data), MaxMUDBytes)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, invalid("MUD file is not JSON: %v", err)
	}
	mud, _ := doc["ietf-mud:mud"].(map[string]any)
	if mud == nil {
		return nil, nil, invalid("no ietf-mud:mud container")
	}
	var warnings []string
	warn := func(format string, args ...any) {
		w := fmt.Sprintf(format, args...)
		if !slices.Contains(warnings, w) {
			warnings = append(warnings, w)
		}
	}
	acls := map[string][]ace{}
	if c, ok := doc["ietf-access-control-list:acls"].(map[string]any); ok { // RFC 8520
		for _, a := range list(c["acl"]) {
			acl, _ := a.(map[string]any)
			name, _ := acl["name"].(string)
			for _, e := range list(obj(acl["aces"])["ace"]) {
				acls[name] = append(acls[name], parseACE(obj(e), false))
			}
		}
	} else if c, ok := doc["ietf-access-control-list:access-lists"].(map[string]any); ok { // draft
		for _, a := range list(c["acl"]) {
			acl, _ := a.(map[string]any)
			name, _ := acl["name"].(string)
			for _, e := range list(obj(acl["access-list-entries"])["ace"]) {
				acls[name] = append(acls[name], parseACE(obj(e), true))
			}
		}
	} else {
		return nil, nil, invalid("no access control lists (ietf-access-control-list:acls or :access-lists)")
	}
	var rules []*medmeshv1.Rule
	for _, side := range []string{"from-device-policy", "to-device-policy"} {
		fromDevice := side == "from-device-policy"
		for _, ref := range list(obj(obj(mud[side])["access-lists"])["access-list"]) {
			name, _ := obj(ref)["name"].(string)
			entries, ok := acls[name]
			if !ok {
				warn("%s names access list %q, which the file does not define", side, name)
				continue
			}
			for _, e := range entries {
				for _, u := range e.unsupported {
					warn("ace %s: %s not representable; skipped", e.name, u)
				}
				if len(e.unsupported) > 0 {
					continue
				}
				if !e.accept {
					warn("ace %s: only accept actions are representable; skipped", e.name)
					continue
				}
				r, err := aceRule(e, fromDevice)
				if err != nil {
					warn("ace %s: %v; skipped", e.name, err)
					continue
				}
				rules = append(rules, r)
			}
		}
	}
	rules = mergeRules(rules)
	if len(rules) > MaxRules {
		warn("%d rules; only the first %d kept", len(rules), MaxRules)
		rules = rules[:MaxRules]
	}
	p := &medmeshv1.Policy{
		Name:    "device/" + mac,
		Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac},
		Rules:   rules,
		Mode:    medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
	}
	if s, ok := mud["systeminfo"].(string); ok {
		p.Description = s
	}
	if u, ok := mud["mud-url"].(string); ok && p.Description == "" {
		p.Description = "imported from " + u
	}
	if err := Validate(p); err != nil {
		return nil, warnings, err
	}
	return Canonical(p), warnings, nil
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func num(v any) (uint32, bool) {
	f, ok := v.(float64)
	if !ok || f < 0 || f > 1<<32-1 {
		return 0, false
	}
	return uint32(f), true
}

func portMatch(v any) ([2]uint32, bool) {
	m := obj(v)
	if m == nil {
		return [2]uint32{}, false
	}
	if op, ok := m["operator"].(string); ok {
		p, _ := num(m["port"])
		if op != "eq" {
			return [2]uint32{}, false
		}
		return [2]uint32{p, p}, true
	}
	lo, ok1 := num(m["lower-port"])
	hi, ok2 := num(m["upper-port"])
	if !ok1 || !ok2 {
		return [2]uint32{}, false
	}
	return [2]uint32{lo, hi}, true
}

func parseACE(e map[string]any, draft bool) ace {
	a := ace{}
	if draft {
		a.name, _ = e["rule-name"].(string)
	}
	if a.name == "" {
		a.name, _ = e["name"].(string)
	}
	a.accept = obj(e["actions"])["forwarding"] == "accept"
	for key, v := range obj(e["matches"]) {
		m := obj(v)
		switch key {
		case "ipv4", "ipv6", "ipv4-acl", "ipv6-acl":
			for k, x := range m {
				switch k {
				case "protocol":
					a.proto, _ = num(x)
				case "destination-ipv4-network", "destination-ipv6-network":
					a.dstNet, _ = x.(string)
				case "source-ipv4-network", "source-ipv6-network":
					a.srcNet, _ = x.(string)
				case "ietf-acldns:dst-dnsname":
					a.dstDNS, _ = x.(string)
				case "ietf-acldns:src-dnsname":
					a.srcDNS, _ = x.(string)
				case "source-port-range-or-operator", "destination-port-range-or-operator":
					pr, ok := portMatch(x)
					if !ok {
						a.unsupported = append(a.unsupported, k+" other than eq or a range")
					} else if strings.HasPrefix(k, "source") {
						a.srcPort = pr
					} else {
						a.dstPort = pr
					}
				case "dscp", "ecn", "length", "ttl", "ihl", "flags", "offset", "identification", "flow-label":
					a.unsupported = append(a.unsupported, key+" "+k)
				}
			}
		case "tcp", "udp", "tcp-acl", "udp-acl", "l4":
			for k, x := range m {
				switch k {
				case "ietf-mud:direction-initiated":
					a.initiated, _ = x.(string)
				case "source-port", "destination-port", "source-port-range-or-operator", "destination-port-range-or-operator":
					pr, ok := portMatch(x)
					if !ok {
						a.unsupported = append(a.unsupported, k+" other than eq or a range")
					} else if strings.HasPrefix(k, "source") {
						a.srcPort = pr
					} else {
						a.dstPort = pr
					}
				case "flags", "options", "sequence-number", "acknowledgement-number", "data-offset", "reserved", "window-size", "urgent-pointer", "length":
					a.unsupported = append(a.unsupported, key+" "+k)
				}
			}
			if a.proto == 0 && strings.HasPrefix(key, "tcp") {
				a.proto = protoTCP
			}
			if a.proto == 0 && strings.HasPrefix(key, "udp") {
				a.proto = protoUDP
			}
		case "ietf-mud:mud":
			for k := range m {
				a.unsupported = append(a.unsupported, "ietf-mud:mud "+k)
			}
		case "eth", "icmp", "icmp-acl":
			a.unsupported = append(a.unsupported, key+" matches")
		default:
			a.unsupported = append(a.unsupported, key+" matches")
		}
	}
	sort.Strings(a.unsupported)
	return a
}

// aceRule turns one ACE into a rule, seen from the device.
func aceRule(e ace, fromDevice bool) (*medmeshv1.Rule, error) {
	peerNet, peerDNS := e.dstNet, e.dstDNS
	peerPort, ownPort := e.dstPort, e.srcPort
	if !fromDevice {
		peerNet, peerDNS = e.srcNet, e.srcDNS
		peerPort, ownPort = e.srcPort, e.dstPort
	}
	if peerNet != "" && peerDNS != "" {
		return nil, fmt.Errorf("both a network and a DNS name")
	}
	r := &medmeshv1.Rule{Name: strings.TrimSuffix(strings.TrimSuffix(e.name, "-frdev"), "-todev"), Protocol: e.proto}
	switch {
	case peerNet != "":
		pfx, err := parsePeer(peerNet)
		if err != nil {
			return nil, err
		}
		r.Peer = &medmeshv1.Rule_PeerCidr{PeerCidr: pfx.String()}
	case peerDNS != "":
		r.Peer = &medmeshv1.Rule_PeerDnsName{PeerDnsName: strings.ToLower(strings.TrimSuffix(peerDNS, "."))}
	}
	switch {
	case peerPort != [2]uint32{} && ownPort != [2]uint32{}:
		return nil, fmt.Errorf("both source and destination ports")
	case peerPort != [2]uint32{}:
		r.PortMin, r.PortMax = peerPort[0], peerPort[1]
		r.Direction = medmeshv1.Direction_DIRECTION_OUTBOUND
	case ownPort != [2]uint32{}:
		r.PortMin, r.PortMax = ownPort[0], ownPort[1]
		r.Direction = medmeshv1.Direction_DIRECTION_INBOUND
	}
	switch e.initiated {
	case "from-device":
		r.Direction = medmeshv1.Direction_DIRECTION_OUTBOUND
	case "to-device":
		r.Direction = medmeshv1.Direction_DIRECTION_INBOUND
	}
	if r.GetPortMax() == 0 && r.GetProtocol() != protoTCP {
		r.Direction = medmeshv1.Direction_DIRECTION_UNSPECIFIED
	}
	if err := validateRule(r); err != nil {
		return nil, err
	}
	return r, nil
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

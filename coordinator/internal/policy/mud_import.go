package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// An import may only ever narrow what a MUD file allows. Every value is
// read at its JSON path and checked for its type and range: a malformed
// value (a port written as a string, a negative or fractional number, an
// unknown operator, a bad address) rejects the whole file with that path,
// because reading it as "absent" would allow more than the file says. A
// well-formed construct a policy cannot express (my-controller, a TTL
// match, a drop action, ...) skips its ACE with a warning: skipping an
// allow entry only narrows.

// ace is one access-control entry, from either MUD form.
type ace struct {
	name             string
	path             string
	proto            uint32
	srcNet, dstNet   string
	srcDNS, dstDNS   string
	srcPort, dstPort [2]uint32
	initiated        string
	accept           bool
	unsupported      []string
}

// label names the ACE in warnings: its name, else its path.
func (a ace) label() string {
	if a.name != "" {
		return a.name
	}
	return a.path
}

// ImportMUD parses a MUD file, RFC 8520 or the older draft form
// (ietf-access-control-list:access-lists, access-list-entries, rule-name,
// ipv4-acl / ipv6-acl, *-port-range-or-operator), into a monitor-mode
// policy for device mac. The from-device access lists give the rules; the
// to-device lists add any rule they imply that is missing. Constructs a
// policy cannot express (my-controller, local-networks, manufacturer,
// drop actions, ...) are skipped with a warning each; malformed values are
// errors naming their JSON path.
func ImportMUD(mac string, data []byte) (*medmeshv1.Policy, []string, error) {
	if len(data) > MaxMUDBytes {
		return nil, nil, invalid("MUD file of %d bytes: at most %d", len(data), MaxMUDBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var top any
	if err := dec.Decode(&top); err != nil {
		return nil, nil, invalid("MUD file is not JSON: %v", err)
	}
	if dec.More() {
		return nil, nil, invalid("MUD file is not JSON: data after the top-level value")
	}
	doc, ok := top.(map[string]any)
	if !ok {
		return nil, nil, invalid("MUD file is not a JSON object")
	}
	mud, err := object("ietf-mud:mud", doc["ietf-mud:mud"])
	if err != nil {
		return nil, nil, err
	}
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
	acls, err := parseACLs(doc)
	if err != nil {
		return nil, nil, err
	}
	var rules []*medmeshv1.Rule
	for _, side := range []string{"from-device-policy", "to-device-policy"} {
		fromDevice := side == "from-device-policy"
		refs, err := accessListRefs("ietf-mud:mud/"+side, mud[side])
		if err != nil {
			return nil, nil, err
		}
		for _, name := range refs {
			entries, ok := acls[name]
			if !ok {
				warn("%s names access list %q, which the file does not define", side, name)
				continue
			}
			dropSeen := ""
			for _, e := range entries {
				// ACEs are evaluated in order: an accept after a drop
				// allows only what the drop left, which a rule cannot say.
				if dropSeen != "" && e.accept {
					warn("ace %s: follows the non-accept ace %s of the same access list; skipped", e.label(), dropSeen)
					continue
				}
				if !e.accept {
					dropSeen = e.label()
					warn("ace %s: only accept actions are representable; skipped", e.label())
					continue
				}
				for _, u := range e.unsupported {
					warn("ace %s: %s not representable; skipped", e.label(), u)
				}
				if len(e.unsupported) > 0 {
					continue
				}
				r, err := aceRule(e, fromDevice)
				if err != nil {
					warn("ace %s: %v; skipped", e.label(), err)
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
	if len(p.Description) > 4096 {
		p.Description = p.Description[:4096]
	}
	if err := Validate(p); err != nil {
		return nil, warnings, err
	}
	return Canonical(p), warnings, nil
}

// parseACLs reads the access lists of either form, by name.
func parseACLs(doc map[string]any) (map[string][]ace, error) {
	root, entriesKey, draft := "ietf-access-control-list:acls", "aces", false
	if _, ok := doc[root]; !ok {
		root, entriesKey, draft = "ietf-access-control-list:access-lists", "access-list-entries", true
	}
	c, err := object(root, doc[root])
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, invalid("no access control lists (ietf-access-control-list:acls or :access-lists)")
	}
	aclList, err := array(root+"/acl", c["acl"])
	if err != nil {
		return nil, err
	}
	acls := map[string][]ace{}
	for i, a := range aclList {
		path := fmt.Sprintf("%s/acl[%d]", root, i)
		acl, err := object(path, a)
		if err != nil {
			return nil, err
		}
		name, err := str(path+"/name", acl["name"])
		if err != nil {
			return nil, err
		}
		if _, dup := acls[name]; dup {
			return nil, invalid("%s/name: access list %q defined twice", path, name)
		}
		entries, err := object(path+"/"+entriesKey, acl[entriesKey])
		if err != nil {
			return nil, err
		}
		aceList, err := array(path+"/"+entriesKey+"/ace", entries["ace"])
		if err != nil {
			return nil, err
		}
		acls[name] = []ace{}
		for j, e := range aceList {
			epath := fmt.Sprintf("%s/%s/ace[%d]", path, entriesKey, j)
			m, err := object(epath, e)
			if err != nil {
				return nil, err
			}
			a, err := parseACE(epath, m, draft)
			if err != nil {
				return nil, err
			}
			acls[name] = append(acls[name], a)
		}
	}
	return acls, nil
}

// accessListRefs reads a from- or to-device-policy's access-list names.
func accessListRefs(path string, v any) ([]string, error) {
	pol, err := object(path, v)
	if err != nil {
		return nil, err
	}
	lists, err := object(path+"/access-lists", pol["access-lists"])
	if err != nil {
		return nil, err
	}
	refs, err := array(path+"/access-lists/access-list", lists["access-list"])
	if err != nil {
		return nil, err
	}
	var names []string
	for i, r := range refs {
		rpath := fmt.Sprintf("%s/access-lists/access-list[%d]", path, i)
		m, err := object(rpath, r)
		if err != nil {
			return nil, err
		}
		name, err := str(rpath+"/name", m["name"])
		if err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// show renders a JSON value for an error message.
func show(v any) string {
	if v == nil {
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(b) > 64 {
		return string(b[:61]) + "..."
	}
	return string(b)
}

// object reads an optional JSON object: absent is nil, anything else but
// an object is an error.
func object(path string, v any) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("%s: %s is not an object", path, show(v))
	}
	return m, nil
}

// array reads an optional JSON array.
func array(path string, v any) ([]any, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, invalid("%s: %s is not an array", path, show(v))
	}
	return l, nil
}

// str reads a required JSON string.
func str(path string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", invalid("%s: %s is not a string", path, show(v))
	}
	return s, nil
}

// integer reads a JSON number written as a plain integer 0..hi (RFC 7951
// writes uint8 and uint16 as numbers, never strings, fractions or
// exponents).
func integer(path string, v any, hi uint64) (uint32, error) {
	n, ok := v.(json.Number)
	if ok {
		s := string(n)
		if s != "" && strings.Trim(s, "0123456789") == "" {
			if u, err := strconv.ParseUint(s, 10, 64); err == nil && u <= hi {
				return uint32(u), nil
			}
		}
	}
	return 0, invalid("%s: %s is not an integer 0..%d", path, show(v), hi)
}

// ipMatchKeys are the match keys of the IP containers a policy cannot
// express.
var ipMatchKeys = []string{"dscp", "ecn", "length", "ttl", "ihl", "flags", "offset", "identification", "flow-label"}

func parseACE(path string, e map[string]any, draft bool) (ace, error) {
	a := ace{path: path}
	nameKey := "name"
	if draft {
		if _, ok := e["rule-name"]; ok {
			nameKey = "rule-name"
		}
	}
	if v, ok := e[nameKey]; ok {
		n, err := str(path+"/"+nameKey, v)
		if err != nil {
			return a, err
		}
		a.name = n
	}
	actions, err := object(path+"/actions", e["actions"])
	if err != nil {
		return a, err
	}
	if fw, ok := actions["forwarding"]; ok {
		s, err := str(path+"/actions/forwarding", fw)
		if err != nil {
			return a, err
		}
		a.accept = s == "accept" || s == "ietf-access-control-list:accept"
	}
	matches, err := object(path+"/matches", e["matches"])
	if err != nil {
		return a, err
	}
	keys := make([]string, 0, len(matches))
	for k := range matches {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var l4 string // the transport container seen
	for _, key := range keys {
		mpath := path + "/matches/" + key
		m, err := object(mpath, matches[key])
		if err != nil {
			return a, err
		}
		switch key {
		case "ipv4", "ipv6", "ipv4-acl", "ipv6-acl":
			if err := a.parseIP(mpath, key, m); err != nil {
				return a, err
			}
		case "tcp", "udp", "tcp-acl", "udp-acl", "l4":
			if l4 != "" {
				return a, invalid("%s: an ace matches one transport protocol, not %s and %s", mpath, l4, key)
			}
			l4 = key
			if err := a.parseL4(mpath, key, m); err != nil {
				return a, err
			}
		case "ietf-mud:mud":
			for k := range m {
				a.unsupported = append(a.unsupported, "ietf-mud:mud "+k)
			}
		default: // eth, icmp, icmp-acl, egress-interface, ...
			a.unsupported = append(a.unsupported, key+" matches")
		}
	}
	var want uint32
	switch {
	case strings.HasPrefix(l4, "tcp"):
		want = protoTCP
	case strings.HasPrefix(l4, "udp"):
		want = protoUDP
	}
	switch {
	case want == 0:
	case a.proto == 0:
		a.proto = want
	case a.proto != want:
		return a, invalid("%s/matches/%s: with protocol %d (a %s match needs %d)", path, l4, a.proto, l4, want)
	}
	sort.Strings(a.unsupported)
	return a, nil
}

func (a *ace) parseIP(path, key string, m map[string]any) error {
	fam := "ipv4"
	if strings.HasPrefix(key, "ipv6") {
		fam = "ipv6"
	}
	for k, x := range m {
		kpath := path + "/" + k
		switch k {
		case "protocol":
			p, err := integer(kpath, x, 255)
			if err != nil {
				return err
			}
			if p == 0 { // IPv6 hop-by-hop: a policy's 0 means any protocol
				a.unsupported = append(a.unsupported, key+" protocol 0")
			}
			a.proto = p
		case "destination-" + fam + "-network", "source-" + fam + "-network":
			s, err := str(kpath, x)
			if err != nil {
				return err
			}
			pfx, err := parsePeer(s)
			if err != nil || (fam == "ipv4") != pfx.Addr().Is4() {
				return invalid("%s: %s is not an %s network", kpath, show(x), strings.ToUpper(fam[:2])+fam[2:])
			}
			if strings.HasPrefix(k, "source") {
				a.srcNet = s
			} else {
				a.dstNet = s
			}
		case "ietf-acldns:dst-dnsname", "ietf-acldns:src-dnsname":
			s, err := str(kpath, x)
			if err != nil {
				return err
			}
			if len(s) > 253 || !dnsNameRE.MatchString(s) {
				return invalid("%s: %s is not a DNS name", kpath, show(x))
			}
			if strings.HasSuffix(k, "src-dnsname") {
				a.srcDNS = s
			} else {
				a.dstDNS = s
			}
		case "source-port-range-or-operator", "destination-port-range-or-operator":
			if err := a.parsePort(kpath, k, x); err != nil {
				return err
			}
		default:
			if slices.Contains(ipMatchKeys, k) {
				a.unsupported = append(a.unsupported, key+" "+k)
			} else {
				a.unsupported = append(a.unsupported, key+" "+k+" (unknown)")
			}
		}
	}
	return nil
}

func (a *ace) parseL4(path, key string, m map[string]any) error {
	for k, x := range m {
		kpath := path + "/" + k
		switch k {
		case "ietf-mud:direction-initiated":
			if key != "tcp" && key != "tcp-acl" && key != "l4" {
				a.unsupported = append(a.unsupported, key+" "+k)
				continue
			}
			s, err := str(kpath, x)
			if err != nil {
				return err
			}
			if s != "from-device" && s != "to-device" {
				return invalid("%s: %s is neither \"from-device\" nor \"to-device\"", kpath, show(x))
			}
			a.initiated = s
		case "source-port", "destination-port", "source-port-range-or-operator", "destination-port-range-or-operator":
			if err := a.parsePort(kpath, k, x); err != nil {
				return err
			}
		case "flags", "options", "sequence-number", "acknowledgement-number", "data-offset", "reserved", "window-size", "urgent-pointer", "length", "checksum":
			a.unsupported = append(a.unsupported, key+" "+k)
		default:
			a.unsupported = append(a.unsupported, key+" "+k+" (unknown)")
		}
	}
	return nil
}

// parsePort reads a port match (RFC 8519 port-range-or-operator): an
// operator and a port, or a lower and an upper port.
func (a *ace) parsePort(path, key string, v any) error {
	m, err := object(path, v)
	if err != nil {
		return err
	}
	if m == nil {
		return invalid("%s: null is not an object", path)
	}
	for k := range m {
		if k != "operator" && k != "port" && k != "lower-port" && k != "upper-port" {
			return invalid("%s/%s: unknown port match field", path, k)
		}
	}
	var pr [2]uint32
	_, hasOp := m["operator"]
	_, hasLo := m["lower-port"]
	_, hasHi := m["upper-port"]
	switch {
	case hasOp && (hasLo || hasHi):
		return invalid("%s: both an operator and a range", path)
	case hasOp:
		op, err := str(path+"/operator", m["operator"])
		if err != nil {
			return err
		}
		p, err := integer(path+"/port", m["port"], 65535)
		if err != nil {
			return err
		}
		switch op {
		case "eq":
			pr = [2]uint32{p, p}
		case "lte":
			pr = [2]uint32{0, p}
		case "gte":
			pr = [2]uint32{p, 65535}
		case "neq":
			a.unsupported = append(a.unsupported, key+" operator neq")
			return nil
		default:
			return invalid("%s/operator: %s is not one of eq, lte, gte, neq", path, show(op))
		}
	default:
		lo, err := integer(path+"/lower-port", m["lower-port"], 65535)
		if err != nil {
			return err
		}
		hi, err := integer(path+"/upper-port", m["upper-port"], 65535)
		if err != nil {
			return err
		}
		if lo > hi {
			return invalid("%s: lower-port %d above upper-port %d", path, lo, hi)
		}
		pr = [2]uint32{lo, hi}
	}
	if pr[1] == 0 { // a policy's port range 0-0 means any port
		a.unsupported = append(a.unsupported, key+" port 0")
		return nil
	}
	if strings.HasPrefix(key, "source") {
		if a.srcPort != [2]uint32{} {
			return invalid("%s: a second source port match", path)
		}
		a.srcPort = pr
	} else {
		if a.dstPort != [2]uint32{} {
			return invalid("%s: a second destination port match", path)
		}
		a.dstPort = pr
	}
	return nil
}

// aceRule turns one ACE into a rule, seen from the device. Its errors are
// constructs a rule cannot express; the caller skips the ACE.
func aceRule(e ace, fromDevice bool) (*medmeshv1.Rule, error) {
	peerNet, peerDNS := e.dstNet, e.dstDNS
	ownNet, ownDNS := e.srcNet, e.srcDNS
	peerPort, ownPort := e.dstPort, e.srcPort
	if !fromDevice {
		peerNet, peerDNS = e.srcNet, e.srcDNS
		ownNet, ownDNS = e.dstNet, e.dstDNS
		peerPort, ownPort = e.srcPort, e.dstPort
	}
	if ownNet != "" || ownDNS != "" {
		return nil, fmt.Errorf("a match on the device's own address")
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
	// A rule's port is the server's: the peer's when the device
	// initiates, the device's own when the peer does. A port on the other
	// side of the initiator is a client port a rule cannot match.
	switch e.initiated {
	case "from-device":
		if r.Direction == medmeshv1.Direction_DIRECTION_INBOUND {
			return nil, fmt.Errorf("device-initiated connections from the device's own port")
		}
		r.Direction = medmeshv1.Direction_DIRECTION_OUTBOUND
	case "to-device":
		if r.Direction == medmeshv1.Direction_DIRECTION_OUTBOUND {
			return nil, fmt.Errorf("peer-initiated connections from the peer's port")
		}
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

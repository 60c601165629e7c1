package policy

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// setAt returns the JSON doc with the value at a slash-separated path
// ("a/b[1]/c") replaced by v, or deleted when v is deleteValue.
func setAt(t *testing.T, doc []byte, path string, v any) []byte {
	t.Helper()
	var root any
	if err := json.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	cur := root
	parts := strings.Split(path, "/")
	for i, p := range parts {
		key, idx := p, -1
		if k, rest, ok := strings.Cut(p, "["); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
			if err != nil {
				t.Fatalf("path %s: %v", path, err)
			}
			key, idx = k, n
		}
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("path %s: %s is not an object", path, p)
		}
		last := i == len(parts)-1
		if idx < 0 {
			if last {
				if v == deleteValue {
					delete(m, key)
				} else {
					m[key] = v
				}
				break
			}
			cur = m[key]
			continue
		}
		l, ok := m[key].([]any)
		if !ok || idx >= len(l) {
			t.Fatalf("path %s: %s is not an array that long", path, p)
		}
		if last {
			l[idx] = v
			break
		}
		cur = l[idx]
	}
	b, err := json.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type deleteMarker struct{}

var deleteValue any = deleteMarker{}

// The Cisco luminaire file's from-device ACE cl0-frdev: TCP to
// fw-update.luminaire.example.com port 443, initiated by the device.
const cl0 = "ietf-access-control-list:acls/acl[1]/aces/ace[0]"

// TestImportMUDRejectsMalformedValues: every malformed value in a real
// MUD file rejects the whole import with the value's JSON path. Before,
// a port written as a string, a negative or fractional port, a protocol
// written as a string or a bad network read as "absent": the ACE became
// any port (or any protocol, any peer), both directions.
func TestImportMUDRejectsMalformedValues(t *testing.T) {
	base := mudFile(t, "cisco-luminaire-rfc8520.json")
	port := cl0 + "/matches/tcp/destination-port"
	for _, c := range []struct {
		path string
		v    any
		want string
	}{
		{port + "/port", "2575", port + `/port: "2575" is not an integer 0..65535`},
		{port + "/port", -1, port + `/port: -1 is not an integer 0..65535`},
		{port + "/port", 443.5, port + `/port: 443.5 is not an integer 0..65535`},
		{port + "/port", 65536, port + `/port: 65536 is not an integer 0..65535`},
		{port + "/port", 1e20, port + `/port: 100000000000000000000 is not an integer 0..65535`},
		{port + "/port", nil, port + `/port: null is not an integer 0..65535`},
		{port + "/port", deleteValue, port + `/port: null is not an integer 0..65535`},
		{port + "/operator", "lt", port + `/operator: "lt" is not one of eq, lte, gte, neq`},
		{port + "/operator", 1, port + `/operator: 1 is not a string`},
		{port, "443", port + `: "443" is not an object`},
		{port, map[string]any{"lower-port": 500, "upper-port": 400}, port + `: lower-port 500 above upper-port 400`},
		{port, map[string]any{"lower-port": 1, "upper-port": "9"}, port + `/upper-port: "9" is not an integer 0..65535`},
		{port, map[string]any{"operator": "eq", "port": 443, "upper-port": 500}, port + `: both an operator and a range`},
		{port, map[string]any{"operator": "eq", "prot": 443}, port + `/prot: unknown port match field`},
		{cl0 + "/matches/ipv4/protocol", "6", cl0 + `/matches/ipv4/protocol: "6" is not an integer 0..255`},
		{cl0 + "/matches/ipv4/protocol", 256, cl0 + `/matches/ipv4/protocol: 256 is not an integer 0..255`},
		{cl0 + "/matches/ipv4/protocol", 17, cl0 + `/matches/tcp: with protocol 17 (a tcp match needs 6)`},
		{cl0 + "/matches/ipv4/ietf-acldns:dst-dnsname", 42, cl0 + `/matches/ipv4/ietf-acldns:dst-dnsname: 42 is not a string`},
		{cl0 + "/matches/ipv4/ietf-acldns:dst-dnsname", "bad name!", cl0 + `/matches/ipv4/ietf-acldns:dst-dnsname: "bad name!" is not a DNS name`},
		{cl0 + "/matches/ipv4/destination-ipv4-network", "10.0.0.300/32", cl0 + `/matches/ipv4/destination-ipv4-network: "10.0.0.300/32" is not an IPv4 network`},
		{cl0 + "/matches/ipv4/destination-ipv4-network", "2001:db8::/32", cl0 + `/matches/ipv4/destination-ipv4-network: "2001:db8::/32" is not an IPv4 network`},
		{cl0 + "/matches/tcp/ietf-mud:direction-initiated", "sideways", cl0 + `/matches/tcp/ietf-mud:direction-initiated: "sideways" is neither "from-device" nor "to-device"`},
		{cl0 + "/matches/tcp", "any", cl0 + `/matches/tcp: "any" is not an object`},
		{cl0 + "/matches/udp", map[string]any{}, cl0 + `/matches/udp: an ace matches one transport protocol, not tcp and udp`},
		{cl0 + "/matches", []any{}, cl0 + `/matches: [] is not an object`},
		{cl0 + "/actions/forwarding", true, cl0 + `/actions/forwarding: true is not a string`},
		{cl0 + "/name", 7, cl0 + `/name: 7 is not a string`},
		{"ietf-access-control-list:acls/acl", map[string]any{}, `ietf-access-control-list:acls/acl: {} is not an array`},
		{"ietf-mud:mud/from-device-policy/access-lists/access-list[0]/name", 1, `ietf-mud:mud/from-device-policy/access-lists/access-list[0]/name: 1 is not a string`},
	} {
		doc := setAt(t, base, c.path, c.v)
		p, warnings, err := ImportMUD(mac, doc)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s = %v: got policy %v, warnings %q, err %v\nwant an error containing %s", c.path, c.v, p, warnings, err, c.want)
		}
	}
}

// TestImportMUDSkipsOnlyToNarrow: well-formed constructs a rule cannot
// express skip their ACE with a warning, so the import allows less than
// the file, never more.
func TestImportMUDSkipsOnlyToNarrow(t *testing.T) {
	base := mudFile(t, "cisco-luminaire-rfc8520.json")
	port := cl0 + "/matches/tcp/destination-port"
	for _, c := range []struct {
		path string
		v    any
		warn string
	}{
		// Port 0 is a policy's "any port".
		{port + "/port", 0, "ace cl0-frdev: destination-port port 0 not representable; skipped"},
		{port, map[string]any{"operator": "neq", "port": 443}, "ace cl0-frdev: destination-port operator neq not representable; skipped"},
		// An unknown match would be dropped, widening the ACE.
		{cl0 + "/matches/tcp/destination-prot", map[string]any{"operator": "eq", "port": 1}, "ace cl0-frdev: tcp destination-prot (unknown) not representable; skipped"},
		{cl0 + "/matches/ipv4/ttl", 1, "ace cl0-frdev: ipv4 ttl not representable; skipped"},
		{cl0 + "/matches/eth", map[string]any{}, "ace cl0-frdev: eth matches not representable; skipped"},
		{cl0 + "/matches/ipv4/protocol", 0, "ace cl0-frdev: ipv4 protocol 0 not representable; skipped"},
		// The device's own address cannot be matched by a device policy.
		{cl0 + "/matches/ipv4/source-ipv4-network", "10.9.9.9/32", "ace cl0-frdev: a match on the device's own address; skipped"},
		// Peer-initiated from the peer's port 443: a client port.
		{cl0 + "/matches/tcp/ietf-mud:direction-initiated", "to-device", "ace cl0-frdev: peer-initiated connections from the peer's port; skipped"},
		{cl0 + "/actions/forwarding", "drop", "ace cl0-frdev: only accept actions are representable; skipped"},
	} {
		doc := setAt(t, base, c.path, c.v)
		// The to-device mirror would bring the rule back: drop it so
		// the test sees exactly what the mutated ACE yields.
		doc = setAt(t, doc, "ietf-access-control-list:acls/acl[0]/aces/ace[0]/matches/ietf-mud:mud", map[string]any{"my-controller": []any{nil}})
		p, warnings, err := ImportMUD(mac, doc)
		if err != nil {
			t.Errorf("%s = %v: %v", c.path, c.v, err)
			continue
		}
		if len(p.GetRules()) != 0 {
			t.Errorf("%s = %v: rules %v, want the ACE skipped", c.path, c.v, p.GetRules())
		}
		if !strings.Contains(strings.Join(warnings, "\n"), c.warn) {
			t.Errorf("%s = %v: warnings %q lack %q", c.path, c.v, warnings, c.warn)
		}
	}
}

// TestImportMUDAcceptAfterDropSkipped: an accept after a drop allows only
// what the drop leaves, which a rule cannot say; both are skipped.
func TestImportMUDAcceptAfterDropSkipped(t *testing.T) {
	doc := []byte(`{"ietf-mud:mud":{"from-device-policy":{"access-lists":{"access-list":[{"name":"a"}]}}},
	"ietf-access-control-list:acls":{"acl":[{"name":"a","aces":{"ace":[
	 {"name":"no-telnet","matches":{"ipv4":{"protocol":6,"destination-ipv4-network":"10.0.0.5/32"},"tcp":{"destination-port":{"operator":"eq","port":23}}},"actions":{"forwarding":"drop"}},
	 {"name":"lan","matches":{"ipv4":{"protocol":6,"destination-ipv4-network":"10.0.0.0/24"}},"actions":{"forwarding":"accept"}}]}}]}}`)
	p, warnings, err := ImportMUD(mac, doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.GetRules()) != 0 {
		t.Fatalf("rules %v: the accept after a drop must not be imported alone", p.GetRules())
	}
	if !strings.Contains(strings.Join(warnings, "\n"), "ace lan: follows the non-accept ace no-telnet") {
		t.Fatalf("warnings %q", warnings)
	}
}

// TestImportMUDOperators: lte and gte are ranges, not widened.
func TestImportMUDOperators(t *testing.T) {
	base := mudFile(t, "cisco-luminaire-rfc8520.json")
	port := cl0 + "/matches/tcp/destination-port"
	for op, want := range map[string][2]uint32{"lte": {0, 1024}, "gte": {1024, 65535}, "eq": {1024, 1024}} {
		doc := setAt(t, base, port, map[string]any{"operator": op, "port": 1024})
		doc = setAt(t, doc, "ietf-access-control-list:acls/acl[0]/aces/ace[0]/matches/ietf-mud:mud", map[string]any{"my-controller": []any{nil}})
		p, _, err := ImportMUD(mac, doc)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if len(p.GetRules()) != 1 || p.GetRules()[0].GetPortMin() != want[0] || p.GetRules()[0].GetPortMax() != want[1] {
			t.Fatalf("%s 1024: rules %v, want ports %v", op, p.GetRules(), want)
		}
	}
}

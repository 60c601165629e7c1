package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzImportMUD: an import never panics, and whatever it accepts is a
// valid policy whose rules are no broader than the ACEs they come from:
// ports in 0..65535, and a rule has a port range, a protocol or a peer
// whenever every ACE of its name constrains that.
func FuzzImportMUD(f *testing.F) {
	for _, name := range []string{"cisco-luminaire-rfc8520.json", "osmud-lightbulb2000-draft.json"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "shared", "testdata", "mud", name)); err == nil {
			f.Add(b)
		}
	}
	own, err := ExportMUD(devicePolicy(
		cidr("hl7", "10.20.0.5/32", 6, 2575, 2575, out),
		cidr("console", "10.40.0.0/24", 6, 8443, 8443, in),
		cidr("dyn", "10.60.0.0/16", 17, 5000, 5100, both),
		cidr("any-proto", "10.70.0.0/16", 0, 7000, 7000, out),
	), "https://mud.example.org/pump")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(own)
	f.Add([]byte(`{"ietf-mud:mud":{"from-device-policy":{"access-lists":{"access-list":[{"name":"a"}]}}},"ietf-access-control-list:acls":{"acl":[{"name":"a","aces":{"ace":[{"name":"x","matches":{"tcp":{"destination-port":{"operator":"eq","port":"2575"}}},"actions":{"forwarding":"accept"}}]}}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, warnings, err := ImportMUD(mac, data)
		if err != nil {
			return
		}
		if err := Validate(p); err != nil {
			t.Fatalf("accepted an invalid policy: %v", err)
		}
		for _, w := range warnings {
			if w == "" {
				t.Fatal("empty warning")
			}
		}
		aces := aceConstraints(data)
		for _, r := range p.GetRules() {
			if r.GetPortMax() > 65535 || r.GetPortMin() > r.GetPortMax() {
				t.Fatalf("rule %v: ports out of range", r)
			}
			cs, ok := aces[r.GetName()]
			if !ok || r.GetName() == "" {
				continue
			}
			all := func(f func(c constraint) bool) bool {
				for _, c := range cs {
					if !f(c) {
						return false
					}
				}
				return true
			}
			if all(func(c constraint) bool { return c.port }) && r.GetPortMax() == 0 {
				t.Fatalf("rule %v allows any port; its ACEs name ports", r)
			}
			if all(func(c constraint) bool { return c.proto }) && r.GetProtocol() == 0 {
				t.Fatalf("rule %v allows any protocol; its ACEs name one", r)
			}
			if all(func(c constraint) bool { return c.peer }) && r.GetPeer() == nil {
				t.Fatalf("rule %v allows any peer; its ACEs name one", r)
			}
		}
	})
}

// constraint says what an ACE's matches constrain, read independently of
// the importer: any key naming a port, a protocol or a peer.
type constraint struct{ port, proto, peer bool }

// aceConstraints maps rule names (ACE names less the -frdev/-todev and
// .out/.in suffixes) to the constraints of each ACE of that name.
func aceConstraints(data []byte) map[string][]constraint {
	var doc any
	if json.Unmarshal(data, &doc) != nil {
		return nil
	}
	out := map[string][]constraint{}
	record := func(x map[string]any) {
		name, _ := x["name"].(string)
		if rn, ok := x["rule-name"].(string); ok {
			name = rn
		}
		name = strings.TrimSuffix(strings.TrimSuffix(name, "-frdev"), "-todev")
		name = strings.TrimSuffix(strings.TrimSuffix(name, ".out"), ".in")
		var c constraint
		m, _ := x["matches"].(map[string]any)
		for key, sub := range m {
			if key == "tcp" || key == "udp" || key == "tcp-acl" || key == "udp-acl" {
				c.proto = true
			}
			sm, _ := sub.(map[string]any)
			for k := range sm {
				switch {
				case strings.Contains(k, "port"):
					c.port = true
				case k == "protocol":
					c.proto = true
				case strings.Contains(k, "network") || strings.Contains(k, "dnsname"):
					c.peer = true
				}
			}
		}
		out[name] = append(out[name], c)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, sub := range x {
				if l, ok := sub.([]any); ok && k == "ace" {
					for _, e := range l {
						if m, ok := e.(map[string]any); ok {
							record(m)
						}
					}
				}
				walk(sub)
			}
		case []any:
			for _, sub := range x {
				walk(sub)
			}
		}
	}
	walk(doc)
	return out
}

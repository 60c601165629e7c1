package state

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func dnsRule(name string, proto, port uint32) *medmeshv1.Rule {
	return &medmeshv1.Rule{Peer: &medmeshv1.Rule_PeerDnsName{PeerDnsName: name}, Protocol: proto, PortMin: port, PortMax: port, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// installed returns the allow rules of mac's slot as "proto/prefix:port".
func (f *fakeTable) installed(t *testing.T, m string) []string {
	t.Helper()
	e, ok := f.devices[m]
	if !ok {
		t.Fatalf("device %s has no entry", m)
	}
	var out []string
	for _, r := range f.slots[e.Slot] {
		if r.Kind == xdp.KindAllow {
			out = append(out, fmt.Sprintf("%d/%s:%d", r.Proto, r.Prefix, r.PortMin))
		}
	}
	return out
}

func applyPolicy(t *testing.T, s *State, index uint64, m string, p *medmeshv1.Policy) {
	t.Helper()
	if ok, err := s.Apply(dec(index, medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, func(d *medmeshv1.Decision) {
		d.Id, d.DeviceMac, d.Policy = fmt.Sprintf("d%d/%s", index, m), m, p
	})); !ok || err != nil {
		t.Fatalf("apply %d to %s: applied %v err %v", index, m, ok, err)
	}
}

// A DNS-named peer installs nothing before its first answer (closed), one
// host rule per address after it, and exactly the new addresses after the
// next answer; the policy's other rules stay. The names a policy uses are
// announced when they change.
func TestNamedRulesFollowAnswers(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	var heard [][]string
	s.OnNames(func(names []string) { heard = append(heard, names) })
	p := policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, cidrRule("10.0.0.0/8", 6, 22),
		dnsRule("FW-Update.Luminaire.example.com.", 6, 443), dnsRule("ntp.example.com", 17, 123))
	applyPolicy(t, s, 5, mac, p)
	if got := tab.installed(t, mac); !slices.Equal(got, []string{"6/10.0.0.0/8:22"}) {
		t.Fatalf("before any answer: %v, want the CIDR rule alone", got)
	}
	want := []string{"fw-update.luminaire.example.com", "ntp.example.com"}
	if len(heard) != 2 || len(heard[0]) != 0 || !slices.Equal(heard[1], want) {
		t.Fatalf("names heard %q, want [] then %q", heard, want)
	}
	if err := s.SetResolved("fw-update.luminaire.example.com", addrs("192.0.2.7", "2001:db8::7", "192.0.2.7")); err != nil {
		t.Fatal(err)
	}
	if got := tab.installed(t, mac); !slices.Equal(got, []string{"6/10.0.0.0/8:22", "6/192.0.2.7/32:443", "6/2001:db8::7/128:443"}) {
		t.Fatalf("after the answer: %v", got)
	}
	slot := tab.devices[mac].Slot
	if err := s.SetResolved("fw-update.luminaire.example.com", addrs("192.0.2.9")); err != nil {
		t.Fatal(err)
	}
	if got := tab.installed(t, mac); !slices.Equal(got, []string{"6/10.0.0.0/8:22", "6/192.0.2.9/32:443"}) {
		t.Fatalf("after the address changed: %v", got)
	}
	if tab.devices[mac].Slot == slot {
		t.Fatal("changed rules were written over the live slot")
	}
	if err := s.SetResolved("ntp.example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetResolved("unused.example.com", addrs("198.51.100.1")); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Resolved()["unused.example.com"]; ok {
		t.Fatal("a name no policy uses was taken")
	}
	peers := s.NamedPeers()
	if len(peers) != 2 || peers[0].Name != want[0] || !peers[0].Resolved || !slices.Equal(peers[0].Addrs, addrs("192.0.2.9")) ||
		peers[1].Name != want[1] || !peers[1].Resolved || len(peers[1].Addrs) != 0 || peers[0].Devices != 1 || peers[0].Policy != p.Name {
		t.Fatalf("named peers %+v", peers)
	}
	if len(tab.named) != 1 || len(tab.names) != 2 {
		t.Fatalf("stored %d records and %d names, want 1 and 2", len(tab.named), len(tab.names))
	}
	// A policy without names replaces it: the record and names go.
	applyPolicy(t, s, 6, mac, policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, cidrRule("10.0.0.0/8", 6, 22)))
	if len(tab.named) != 0 || len(tab.names) != 0 || len(s.Resolved()) != 0 {
		t.Fatalf("after a policy without names: %d records, %d names, resolved %v", len(tab.named), len(tab.names), s.Resolved())
	}
	if last := heard[len(heard)-1]; len(last) != 0 {
		t.Fatalf("names heard last %q, want none", last)
	}
	if err := s.SetResolved("ntp.example.com", addrs("192.0.2.123")); err != nil {
		t.Fatal(err)
	}
	if got := tab.installed(t, mac); !slices.Equal(got, []string{"6/10.0.0.0/8:22"}) {
		t.Fatalf("an answer for a name no longer used changed the rules: %v", got)
	}
}

// One answer updates every device whose policy names the peer: a class
// policy's devices, and a device policy naming the same peer.
func TestOneAnswerManyDevices(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	class := policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, dnsRule("cloud.example.com", 6, 443))
	class.Name = "class/infusion-pump"
	macs := []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"}
	for _, m := range macs {
		applyPolicy(t, s, 9, m, class)
	}
	applyPolicy(t, s, 10, mac, policy(medmeshv1.PolicyMode_POLICY_MODE_MONITOR, dnsRule("cloud.example.com", 6, 8443)))
	if err := s.SetResolved("cloud.example.com", addrs("203.0.113.5")); err != nil {
		t.Fatal(err)
	}
	for _, m := range macs {
		if got := tab.installed(t, m); !slices.Equal(got, []string{"6/203.0.113.5/32:443"}) {
			t.Fatalf("%s: %v", m, got)
		}
	}
	if got := tab.installed(t, mac); !slices.Equal(got, []string{"6/203.0.113.5/32:8443"}) {
		t.Fatalf("%s: %v", mac, got)
	}
	peers := s.NamedPeers()
	if len(peers) != 2 || peers[0].Policy != "class/infusion-pump" || peers[0].Devices != 3 || peers[1].Devices != 1 {
		t.Fatalf("named peers %+v", peers)
	}
}

// The addresses of names take only the room the policy's other rules and
// the device's blocks leave: what does not fit is left out (dropped in
// enforce mode), and a block still applies to a device whose rules are
// full of addresses.
func TestNamedAddressesYieldToBlocks(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	applyPolicy(t, s, 3, mac, policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, cidrRule("10.0.0.0/8", 6, 22), dnsRule("many.example.com", 6, 443)))
	var many []netip.Addr
	for i := range 80 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	if err := s.SetResolved("many.example.com", many); err != nil {
		t.Fatal(err)
	}
	if n := tab.devices[mac].NRules; n != xdp.MaxRules {
		t.Fatalf("%d rules installed, want the device's %d", n, xdp.MaxRules)
	}
	if _, err := s.Apply(dec(4, medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, func(d *medmeshv1.Decision) { d.PeerCidr = "198.51.100.0/30" })); err != nil {
		t.Fatalf("block on a device full of named addresses: %v", err)
	}
	e := tab.devices[mac]
	rules := tab.slots[e.Slot]
	if int(e.NRules) != xdp.MaxRules || rules[len(rules)-1].Kind != xdp.KindBlock {
		t.Fatalf("after the block: %d rules, last %+v", e.NRules, rules[len(rules)-1])
	}
}

// A restarted enforcer adopts the records: it knows which installed rules
// came from which name (the addresses stay installed until the next
// answer, fail static), and the next answer replaces exactly those.
// Records of devices that are gone, unreadable records and names no record
// uses are dropped.
func TestNamedRulesSurviveRestart(t *testing.T) {
	tab := newFake()
	s := newState(t, tab, Snapshot{})
	p := policy(medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, dnsRule("a.example.com", 6, 443), cidrRule("192.0.2.1", 6, 443),
		dnsRule("b.example.com", 6, 443), dnsRule("c.example.com", 17, 53))
	applyPolicy(t, s, 3, mac, p)
	for name, a := range map[string][]netip.Addr{
		"a.example.com": addrs("198.51.100.1", "198.51.100.2"),
		"b.example.com": addrs("198.51.100.3"),
		"c.example.com": addrs("2001:db8::53"),
	} {
		if err := s.SetResolved(name, a); err != nil {
			t.Fatal(err)
		}
	}
	before := tab.installed(t, mac)
	snap := tab.snapshot()
	// Leftovers: a record whose device is gone, a name no one uses.
	snap.Named["02:00:00:00:00:99"] = snap.Named[mac]
	tab.names[nameKey("old.example.com")] = "old.example.com"
	snap.DNSNames = map[xdp.NameKey]string{}
	for k, v := range tab.names {
		snap.DNSNames[k] = v
	}
	s2 := newState(t, tab, snap)
	if _, ok := tab.named["02:00:00:00:00:99"]; ok {
		t.Fatal("record of a device that is gone kept")
	}
	if _, ok := tab.names[nameKey("old.example.com")]; ok {
		t.Fatal("unused name kept")
	}
	got := s2.Resolved()
	// a and b share a template (tcp/443 outbound): the first takes the
	// whole run until the names are resolved again.
	if !slices.Equal(got["a.example.com"], addrs("198.51.100.1", "198.51.100.2", "198.51.100.3")) || len(got["b.example.com"]) != 0 ||
		!slices.Equal(got["c.example.com"], addrs("2001:db8::53")) {
		t.Fatalf("adopted addresses %v", got)
	}
	var heard []string
	s2.OnNames(func(names []string) { heard = names })
	if !slices.Equal(heard, []string{"a.example.com", "b.example.com", "c.example.com"}) {
		t.Fatalf("names after adoption %q", heard)
	}
	if got := tab.installed(t, mac); !slices.Equal(got, before) {
		t.Fatalf("adoption changed the rules: %v, were %v", got, before)
	}
	if err := s2.SetResolved("a.example.com", addrs("198.51.100.10")); err != nil {
		t.Fatal(err)
	}
	if err := s2.SetResolved("b.example.com", addrs("198.51.100.3")); err != nil {
		t.Fatal(err)
	}
	want := []string{"6/192.0.2.1/32:443", "6/198.51.100.10/32:443", "6/198.51.100.3/32:443", "17/2001:db8::53/128:53"}
	if got := tab.installed(t, mac); !slices.Equal(got, want) {
		t.Fatalf("after answers following the restart: %v, want %v", got, want)
	}

	// An unreadable record: the device keeps its rules, the record goes.
	snap = tab.snapshot()
	snap.Named[mac] = []byte{1, 0}
	s3 := newState(t, tab, snap)
	if len(s3.Resolved()) != 0 || len(tab.named) != 0 {
		t.Fatalf("unreadable record adopted: %v, %d records", s3.Resolved(), len(tab.named))
	}
	if got := tab.installed(t, mac); !slices.Equal(got, want) {
		t.Fatalf("rules changed by an unreadable record: %v", got)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	static := []xdp.Rule{{Kind: xdp.KindAllow, Proto: 6, Prefix: netip.MustParsePrefix("10.0.0.0/8"), PortMin: 22, PortMax: 22}}
	n := &named{policy: "class/infusion-pump", static: static, rules: []namedRule{
		{name: "a.example.com", proto: 6, dir: 1, portMin: 443, portMax: 443},
		{name: "b.example.com", proto: 17, dir: 3, portMin: 5683, portMax: 5684},
	}}
	rec, err := encodeRecord(n)
	if err != nil {
		t.Fatal(err)
	}
	names := map[xdp.NameKey]string{nameKey("a.example.com"): "a.example.com", nameKey("b.example.com"): "b.example.com"}
	back, err := decodeRecord(rec, static, names)
	if err != nil || back.policy != n.policy || !slices.Equal(back.static, static) || !slices.Equal(back.rules, n.rules) {
		t.Fatalf("decoded %+v, %v", back, err)
	}
	// The largest record a policy can make fits the datapath's bound.
	var full named
	full.policy = string(make([]byte, 128))
	for i := range xdp.MaxRules {
		full.rules = append(full.rules, namedRule{name: fmt.Sprint(i)})
	}
	if _, err := encodeRecord(&full); err != nil {
		t.Fatal(err)
	}
	delete(names, nameKey("b.example.com"))
	if _, err := decodeRecord(rec, static, names); err == nil {
		t.Fatal("a record naming a name not stored decoded")
	}
	names[nameKey("b.example.com")] = "c.example.com"
	if _, err := decodeRecord(rec, static, names); err == nil {
		t.Fatal("a name stored under another name's key decoded")
	}
}

// FuzzDecodeRecord: records come from pinned maps an earlier enforcer (or
// another version) wrote. Whatever they hold, decoding never panics, and
// what decodes encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	static := []xdp.Rule{{Kind: xdp.KindAllow, Proto: 6, Prefix: netip.MustParsePrefix("10.0.0.0/8")}}
	names := map[xdp.NameKey]string{nameKey("a.example.com"): "a.example.com"}
	rec, err := encodeRecord(&named{policy: "device/x", static: static, rules: []namedRule{{name: "a.example.com", proto: 6, portMin: 443, portMax: 443}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{1, 2, 1, 'x', 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeRecord(b, static, names)
		if err != nil {
			return
		}
		again, err := encodeRecord(n)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if string(again) != string(b) {
			t.Fatalf("record %x decodes to one that encodes as %x", b, again)
		}
	})
}

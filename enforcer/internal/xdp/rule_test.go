package xdp

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestCompileBitmaps(t *testing.T) {
	rules := []Rule{
		{Kind: KindAllow, Prefix: netip.MustParsePrefix("10.0.0.0/8")},
		{Kind: KindAllow, Prefix: netip.MustParsePrefix("10.1.0.0/16")},
		{Kind: KindAllow},
		{Kind: KindBlock, Prefix: netip.MustParsePrefix("10.1.2.0/24")},
		{Kind: KindAllow, Prefix: netip.MustParsePrefix("2001:db8::/32")},
		{Kind: KindAllow, Prefix: netip.MustParsePrefix("10.1.0.0/16")},
	}
	var got plan
	if err := compile(rules, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]peerEntry{
		"::ffff:10.0.0.0/104": {allow: 0b000001},
		"::ffff:10.1.0.0/112": {allow: 0b100011},
		"::ffff:10.1.2.0/120": {allow: 0b100011, block: true},
		"2001:db8::/32":       {allow: 0b010000},
	}
	if len(got.peers()) != len(want) {
		t.Fatalf("got %d entries %v, want %d", len(got.peers()), got.peers(), len(want))
	}
	for _, e := range got.peers() {
		w, ok := want[e.prefix.String()]
		w.prefix = e.prefix
		if !ok || w != e {
			t.Errorf("%s: %+v, want %+v (present %v)", e.prefix, e, w, ok)
		}
	}
	if got.anyAllow != 0b100 || got.anyBlock {
		t.Errorf("any allow %b block %v", got.anyAllow, got.anyBlock)
	}
	if fmt.Sprint(got.lengths4()) != "[120 112 104]" || fmt.Sprint(got.lengths6()) != "[32]" {
		t.Errorf("lengths %v %v", got.lengths4(), got.lengths6())
	}
	if err := compile(make([]Rule, MaxRules+1), &got); err == nil {
		t.Fatal("65 rules compiled")
	}
	var many []Rule
	for b := 8; b <= 8+maxLens; b++ {
		many = append(many, Rule{Kind: KindAllow, Prefix: netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), b)})
	}
	if err := compile(many, &got); err == nil {
		t.Fatal("17 prefix lengths compiled")
	}
}

func TestMappedRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.0/24", "0.0.0.0/0", "2001:db8::/32", "192.0.2.7/32"} {
		p := netip.MustParsePrefix(s)
		if got := unmapped(mapped(p)); got != p {
			t.Errorf("%s: round trip %s", s, got)
		}
	}
	if got := unmapped(mapped(netip.Prefix{})); got.IsValid() {
		t.Errorf("any peer round trip %s", got)
	}
}

// TestCompileAllocatesNothing: every enforcer compiles a device's rules for
// every policy decision; a plan lives in its caller's frame.
func TestCompileAllocatesNothing(t *testing.T) {
	var rules []Rule
	for i := range MaxRules {
		rules = append(rules, Rule{Kind: KindAllow, Proto: 6, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i % 8), byte(i), 0}), 24)})
	}
	var pl plan
	if n := testing.AllocsPerRun(100, func() {
		if err := compile(rules, &pl); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("compile allocated %v times a run", n)
	}
	if len(pl.peers()) != MaxRules {
		t.Fatalf("%d entries, want %d", len(pl.peers()), MaxRules)
	}
}

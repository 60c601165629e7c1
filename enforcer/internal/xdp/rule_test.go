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
	got, err := compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]peerEntry{
		"::ffff:10.0.0.0/104": {allow: 0b000001},
		"::ffff:10.1.0.0/112": {allow: 0b100011},
		"::ffff:10.1.2.0/120": {allow: 0b100011, block: true},
		"2001:db8::/32":       {allow: 0b010000},
	}
	if len(got.entries) != len(want) {
		t.Fatalf("got %d entries %v, want %d", len(got.entries), got.entries, len(want))
	}
	for p, e := range got.entries {
		if w, ok := want[p.String()]; !ok || w != e {
			t.Errorf("%s: %+v, want %+v (present %v)", p, e, w, ok)
		}
	}
	if got.anyAllow != 0b100 || got.anyBlock {
		t.Errorf("any allow %b block %v", got.anyAllow, got.anyBlock)
	}
	if fmt.Sprint(got.lens4) != "[120 112 104]" || fmt.Sprint(got.lens6) != "[32]" {
		t.Errorf("lengths %v %v", got.lens4, got.lens6)
	}
	if _, err := compile(make([]Rule, MaxRules+1)); err == nil {
		t.Fatal("65 rules compiled")
	}
	var many []Rule
	for b := 8; b <= 8+maxLens; b++ {
		many = append(many, Rule{Kind: KindAllow, Prefix: netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), b)})
	}
	if _, err := compile(many); err == nil {
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

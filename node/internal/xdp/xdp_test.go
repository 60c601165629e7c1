package xdp

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/medmesh/medmesh/node/flow"
)

func TestKeyOfBothDirections(t *testing.T) {
	for _, tc := range []flow.Tuple{
		{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 80, DstPort: 40000, Proto: 6, VLAN: 7},
		{Src: netip.MustParseAddr("2001:db8::9"), Dst: netip.MustParseAddr("2001:db8::1"), SrcPort: 1, DstPort: 2, Proto: 17},
		{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 9, DstPort: 8, Proto: 6},
	} {
		k1, err := keyOf(tc)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := keyOf(reverse(tc))
		if err != nil {
			t.Fatal(err)
		}
		if k1 != k2 {
			t.Errorf("%v: keys differ by direction: %+v vs %+v", tc, k1, k2)
		}
		// The record of an entry created by tc's initiator gives tc back.
		v := sensorFlowVal{}
		a := tc.Src.As16()
		if tc.Src.Is4() {
			a4 := tc.Src.As4()
			a = [16]byte{}
			copy(a[:], a4[:])
		}
		if k1.AddrA == a && k1.PortA == tc.SrcPort {
			v.InitIsA = 1
		}
		if r := recordOf(&k1, &v, func(ns uint64) int64 { return int64(ns) }); r.Tuple() != tc {
			t.Errorf("record tuple %v, want %v", r.Tuple(), tc)
		}
	}
	if _, err := keyOf(flow.Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("::1")}); err == nil {
		t.Error("mixed families accepted")
	}
}

func TestFoldRules(t *testing.T) {
	rules := []BaselineRule{
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Proto: 17},
		{Prefix: netip.MustParsePrefix("10.1.2.0/24"), Proto: 6, Port: 104},
		{Prefix: netip.MustParsePrefix("10.1.2.77/24"), Proto: 6, Port: 2575}, // same prefix once masked
		{Prefix: netip.MustParsePrefix("192.168.0.0/16"), Proto: 6, Port: 443},
	}
	got, err := foldRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	n := map[int]uint32{}
	for _, e := range got {
		n[e.bits] = e.val.N
	}
	// /8 alone; /24 carries its two entries and the /8's; /16 alone.
	if len(got) != 3 || n[96+8] != 1 || n[96+24] != 3 || n[96+16] != 1 {
		t.Errorf("folded %+v", n)
	}
	var many []BaselineRule
	for i := range maxRules + 1 {
		many = append(many, BaselineRule{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Proto: 6, Port: uint16(i + 1)})
	}
	if _, err := foldRules(many); !errors.Is(err, ErrTooManyRules) {
		t.Errorf("17 entries: %v", err)
	}
	if _, err := foldRules([]BaselineRule{{}}); err == nil {
		t.Error("invalid prefix accepted")
	}
}

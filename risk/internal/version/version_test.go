package version

import (
	"slices"
	"testing"
)

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.10", "1.9", 1},
		{"3.0", "3.0.0", 0},
		{"v22D28", "22D28", 0},
		{"20D29", "20D32", -1},
		{"2.4A", "2.4", 1},
		{"2.4A", "2.4.1", -1},
		{"B.06.18", "B.06.9", 1},
		{"b.06.18", "B.06.18", 0},
		{"012U000040", "012U000039", 1},
		{"R4.1L1", "R4.1L2", -1},
		{"4107600010.23", "999.0", 1},
		{"1.8.4", "1.8.4 Service Pack 01", -1},
		{"K", "J", 1},
		{"9.7", "9.33", -1}, // numbers, not text: 7 < 33
		{"2018-1", "2021-1", -1},
	} {
		if got := MustParse(tc.a).Compare(MustParse(tc.b)); got != tc.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := MustParse(tc.b).Compare(MustParse(tc.a)); got != -tc.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

// TestConstraint covers the shapes real advisories use (each text below
// is copied from a CISA ICSMA advisory or the vers specification).
func TestConstraint(t *testing.T) {
	for _, tc := range []struct {
		text    string
		in, out []string
		exact   []string
		unknown bool
	}{
		{text: "vers:all/*", in: []string{"0.1", "99"}},
		{text: "vers:generic/>=1.1|<=1.3.2", in: []string{"1.1", "1.2.9", "1.3.2"}, out: []string{"1.0.9", "1.3.3"}},
		{text: "<= 3.0", in: []string{"3.0", "3.0.0", "2.99"}, out: []string{"3.0.1", "3.1"}},
		{text: "versions prior to 4.2", in: []string{"4.1.9"}, out: []string{"4.2", "4.2.0"}},
		{text: "All versions", in: []string{"1"}},
		{text: "2.3.6 and  below", in: []string{"2.3.6", "1.0"}, out: []string{"2.3.7"}},
		{text: ">= 2.0 | <= 3.0", in: []string{"2.0", "2.5"}, out: []string{"1.9", "3.1"}},
		{text: "<= 12.2.x.x", in: []string{"12.2.9.9", "12.1"}, out: []string{"12.3"}},
		{text: "5.x.x", in: []string{"5.0.0", "5.9.1"}, out: []string{"4.9", "6.0"}},
		{text: "A.01 <= C.0x | 4.0", in: []string{"A.01", "B.02", "C.09", "4.0"}, out: []string{"C.10", "D.01"}, exact: []string{"4.0"}},
		{text: "Rev B-M", in: []string{"B", "J", "M"}, out: []string{"A", "N"}},
		{text: "<= U61 |<= L81", in: []string{"L81", "U61"}, out: []string{"U62"}},
		{text: "<= 1.54 (integrated into GE MobileLink)", in: []string{"1.54"}, out: []string{"1.55"}},
		{text: "<=11.2 on Windows 8.1 with IIS 7.5", in: []string{"11.2"}, out: []string{"11.3"}},
		{text: "(Release 1.3.2 1.4.0 1.4.1 1.4.3 1.4.5)", in: []string{"1.4.3"}, out: []string{"1.4.2"}, exact: []string{"1.4.3"}},
		{text: "2131 and 2141", in: []string{"2141"}, out: []string{"2140"}, exact: []string{"2141"}},
		{text: "< 3.x", in: []string{"2.9"}, out: []string{"3.0"}},
		{text: "6.x model 35700BAX", in: []string{"6.2"}, out: []string{"7.0"}},
		{text: "distributed  < april 1, 2018", unknown: true},
		{text: "< august 28", unknown: true},
		{text: "with wireless option (shipped between 2016-August 2018)", unknown: true},
	} {
		c := ParseConstraint(tc.text)
		if (c.Unknown != "") != tc.unknown {
			t.Errorf("%q: unknown = %q, want unknown %v", tc.text, c.Unknown, tc.unknown)
			continue
		}
		for _, v := range tc.in {
			wantExact := slices.Contains(tc.exact, v)
			if ok, exact := c.Match(MustParse(v)); !ok || exact != wantExact {
				t.Errorf("%q (%s): %q match=%v exact=%v, want match, exact %v", tc.text, c, v, ok, exact, wantExact)
			}
		}
		for _, v := range tc.out {
			if ok, _ := c.Match(MustParse(v)); ok {
				t.Errorf("%q (%s): %q matches, want outside", tc.text, c, v)
			}
		}
	}
	if m := ParseConstraint("6.x model 35700BAX").Models; len(m) != 1 || m[0] != "35700BAX" {
		t.Errorf("models = %v, want [35700BAX]", m)
	}
}

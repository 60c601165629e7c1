package version

import "testing"

// FuzzConstraint feeds advisory version text: parsing never panics, and
// an interval's own bounds behave (an inclusive bound matches itself).
func FuzzConstraint(f *testing.F) {
	for _, s := range []string{"vers:generic/>=1.1|<=1.3.2", "<= 12.2.x.x", "A.01 <= C.0x | 4.0", "Rev B-M", "6.x (Wireless (16 | >= 20D29)", "2131 and 2141", "versions prior to 4.2", "distributed < april 1, 2018"} {
		f.Add(s, "1.2")
	}
	f.Fuzz(func(t *testing.T, text, v string) {
		c := ParseConstraint(text)
		_ = c.String()
		if pv, ok := Parse(v); ok {
			c.Match(pv)
		}
		for _, a := range c.Alts {
			if a.Exact != nil {
				if ok, exact := c.Match(*a.Exact); len(c.Excluded) == 0 && (!ok || !exact) {
					t.Fatalf("%q: exact %q does not match itself", text, a.Exact.raw)
				}
			}
		}
	})
}

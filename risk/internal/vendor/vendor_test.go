package vendor

import "testing"

func TestSame(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"BD", "Becton, Dickinson and Company (BD)", true},
		{"Becton, Dickinson and Company", "CareFusion", true},
		{"B. Braun", "B. Braun Melsungen AG", true},
		{"B. Braun Medical", "B Braun Melsungen", true},
		{"Philips", "Koninklijke Philips N.V.", true},
		{"Phillips", "Philips Healthcare", true},
		{"Medtronic ", "Medtronic", true}, // trailing space, as in real advisories
		{"General Electric (GE)", "GE Healthcare", true},
		{"Silex Technology and GE Healthcare", "GE", true},
		{"Silex Technology and GE Healthcare", "Silex Technology", true},
		{"Hillrom and ELI, Baxter International Inc.", "Baxter", true},
		{"Innokas YhtymÃ¤ Oy", "Innokas Yhtymä", true},
		{"Natus Medical, Inc. (Natus)", "Natus", true},
		{"Philips", "Siemens", false},
		{"BD", "B. Braun", false},
		{"Becton, Dickinson and Company (BD)", "Dickinson Wright", false},
	} {
		if got := Default.Same(Default.Keys(tc.a), Default.Keys(tc.b)); got != tc.same {
			t.Errorf("Same(%q %v, %q %v) = %v, want %v", tc.a, Default.Keys(tc.a), tc.b, Default.Keys(tc.b), got, tc.same)
		}
	}
}

package posture

import (
	"math"
	"testing"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestUDIDI(t *testing.T) {
	for in, want := range map[string]string{
		"(01)10885403801512(17)280101(10)A123": "10885403801512",
		"0100884838088213172801011012345":      "00884838088213",
		" 00884838088213 ":                     "00884838088213",
		"(01)1088540380":                       "",
		"+H123PUMP80151":                       "",
		"(01)1088540380151X":                   "",
		"":                                     "",
	} {
		got, ok := UDIDI(in)
		if got != want || ok != (want != "") {
			t.Errorf("UDIDI(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func FuzzUDIDI(f *testing.F) {
	for _, s := range []string{"(01)10885403801512(17)280101", "0100884838088213", "00884838088213", "(01)", "01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		di, ok := UDIDI(s)
		if ok != (di != "") || ok && (len(di) != 14 || !digits(di)) {
			t.Fatalf("UDIDI(%q) = %q, %v", s, di, ok)
		}
	})
}

func TestIdentityLabelsWin(t *testing.T) {
	d := &medmeshv1.Device{Mac: "02:00:00:00:00:01", Vendor: "BD", Model: "from DHCP", Firmware: "9.5", IpAddresses: []string{"10.0.0.5"},
		Identifiers: &medmeshv1.Identifiers{Hl7Udis: []string{"junk", "(01)10885403801512"}},
		Labels:      map[string]string{"model": " Alaris 8015 PC unit ", "version": "9.7", "os": "Windows CE 6.0"}}
	id := Identity(d)
	if id.Vendor != "BD" || id.Model != "Alaris 8015 PC unit" || id.Version != "9.7" || id.OS != "Windows CE 6.0" || id.UDIDI != "10885403801512" || id.IP != "10.0.0.5" {
		t.Fatalf("identity %+v", id)
	}
	delete(d.Labels, "version")
	if id := Identity(d); id.Version != "9.5" {
		t.Fatalf("without a version label the firmware is the version: %+v", id)
	}
}

func TestScore(t *testing.T) {
	kev := &medmeshv1.Finding{Kind: "vulnerability", Id: "CVE-2017-7269", Confidence: "range", Severity: "critical", Cvss: 9.8, Kev: true, Epss: 0.9}
	eol := &medmeshv1.Finding{Kind: "end_of_life", Id: "eol:windows/5-sp3", Confidence: "model", Severity: "high", Product: "Windows XP", Release: "SP3", EolDate: "2014-04-08"}
	sup := &medmeshv1.Finding{Kind: "vulnerability", Id: "CVE-1", Confidence: "exact", Cvss: 10, Kev: true, Suppressed: "VEX known_not_affected"}
	lc := medmeshv1.Tier_TIER_LIFE_CRITICAL
	full := Score([]*medmeshv1.Finding{kev, eol, sup}, lc, 0, Exposure{Serves: true, Internet: true})
	// 35 (KEV) + 29.4 (CVSS 9.8) + 13.5 (EPSS) + 14 (EOL at model x0.7) = 91.9, x1 x1.
	if full.GetScore() != 92 {
		t.Fatalf("score %d, want 92: %v", full.GetScore(), full.GetFactors())
	}
	sum := 0.0
	for _, f := range full.GetFactors() {
		sum += f.GetWeight()
	}
	if math.Abs(sum-float64(full.GetScore())) > 1 {
		t.Errorf("factors add to %.1f, score %d", sum, full.GetScore())
	}
	if full.GetFactors()[0].GetName() != "kev" {
		t.Errorf("first factor %v", full.GetFactors()[0])
	}
	// A non-clinical device that serves nothing and stays inside: x0.7 x0.8.
	low := Score([]*medmeshv1.Finding{kev, eol}, medmeshv1.Tier_TIER_NON_CLINICAL, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, Exposure{})
	if low.GetScore() != uint32(math.Round(91.9*0.7*0.8)) {
		t.Fatalf("non-clinical score %d", low.GetScore())
	}
	// Unknown tier counts as life-critical.
	if u := Score([]*medmeshv1.Finding{kev}, medmeshv1.Tier_TIER_UNSPECIFIED, 0, Exposure{Serves: true, Internet: true}); u.GetScore() != 78 {
		t.Fatalf("unknown tier: %d", u.GetScore())
	}
	// Capped at 100.
	many := []*medmeshv1.Finding{kev, eol,
		{Kind: "recall", Confidence: "exact", RecallClass: "Class I", RecallNumber: "Z-1"},
		{Kind: "default_credentials", Confidence: "model", Account: "admin", Protocol: "telnet"},
		{Kind: "external_communication", Confidence: "observed"}, {Kind: "cleartext_phi_protocol", Confidence: "observed", Protocol: "hl7"}}
	if c := Score(many, lc, 0, Exposure{Serves: true, Internet: true}); c.GetScore() != 100 {
		t.Fatalf("capped: %d", c.GetScore())
	}
	if z := Score([]*medmeshv1.Finding{sup}, lc, 0, Exposure{}); z.GetScore() != 0 || len(z.GetFactors()) != 0 {
		t.Fatalf("only suppressed: %v", z)
	}
}

// The asset register fills what the network did not show, and labels
// still win over both.
func TestIdentityFromAssetRecord(t *testing.T) {
	d := &medmeshv1.Device{Mac: "02:00:00:00:00:02", Vendor: "Baxter", Asset: &medmeshv1.Asset{
		Manufacturer: "ignored: the network's vendor wins", Model: "Sigma Spectrum", Version: "8.00.01", Serial: "SN1", Owner: "Biomed",
		UdiDi: "00085412609128",
	}}
	id := Identity(d)
	if id.Vendor != "Baxter" || id.Model != "Sigma Spectrum" || id.Version != "8.00.01" || id.Serial != "SN1" || id.Owner != "Biomed" || id.UDIDI != "00085412609128" {
		t.Fatalf("identity %+v", id)
	}
	d.Labels = map[string]string{"model": "Spectrum IQ"}
	if id := Identity(d); id.Model != "Spectrum IQ" {
		t.Fatalf("a label lost to the asset record: %+v", id)
	}
}

package posture

import (
	"math"
	"strings"
	"testing"
	"time"

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

// credAlert is a default_credentials alert as the sensor's engine raises
// it: on the service that accepted the login, the login's evidence
// without any password.
func credAlert(id, mac, src, dst string, sport, dport uint32, l *medmeshv1.LoginEvidence) *medmeshv1.Alert {
	return &medmeshv1.Alert{Id: id, DeviceMac: mac, Kind: "default_credentials", Login: l,
		Summary: "telnet server accepted user \"admin\" from " + src + " with a factory-default password",
		Flow:    &medmeshv1.FlowRef{Src: src, Dst: dst, Sport: sport, Dport: dport, Proto: 6}}
}

// A default credential seen accepted on the wire becomes a finding of the
// service's device, explained by its alert, and counts in its score; the
// client of such a login, a refused login and a login to a service
// outside the campus give none.
func TestCredentialFindingsFromAlerts(t *testing.T) {
	ips := []string{"10.0.0.5"}
	accepted := &medmeshv1.LoginEvidence{Protocol: "telnet", Account: "admin", DefaultPassword: true, Cleartext: true, Outcome: "accepted"}
	for name, tc := range map[string]struct {
		a    *medmeshv1.Alert
		want bool
	}{
		"the device's service accepted": {credAlert("s1/7", "m", "10.0.0.9", "10.0.0.5", 40000, 23, accepted), true},
		"an SNMP agent's notification":  {credAlert("s1/8", "m", "10.0.0.5", "10.0.0.9", 161, 162, &medmeshv1.LoginEvidence{Protocol: "snmp", DefaultPassword: true, Outcome: "no_answer"}), true},
		"an SSH banner of a model":      {credAlert("s1/9", "m", "10.0.0.9", "10.0.0.5", 40000, 22, &medmeshv1.LoginEvidence{Protocol: "ssh", Method: "banner", Account: "root", DefaultPassword: true, Outcome: "not_seen"}), true},
		"the device was the client":     {credAlert("s1/10", "m", "10.0.0.5", "203.0.113.7", 40000, 23, accepted), false},
		"refused":                       {credAlert("s1/11", "m", "10.0.0.9", "10.0.0.5", 40000, 23, &medmeshv1.LoginEvidence{Protocol: "telnet", Account: "admin", DefaultPassword: true, Outcome: "refused"}), false},
		"not a default password":        {credAlert("s1/12", "m", "10.0.0.9", "10.0.0.5", 40000, 23, &medmeshv1.LoginEvidence{Protocol: "telnet", Account: "admin", Outcome: "accepted"}), false},
		"another kind with the same login": {func() *medmeshv1.Alert {
			a := credAlert("s1/13", "m", "10.0.0.9", "10.0.0.5", 40000, 23, accepted)
			a.Kind = "cleartext_credentials"
			return a
		}(), false},
	} {
		_, ok := CredentialAlert(tc.a, ips)
		if ok != tc.want {
			t.Errorf("%s: CredentialAlert = %v, want %v", name, ok, tc.want)
		}
	}

	d := &medmeshv1.Device{Mac: "02:00:00:00:00:05", IpAddresses: ips, Tier: medmeshv1.Tier_TIER_NON_CLINICAL, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION}
	c1, _ := CredentialAlert(credAlert("s1/7", d.Mac, "10.0.0.9", "10.0.0.5", 40000, 23, accepted), ips)
	again, _ := CredentialAlert(credAlert("s1/30", d.Mac, "10.0.0.8", "10.0.0.5", 40001, 23, accepted), ips)
	p, err := Assess(nil, d, nil, []Credential{c1, again}, "", "", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	fs := p.GetFindings()
	if len(fs) != 1 {
		t.Fatalf("findings %v, want one per protocol, port and account", fs)
	}
	f := fs[0]
	if f.GetKind() != "default_credentials" || f.GetConfidence() != ConfidenceObserved || f.GetAccount() != "admin" || f.GetProtocol() != "telnet" ||
		f.GetSource() != "sensor alert s1/7" || !strings.Contains(f.GetSummary(), "alert s1/7") || len(f.GetEvidence()) != 1 {
		t.Errorf("finding %v: want telnet/admin observed, explained by the first alert s1/7", f)
	}
	if sc := p.GetScore(); sc.GetScore() == 0 || sc.GetFactors()[0].GetName() != "default_credentials" {
		t.Errorf("score %v: want the default credential as its factor", sc)
	}
	// The inputs' digest sees the credential; a later alert of the same
	// credential changes nothing.
	if InputsOf(d, nil, []Credential{c1}, "", "").Digest() != p.GetInputDigest() ||
		InputsOf(d, nil, nil, "", "").Digest() == p.GetInputDigest() {
		t.Error("the input digest does not follow the credentials alone")
	}
	for _, s := range []string{f.GetSummary(), f.GetRemediation(), strings.Join(f.GetEvidence(), " ")} {
		if strings.Contains(strings.ToLower(s), "password:") {
			t.Errorf("a password in %q", s)
		}
	}
}

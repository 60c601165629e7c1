package web

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/oidctest"
	"github.com/medmesh/medmesh/internal/pki"
)

func TestParseRoleMapping(t *testing.T) {
	m, err := ParseRoleFile([]byte("# groups of the hospital's directory\n\nicu-nurses = viewer\n biomed=operator\nCN=Sec,OU=IT=approver\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := RoleMap{"icu-nurses": pki.RoleViewer, "biomed": pki.RoleOperator, "CN=Sec,OU=IT": pki.RoleApprover}
	if len(m) != len(want) {
		t.Fatalf("parsed %v, want %v", m, want)
	}
	for g, r := range want {
		if m[g] != r {
			t.Errorf("group %q: %q, want %q", g, m[g], r)
		}
	}
	for _, c := range []struct {
		groups []string
		role   pki.Role
		ok     bool
	}{
		{[]string{"icu-nurses"}, pki.RoleViewer, true},
		{[]string{"icu-nurses", "CN=Sec,OU=IT", "biomed"}, pki.RoleApprover, true}, // the highest wins
		{[]string{"biomed", "icu-nurses"}, pki.RoleOperator, true},
		{[]string{"visitors", "ICU-NURSES"}, "", false}, // no mapping: refused, never a default
		{nil, "", false},
	} {
		if r, ok := m.Role(c.groups); r != c.role || ok != c.ok {
			t.Errorf("groups %q: role %q %v, want %q %v", c.groups, r, ok, c.role, c.ok)
		}
	}
	for _, bad := range []string{"nurses", "=viewer", "nurses=admin", "nurses=coordinator", "nurses=sensor", "a=viewer\na=approver"} {
		if _, err := ParseRoleFile([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestGroupsClaim(t *testing.T) {
	claims := map[string]any{"groups": []any{"a", 7, "b"}, "role": "x", "realm_access": map[string]any{"roles": []any{"r1"}}, "n": 3.0}
	for _, c := range []struct {
		claim string
		want  string
		err   bool
	}{
		{"groups", "[a b]", false}, {"role", "[x]", false}, {"realm_access.roles", "[r1]", false},
		{"absent", "[]", false}, {"groups.deeper", "[]", false}, {"n", "", true},
	} {
		got, err := groupsClaim(claims, c.claim)
		if (err != nil) != c.err || (!c.err && strings.Join(got, " ") != strings.Trim(c.want, "[]")) {
			t.Errorf("claim %q: %q %v", c.claim, got, err)
		}
	}
}

func TestExternalName(t *testing.T) {
	if n := ExternalName("https://idp", "00uid4BxXw6I6TV4m0g3"); n != "oidc.00uid4BxXw6I6TV4m0g3" {
		t.Errorf("okta-style subject: %q", n)
	}
	// A subject that cannot name an identity (a character outside the
	// set, or too long) gets a digest of issuer and subject, stable and
	// distinct per issuer.
	a, b := ExternalName("https://idp1", "user|42"), ExternalName("https://idp2", "user|42")
	if a == b || pki.ValidName(a) != nil || !strings.HasPrefix(a, "oidc.") || ExternalName("https://idp1", "user|42") != a {
		t.Errorf("digest names %q %q", a, b)
	}
	if n := ExternalName("i", strings.Repeat("x", 70)); pki.ValidName(n) != nil {
		t.Errorf("long subject: %q", n)
	}
}

// testProvider starts a real OpenID provider with a console client and
// another application's client, and the console's sso against it.
func testProvider(t *testing.T) (*oidctest.Provider, *sso, oidctest.Client, oidctest.Client) {
	t.Helper()
	console := oidctest.Client{ID: "medmesh-console", Secret: "console secret", RedirectURIs: []string{"http://127.0.0.1:1/api/oidc/callback"}}
	other := oidctest.Client{ID: "pharmacy-app", Secret: "other secret", RedirectURIs: []string{"http://127.0.0.1:2/cb"}}
	p := oidctest.Start(t, "localhost", []oidctest.User{
		{ID: "u-ann", Username: "ann@hospital.example", Password: "ann's password", Groups: []string{"staff", "icu-approvers"}},
	}, console, other)
	s, err := newSSO(SSO{Issuer: p.Issuer, ClientID: console.ID, ClientSecret: console.Secret, RedirectURL: console.RedirectURIs[0],
		Roles: RoleMap{"icu-approvers": pki.RoleApprover}, HTTPClient: p.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.discover(); err != nil {
		t.Fatal(err)
	}
	return p, s, console, other
}

// TestVerifyIDToken verifies ID tokens the real provider signed: the
// console's own passes with its nonce; a wrong nonce, a token issued to
// another application (audience), a token whose signature was altered
// and a token of another provider are refused.
func TestVerifyIDToken(t *testing.T) {
	p, s, console, other := testProvider(t)
	ctx := context.Background()
	raw, err := p.Token(console, "ann@hospital.example", "ann's password", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	who, err := s.verifyIDToken(ctx, raw, "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	if who.subject != "u-ann" || who.issuer != p.Issuer || who.username != "ann@hospital.example" || strings.Join(who.groups, ",") != "staff,icu-approvers" {
		t.Fatalf("verified person: %+v", who)
	}
	if _, err := s.verifyIDToken(ctx, raw, "nonce-2"); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("wrong nonce: %v", err)
	}
	foreign, err := p.Token(other, "ann@hospital.example", "ann's password", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.verifyIDToken(ctx, foreign, "nonce-1"); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Errorf("a token for another audience: %v", err)
	}
	parts := strings.Split(raw, ".")
	sig := []byte(parts[2])
	sig[10] ^= 'A' ^ 'B'
	if sig[10] == parts[2][10] {
		sig[10] = 'C'
	}
	if _, err := s.verifyIDToken(ctx, parts[0]+"."+parts[1]+"."+string(sig), "nonce-1"); err == nil {
		t.Error("a token with an altered signature verified")
	}
	// Another provider (its own keys and issuer) with the same client.
	p2 := oidctest.Start(t, "127.0.0.1", []oidctest.User{{ID: "u-ann", Username: "ann@hospital.example", Password: "x", Groups: []string{"icu-approvers"}}}, console)
	raw2, err := p2.Token(console, "ann@hospital.example", "x", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	// (go-oidc checks the signature before the issuer: the other
	// provider's key is not in ours.)
	if _, err := s.verifyIDToken(ctx, raw2, "nonce-1"); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("a token of another provider: %v", err)
	}
}

// TestCallbackChecks checks the provider's redirect back against the
// login cookie: state, expiry, a cookie sealed elsewhere or altered, the
// provider's error, a missing code.
func TestCallbackChecks(t *testing.T) {
	_, s, _, _ := testProvider(t)
	now := time.Now()
	ls := loginState{State: "state-1", Nonce: "n", Verifier: "v", Expires: now.Add(time.Minute).Unix()}
	ck := s.seal(ls)
	cb, err := s.checkCallback(url.Values{"state": {"state-1"}, "code": {"c"}}, ck, now)
	if err != nil || cb.code != "c" || cb.login != ls {
		t.Fatalf("genuine callback: %+v %v", cb, err)
	}
	other, err := newSSO(SSO{Issuer: s.cfg.Issuer, ClientID: "x", ClientSecret: "another cluster's secret", RedirectURL: s.cfg.RedirectURL, Roles: s.cfg.Roles})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(ck)
	raw[len(raw)/2] ^= 1
	for _, c := range []struct {
		name string
		q    url.Values
		ck   string
		now  time.Time
		want string
	}{
		{"wrong state", url.Values{"state": {"state-2"}, "code": {"c"}}, ck, now, "state"},
		{"no state", url.Values{"code": {"c"}}, ck, now, "state"},
		{"expired", url.Values{"state": {"state-1"}, "code": {"c"}}, ck, now.Add(2 * time.Minute), "expired"},
		{"no cookie", url.Values{"state": {"state-1"}, "code": {"c"}}, "", now, "no login cookie"},
		{"another cluster's cookie", url.Values{"state": {"state-1"}, "code": {"c"}}, other.seal(ls), now, "not sealed"},
		{"altered cookie", url.Values{"state": {"state-1"}, "code": {"c"}}, string(raw), now, "login cookie"},
		{"provider error", url.Values{"error": {"access_denied"}, "state": {"state-1"}}, ck, now, "refused the login"},
		{"no code", url.Values{"state": {"state-1"}}, ck, now, "no authorization code"},
	} {
		if _, err := s.checkCallback(c.q, c.ck, c.now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

// FuzzParseRoleMapping: the role file (and --oidc-role) never panics, and
// what it accepts maps only to people's roles.
func FuzzParseRoleMapping(f *testing.F) {
	f.Add("icu=viewer\n# c\nbiomed = operator\nsec=approver\n")
	f.Add("a=b=approver")
	f.Add("=\n==\nx=")
	f.Fuzz(func(t *testing.T, data string) {
		m, err := ParseRoleFile([]byte(data))
		if err != nil {
			return
		}
		for g, r := range m {
			if g == "" || roleRank[r] == 0 {
				t.Fatalf("accepted group %q role %q", g, r)
			}
		}
	})
}

// FuzzSSOCallback: any callback query and login cookie is refused or
// accepted without a panic, and only with the cookie's own state.
func FuzzSSOCallback(f *testing.F) {
	s, err := newSSO(SSO{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", RedirectURL: "https://console.example/api/oidc/callback", Roles: RoleMap{"g": pki.RoleViewer}})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	good := s.seal(loginState{State: "st", Nonce: "n", Verifier: "v", Expires: now.Unix() + 60})
	f.Add("state=st&code=abc", good)
	f.Add("error=access_denied&error_description=x", good)
	f.Add("state=st&state=zz&code=", "AAAA")
	f.Add("%zz&;=", "not base64!")
	f.Fuzz(func(t *testing.T, rawQuery, cookie string) {
		q, _ := url.ParseQuery(rawQuery)
		cb, err := s.checkCallback(q, cookie, now)
		if err != nil {
			return
		}
		if cb.login.State != q.Get("state") || cb.code == "" || cb.login.Nonce == "" || cb.login.Verifier == "" {
			t.Fatalf("accepted %q with cookie state %q", rawQuery, cb.login.State)
		}
	})
}

// FuzzGroupsClaim: any claim value yields groups or an error.
func FuzzGroupsClaim(f *testing.F) {
	f.Add(`{"groups":["a","b"]}`, "groups")
	f.Add(`{"realm_access":{"roles":["r"]}}`, "realm_access.roles")
	f.Add(`{"g":{"h":1}}`, "g.h")
	f.Fuzz(func(t *testing.T, doc, claim string) {
		var claims map[string]any
		if err := json.Unmarshal([]byte(doc), &claims); err != nil {
			return
		}
		groups, err := groupsClaim(claims, claim)
		if err != nil && groups != nil {
			t.Fatalf("groups %q with an error %v", groups, err)
		}
	})
}

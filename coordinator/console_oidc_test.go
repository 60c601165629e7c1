package coordinator

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/oidctest"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The people of the test identity provider: ann is in a group mapped to
// approver (and one mapped to viewer: the highest wins), vic only in the
// viewers' group, nora in no mapped group.
var idpPeople = []oidctest.User{
	{ID: "u-ann", Username: "ann@hospital.example", Password: "ann at the IdP", Groups: []string{"staff", "icu-approvers"}},
	{ID: "u-vic", Username: "vic@hospital.example", Password: "vic at the IdP", Groups: []string{"staff"}},
	{ID: "u-nora", Username: "nora@hospital.example", Password: "nora at the IdP", Groups: []string{"visitors"}},
}

var idpRoles = RoleMap{"icu-approvers": pki.RoleApprover, "staff": pki.RoleViewer}

// ssoConsoles starts a real OpenID provider (issuer host idpHost) and a
// console with single sign-on on each of nodes, each at its own origin
// registered at the provider.
func ssoConsoles(t *testing.T, idpHost string, nodes ...*node) (*oidctest.Provider, []*webNode) {
	t.Helper()
	var lns []net.Listener
	client := oidctest.Client{ID: "medmesh-console", Secret: "the console's client secret"}
	for range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		client.RedirectURIs = append(client.RedirectURIs, "http://"+ln.Addr().String()+"/"+SSOCallbackPath)
	}
	idp := oidctest.Start(t, idpHost, idpPeople, client)
	var webs []*webNode
	for i, n := range nodes {
		mux, closeFn, err := n.c.WebMux(WebConfig{Insecure: true, SSO: &SSOConfig{Issuer: idp.Issuer, ClientID: client.ID, ClientSecret: client.Secret,
			RedirectURL: client.RedirectURIs[i], Roles: idpRoles, Name: "Hospital IdP", HTTPClient: idp.HTTPClient()}})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(mux)
		srv.Listener.Close()
		srv.Listener = lns[i]
		srv.Start()
		t.Cleanup(func() { closeFn(); srv.Close() })
		webs = append(webs, &webNode{t: t, srv: srv})
	}
	return idp, webs
}

// noFollow is b's client that does not follow redirects.
func (b *browser) noFollow() *http.Client {
	return &http.Client{Jar: b.c.Jar, Timeout: b.c.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches a URL with b's cookies, not following a redirect.
func (b *browser) get(u string) *http.Response {
	b.t.Helper()
	resp, err := b.noFollow().Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// session is what /api/session says; it keeps the CSRF token.
func (b *browser) session() map[string]string {
	b.t.Helper()
	resp, err := b.c.Get(b.origin + "/api/session")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		b.t.Fatal(err)
	}
	b.csrf = out["csrf"]
	return out
}

// ssoLogin signs a person in through the provider, as a browser does from
// the console's "Sign in with" link, and follows the provider's redirect
// back to the console's callback: the callback's response (a redirect).
func (b *browser) ssoLogin(idp *oidctest.Provider, user, password string) *http.Response {
	b.t.Helper()
	cb, err := idp.SignIn(b.c.Jar, b.origin+"/api/oidc/login", user, password)
	if err != nil {
		b.t.Fatal(err)
	}
	if !strings.HasPrefix(cb.String(), b.origin+"/"+SSOCallbackPath+"?") {
		b.t.Fatalf("the provider sent the browser to %s", cb)
	}
	return b.get(cb.String())
}

// TestConsoleSingleSignOn is issue 21's OIDC single sign-on against a real
// OpenID provider (zitadel's OP) and a real 3-node cluster: a person of a
// group mapped to approver signs in (authorization code with PKCE) and
// acts as approver/oidc.SUBJECT on every coordinator, audited as that
// identity, and the two-person rule holds between them and a console
// account; a person of a viewers' group cannot write (PERMISSION_DENIED);
// a person with no mapped group is refused and the refusal audited; a
// forged state, a replayed callback and a code carried to another browser
// are refused; a session cookie set before login is never adopted; logout
// ends the session.
func TestConsoleSingleSignOn(t *testing.T) {
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	const pw = "correct horse battery staple"
	addAccount(t, leader, "bob", "approver", pw)
	report(t, leader, "s1", 1, &medmeshv1.Device{Mac: "00:11:22:33:44:55", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, IpAddresses: []string{"10.1.3.20"}})
	idp, webs := ssoConsoles(t, "localhost", cl.nodes[0], cl.nodes[1])
	// The names of single sign-on identities are not for accounts.
	if _, err := medmeshv1.NewAccountServiceClient(leader.conn).PutAccount(ctxT(t, 10*time.Second), &medmeshv1.PutAccountRequest{
		Account: &medmeshv1.Account{Name: "oidc.u-ann", Role: "approver"}, Password: pw}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an account named like a single sign-on identity: %v", err)
	}
	audit := func(match func(*medmeshv1.AuditRecord) bool) []*medmeshv1.AuditRecord {
		recs, _, _, _ := cl.leader().c.FSM().ListAudit(0, 10000, "")
		var out []*medmeshv1.AuditRecord
		for _, r := range recs {
			if match(r) {
				out = append(out, r)
			}
		}
		return out
	}

	if s := newBrowser(t).at(webs[0]).session(); s["sso"] != "Hospital IdP" || s["identity"] != "" {
		t.Fatalf("the login page's session: %v", s)
	}

	ann := newBrowser(t).at(webs[0])
	t.Run("an approver signs in", func(t *testing.T) {
		ann.t = t
		// A session id planted before login is never adopted.
		u, _ := url.Parse(ann.origin)
		planted := strings.Repeat("A", 43)
		ann.c.Jar.SetCookies(u, []*http.Cookie{{Name: "medmesh_session", Value: planted, Path: "/"}})
		resp := ann.ssoLogin(idp, "ann@hospital.example", "ann at the IdP")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("callback: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "medmesh_session" {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Value == planted {
			t.Fatalf("session cookie: %+v", ck)
		}
		if s := ann.session(); s["identity"] != "approver/oidc.u-ann" || s["csrf"] == "" {
			t.Fatalf("session after single sign-on: %v", s)
		}
		// The session is the cluster's: honoured by another coordinator.
		if code, out := ann.at(webs[1]).call("InventoryService/ListDevices", map[string]any{}); code != http.StatusOK {
			t.Fatalf("the session on another coordinator: %d %v", code, out)
		}
		ann.at(webs[0])
		logins := audit(func(r *medmeshv1.AuditRecord) bool {
			return r.GetAction() == "account.login" && r.GetActor() == "approver/oidc.u-ann"
		})
		if len(logins) != 1 || !strings.Contains(logins[0].GetComment(), "single sign-on by "+idp.Issuer+", subject u-ann, username ann@hospital.example") {
			t.Fatalf("login audit: %v", logins)
		}
	})

	t.Run("a viewer cannot write", func(t *testing.T) {
		vic := newBrowser(t).at(webs[1])
		if resp := vic.ssoLogin(idp, "vic@hospital.example", "vic at the IdP"); resp.Header.Get("Location") != "/" {
			t.Fatalf("callback to %q", resp.Header.Get("Location"))
		}
		if s := vic.session(); s["identity"] != "viewer/oidc.u-vic" {
			t.Fatalf("session: %v", s)
		}
		if code, _ := vic.call("InventoryService/ListDevices", map[string]any{}); code != http.StatusOK {
			t.Fatalf("viewer reading: %d", code)
		}
		pol := map[string]any{"name": "pump-sso", "deviceMac": "00:11:22:33:44:55", "mode": "POLICY_MODE_MONITOR"}
		if code, out := vic.call("PolicyService/PutPolicy", map[string]any{"policy": pol}); code != http.StatusForbidden || out["code"] != "permission_denied" {
			t.Fatalf("viewer writing a policy: %d %v", code, out)
		}
	})

	t.Run("writes are audited as the person", func(t *testing.T) {
		ann.t = t
		pol := map[string]any{"name": "pump-sso", "deviceMac": "00:11:22:33:44:55", "mode": "POLICY_MODE_MONITOR",
			"rules": []any{map[string]any{"peerCidr": "10.1.0.0/16", "portMin": 443, "portMax": 443, "protocol": 6}}}
		if code, out := ann.call("PolicyService/PutPolicy", map[string]any{"policy": pol, "requestId": "sso-put-1"}); code != http.StatusOK {
			t.Fatalf("approver writing a policy: %d %v", code, out)
		}
		code, out := ann.call("PolicyService/ActivatePolicy", map[string]any{"name": "pump-sso", "mode": "POLICY_MODE_ENFORCE", "reason": "sso", "requestId": "sso-act-1"})
		if code != http.StatusOK {
			t.Fatalf("approver enforcing: %d %v", code, out)
		}
		id, _ := out["decisionId"].(string)
		if code, out := ann.call("DecisionService/ApproveDecision", map[string]any{"id": id, "reason": "mine"}); code != http.StatusForbidden {
			t.Fatalf("the approver who caused it approving: %d %v", code, out)
		}
		bob := newBrowser(t).at(webs[1])
		if code := bob.login("bob", pw); code != http.StatusOK {
			t.Fatalf("bob: %d", code)
		}
		if code, out := bob.call("DecisionService/ApproveDecision", map[string]any{"id": id, "reason": "second person"}); code != http.StatusOK {
			t.Fatalf("second approver: %d %v", code, out)
		}
		var got []string
		for _, r := range audit(func(r *medmeshv1.AuditRecord) bool {
			return strings.HasPrefix(r.GetResource(), "policy/pump-sso") || r.GetAction() == "decision.approve"
		}) {
			got = append(got, r.GetActor()+" "+r.GetAction())
		}
		want := []string{"approver/oidc.u-ann policy.put", "approver/oidc.u-ann policy.activate", "approver/bob decision.approve"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("audit: %q, want %q", got, want)
		}
	})

	t.Run("no mapped group is refused", func(t *testing.T) {
		nora := newBrowser(t).at(webs[0])
		resp := nora.ssoLogin(idp, "nora@hospital.example", "nora at the IdP")
		if resp.Header.Get("Location") != "/#sso-error=refused" {
			t.Fatalf("callback to %q", resp.Header.Get("Location"))
		}
		for _, c := range resp.Cookies() {
			if c.Name == "medmesh_session" {
				t.Fatalf("a refused person got a session cookie")
			}
		}
		if s := nora.session(); s["identity"] != "" {
			t.Fatalf("session: %v", s)
		}
		recs := audit(func(r *medmeshv1.AuditRecord) bool { return r.GetResource() == "account/oidc.u-nora" })
		if len(recs) != 1 || recs[0].GetAction() != "account.login_failed" || recs[0].GetActor() != "coordinator/c1" || !strings.Contains(recs[0].GetReason(), "mapped") {
			t.Fatalf("refusal audit: %v", recs)
		}
	})

	t.Run("forged state, replayed callback, a code in another browser", func(t *testing.T) {
		b := newBrowser(t).at(webs[0])
		cb, err := idp.SignIn(b.c.Jar, b.origin+"/api/oidc/login", "ann@hospital.example", "ann at the IdP")
		if err != nil {
			t.Fatal(err)
		}
		// Another browser (no login cookie, or its own) presenting the
		// code: refused, and it does not use the code up for b.
		other := newBrowser(t).at(webs[0])
		if loc := other.get(cb.String()).Header.Get("Location"); loc != "/#sso-error=failed" {
			t.Fatalf("a code in a browser that did not start the login: %q", loc)
		}
		forged := *cb
		q := forged.Query()
		q.Set("state", "forged")
		forged.RawQuery = q.Encode()
		if loc := b.get(forged.String()).Header.Get("Location"); loc != "/#sso-error=failed" {
			t.Fatalf("forged state: %q", loc)
		}
		// The login cookie was used up by that attempt: the genuine
		// callback, replayed, is refused too.
		if loc := b.get(cb.String()).Header.Get("Location"); loc != "/#sso-error=failed" {
			t.Fatalf("replayed callback: %q", loc)
		}
		if s := b.session(); s["identity"] != "" {
			t.Fatalf("session: %v", s)
		}
	})

	t.Run("logout ends the session", func(t *testing.T) {
		ann.t = t
		if code, out := ann.post("/api/logout", map[string]any{}, map[string]string{"X-Csrf-Token": ann.csrf}); code != http.StatusOK {
			t.Fatalf("logout: %d %v", code, out)
		}
		if s := ann.session(); s["identity"] != "" {
			t.Fatalf("session after logout: %v", s)
		}
		if recs := audit(func(r *medmeshv1.AuditRecord) bool {
			return r.GetAction() == "account.logout" && r.GetActor() == "approver/oidc.u-ann"
		}); len(recs) != 1 || recs[0].GetResource() != "account/oidc.u-ann" {
			t.Fatalf("logout audit: %v", recs)
		}
	})
}

package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// webNode is one coordinator's web console served over HTTP.
type webNode struct {
	t   *testing.T
	srv *httptest.Server
}

func serveWeb(t *testing.T, n *node) *webNode {
	t.Helper()
	mux, closeFn, err := n.c.WebMux(WebConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { closeFn(); srv.Close() })
	return &webNode{t: t, srv: srv}
}

// browser is a cookie-keeping client of one console origin.
type browser struct {
	t      *testing.T
	c      *http.Client
	origin string
	csrf   string
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// at points the browser at w, keeping its cookies: the coordinators share
// one origin behind a load balancer, so a session moves between them.
func (b *browser) at(w *webNode) *browser {
	u, _ := url.Parse(w.srv.URL)
	if b.origin != "" {
		old, _ := url.Parse(b.origin)
		b.c.Jar.SetCookies(u, b.c.Jar.Cookies(old))
	}
	b.origin = w.srv.URL
	return b
}

func (b *browser) post(path string, body any, hdr map[string]string) (int, map[string]any) {
	b.t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, b.origin+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", b.origin)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func (b *browser) login(name, password string) int {
	b.t.Helper()
	code, out := b.post("/api/login", map[string]string{"name": name, "password": password}, nil)
	if code == http.StatusOK {
		b.csrf, _ = out["csrf"].(string)
	}
	return code
}

// call makes a Connect call with the session's CSRF token.
func (b *browser) call(method string, body any) (int, map[string]any) {
	b.t.Helper()
	return b.post("/medmesh.v1."+method, body, map[string]string{"Connect-Protocol-Version": "1", "X-Csrf-Token": b.csrf})
}

func (b *browser) cookie() string {
	u, _ := url.Parse(b.origin)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "medmesh_session" {
			return c.Value
		}
	}
	return ""
}

// addAccount creates an account, retrying (with one request id, so it
// applies once) while an election on a loaded machine refuses it.
func addAccount(t *testing.T, n *node, name, role, pw string) {
	t.Helper()
	var err error
	for range 10 {
		_, err = medmeshv1.NewAccountServiceClient(n.conn).PutAccount(ctxT(t, 30*time.Second), &medmeshv1.PutAccountRequest{
			Account: &medmeshv1.Account{Name: name, Role: role}, Password: pw, RequestId: "add-" + name})
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatal(err)
}

// TestConsoleSecurity is issue 21's security acceptance against a real
// 3-node cluster, each coordinator serving the console: CSRF and foreign
// origins are refused, a session id cannot be fixed, lock-out works through
// the console, sessions hold across coordinators, every write is audited
// as the logged-in identity, and the two-person rule and the roles hold
// for people in the console exactly as for certificates.
func TestConsoleSecurity(t *testing.T) {
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	webs := []*webNode{serveWeb(t, cl.nodes[0]), serveWeb(t, cl.nodes[1]), serveWeb(t, cl.nodes[2])}
	const pw = "correct horse battery staple"
	for _, a := range [][2]string{{"ann", "approver"}, {"bob", "approver"}, {"otto", "operator"}, {"vic", "viewer"}} {
		addAccount(t, leader, a[0], a[1], pw)
	}
	report(t, leader, "s1", 1, &medmeshv1.Device{Mac: "00:11:22:33:44:55", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, IpAddresses: []string{"10.1.3.20"}})

	t.Run("report download", func(t *testing.T) {
		b := newBrowser(t).at(webs[1])
		get := func(query string, hdr map[string]string) (int, http.Header, string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, b.origin+"/api/compliance-report"+query, nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := b.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header, string(raw)
		}
		if code, _, _ := get("", nil); code != http.StatusUnauthorized {
			t.Fatalf("download without a session: %d, want 401", code)
		}
		if code := b.login("vic", pw); code != http.StatusOK {
			t.Fatalf("login: %d", code)
		}
		if code, _, _ := get("", map[string]string{"Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
			t.Fatalf("download from another site: %d, want 403", code)
		}
		if code, _, _ := get("?framework=sox", nil); code != http.StatusBadRequest {
			t.Fatalf("download of an unknown framework: %d, want 400", code)
		}
		code, hdr, body := get("?framework=hipaa", map[string]string{"Sec-Fetch-Site": "same-origin"})
		if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Disposition"), `attachment; filename="medmesh-compliance-hipaa-`) ||
			!strings.Contains(body, `data-figure="devices">1<`) {
			t.Fatalf("viewer's download: %d %q %.200s", code, hdr.Get("Content-Disposition"), body)
		}
	})

	t.Run("csrf and origin", func(t *testing.T) {
		b := newBrowser(t).at(webs[0])
		if code := b.login("otto", pw); code != http.StatusOK {
			t.Fatalf("login: %d", code)
		}
		if code, _ := b.call("InventoryService/ListDevices", map[string]any{}); code != http.StatusOK {
			t.Fatalf("call with the token: %d", code)
		}
		for name, hdr := range map[string]map[string]string{
			"no token":       {"Connect-Protocol-Version": "1", "X-Csrf-Token": ""},
			"wrong token":    {"Connect-Protocol-Version": "1", "X-Csrf-Token": strings.Repeat("A", 43)},
			"foreign origin": {"Connect-Protocol-Version": "1", "X-Csrf-Token": b.csrf, "Origin": "https://evil.example"},
			"no origin":      {"Connect-Protocol-Version": "1", "X-Csrf-Token": b.csrf, "Origin": ""},
			"cross-site":     {"Connect-Protocol-Version": "1", "X-Csrf-Token": b.csrf, "Sec-Fetch-Site": "cross-site"},
		} {
			code, _ := b.post("/medmesh.v1.PolicyService/PutPolicy", map[string]any{"policy": map[string]any{"name": "csrf", "deviceMac": "00:11:22:33:44:55"}}, hdr)
			if code != http.StatusForbidden {
				t.Errorf("%s: %d, want 403", name, code)
			}
		}
		if leader.c.FSM().Policy("csrf") != nil {
			t.Fatal("a refused request wrote a policy")
		}
		// Login itself is refused from another origin (login CSRF).
		code, _ := newBrowser(t).at(webs[0]).post("/api/login", map[string]string{"name": "otto", "password": pw}, map[string]string{"Origin": "https://evil.example"})
		if code != http.StatusForbidden {
			t.Fatalf("cross-origin login: %d", code)
		}
	})

	t.Run("fixation", func(t *testing.T) {
		b := newBrowser(t).at(webs[1])
		u, _ := url.Parse(b.origin)
		planted := strings.Repeat("Zm9v", 10) + "Zm8" // 32 bytes an attacker chose
		b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "medmesh_session", Value: planted, Path: "/"}})
		if code := b.login("otto", pw); code != http.StatusOK {
			t.Fatalf("login: %d", code)
		}
		first := b.cookie()
		if first == planted || first == "" {
			t.Fatal("login kept the session id the client chose")
		}
		// A second login replaces a live session and ends the old one.
		if code := b.login("otto", pw); code != http.StatusOK {
			t.Fatalf("second login: %d", code)
		}
		if b.cookie() == first {
			t.Fatal("the session id was not rotated at login")
		}
		old := newBrowser(t).at(webs[1])
		old.c.Jar.SetCookies(u, []*http.Cookie{{Name: "medmesh_session", Value: first, Path: "/"}})
		old.csrf = b.csrf
		if code, _ := old.call("InventoryService/ListDevices", map[string]any{}); code != http.StatusUnauthorized {
			t.Fatalf("the replaced session still works: %d", code)
		}
	})

	t.Run("session across coordinators and logout", func(t *testing.T) {
		b := newBrowser(t).at(webs[2])
		if code := b.login("vic", pw); code != http.StatusOK {
			t.Fatalf("login: %d", code)
		}
		for _, w := range webs {
			if code, _ := b.at(w).call("InventoryService/ListDevices", map[string]any{}); code != http.StatusOK {
				t.Fatalf("session on %s: %d", w.srv.URL, code)
			}
		}
		if code, _ := b.post("/api/logout", nil, map[string]string{"X-Csrf-Token": b.csrf}); code != http.StatusOK {
			t.Fatalf("logout: %d", code)
		}
		if code, _ := b.call("InventoryService/ListDevices", map[string]any{}); code != http.StatusUnauthorized {
			t.Fatalf("after logout: %d", code)
		}
	})

	t.Run("writes audited as the person, roles and two-person rule", func(t *testing.T) {
		otto := newBrowser(t).at(webs[1])
		vic := newBrowser(t).at(webs[2])
		ann := newBrowser(t).at(webs[0])
		bob := newBrowser(t).at(webs[1])
		for _, b := range []struct {
			b    *browser
			name string
		}{{otto, "otto"}, {vic, "vic"}, {ann, "ann"}, {bob, "bob"}} {
			if code := b.b.login(b.name, pw); code != http.StatusOK {
				t.Fatalf("login %s: %d", b.name, code)
			}
		}
		pol := map[string]any{"name": "pump-web", "deviceMac": "00:11:22:33:44:55", "mode": "POLICY_MODE_MONITOR",
			"rules": []any{map[string]any{"peerCidr": "10.1.0.0/16", "portMin": 443, "portMax": 443, "protocol": 6}}}
		if code, out := vic.call("PolicyService/PutPolicy", map[string]any{"policy": pol}); code != http.StatusForbidden {
			t.Fatalf("viewer writing a policy: %d %v", code, out)
		}
		if code, out := otto.call("PolicyService/PutPolicy", map[string]any{"policy": pol, "requestId": "web-put-1"}); code != http.StatusOK {
			t.Fatalf("operator writing a policy: %d %v", code, out)
		}
		if code, out := otto.call("PolicyService/ActivatePolicy", map[string]any{"name": "pump-web", "mode": "POLICY_MODE_ENFORCE", "reason": "web"}); code != http.StatusForbidden {
			t.Fatalf("operator enforcing: %d %v", code, out)
		}
		code, out := ann.call("PolicyService/ActivatePolicy", map[string]any{"name": "pump-web", "mode": "POLICY_MODE_ENFORCE", "reason": "web"})
		if code != http.StatusOK {
			t.Fatalf("approver enforcing: %d %v", code, out)
		}
		id, _ := out["decisionId"].(string)
		dec := leader.c.FSM().Decision(id)
		if dec.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
			t.Fatalf("decision %s of a life-critical device: %v", id, dec)
		}
		for who, b := range map[string]*browser{"the approver who caused it": ann, "a viewer": vic, "an operator": otto} {
			if code, out := b.call("DecisionService/ApproveDecision", map[string]any{"id": id, "reason": "x"}); code != http.StatusForbidden {
				t.Errorf("%s approving: %d %v", who, code, out)
			}
		}
		if code, out := bob.call("DecisionService/ApproveDecision", map[string]any{"id": id, "reason": "second person"}); code != http.StatusOK {
			t.Fatalf("second approver: %d %v", code, out)
		}
		recs, _, _, _ := leader.c.FSM().ListAudit(0, 10000, "")
		var got []string
		for _, r := range recs {
			if strings.HasPrefix(r.GetResource(), "policy/pump-web") || r.GetAction() == "decision.approve" {
				got = append(got, r.GetActor()+" "+r.GetAction())
			}
		}
		want := []string{"operator/otto policy.put", "approver/ann policy.activate", "approver/bob decision.approve"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("audit: %q, want %q", got, want)
		}
	})

	t.Run("lock-out through the console", func(t *testing.T) {
		b := newBrowser(t)
		for i := range 5 {
			if code := b.at(webs[i%3]).login("bob", "not bob's password"); code != http.StatusUnauthorized {
				t.Fatalf("wrong password %d: %d", i, code)
			}
		}
		if code := b.at(webs[2]).login("bob", pw); code != http.StatusUnauthorized {
			t.Fatalf("right password while locked out: %d", code)
		}
	})
}

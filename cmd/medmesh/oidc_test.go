package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/oidctest"
	"github.com/medmesh/medmesh/internal/testutil"
)

// TestCoordinatorOIDCFlags: single sign-on needs the console, a client id,
// a secret file, a role mapping (there is no default role) and a redirect
// URL or the console's origin; the secret is read from its file, role
// files merge with --oidc-role, and a group mapped two ways is refused.
func TestCoordinatorOIDCFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("  s3cret of the console\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := coordinatorOptions{webAddr: "127.0.0.1:0", webOrigin: "https://medmesh.hospital.example/console", oidc: oidcOptions{
		issuer: "https://idp.hospital.example", clientID: "medmesh", secretFile: secret, roles: []string{"sec=approver"}, rolesClaim: "groups"}}
	if err := checkWebFlags(good); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		change func(*coordinatorOptions)
		want   string
	}{
		{func(o *coordinatorOptions) { o.webAddr, o.webOrigin = "", "" }, "needs --web-addr"},
		{func(o *coordinatorOptions) { o.oidc.issuer = "" }, "need --oidc-issuer"},
		{func(o *coordinatorOptions) { o.oidc.clientID = "" }, "--oidc-client-id"},
		{func(o *coordinatorOptions) { o.oidc.secretFile = "" }, "--oidc-client-secret-file"},
		{func(o *coordinatorOptions) { o.oidc.roles = nil }, "no default role"},
		{func(o *coordinatorOptions) { o.webOrigin = "" }, "--web-origin or --oidc-redirect-url"},
		{func(o *coordinatorOptions) { o.oidc.roles = []string{"sec=root"} }, "want viewer, operator or approver"},
	} {
		o := good
		c.change(&o)
		if err := checkWebFlags(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", o.oidc, err, c.want)
		}
	}

	rolesFile := filepath.Join(dir, "roles")
	if err := os.WriteFile(rolesFile, []byte("# biomed engineers\nbiomed=operator\nsec=approver\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := good
	o.oidc.rolesFile = rolesFile
	cfg, err := ssoConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientSecret != "s3cret of the console" || cfg.RedirectURL != "https://medmesh.hospital.example/console/api/oidc/callback" ||
		len(cfg.Roles) != 2 || cfg.Roles["biomed"] != "operator" || cfg.Roles["sec"] != "approver" {
		t.Fatalf("config: redirect %q roles %v", cfg.RedirectURL, cfg.Roles)
	}
	if err := os.WriteFile(rolesFile, []byte("sec=viewer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ssoConfig(o); err == nil || !strings.Contains(err.Error(), "mapped to viewer there and to approver") {
		t.Errorf("a group mapped two ways: %v", err)
	}
	if err := os.WriteFile(secret, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.oidc.rolesFile = ""
	if _, err := ssoConfig(o); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("an empty secret: %v", err)
	}
}

// lockedBuffer is a log sink the coordinator writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCoordinatorSingleSignOnStart runs `medmesh coordinator` with
// --oidc-* against a real OpenID provider: discovery at start, the login
// page offers the provider, and a login goes to the provider's
// authorization endpoint with PKCE S256, state and nonce, its state in an
// HttpOnly SameSite=Lax cookie. With a provider that cannot be reached
// the coordinator still starts, says why, and sign-in answers
// "unavailable". The client secret is never in the log.
func TestCoordinatorSingleSignOnStart(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	const sec = "the console's client secret"
	if err := os.WriteFile(secret, []byte(sec+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	webAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	origin := "http://" + webAddr
	idp := oidctest.Start(t, "127.0.0.1", nil, oidctest.Client{ID: "medmesh", Secret: sec, RedirectURIs: []string{origin + "/api/oidc/callback"}})
	// A port nothing listens on: a provider that is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()

	for _, c := range []struct {
		issuer, log, location string
	}{
		{idp.Issuer, "single sign-on available", idp.Issuer + "/authorize?"},
		{down, "single sign-on unavailable: the OpenID provider cannot be reached", "/#sso-error=unavailable"},
	} {
		o := coordinatorOptions{id: "c1", dev: true, logLevel: "info",
			api: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), raft: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), admin: "",
			webAddr: webAddr, webOrigin: origin,
			oidc: oidcOptions{issuer: c.issuer, clientID: "medmesh", secretFile: secret, roles: []string{"sec=approver"}, rolesClaim: "groups", name: "Hospital IdP"}}
		var log lockedBuffer
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- runCoordinator(ctx, o, &log, ready) }()
		select {
		case <-ready:
		case err := <-done:
			cancel()
			t.Fatalf("coordinator exited: %v\n%s", err, log.String())
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatal("coordinator not ready")
		}
		hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Get(origin + "/api/oidc/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, c.location) {
			t.Errorf("%s: login: %d to %q", c.issuer, resp.StatusCode, loc)
		}
		if c.issuer == idp.Issuer {
			u, _ := url.Parse(loc)
			q := u.Query()
			if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || q.Get("state") == "" || q.Get("nonce") == "" ||
				q.Get("client_id") != "medmesh" || q.Get("redirect_uri") != origin+"/api/oidc/callback" || !strings.Contains(q.Get("scope"), "openid") {
				t.Errorf("authorization request: %v", q)
			}
			var ck *http.Cookie
			for _, k := range resp.Cookies() {
				if k.Name == "medmesh_oidc" {
					ck = k
				}
			}
			if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/api/oidc/" || ck.MaxAge != 600 ||
				strings.Contains(ck.Value, q.Get("state")) || strings.Contains(ck.Value, q.Get("nonce")) {
				t.Errorf("login cookie: %+v", ck)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
		out := log.String()
		if !strings.Contains(out, c.log) {
			t.Errorf("%s: log lacks %q:\n%s", c.issuer, c.log, out)
		}
		if strings.Contains(out, sec) {
			t.Errorf("the client secret is in the log")
		}
	}
}

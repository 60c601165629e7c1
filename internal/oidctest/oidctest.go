// Package oidctest runs a real OpenID provider for tests: zitadel's
// certified OP implementation (github.com/zitadel/oidc/v3/pkg/op) over
// its example in-memory storage, with a login page, users who have
// groups (a "groups" claim in their ID tokens, as Entra ID, Okta or
// Keycloak put one) and registered web clients. Nothing in it is a stand-in:
// discovery, JWKS, the authorization endpoint (PKCE S256), the login form,
// the token endpoint and the signed ID tokens are the OP's own.
package oidctest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/text/language"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is a person at the provider.
type User struct {
	ID, Username, Password string
	Groups                 []string
}

// Client is a web client registered at the provider.
type Client struct {
	ID, Secret   string
	RedirectURIs []string
}

// Provider is a running OpenID provider.
type Provider struct {
	// Issuer is its issuer URL, http://HOST:PORT.
	Issuer string
	srv    *httptest.Server
}

// users is the example storage's UserStore over our users.
type users map[string]*storage.User

func (u users) GetUserByID(id string) *storage.User { return u[id] }
func (u users) GetUserByUsername(name string) *storage.User {
	for _, v := range u {
		if v.Username == name {
			return v
		}
	}
	return nil
}
func (u users) ExampleClientID() string { return "service" }

// withGroups adds the person's groups, and preferred_username, to every
// ID token the example storage makes.
type withGroups struct {
	*storage.Storage
	users  users
	groups map[string][]string
}

func (s *withGroups) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, token, scopes); err != nil {
		return err
	}
	if u := s.users[token.GetSubject()]; u != nil {
		info.PreferredUsername = u.Username
	}
	if g, ok := s.groups[token.GetSubject()]; ok {
		info.AppendClaims("groups", g)
	}
	return nil
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Test identity provider: sign in</title></head>
<body><h1>Test identity provider</h1>
<form method="POST" action="/login/username">
<input type="hidden" name="id" value="{{.ID}}">
<label for="username">Username</label> <input id="username" name="username" autocomplete="username">
<label for="password">Password</label> <input id="password" name="password" type="password">
<p id="error">{{.Error}}</p>
<button id="submit" type="submit">Sign in</button>
</form></body></html>`))

// Start runs a provider on 127.0.0.1 whose issuer names host (e.g.
// "localhost", so that a browser sees it as another site than a console
// at 127.0.0.1), until the test ends.
func Start(t testing.TB, host string, people []User, clients ...Client) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	issuer := "http://" + net.JoinHostPort(host, port)

	us := users{}
	groups := map[string][]string{}
	for _, p := range people {
		us[p.ID] = &storage.User{ID: p.ID, Username: p.Username, Password: p.Password, FirstName: p.Username, LastName: "Test",
			Email: p.Username + "@hospital.example", EmailVerified: true, PreferredLanguage: language.English}
		groups[p.ID] = p.Groups
	}
	cs := map[string]*storage.Client{}
	for _, c := range clients {
		cs[c.ID] = storage.WebClient(c.ID, c.Secret, c.RedirectURIs...)
	}
	st := &withGroups{Storage: storage.NewStorageWithClients(us, cs), users: us, groups: groups}
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:          sha256.Sum256([]byte(t.Name())),
		CodeMethodS256:     true,
		SupportedUILocales: []language.Tag{language.English},
	}, st, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	callback := op.AuthCallbackURL(provider)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/username", func(w http.ResponseWriter, r *http.Request) {
		_ = loginPage.Execute(w, map[string]string{"ID": r.URL.Query().Get("authRequestID")})
	})
	mux.Handle("POST /login/username", op.NewIssuerInterceptor(provider.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id := r.FormValue("id")
		if err := st.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			_ = loginPage.Execute(w, map[string]string{"ID": id, "Error": err.Error()})
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	}))
	mux.Handle("/", provider)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return &Provider{Issuer: issuer, srv: srv}
}

// SignIn signs username in at the provider the way a browser does,
// starting at authURL (the provider's authorization URL with the
// client's parameters, or a console's login URL that redirects there,
// whose cookies jar keeps): it follows the redirects to the login form,
// posts the name and password and follows the provider's redirects until
// one leaves the provider. It returns that redirect's target (the
// client's redirect URI with code and state), not followed.
func (p *Provider) SignIn(jar http.CookieJar, authURL, username, password string) (*url.URL, error) {
	if jar == nil {
		jar, _ = cookiejar.New(nil)
	}
	iss, _ := url.Parse(p.Issuer)
	var left *url.URL
	hc := &http.Client{Jar: jar, Transport: p.transport(), CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != iss.Host {
			left = req.URL
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := hc.Get(authURL)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if left != nil {
		return left, nil // the provider answered at once (an error)
	}
	id := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != http.StatusOK || id == "" {
		return nil, fmt.Errorf("no login page at %s: %d %.200s", resp.Request.URL, resp.StatusCode, body)
	}
	resp, err = hc.PostForm(p.Issuer+"/login/username", url.Values{"id": {id}, "username": {username}, "password": {password}})
	if err != nil {
		return nil, err
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if left == nil {
		return nil, fmt.Errorf("sign-in did not leave the provider: %d %.300s", resp.StatusCode, body)
	}
	return left, nil
}

// transport dials the provider's listener whatever host its issuer names.
func (p *Provider) transport() http.RoundTripper {
	addr := p.srv.Listener.Addr().String()
	iss, _ := url.Parse(p.Issuer)
	d := &net.Dialer{}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		if a == iss.Host {
			a = addr
		}
		return d.DialContext(ctx, network, a)
	}
	return tr
}

// HTTPClient is a client that reaches the provider (for the console's
// discovery, token and key requests).
func (p *Provider) HTTPClient() *http.Client { return &http.Client{Transport: p.transport()} }

// Token signs username in for client c (its own authorization request,
// with nonce) and exchanges the code at the token endpoint: the raw ID
// token the provider issued to c.
func (p *Provider) Token(c Client, username, password, nonce string) (string, error) {
	q := url.Values{"client_id": {c.ID}, "redirect_uri": {c.RedirectURIs[0]}, "response_type": {"code"},
		"scope": {"openid profile"}, "state": {"st"}, "nonce": {nonce}}
	to, err := p.SignIn(nil, p.Issuer+"/authorize?"+q.Encode(), username, password)
	if err != nil {
		return "", err
	}
	code := to.Query().Get("code")
	if code == "" {
		return "", fmt.Errorf("no code: %s", to)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURIs[0]}}
	req, _ := http.NewRequest(http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil || out.IDToken == "" {
		return "", errors.Join(fmt.Errorf("token endpoint: %d %.300s", resp.StatusCode, raw), err)
	}
	return out.IDToken, nil
}

package web

// Single sign-on through the hospital's OpenID provider (issue 21):
// the authorization-code flow with PKCE (S256), state and nonce bound to
// the browser by a short-lived cookie, the ID token verified by
// github.com/coreos/go-oidc (issuer, audience, expiry, signature from the
// provider's JWKS) and its nonce checked here. The person's groups (a
// claim of the ID token) map to a medmesh role: the highest mapped role
// wins, and a person none of whose groups is mapped is refused (never a
// default role). A success opens the same kind of replicated session as a
// password login, as the identity ROLE/oidc.SUBJECT, so authorization,
// audit and sessions on every coordinator work unchanged.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// SSO configures single sign-on through an OpenID provider.
type SSO struct {
	// Issuer is the provider's issuer URL: its discovery document is at
	// Issuer + "/.well-known/openid-configuration".
	Issuer string
	// ClientID and ClientSecret are the console's registration at the
	// provider (a confidential web client). The secret also keys the
	// login cookie, so every coordinator must have the same one.
	ClientID     string
	ClientSecret string
	// RedirectURL is where the provider sends the browser back: the
	// console's external origin + CallbackPath.
	RedirectURL string
	// RolesClaim names the ID token claim that lists the person's groups
	// ("groups"); a dotted name reaches into objects ("realm_access.roles").
	RolesClaim string
	// Roles maps the provider's groups to medmesh roles.
	Roles RoleMap
	// Scopes asked for besides "openid" (default: "profile").
	Scopes []string
	// Name is shown on the login page: "Sign in with NAME".
	Name string
	// HTTPClient reaches the provider (its CA, a timeout); nil: a client
	// with the system's roots and a 15 s timeout.
	HTTPClient *http.Client
	// Retry is how often discovery is tried again while the provider
	// cannot be reached (default 30 s).
	Retry time.Duration
}

// Paths of the single sign-on handlers, under the console's path.
const (
	LoginPath    = "api/oidc/login"
	CallbackPath = "api/oidc/callback"
)

// ssoCookie carries a login's state, nonce and PKCE verifier between the
// redirect to the provider and its callback.
const ssoCookie = "medmesh_oidc"

// ssoLoginLifetime bounds the time between the redirect to the provider
// and the callback.
const ssoLoginLifetime = 10 * time.Minute

// RoleMap maps a provider's group names to medmesh roles.
type RoleMap map[string]pki.Role

// roleRank orders the roles a person may hold: the highest mapped wins.
var roleRank = map[pki.Role]int{pki.RoleViewer: 1, pki.RoleOperator: 2, pki.RoleApprover: 3}

// ParseRoleMapping parses GROUP=ROLE entries (the --oidc-role flags, or
// the lines of a role file: blank lines and lines starting with # are
// skipped). The role follows the last '=' (a group name may hold '=');
// it must be viewer, operator or approver. A group mapped twice is an
// error, not a silent override.
func ParseRoleMapping(entries []string) (RoleMap, error) {
	m := RoleMap{}
	for i, e := range entries {
		line := strings.TrimSpace(e)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		eq := strings.LastIndexByte(line, '=')
		if eq < 0 {
			return nil, fmt.Errorf("role mapping %d %q: want GROUP=ROLE", i+1, line)
		}
		group, role := strings.TrimSpace(line[:eq]), pki.Role(strings.TrimSpace(line[eq+1:]))
		if group == "" {
			return nil, fmt.Errorf("role mapping %d %q: the group is empty", i+1, line)
		}
		if len(group) > 256 {
			return nil, fmt.Errorf("role mapping %d: a group name longer than 256 bytes", i+1)
		}
		if _, ok := roleRank[role]; !ok {
			return nil, fmt.Errorf("role mapping %d %q: role %q: want viewer, operator or approver", i+1, line, role)
		}
		if old, dup := m[group]; dup {
			return nil, fmt.Errorf("role mapping %d: group %q is mapped twice (%s and %s)", i+1, group, old, role)
		}
		m[group] = role
	}
	return m, nil
}

// ParseRoleFile parses a role file: one GROUP=ROLE a line.
func ParseRoleFile(data []byte) (RoleMap, error) {
	return ParseRoleMapping(strings.Split(string(data), "\n"))
}

// Role is the highest role any of groups maps to, and false when none
// is mapped.
func (m RoleMap) Role(groups []string) (pki.Role, bool) {
	var best pki.Role
	for _, g := range groups {
		if r, ok := m[g]; ok && roleRank[r] > roleRank[best] {
			best = r
		}
	}
	return best, best != ""
}

// groupsClaim reads the groups from an ID token's claims: claim is a
// top-level name or a dotted path; the value a string or an array of
// strings (other elements are skipped). Absent: no groups.
func groupsClaim(claims map[string]any, claim string) ([]string, error) {
	var v any = claims
	for part := range strings.SplitSeq(claim, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, nil
		}
		if v, ok = obj[part]; !ok {
			return nil, nil
		}
	}
	switch g := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{g}, nil
	case []any:
		out := make([]string, 0, len(g))
		for _, e := range g {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("claim %q: want a string or an array of strings, not %T", claim, v)
	}
}

// ExternalName is the identity name of a provider's subject:
// "oidc.SUBJECT", or "oidc." and a digest of the issuer and subject when
// the subject cannot name an identity (A-Z a-z 0-9 . _ @ -, 64 in all).
func ExternalName(issuer, subject string) string {
	if n := fsm.ExternalNamePrefix + subject; pki.ValidName(n) == nil {
		return n
	}
	h := sha256.Sum256([]byte(issuer + "\x00" + subject))
	return fsm.ExternalNamePrefix + hex.EncodeToString(h[:20])
}

// sso is the console's single sign-on: the provider once discovered.
type sso struct {
	cfg    SSO
	aead   cipher.AEAD
	client *http.Client

	mu       sync.Mutex
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
	lastErr  error
	stop     chan struct{}
	stopOnce sync.Once
}

// newSSO checks the configuration; discovery is the caller's (discover).
func newSSO(cfg SSO) (*sso, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("oidc issuer %q: want https://HOST[/PATH]", cfg.Issuer)
	}
	switch {
	case cfg.ClientID == "":
		return nil, errors.New("oidc: a client id is required")
	case cfg.ClientSecret == "":
		return nil, errors.New("oidc: a client secret is required (it also keys the login cookie)")
	case len(cfg.Roles) == 0:
		return nil, errors.New("oidc: map at least one group to a role: no mapping means nobody may sign in (never a default role)")
	}
	ru, err := url.Parse(cfg.RedirectURL)
	if err != nil || (ru.Scheme != "https" && ru.Scheme != "http") || ru.Host == "" || ru.Fragment != "" {
		return nil, fmt.Errorf("oidc redirect URL %q: want https://HOST[:PORT]/PATH/%s", cfg.RedirectURL, CallbackPath)
	}
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = "groups"
	}
	if cfg.Scopes == nil {
		cfg.Scopes = []string{"profile"}
	}
	if cfg.Name == "" {
		cfg.Name = u.Host
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	key, err := hkdf.Key(sha256.New, []byte(cfg.ClientSecret), nil, "medmesh console oidc login cookie", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sso{cfg: cfg, aead: aead, client: client, stop: make(chan struct{})}, nil
}

// discover fetches the provider's discovery document and keys.
func (s *sso) discover() error {
	// The context carries the HTTP client and stays valid: go-oidc keeps
	// it to fetch the provider's keys when they rotate.
	ctx := oidc.ClientContext(context.Background(), s.client)
	p, err := oidc.NewProvider(ctx, s.cfg.Issuer)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = fmt.Errorf("oidc discovery of %s: %w", s.cfg.Issuer, err)
		return s.lastErr
	}
	s.lastErr = nil
	s.oauth = &oauth2.Config{ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: s.cfg.RedirectURL, Scopes: append([]string{oidc.ScopeOpenID}, s.cfg.Scopes...)}
	s.verifier = p.Verifier(&oidc.Config{ClientID: s.cfg.ClientID})
	return nil
}

// keepDiscovering tries discovery again every Retry until it works or
// the console closes: a coordinator starts while the provider is down
// (password logins work meanwhile), and says why single sign-on cannot.
func (s *sso) keepDiscovering(log *slog.Logger) {
	t := time.NewTicker(s.cfg.Retry)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if err := s.discover(); err != nil {
			log.Error("single sign-on unavailable: the OpenID provider cannot be reached; retrying", "err", err, "retry", s.cfg.Retry)
			continue
		}
		log.Info("single sign-on available", "issuer", s.cfg.Issuer)
		return
	}
}

func (s *sso) close() { s.stopOnce.Do(func() { close(s.stop) }) }

func (s *sso) ready() (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.oauth == nil {
		if s.lastErr == nil {
			return nil, nil, errors.New("oidc discovery has not run")
		}
		return nil, nil, s.lastErr
	}
	return s.oauth, s.verifier, nil
}

// loginState is what the login cookie carries, sealed (AES-GCM, keyed
// from the client secret): the browser cannot read or change it.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Expires  int64  `json:"e"` // unix seconds
}

func (s *sso) seal(ls loginState) string {
	plain, _ := json.Marshal(ls)
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(ssoCookie)))
}

func (s *sso) open(v string) (loginState, error) {
	var ls loginState
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() || len(raw) > 2048 {
		return ls, errors.New("login cookie: malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(ssoCookie))
	if err != nil {
		return ls, errors.New("login cookie: not sealed by this cluster")
	}
	if err := json.Unmarshal(plain, &ls); err != nil || ls.State == "" || ls.Nonce == "" || ls.Verifier == "" {
		return ls, errors.New("login cookie: malformed contents")
	}
	return ls, nil
}

// callback is what a provider's redirect back carries, checked against
// the login cookie.
type callback struct {
	code  string
	login loginState
}

// errDenied: the provider answered with an error (the person cancelled,
// or the provider refused them).
var errDenied = errors.New("the OpenID provider refused the login")

// checkCallback checks the query of the provider's redirect back against
// the login cookie (value ck) at now: the cookie opens, has not expired,
// and holds the state the query returns. It returns the code to exchange
// and the cookie's nonce and verifier.
func (s *sso) checkCallback(q url.Values, ck string, now time.Time) (callback, error) {
	if e := q.Get("error"); e != "" {
		return callback{}, fmt.Errorf("%w: %.64q", errDenied, e)
	}
	if ck == "" {
		return callback{}, errors.New("no login cookie: the login did not start here, or took too long")
	}
	ls, err := s.open(ck)
	if err != nil {
		return callback{}, err
	}
	if now.Unix() > ls.Expires {
		return callback{}, errors.New("login cookie: expired")
	}
	st := q.Get("state")
	if subtle.ConstantTimeCompare([]byte(st), []byte(ls.State)) != 1 {
		return callback{}, errors.New("state does not match the login cookie")
	}
	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		return callback{}, errors.New("no authorization code")
	}
	return callback{code: code, login: ls}, nil
}

// person is who a verified ID token names.
type person struct {
	issuer, subject, username string
	groups                    []string
}

// verifyIDToken verifies a raw ID token: go-oidc checks the signature
// (the provider's JWKS), the issuer, the audience (our client id) and the
// expiry; then the nonce must be the login cookie's, and a token for
// several audiences must have been issued to us (azp).
func (s *sso) verifyIDToken(ctx context.Context, raw, nonce string) (person, error) {
	_, verifier, err := s.ready()
	if err != nil {
		return person{}, err
	}
	tok, err := verifier.Verify(oidc.ClientContext(ctx, s.client), raw)
	if err != nil {
		return person{}, fmt.Errorf("ID token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(tok.Nonce), []byte(nonce)) != 1 {
		return person{}, errors.New("ID token: the nonce is not the login's")
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return person{}, fmt.Errorf("ID token claims: %w", err)
	}
	if len(tok.Audience) > 1 {
		if azp, _ := claims["azp"].(string); azp != s.cfg.ClientID {
			return person{}, errors.New("ID token: several audiences and not authorized for this client (azp)")
		}
	}
	if tok.Subject == "" {
		return person{}, errors.New("ID token: no subject")
	}
	groups, err := groupsClaim(claims, s.cfg.RolesClaim)
	if err != nil {
		return person{}, fmt.Errorf("ID token: %w", err)
	}
	p := person{issuer: tok.Issuer, subject: tok.Subject, groups: groups}
	p.username, _ = claims["preferred_username"].(string)
	return p, nil
}

// ssoLogin starts a login: a fresh state, nonce and PKCE verifier sealed
// into the login cookie, and the browser sent to the provider.
func (c *Console) ssoLogin(w http.ResponseWriter, r *http.Request) {
	oc, _, err := c.sso.ready()
	if err != nil {
		c.log.Warn("single sign-on unavailable", "err", err)
		c.ssoFail(w, r, "unavailable")
		return
	}
	ls := loginState{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier(), Expires: time.Now().Add(ssoLoginLifetime).Unix()}
	http.SetCookie(w, c.ssoCookie(c.sso.seal(ls), int(ssoLoginLifetime/time.Second)))
	http.Redirect(w, r, oc.AuthCodeURL(ls.State, oidc.Nonce(ls.Nonce), oauth2.S256ChallengeOption(ls.Verifier)), http.StatusSeeOther)
}

// ssoCookie is the login cookie: HttpOnly, Secure, SameSite=Lax (the
// provider's redirect back is a top-level navigation from its site, on
// which a Strict cookie is not sent), only for the callback's path.
func (c *Console) ssoCookie(v string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: ssoCookie, Value: v, Path: c.cookiePath() + "api/oidc/", MaxAge: maxAge,
		HttpOnly: true, Secure: !c.cfg.Insecure, SameSite: http.SameSiteLaxMode}
}

// ssoFail sends the browser back to the login page with the reason (a
// code the page turns into a sentence; nothing from the provider).
func (c *Console) ssoFail(w http.ResponseWriter, r *http.Request, code string) {
	http.Redirect(w, r, c.cookiePath()+"#sso-error="+code, http.StatusSeeOther)
}

// ssoCallback finishes a login: the provider's redirect back is checked
// against the login cookie, the code exchanged (with the PKCE verifier),
// the ID token verified, the person's groups mapped to a role, and a new
// session opened, as a password login does. A refusal is audited.
func (c *Console) ssoCallback(w http.ResponseWriter, r *http.Request) {
	// The login cookie is used once.
	http.SetCookie(w, c.ssoCookie("", -1))
	var ck string
	if v, err := r.Cookie(ssoCookie); err == nil {
		ck = v.Value
	}
	cb, err := c.sso.checkCallback(r.URL.Query(), ck, time.Now())
	if err != nil {
		c.log.Warn("single sign-on refused", "reason", err.Error(), "from", clientAddr(r))
		if errors.Is(err, errDenied) {
			c.ssoFail(w, r, "denied")
		} else {
			c.ssoFail(w, r, "failed")
		}
		return
	}
	oc, _, err := c.sso.ready()
	if err != nil {
		c.ssoFail(w, r, "unavailable")
		return
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), c.sso.client), 30*time.Second)
	defer cancel()
	tok, err := oc.Exchange(ctx, cb.code, oauth2.VerifierOption(cb.login.Verifier))
	if err != nil {
		// The error may quote the provider's answer, never our secret.
		c.log.Warn("single sign-on refused: the code exchange failed", "err", err, "from", clientAddr(r))
		c.ssoFail(w, r, "failed")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		c.log.Warn("single sign-on refused: the provider returned no ID token", "from", clientAddr(r))
		c.ssoFail(w, r, "failed")
		return
	}
	p, err := c.sso.verifyIDToken(ctx, raw, cb.login.Nonce)
	if err != nil {
		c.log.Warn("single sign-on refused", "reason", err.Error(), "from", clientAddr(r))
		c.ssoFail(w, r, "failed")
		return
	}
	name := ExternalName(p.issuer, p.subject)
	req := &medmeshv1.OpenExternalSessionRequest{Name: name, Issuer: p.issuer, Subject: p.subject,
		Username: truncate(p.username, 256), Source: clientAddr(r), RequestId: "oidc-" + rand.Text()}
	role, ok := c.sso.cfg.Roles.Role(p.groups)
	if !ok {
		req.Refused = truncate(fmt.Sprintf("none of the person's %d groups is mapped to a medmesh role", len(p.groups)), 256)
	} else {
		req.Role = string(role)
	}
	if old, ok := c.sessionOf(r); ok {
		c.end(r.Context(), old.token)
	}
	tokn := make([]byte, 32)
	if _, err := rand.Read(tokn); err != nil {
		c.ssoFail(w, r, "failed")
		return
	}
	if ok {
		req.SessionHash = tokenHash(tokn)
	}
	actx, acancel := context.WithTimeout(c.self(r.Context()), 20*time.Second)
	defer acancel()
	// While the cluster elects a leader, try again: the request id makes
	// a retry apply once.
	var resp *medmeshv1.OpenExternalSessionResponse
	for attempt := 0; ; attempt++ {
		resp, err = c.svc.OpenExternalSession(actx, req)
		if status.Code(err) != codes.Unavailable || attempt >= 4 || actx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(200<<attempt) * time.Millisecond)
	}
	if !ok {
		c.log.Warn("single sign-on refused: no group mapped to a role", "subject", p.subject, "issuer", p.issuer, "groups", len(p.groups))
		c.ssoFail(w, r, "refused")
		return
	}
	if err != nil {
		c.log.Warn("single sign-on: the cluster could not open the session", "err", err)
		c.ssoFail(w, r, "unavailable")
		return
	}
	if err := c.waitApplied(actx, resp.GetIndex()); err != nil {
		c.ssoFail(w, r, "unavailable")
		return
	}
	c.log.Info("single sign-on", "identity", resp.GetIdentity(), "issuer", p.issuer, "subject", p.subject)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: base64.RawURLEncoding.EncodeToString(tokn), Path: c.cookiePath(),
		HttpOnly: true, Secure: !c.cfg.Insecure, SameSite: http.SameSiteStrictMode, Expires: resp.GetExpireTime().AsTime()})
	http.Redirect(w, r, c.cookiePath(), http.StatusSeeOther)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// ssoName is the provider's name for the login page, "" without single
// sign-on.
func (c *Console) ssoName() string {
	if c.sso == nil {
		return ""
	}
	return c.sso.cfg.Name
}

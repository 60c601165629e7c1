// Package web is the coordinator's web console: people log in with a
// console account and the browser calls the same gRPC services the CLI
// does, through Connect (connectrpc.com/vanguard transcodes Connect,
// gRPC-Web and gRPC into calls of an in-process grpc.Server on which the
// coordinator's own service implementations are registered). The caller of
// every call is the session's identity ROLE/NAME, checked against the same
// authorization table, and every write is audited as that identity by the
// same handlers.
//
// Security: the session token is 32 random bytes in an HttpOnly, Secure,
// SameSite=Strict cookie, a fresh one at every login (a session id set
// before login is never adopted); the replicated state keeps only its
// SHA-256. Every POST (every RPC, login and logout) must come from the
// console's origin (Origin, and Sec-Fetch-Site when the browser sends
// it), and every call made with a session must carry the session's CSRF
// token, an HMAC of the session token that only a page that read it from
// /api/session can know.
package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	compreport "github.com/medmesh/medmesh/compliance/report"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

//go:embed static
var static embed.FS

// CookieName is the session cookie.
const CookieName = "medmesh_session"

// CSRFHeader carries the session's CSRF token on every call.
const CSRFHeader = "X-Csrf-Token"

// Services is what the console serves: the coordinator's gRPC
// implementations (api.Server) and its state.
type Services interface {
	// Register registers the services on g.
	Register(g *grpc.Server)
	Authenticate(context.Context, *medmeshv1.AuthenticateRequest) (*medmeshv1.AuthenticateResponse, error)
	EndSession(context.Context, *medmeshv1.EndSessionRequest) (*medmeshv1.EndSessionResponse, error)
	OpenExternalSession(context.Context, *medmeshv1.OpenExternalSessionRequest) (*medmeshv1.OpenExternalSessionResponse, error)
	// GetReport is ComplianceService.GetReport, for the report download
	// (called through invoke, as the session's identity).
	GetReport(context.Context, *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error)
}

// Config configures the console.
type Config struct {
	// ID is this coordinator's id: logins are checked (and their failures
	// audited) as coordinator/ID.
	ID string
	// Origin is the console's external origin, "https://console.example"
	// (with a path when a reverse proxy serves it under one). Empty: the
	// origin of each request's Host.
	Origin string
	// Insecure leaves Secure off the cookie: plaintext loopback (--dev)
	// only.
	Insecure bool
	// Table is the authorization table.
	Table authz.Table
	// SSO, if set, offers single sign-on through an OpenID provider
	// besides console accounts.
	SSO *SSO
}

// Console serves the web console.
type Console struct {
	cfg    Config
	svc    Services
	fsm    *fsm.FSM
	log    *slog.Logger
	grpc   *grpc.Server
	mux    *http.ServeMux
	origin *url.URL
	// sso is single sign-on, nil without it.
	sso *sso
}

type idKey struct{}

// New builds the console over svc and the replicated state f.
func New(cfg Config, svc Services, f *fsm.FSM, log *slog.Logger) (*Console, error) {
	c := &Console{cfg: cfg, svc: svc, fsm: f, log: log, mux: http.NewServeMux()}
	if cfg.Origin != "" {
		u, err := url.Parse(cfg.Origin)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, errors.New("web origin: want https://HOST[:PORT][/PATH]")
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		c.origin = u
	}
	if cfg.SSO != nil {
		s, err := newSSO(*cfg.SSO)
		if err != nil {
			return nil, err
		}
		// Discovery at start: a provider that cannot be reached is said
		// loudly and tried again; the coordinator and password logins do
		// not wait for it.
		if err := s.discover(); err != nil {
			log.Error("single sign-on unavailable: the OpenID provider cannot be reached; retrying", "err", err, "retry", s.cfg.Retry)
			go s.keepDiscovering(log)
		} else {
			log.Info("single sign-on available", "issuer", s.cfg.Issuer, "redirect", s.cfg.RedirectURL)
		}
		c.sso = s
	}
	c.grpc = grpc.NewServer(grpc.UnaryInterceptor(c.unary), grpc.StreamInterceptor(c.stream))
	svc.Register(c.grpc)
	if missing := cfg.Table.Missing(c.grpc.GetServiceInfo()); len(missing) > 0 {
		return nil, errors.New("web: methods without an authorization row: " + strings.Join(missing, ", "))
	}
	tc, err := vanguardgrpc.NewTranscoder(c.grpc)
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(sub)
	c.mux.Handle("GET /", c.headers(files))
	c.mux.Handle("POST /api/login", c.headers(http.HandlerFunc(c.login)))
	c.mux.Handle("POST /api/logout", c.headers(http.HandlerFunc(c.logout)))
	c.mux.Handle("GET /api/session", c.headers(http.HandlerFunc(c.session)))
	if c.sso != nil {
		c.mux.Handle("GET /"+LoginPath, c.headers(http.HandlerFunc(c.ssoLogin)))
		c.mux.Handle("GET /"+CallbackPath, c.headers(http.HandlerFunc(c.ssoCallback)))
	}
	c.mux.Handle("GET /api/compliance-report", c.headers(http.HandlerFunc(c.complianceReport)))
	for svc := range c.grpc.GetServiceInfo() {
		c.mux.Handle("POST /"+svc+"/", c.headers(c.rpc(tc)))
	}
	return c, nil
}

// Mux is the console's mux: other listeners of the coordinator (FHIR)
// mount their handlers on it.
func (c *Console) Mux() *http.ServeMux { return c.mux }

// Close stops the in-process server (open streams end).
func (c *Console) Close() {
	if c.sso != nil {
		c.sso.close()
	}
	c.grpc.Stop()
}

// headers sets what every response carries: a CSP that allows nothing
// from outside the origin, no framing, no sniffing, no caching of data.
func (c *Console) headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		if !c.cfg.Insecure {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if r.Method == http.MethodPost || strings.HasPrefix(r.URL.Path, "/api/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether a POST comes from the console's own pages.
func (c *Console) sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	want := c.expectedOrigin(r)
	return o == want
}

func (c *Console) expectedOrigin(r *http.Request) string {
	if c.origin != nil {
		return c.origin.Scheme + "://" + c.origin.Host
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host
}

func (c *Console) cookiePath() string {
	if c.origin != nil && c.origin.Path != "" {
		return c.origin.Path + "/"
	}
	return "/"
}

func tokenHash(tok []byte) []byte { h := sha256.Sum256(tok); return h[:] }

// csrfToken is the CSRF token of a session: HMAC-SHA256 keyed by the
// session token, which the page cannot read (HttpOnly) but the server
// recomputes from the cookie.
func csrfToken(tok []byte) string {
	m := hmac.New(sha256.New, tok)
	m.Write([]byte("medmesh console csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sessionCatchUp bounds how long a request waits for this replica to
// apply a session committed elsewhere.
const sessionCatchUp = time.Second

// sessionOf returns the request's live session and its token.
func (c *Console) sessionOf(r *http.Request) (*sessionInfo, bool) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return nil, false
	}
	tok, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil || len(tok) != 32 {
		return nil, false
	}
	// A login committed through another coordinator may not be applied
	// here yet (a request behind a load balancer lands on a follower a few
	// milliseconds behind): wait up to sessionCatchUp for this replica to
	// apply more before refusing.
	var wait <-chan time.Time
	for {
		changed := c.fsm.Changed()
		s, ok := c.fsm.Session(tokenHash(tok), time.Now())
		if ok {
			role, name, _ := strings.Cut(s.GetIdentity(), "/")
			return &sessionInfo{id: pki.Identity{Role: pki.Role(role), Name: name}, token: tok, expire: s.GetExpireTime().AsTime()}, true
		}
		if wait == nil {
			t := time.NewTimer(sessionCatchUp)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-changed:
		case <-wait:
			return nil, false
		case <-r.Context().Done():
			return nil, false
		}
	}
}

type sessionInfo struct {
	id     pki.Identity
	token  []byte
	expire time.Time
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func refuse(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// me is what the page learns about its session.
type me struct {
	Identity string `json:"identity"`
	Role     string `json:"role"`
	Name     string `json:"name"`
	CSRF     string `json:"csrf"`
	Expires  string `json:"expires"`
	// SSO names the OpenID provider the login page offers ("Sign in with
	// SSO"); empty without single sign-on.
	SSO string `json:"sso,omitempty"`
}

func (c *Console) session(w http.ResponseWriter, r *http.Request) {
	s, ok := c.sessionOf(r)
	if !ok {
		// 200 with no identity: the page asks before it knows, and a
		// 401 here would be a console error on every first load.
		writeJSON(w, http.StatusOK, me{SSO: c.ssoName()})
		return
	}
	writeJSON(w, http.StatusOK, me{Identity: s.id.String(), Role: string(s.id.Role), Name: s.id.Name, CSRF: csrfToken(s.token), Expires: s.expire.UTC().Format(time.RFC3339), SSO: c.ssoName()})
}

func (c *Console) self(ctx context.Context) context.Context {
	return authz.WithIdentity(ctx, pki.Identity{Role: pki.RoleCoordinator, Name: c.cfg.ID})
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// login checks a password and opens a new session. Whatever session
// cookie the browser had is ended and replaced: a session id is never
// chosen by the client (no fixation).
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !c.sameOrigin(r) {
		refuse(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	var in struct {
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in); err != nil {
		refuse(w, http.StatusBadRequest, "want {\"name\": ..., \"password\": ...}")
		return
	}
	if old, ok := c.sessionOf(r); ok {
		c.end(r.Context(), old.token)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		refuse(w, http.StatusInternalServerError, "no randomness")
		return
	}
	ctx, cancel := context.WithTimeout(c.self(r.Context()), 20*time.Second)
	defer cancel()
	resp, err := c.svc.Authenticate(ctx, &medmeshv1.AuthenticateRequest{Name: in.Name, Password: in.Password, SessionHash: tokenHash(tok), Source: clientAddr(r)})
	if err != nil {
		if status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.InvalidArgument {
			refuse(w, http.StatusUnauthorized, "login refused: wrong name or password, or the account is locked out")
			return
		}
		c.log.Warn("console login failed", "err", err)
		refuse(w, http.StatusServiceUnavailable, "the cluster cannot log you in now: try again")
		return
	}
	// The session was committed; wait until this replica applied it, so
	// the page's next call finds it here.
	if err := c.waitApplied(ctx, resp.GetIndex()); err != nil {
		c.log.Warn("console login: the session was committed but this replica did not apply it in time", "index", resp.GetIndex(), "err", err)
		refuse(w, http.StatusServiceUnavailable, "the cluster cannot log you in now: try again")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: base64.RawURLEncoding.EncodeToString(tok), Path: c.cookiePath(),
		HttpOnly: true, Secure: !c.cfg.Insecure, SameSite: http.SameSiteStrictMode, Expires: resp.GetExpireTime().AsTime()})
	role, name, _ := strings.Cut(resp.GetIdentity(), "/")
	writeJSON(w, http.StatusOK, me{Identity: resp.GetIdentity(), Role: role, Name: name, CSRF: csrfToken(tok), Expires: resp.GetExpireTime().AsTime().UTC().Format(time.RFC3339)})
}

func (c *Console) waitApplied(ctx context.Context, index uint64) error {
	for {
		ch := c.fsm.Changed()
		if c.fsm.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Console) end(ctx context.Context, tok []byte) {
	ctx, cancel := context.WithTimeout(c.self(ctx), 10*time.Second)
	defer cancel()
	if _, err := c.svc.EndSession(ctx, &medmeshv1.EndSessionRequest{SessionHash: tokenHash(tok)}); err != nil && status.Code(err) != codes.NotFound {
		c.log.Warn("console logout failed", "err", err)
	}
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !c.sameOrigin(r) {
		refuse(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if s, ok := c.sessionOf(r); ok {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(csrfToken(s.token))) != 1 {
			refuse(w, http.StatusForbidden, "missing or wrong CSRF token")
			return
		}
		c.end(r.Context(), s.token)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: c.cookiePath(), MaxAge: -1, HttpOnly: true, Secure: !c.cfg.Insecure, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]string{})
}

// rpc admits a Connect/gRPC-Web call: same origin, a live session and its
// CSRF token; the call then runs as the session's identity.
func (c *Console) rpc(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.sameOrigin(r) {
			refuse(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		s, ok := c.sessionOf(r)
		if !ok {
			refuse(w, http.StatusUnauthorized, "not logged in")
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(csrfToken(s.token))) != 1 {
			refuse(w, http.StatusForbidden, "missing or wrong CSRF token")
			return
		}
		// Headers the coordinators use between themselves are never
		// taken from a browser.
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-medmesh-") {
				r.Header.Del(k)
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), idKey{}, s.id)))
	})
}

func (c *Console) authorize(ctx context.Context, method string) (context.Context, error) {
	id, ok := ctx.Value(idKey{}).(pki.Identity)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no session")
	}
	if !c.cfg.Table.Allows(method, id.Role) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, method)
	}
	return authz.WithIdentity(ctx, id), nil
}

func (c *Console) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := c.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (c *Console) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := c.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &identified{ServerStream: ss, ctx: ctx})
}

type identified struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identified) Context() context.Context { return s.ctx }

// ReportFrameworks are the framework names the report download takes
// (?framework=), as `medmesh compliance report --framework` spells them.
var ReportFrameworks = map[string]medmeshv1.ComplianceFramework{
	"all":           medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED,
	"hipaa":         medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA,
	"hicp":          medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HICP,
	"proposed-2025": medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_PROPOSED_2025,
}

// invoke calls a unary method of the console's services in process as
// the identity id: through the same interceptor as a call the transcoder
// brings (the authorization table, the identity the handler audits), then
// the handler itself. For what the console's own endpoints need of the
// services; it never serves a method the table refuses id.
func invoke[Req, Resp any](ctx context.Context, c *Console, id pki.Identity, method string, h func(context.Context, Req) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	out, err := c.unary(context.WithValue(ctx, idKey{}, id), req, &grpc.UnaryServerInfo{FullMethod: method},
		func(ctx context.Context, req any) (any, error) { return h(ctx, req.(Req)) })
	if err != nil {
		return zero, err
	}
	return out.(Resp), nil
}

// httpStatus is the HTTP status of a gRPC error, as Connect maps codes.
func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Aborted, codes.AlreadyExists:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// complianceReport serves the self-contained HTML compliance report as a
// download: the whole report, its devices fetched page by page from one
// evaluation (compliance/report.Fetch) through ComplianceService.GetReport
// called in process as the session's identity (invoke: the same
// authorization as every console call), rendered as `medmesh compliance
// report --format html` renders it. A GET with no side effect: the
// session cookie (SameSite=Strict) is the credential, and a request the
// browser marks as coming from another site is refused.
func (c *Console) complianceReport(w http.ResponseWriter, r *http.Request) {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		refuse(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	s, ok := c.sessionOf(r)
	if !ok {
		refuse(w, http.StatusUnauthorized, "not logged in")
		return
	}
	name := r.URL.Query().Get("framework")
	if name == "" {
		name = "all"
	}
	fw, ok := ReportFrameworks[name]
	if !ok {
		refuse(w, http.StatusBadRequest, "framework: want all, hipaa, hicp or proposed-2025")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	rep, err := compreport.Fetch(ctx, fw, func(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
		return invoke(ctx, c, s.id, medmeshv1.ComplianceService_GetReport_FullMethodName, c.svc.GetReport, req)
	})
	if err != nil {
		code, msg := http.StatusBadGateway, err.Error()
		if st, ok := status.FromError(err); ok {
			code, msg = httpStatus(err), st.Code().String()+": "+st.Message()
		}
		refuse(w, code, "compliance report: "+msg)
		return
	}
	var page bytes.Buffer
	if err := compreport.HTML(&page, rep); err != nil {
		refuse(w, http.StatusInternalServerError, "rendering the report")
		return
	}
	stamp := rep.GetGenerateTime().AsTime().UTC().Format("20060102T150405Z")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="medmesh-compliance-`+name+`-`+stamp+`.html"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = page.WriteTo(w)
}

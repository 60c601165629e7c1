package coordinator

import (
	"errors"
	"net/http"

	"github.com/medmesh/medmesh/coordinator/internal/web"
)

// WebConfig configures the web console (--web-addr).
type WebConfig struct {
	// Origin is the console's external origin behind a reverse proxy
	// ("https://console.hospital.example[/path]"); empty: each request's
	// own Host. POSTs from any other origin are refused.
	Origin string
	// Insecure: plaintext loopback (--dev); the session cookie is then
	// not marked Secure.
	Insecure bool
	// SSO, if set, offers single sign-on through the hospital's OpenID
	// provider (--oidc-*).
	SSO *SSOConfig
}

// SSOConfig configures single sign-on through an OpenID provider.
type SSOConfig = web.SSO

// RoleMap maps an OpenID provider's groups to medmesh roles.
type RoleMap = web.RoleMap

// ParseRoleMapping parses GROUP=ROLE entries (--oidc-role).
func ParseRoleMapping(entries []string) (RoleMap, error) { return web.ParseRoleMapping(entries) }

// ParseRoleFile parses a file of GROUP=ROLE lines (--oidc-roles-file).
func ParseRoleFile(data []byte) (RoleMap, error) { return web.ParseRoleFile(data) }

// SSOCallbackPath is the path of the single sign-on callback under the
// console's origin: the redirect URL to register at the provider is the
// origin + "/" + SSOCallbackPath.
const SSOCallbackPath = web.CallbackPath

// WebMux builds the web console over this coordinator's services and
// returns its mux: the one place where handlers of the web listener are
// mounted (the console at /, its API at /api/ and /medmesh.v1.*/). Call
// after New; close stops the console's in-process server.
func (c *Coordinator) WebMux(cfg WebConfig) (mux *http.ServeMux, closeFn func(), err error) {
	if c.api == nil {
		return nil, nil, errors.New("web console: the coordinator is not open")
	}
	con, err := web.New(web.Config{ID: c.cfg.ID, Origin: cfg.Origin, Insecure: cfg.Insecure, Table: AuthzTable(), SSO: cfg.SSO}, c.api, c.fsm, c.log.With("component", "web"))
	if err != nil {
		return nil, nil, err
	}
	return con.Mux(), con.Close, nil
}

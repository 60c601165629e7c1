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
}

// WebMux builds the web console over this coordinator's services and
// returns its mux: the one place where handlers of the web listener are
// mounted (the console at /, its API at /api/ and /medmesh.v1.*/). Call
// after New; close stops the console's in-process server.
func (c *Coordinator) WebMux(cfg WebConfig) (mux *http.ServeMux, closeFn func(), err error) {
	if c.api == nil {
		return nil, nil, errors.New("web console: the coordinator is not open")
	}
	con, err := web.New(web.Config{ID: c.cfg.ID, Origin: cfg.Origin, Insecure: cfg.Insecure, Table: AuthzTable()}, c.api, c.fsm, c.log.With("component", "web"))
	if err != nil {
		return nil, nil, err
	}
	return con.Mux(), con.Close, nil
}

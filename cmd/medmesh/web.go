package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

// startWeb starts the web console listener (--web-addr): HTTPS with the
// coordinator's own server certificate (browsers present none: people
// log in with console accounts), or plaintext on loopback when the
// coordinator runs without certificates. It returns a function that stops
// it; a listener that fails later reports on errc.
func startWeb(o coordinatorOptions, c *coordinator.Coordinator, log *slog.Logger, errc chan<- error) (func(), error) {
	if err := checkWebFlags(o); err != nil {
		return nil, err
	}
	if o.webAddr == "" {
		return func() {}, nil
	}
	plaintext := !o.tls.Enabled()
	sso, err := ssoConfig(o)
	if err != nil {
		return nil, err
	}
	mux, closeConsole, err := c.WebMux(coordinator.WebConfig{Origin: o.webOrigin, Insecure: plaintext, SSO: sso})
	if err != nil {
		return nil, usagef("web console: %v", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	if !plaintext {
		tc, err := pki.ServerConfig(o.tls, pki.ServerOptions{})
		if err != nil {
			closeConsole()
			return nil, err
		}
		// Browsers present no client certificate; people are accounts.
		tc.ClientAuth, tc.ClientCAs, tc.VerifyConnection = tls.NoClientCert, nil, nil
		tc.NextProtos = []string{"h2", "http/1.1"}
		hs.TLSConfig = tc
	}
	ln, err := net.Listen("tcp", o.webAddr)
	if err != nil {
		closeConsole()
		return nil, err
	}
	go func() {
		var err error
		if plaintext {
			err = hs.Serve(ln)
		} else {
			err = hs.ServeTLS(ln, "", "")
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	log.Info("web console listening", "addr", ln.Addr().String(), "https", !plaintext, "origin", o.webOrigin)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closeConsole()
		_ = hs.Shutdown(ctx)
	}, nil
}

// checkWebFlags refuses --web-origin or --oidc-* without --web-addr, an
// incomplete single sign-on, and a plaintext console off loopback (even
// with --dev: passwords cross it).
func checkWebFlags(o coordinatorOptions) error {
	if err := checkOIDCFlags(o); err != nil {
		return err
	}
	if o.webAddr == "" {
		if o.webOrigin != "" {
			return usagef("--web-origin needs --web-addr")
		}
		return nil
	}
	if !o.tls.Enabled() && !grpcx.AllLoopback(o.webAddr) {
		return usagef("--web-addr %s is not loopback: the console needs the coordinator's certificate (--tls-*) to serve HTTPS", o.webAddr)
	}
	return nil
}

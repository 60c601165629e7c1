package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/medmesh/medmesh/coordinator"
)

// oidcOptions are the coordinator's single sign-on flags (--oidc-*).
type oidcOptions struct {
	issuer, clientID, secretFile, redirectURL string
	rolesClaim, rolesFile, caFile, name       string
	roles, scopes                             []string
}

func addOIDCFlags(f *pflag.FlagSet, o *oidcOptions) {
	f.StringVar(&o.issuer, "oidc-issuer", "", "single sign-on: the hospital's OpenID provider (its issuer URL, e.g. https://login.microsoftonline.com/TENANT/v2.0); needs --web-addr (empty: console accounts only)")
	f.StringVar(&o.clientID, "oidc-client-id", "", "single sign-on: the console's client id at the provider")
	f.StringVar(&o.secretFile, "oidc-client-secret-file", "", "single sign-on: file holding the console's client secret (never on the command line; every coordinator needs the same one)")
	f.StringVar(&o.redirectURL, "oidc-redirect-url", "", "single sign-on: the redirect URL registered at the provider (default: --web-origin + /"+coordinator.SSOCallbackPath+")")
	f.StringVar(&o.rolesClaim, "oidc-roles-claim", "groups", "single sign-on: the ID token claim listing the person's groups (a dotted name reaches into objects: realm_access.roles)")
	f.StringArrayVar(&o.roles, "oidc-role", nil, "single sign-on: GROUP=ROLE, a provider group and the medmesh role (viewer, operator, approver) its members get; repeatable; the highest mapped role wins, and a person with no mapped group is refused")
	f.StringVar(&o.rolesFile, "oidc-roles-file", "", "single sign-on: file of GROUP=ROLE lines (# comments), besides --oidc-role")
	f.StringVar(&o.caFile, "oidc-ca", "", "single sign-on: PEM file of the CA(s) that sign the provider's HTTPS certificate (default: the system's roots)")
	f.StringVar(&o.name, "oidc-name", "", "single sign-on: the provider's name on the login page, \"Sign in with NAME\" (default: the issuer's host)")
	f.StringSliceVar(&o.scopes, "oidc-scopes", []string{"profile"}, "single sign-on: scopes asked for besides openid (Okta needs groups for a groups claim)")
}

// set reports whether any --oidc-* flag was given.
func (o oidcOptions) set() bool {
	return o.issuer != "" || o.clientID != "" || o.secretFile != "" || o.redirectURL != "" || len(o.roles) > 0 || o.rolesFile != "" || o.caFile != "" || o.name != ""
}

// checkOIDCFlags checks the single sign-on flags without reading files.
func checkOIDCFlags(o coordinatorOptions) error {
	s := o.oidc
	if !s.set() {
		return nil
	}
	switch {
	case s.issuer == "":
		return usagef("--oidc-* flags need --oidc-issuer")
	case o.webAddr == "":
		return usagef("--oidc-issuer needs --web-addr: single sign-on is the console's")
	case s.clientID == "":
		return usagef("--oidc-issuer needs --oidc-client-id")
	case s.secretFile == "":
		return usagef("--oidc-issuer needs --oidc-client-secret-file")
	case len(s.roles) == 0 && s.rolesFile == "":
		return usagef("--oidc-issuer needs --oidc-role GROUP=ROLE or --oidc-roles-file: nobody may sign in without a mapping (there is no default role)")
	case s.redirectURL == "" && o.webOrigin == "":
		return usagef("--oidc-issuer needs --web-origin or --oidc-redirect-url: the provider must know where to send the browser back")
	}
	if _, err := url.Parse(s.issuer); err != nil {
		return usagef("--oidc-issuer: %v", err)
	}
	if _, err := coordinator.ParseRoleMapping(s.roles); err != nil {
		return usagef("--oidc-role: %v", err)
	}
	return nil
}

// ssoConfig reads the single sign-on files and builds the console's
// configuration; nil without --oidc-issuer. The client secret is read
// from its file and goes nowhere else (never logged).
func ssoConfig(o coordinatorOptions) (*coordinator.SSOConfig, error) {
	s := o.oidc
	if s.issuer == "" {
		return nil, nil
	}
	roles, err := coordinator.ParseRoleMapping(s.roles)
	if err != nil {
		return nil, usagef("--oidc-role: %v", err)
	}
	if s.rolesFile != "" {
		data, err := os.ReadFile(s.rolesFile)
		if err != nil {
			return nil, usagef("--oidc-roles-file: %v", err)
		}
		more, err := coordinator.ParseRoleFile(data)
		if err != nil {
			return nil, usagef("--oidc-roles-file %s: %v", s.rolesFile, err)
		}
		for g, r := range more {
			if old, dup := roles[g]; dup && old != r {
				return nil, usagef("--oidc-roles-file %s: group %q is mapped to %s there and to %s by --oidc-role", s.rolesFile, g, r, old)
			}
			roles[g] = r
		}
	}
	if len(roles) == 0 {
		return nil, usagef("--oidc-roles-file %s maps no group: nobody could sign in", s.rolesFile)
	}
	secret, err := os.ReadFile(s.secretFile)
	if err != nil {
		return nil, usagef("--oidc-client-secret-file: %v", err)
	}
	sec := strings.TrimSpace(string(secret))
	if sec == "" {
		return nil, usagef("--oidc-client-secret-file %s is empty", s.secretFile)
	}
	redirect := s.redirectURL
	if redirect == "" {
		redirect = strings.TrimSuffix(o.webOrigin, "/") + "/" + coordinator.SSOCallbackPath
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, usagef("--oidc-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--oidc-ca %s: no PEM certificate in it", s.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &coordinator.SSOConfig{Issuer: s.issuer, ClientID: s.clientID, ClientSecret: sec, RedirectURL: redirect,
		RolesClaim: s.rolesClaim, Roles: roles, Scopes: s.scopes, Name: s.name,
		HTTPClient: &http.Client{Transport: tr, Timeout: 15 * time.Second}}, nil
}

package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

// addDaemonTLSFlags adds --tls-ca, --tls-cert and --tls-key to a daemon,
// with MEDMESH_TLS_CA, MEDMESH_TLS_CERT and MEDMESH_TLS_KEY as defaults.
// what says what the certificate must be ("a coordinator certificate").
func addDaemonTLSFlags(cmd *cobra.Command, files *pki.Files, what string) {
	f := cmd.Flags()
	f.StringVar(&files.CAFile, "tls-ca", os.Getenv("MEDMESH_TLS_CA"), "campus CA certificate file (env MEDMESH_TLS_CA); with --tls-cert and --tls-key every connection is mutual TLS")
	f.StringVar(&files.CertFile, "tls-cert", os.Getenv("MEDMESH_TLS_CERT"), "this daemon's certificate file, "+what+" made by 'medmesh tls cert create' (env MEDMESH_TLS_CERT)")
	f.StringVar(&files.KeyFile, "tls-key", os.Getenv("MEDMESH_TLS_KEY"), "key file of --tls-cert (env MEDMESH_TLS_KEY)")
}

// checkDaemonTLS applies the rule every daemon follows: mutual TLS, or
// plaintext only with --dev or when every address it binds and dials is
// loopback, which it logs. addrs are those addresses.
func checkDaemonTLS(daemon string, files pki.Files, dev bool, log *slog.Logger, addrs ...string) error {
	if err := files.Validate(); err != nil {
		return usageError{err}
	}
	if files.Enabled() {
		return nil
	}
	var off []string
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a != "" && !grpcx.AllLoopback(a) {
			off = append(off, a)
		}
	}
	switch {
	case len(off) == 0:
		log.Warn(daemon+" runs without TLS: plaintext, allowed because every address is loopback", "addrs", strings.Join(addrs, ","))
	case dev:
		log.Warn(daemon+" runs without TLS on non-loopback addresses because of --dev: for a lab only", "addrs", strings.Join(off, ","))
	default:
		return usagef("%s: %s is not loopback: give --tls-ca, --tls-cert and --tls-key (or MEDMESH_TLS_CA, MEDMESH_TLS_CERT, MEDMESH_TLS_KEY; make them with 'medmesh tls ca create' and 'medmesh tls cert create'), or --dev for a lab", daemon, strings.Join(off, ", "))
	}
	return nil
}

// checkIdentity refuses a certificate that is not role/name: a sensor's
// certificate names the sensor it reports as, an enforcer's the enforcer.
// Without TLS files there is nothing to check.
func checkIdentity(files pki.Files, role pki.Role, name string) error {
	if !files.Enabled() {
		return nil
	}
	kp, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	id, err := pki.IdentityFromCert(kp.Leaf)
	if err != nil {
		return fmt.Errorf("tls: %s: %w", files.CertFile, err)
	}
	if want := (pki.Identity{Role: role, Name: name}); id != want {
		return usagef("--tls-cert %s is for %s, not %s: make one with 'medmesh tls cert create --role %s --name %s'", files.CertFile, id, want, role, name)
	}
	return nil
}

package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/internal/pki"
)

func newTLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make a campus CA and the certificates of coordinators, sensors, enforcers and people",
		Long: "Every medmesh connection is mutual TLS. A certificate names its holder's role and\n" +
			"name as the URI SAN spiffe://medmesh/<role>/<name>; the role decides what it may do.\n" +
			"Roles: " + strings.Join(roleNames(), ", ") + ".\n" +
			"A hospital's own CA can issue them too: see README, \"Securing a campus\".",
	}
	ca := &cobra.Command{Use: "ca", Short: "The campus certificate authority"}
	ca.AddCommand(newTLSCACreateCmd())
	cert := &cobra.Command{Use: "cert", Short: "Certificates signed by the campus CA"}
	cert.AddCommand(newTLSCertCreateCmd(), newTLSCertShowCmd())
	cmd.AddCommand(ca, cert)
	return cmd
}

func roleNames() []string {
	var out []string
	for _, r := range pki.Roles() {
		out = append(out, string(r))
	}
	return out
}

func newTLSCACreateCmd() *cobra.Command {
	var dir, name string
	var days int
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Write DIR/ca.pem and DIR/ca-key.pem (keep the key offline)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			if days <= 0 {
				return usagef("--days must be positive")
			}
			ca, err := pki.CreateCA(dir, name, days, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (valid until %s)\n",
				filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the CA's files (created 0700)")
	f.StringVar(&name, "name", "medmesh campus CA", "the CA's common name")
	f.IntVar(&days, "days", 3650, "validity in days")
	return cmd
}

func newTLSCertCreateCmd() *cobra.Command {
	var dir, out, role, name string
	var dns, ips []string
	var days int
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Write NAME.pem and NAME-key.pem for a role, signed by the CA in --dir",
		Example: "  medmesh tls cert create --dir ca --role coordinator --name c1 --ip 10.0.0.1\n" +
			"  medmesh tls cert create --dir ca --role sensor --name s3\n" +
			"  medmesh tls cert create --dir ca --role approver --name dr.grey --days 90",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			r, err := pki.ParseRole(role)
			if err != nil {
				return usagef("--role: %v", err)
			}
			if err := pki.ValidName(name); err != nil {
				return usagef("--name: %v", err)
			}
			if days <= 0 {
				return usagef("--days must be positive")
			}
			req := pki.CertRequest{Identity: pki.Identity{Role: r, Name: name}, DNS: dns, Days: days}
			for _, s := range ips {
				ip := net.ParseIP(strings.TrimSpace(s))
				if ip == nil {
					return usagef("--ip %q is not an IP address", s)
				}
				req.IPs = append(req.IPs, ip)
			}
			ca, err := pki.LoadCA(dir)
			if err != nil {
				return err
			}
			if out == "" {
				out = dir
			}
			certPath, keyPath, err := ca.IssueFiles(out, name, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s for %s\n", certPath, keyPath, req.Identity.URI())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory of the CA (ca.pem, ca-key.pem)")
	f.StringVar(&out, "out", "", "directory for the certificate and key (default: --dir)")
	f.StringVar(&role, "role", "", "role: "+strings.Join(roleNames(), ", "))
	f.StringVar(&name, "name", "", "the holder's name: a coordinator, sensor or enforcer id, or a person's user name")
	f.StringSliceVar(&dns, "dns", nil, "DNS names to add as SANs (for tools that check host names)")
	f.StringSliceVar(&ips, "ip", nil, "IP addresses to add as SANs")
	f.IntVar(&days, "days", 825, "validity in days (never beyond the CA's)")
	return cmd
}

func newTLSCertShowCmd() *cobra.Command {
	var caFile string
	cmd := &cobra.Command{
		Use:   "show FILE",
		Short: "Print the medmesh identity a certificate carries, and check it against --ca",
		Long: "show reads a PEM certificate (one made by 'medmesh tls cert create' or by another CA)\n" +
			"and prints the identity medmesh will see: role, name, validity. With --ca it also\n" +
			"verifies the certificate as medmesh does, and fails if medmesh would refuse it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := pki.ReadCertificate(args[0])
			if err != nil {
				return err
			}
			id, err := pki.IdentityFromCert(c)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "identity:  %s\nrole:      %s\nname:      %s\n", id.URI(), id.Role, id.Name)
			fmt.Fprintf(w, "valid:     %s to %s\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
			if caFile == "" {
				return nil
			}
			if err := pki.VerifyLeaf(caFile, c, time.Now()); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(w, "verified:  signed by %s, usable as client and server\n", caFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&caFile, "ca", "", "campus CA file to verify the certificate against")
	return cmd
}

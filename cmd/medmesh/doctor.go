package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/deploy/doctor"
)

// newDoctorCmd checks this host before medmesh runs on it.
func newDoctorCmd() *cobra.Command {
	cfg := doctor.DefaultConfig()
	var out string
	cmd := &cobra.Command{
		Use:   "doctor [--interface IF] [--tls-cert FILE --tls-ca FILE]",
		Short: "Check this host for medmesh: kernel and BTF, XDP, bpffs, clock, ports, certificates",
		Long: "doctor checks what the daemons need and prints, for each problem, what to fix:\n" +
			"the kernel version (5.9+) and its BTF, that the kernel loads XDP programs and --interface\n" +
			"is up (it does not attach to it), bpffs at /sys/fs/bpf, clock synchronisation (adjtimex),\n" +
			"that the medmesh ports are free, and that --tls-cert is valid, signed by --tls-ca and not\n" +
			"expiring within 30 days. Exit status 1 when a check fails; warnings do not fail.\n" +
			"Run it as root (or with CAP_BPF) and before the daemons start: their ports are then busy.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs := doctor.Run(cfg)
			w := cmd.OutOrStdout()
			switch out {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rs); err != nil {
					return err
				}
			case "table":
				for _, r := range rs {
					fmt.Fprintf(w, "%-4s  %-14s %s\n", r.Status, r.Check, r.Detail)
					if r.Fix != "" {
						fmt.Fprintf(w, "      %-14s fix: %s\n", "", r.Fix)
					}
				}
			default:
				return usagef("-o %q: want table or json", out)
			}
			if doctor.Failed(rs) {
				return errors.New("doctor: a check failed; fix what it says above")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Interface, "interface", "", "the capture or enforcement interface to check")
	f.IntSliceVar(&cfg.Ports, "ports", cfg.Ports, "ports that must be free (7402 also UDP)")
	f.StringVar(&cfg.CertFile, "tls-cert", "", "a daemon's certificate to check")
	f.StringVar(&cfg.CAFile, "tls-ca", "", "the campus CA that must have signed --tls-cert")
	f.DurationVar(&cfg.ExpiryWarn, "expiry", cfg.ExpiryWarn, "fail a certificate that expires sooner than this")
	f.StringVarP(&out, "output", "o", "table", "table or json")
	return cmd
}

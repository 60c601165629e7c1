package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/coordinator"
)

// errAuditBroken makes `audit verify` exit 1 after printing the break.
var errAuditBroken = errors.New("audit trail does not verify")

func newAuditCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Check the audit trail a coordinator keeps on disk",
	}
	var dataDir string
	verify := &cobra.Command{
		Use:   "verify --data-dir DIR",
		Short: "Recompute every hash of a coordinator's audit trail and report the first break",
		Long: "verify reads DIR/audit (the coordinator's --data-dir), recomputes the SHA-256 chain of\n" +
			"every record and reports the first record that does not check, with its segment and line.\n" +
			"Ranges a coordinator never held (it restored a snapshot) are reported as gaps.\n" +
			"Exit status 1 when the chain is broken.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return usagef("verify: --data-dir is required")
			}
			rep, err := coordinator.VerifyAudit(dataDir)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "audit trail: %s\n", coordinator.AuditDir(dataDir))
			fmt.Fprintf(w, "segments:    %d\nrecords:     %d (from record %d)\nhead:        record %d, sha256 %x\n",
				rep.Segments, rep.Records, rep.First, rep.Head.Seq, rep.Head.Hash)
			if rep.First > 1 {
				fmt.Fprintf(w, "start:       records before %d are not here (segments past retention, or never held)\n", rep.First)
			}
			for _, g := range rep.Gaps {
				fmt.Fprintf(w, "gap:         records %d..%d not held by this coordinator (anchor at %s line %d: it restored a snapshot)\n", g.From, g.To, g.Segment, g.Line)
			}
			if rep.Torn > 0 {
				fmt.Fprintf(w, "torn tail:   %d bytes of an unfinished last record (a crash); the coordinator cuts it on start\n", rep.Torn)
			}
			if rep.Break != nil {
				fmt.Fprintf(w, "BROKEN:      %s\n", rep.Break)
				return errAuditBroken
			}
			fmt.Fprintln(w, "verified:    every hash and link checks")
			return nil
		},
	}
	verify.Flags().StringVar(&dataDir, "data-dir", "", "the coordinator's data directory (holds audit/)")
	c.AddCommand(verify)
	return c
}

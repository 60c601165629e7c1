package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/risk"
)

func newRiskCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "risk",
		Short: "Risk posture of devices: vulnerabilities, end of life, recalls, default credentials",
	}
	c.AddCommand(newRiskAssessCmd())
	return c
}

// deviceAssessment is one line of `risk assess -o json`.
type deviceAssessment struct {
	risk.Device
	Findings []risk.Finding `json:"findings"`
	Notes    []string       `json:"notes,omitempty"`
}

func newRiskAssessCmd() *cobra.Command {
	var intelPath, keyFile, inventory, output, atText string
	cmd := &cobra.Command{
		Use:   "assess --intel DIR|FILE --inventory FILE [-o table|json]",
		Short: "Assess an inventory against a bundle, offline (no cluster)",
		Long: "assess reads FILE, JSON Lines with one device per line (any of mac, ip, name, vendor, model,\n" +
			"version, os, udi_di, serial, location, owner, sbom), and prints each device's findings from the\n" +
			"bundle: vulnerabilities (CVE, CVSS, EPSS, KEV, fixed version, remediation), end of life of its\n" +
			"OS, recalls, publicly documented default credentials (account and protocol, never a password).\n" +
			"Each finding says how sure it is: exact, range, model, vendor, possible. -o json prints one\n" +
			"object per device with its findings.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if intelPath == "" || inventory == "" {
				return usagef("assess: --intel and --inventory are required")
			}
			if output != "table" && output != "json" {
				return usagef("assess: -o %q: want table or json", output)
			}
			at := time.Now().UTC()
			if atText != "" {
				t, err := time.Parse(time.DateOnly, atText)
				if err != nil {
					return usagef("assess: --at %q: want YYYY-MM-DD", atText)
				}
				at = t
			}
			in, err := loadIntel(intelPath, keyFile)
			if err != nil {
				return err
			}
			f, err := os.Open(inventory)
			if err != nil {
				return err
			}
			devices, err := risk.ReadInventory(f)
			f.Close()
			if err != nil {
				return usageError{fmt.Errorf("%s: %w", inventory, err)}
			}
			// Each device is written as it is assessed: an inventory of
			// 10,000 devices need not be held with all its findings.
			bw := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			var emit func(deviceAssessment) error
			var tw *tabwriter.Writer
			if output == "json" {
				enc := json.NewEncoder(bw)
				emit = func(a deviceAssessment) error { return enc.Encode(a) }
			} else {
				tw = newAssessmentTable(bw)
				emit = func(a deviceAssessment) error { printAssessment(tw, a); return nil }
			}
			for _, d := range devices {
				fs, err := in.Assess(d, at)
				if err != nil {
					bw.Flush()
					return err
				}
				a := deviceAssessment{Device: d, Findings: fs}
				if a.Findings == nil {
					a.Findings = []risk.Finding{}
				}
				if !in.SBOMAssessed(d) {
					a.Notes = append(a.Notes, "sbom "+d.SBOM+" not assessed: the bundle has no OSV records")
				}
				if err := emit(a); err != nil {
					return err
				}
			}
			if tw != nil {
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			return bw.Flush()
		},
	}
	cmd.Flags().StringVar(&intelPath, "intel", "", "bundle (.tar.gz) or directory laid out by kind")
	cmd.Flags().StringVar(&keyFile, "intel-key", "", "ed25519 public key (PEM) the bundle must be signed with")
	cmd.Flags().StringVar(&inventory, "inventory", "", "devices, JSON Lines")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().StringVar(&atText, "at", "", "assess as of this date (YYYY-MM-DD; default today): decides what has reached end of life")
	return cmd
}

func newAssessmentTable(w io.Writer) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tKIND\tID\tSEVERITY\tCONFIDENCE\tCVSS\tEPSS\tKEV\tSOURCE\tSUMMARY")
	return tw
}

func printAssessment(tw *tabwriter.Writer, a deviceAssessment) {
	name := firstNonEmpty(a.Name, a.MAC, a.IP, strings.TrimSpace(a.Vendor+" "+a.Model))
	if len(a.Findings) == 0 {
		fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\tno findings\n", name)
	}
	for _, f := range a.Findings {
		cvss, epss, kev := "-", "-", "-"
		if f.CVSS > 0 {
			cvss = fmt.Sprintf("%.1f", f.CVSS)
		}
		if f.EPSS > 0 {
			epss = fmt.Sprintf("%.3f", f.EPSS)
		}
		if f.KEV {
			kev = "KEV"
		}
		sum := f.Summary
		if f.Suppressed != "" {
			sum = "SUPPRESSED " + f.Suppressed + "; " + sum
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, f.Kind, f.ID, f.Severity, f.Confidence, cvss, epss, kev, f.Source, truncateText(sum, 110))
	}
	for _, n := range a.Notes {
		fmt.Fprintf(tw, "%s\tnote\t-\t-\t-\t-\t-\t-\t-\t%s\n", name, n)
	}
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return "?"
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

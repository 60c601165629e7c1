package main

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/medmesh/medmesh/compliance"
	"github.com/medmesh/medmesh/coordinator"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

func newComplianceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "compliance",
		Short: "HIPAA Security Rule, HHS 405(d) HICP and proposed-2025 controls per device, with a ranked remediation plan",
	}
	c.AddCommand(newComplianceAssessCmd())
	return c
}

func newComplianceAssessCmd() *cobra.Command {
	var inventories, mds2Files []string
	var bundlePath, keyFile, framework, format, atText string
	cmd := &cobra.Command{
		Use:   "assess --inventory FILE... [--bundle DIR|FILE] [--mds2 FILE...] [--framework NAME] [--format json|table]",
		Short: "Evaluate compliance controls and a remediation plan offline (no cluster)",
		Long: "assess evaluates every control of the catalog (HIPAA 45 CFR 164.312(a)-(e), 164.308(a)(1) and\n" +
			"(a)(5); HHS 405(d) HICP practices 5, 6, 7 and 9; the January 2025 proposed Security Rule, marked\n" +
			"proposed) for every device, with the evidence each result rests on, and ranks the remediation\n" +
			"actions that remove the most risk for the least work.\n\n" +
			"Each --inventory FILE is either the JSON report of `medmesh replay --report -o json` (devices and\n" +
			"alerts the sensor engine found in a capture: the capture is named in the evidence) or JSON Lines\n" +
			"as `medmesh risk assess` reads (one device per line: mac, name, vendor, model, version, os,\n" +
			"udi_di ...). Devices in several files are joined by MAC; inventory lines give their identity.\n" +
			"With --bundle, devices are matched against the intelligence bundle as the coordinators do.\n" +
			"Each --mds2 FILE is a vendor's MDS2 workbook (ANSI/NEMA HN 1-2019, .xlsx), attached to the\n" +
			"devices of its model (DOC-3). What medmesh cannot observe is reported as not evidenced, with why.",
		Example: "  medmesh replay --pcap ward.pcap --report -o json > ward.json\n" +
			"  medmesh compliance assess --inventory ward.json --inventory cmdb.jsonl --bundle intel.tar.gz \\\n" +
			"      --mds2 infuser-mds2.xlsx --framework hipaa --format json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(inventories) == 0 {
				return usagef("assess: --inventory is required")
			}
			if format != "json" && format != "table" {
				return usagef("assess: --format %q: want json or table", format)
			}
			var fw medmeshv1.ComplianceFramework
			if framework != "" {
				f, ok := compliance.Frameworks[framework]
				if !ok {
					return usagef("assess: --framework %q: want hipaa, hicp or proposed-2025", framework)
				}
				fw = f
			}
			at := time.Now().UTC()
			if atText != "" {
				t, err := time.Parse(time.DateOnly, atText)
				if err != nil {
					return usagef("assess: --at %q: want YYYY-MM-DD", atText)
				}
				at = t
			}
			devs, err := compliance.ReadInventories(inventories)
			if err != nil {
				return usageError{err}
			}
			in := compliance.Input{Framework: fw, Now: at}
			var intel *risk.Intel
			if bundlePath != "" {
				if intel, err = loadIntel(bundlePath, keyFile); err != nil {
					return err
				}
				in.BundleDigest, in.BundleDate = intel.Digest(), bundleDate(intel, at)
			}
			for i := range devs {
				p, err := coordinator.AssessPosture(intel, devs[i].Device, devs[i].Alerts, at)
				if err != nil {
					return fmt.Errorf("assess %s: %w", devs[i].Device.GetMac(), err)
				}
				devs[i].Posture = p
			}
			in.Devices = devs
			for _, f := range mds2Files {
				form, err := compliance.ReadMDS2(f)
				if err != nil {
					return usageError{err}
				}
				in.MDS2 = append(in.MDS2, form)
			}
			rep, err := compliance.Evaluate(in)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if format == "json" {
				b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(rep)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(w, string(b))
				return err
			}
			return printComplianceReport(w, rep)
		},
	}
	cmd.Flags().StringArrayVar(&inventories, "inventory", nil, "devices: a `medmesh replay --report -o json` report or JSON Lines (repeatable)")
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "intelligence bundle (.tar.gz) or directory laid out by kind")
	cmd.Flags().StringVar(&keyFile, "intel-key", "", "ed25519 public key (PEM) the bundle must be signed with")
	cmd.Flags().StringArrayVar(&mds2Files, "mds2", nil, "MDS2 workbook (.xlsx) of a device model (repeatable)")
	cmd.Flags().StringVar(&framework, "framework", "", "only this framework: hipaa, hicp or proposed-2025 (default: all)")
	cmd.Flags().StringVar(&format, "format", "json", "json or table")
	cmd.Flags().StringVar(&atText, "at", "", "evaluate as of this date (YYYY-MM-DD; default today)")
	return cmd
}

// bundleDate is when the bundle was made, or, for a plain directory, its
// newest source's date.
func bundleDate(in *risk.Intel, now time.Time) time.Time {
	if t := in.Created(); !t.IsZero() {
		return t
	}
	var newest time.Time
	for _, s := range in.Status(now, 0) {
		if s.Date.After(newest) {
			newest = s.Date
		}
	}
	return newest
}

func printComplianceReport(w io.Writer, rep *medmeshv1.ComplianceReport) error {
	c := rep.GetCoverage()
	fmt.Fprintf(w, "generated %s", rep.GetGenerateTime().AsTime().Format(time.RFC3339))
	if rep.GetBundleDigest() != "" {
		fmt.Fprintf(w, " against bundle %s", shortDigest(rep.GetBundleDigest()))
		if rep.GetBundleDate() != nil {
			fmt.Fprintf(w, " dated %s", rep.GetBundleDate().AsTime().Format(time.DateOnly))
		}
	}
	fmt.Fprintf(w, "\n%d devices: %d classified, %d identified, %d assessed, %d observed, %d with an MDS2\n\n",
		c.GetDevices(), c.GetClassified(), c.GetIdentified(), c.GetAssessed(), c.GetObserved(), c.GetWithMds2())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTROL\tSTATUS\tMET\tUNMET\tNOT EVIDENCED\tN/A")
	for _, s := range rep.GetControls() {
		title := s.GetControl().GetTitle()
		if s.GetControl().GetProposed() {
			title += " (proposed)"
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%d\t%d\t%d\t%d\n", s.GetControl().GetId(), title,
			strings.ToLower(strings.TrimPrefix(s.GetStatus().String(), "CONTROL_STATUS_")), s.GetMet(), s.GetUnmet(), s.GetNotEvidenced(), s.GetNotApplicable())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nplan (campus risk %.2f):\n", rep.GetPlan().GetCampusRisk())
	for _, a := range rep.GetPlan().GetActions() {
		fmt.Fprintf(w, "%2d. %s\n    -%.2f risk, effort %d; closes %s\n    %s\n", a.GetRank(), a.GetTitle(), a.GetExpectedRiskDrop(), a.GetEffort(),
			cmp.Or(strings.Join(a.GetControlIds(), ", "), "no whole control"), a.GetExplanation())
	}
	return nil
}

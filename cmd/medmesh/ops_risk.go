package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// The cluster forms of risk, intel and sbom: they talk to the
// coordinators' RiskService.

// addRiskClusterCommands adds `risk top|device|findings|watch` to risk,
// `intel import` (and the cluster form of `intel status`) to intel, and
// the sbom command to root, with the operator flags.
func addRiskClusterCommands(root, riskCmd, intelCmd *cobra.Command) {
	ro := &opFlags{}
	riskCmd.AddCommand(newRiskTopCmd(ro), newRiskDeviceCmd(ro), newRiskFindingsCmd(ro), newRiskWatchCmd(ro))
	ro.register(riskCmd)
	io := &opFlags{}
	intelCmd.AddCommand(newIntelImportCmd(io))
	io.register(intelCmd)
	intelClusterStatus = io
	so := &opFlags{}
	sbom := newSBOMCmd(so)
	so.register(sbom)
	root.AddCommand(sbom)
}

// intelClusterStatus are the flags `intel status` uses without --intel.
var intelClusterStatus *opFlags

// uploadChunk is the size of each message of an upload.
const uploadChunk = 1 << 20

// upload sends r in chunks through send; the first carries the header.
func upload(r io.Reader, send func(chunk []byte, first bool) error) error {
	buf := make([]byte, uploadChunk)
	first := true
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 || first {
			if serr := send(buf[:n], first); serr != nil {
				return nil // the server answered early: CloseAndRecv says why
			}
			first = false
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func newIntelImportCmd(o *opFlags) *cobra.Command {
	var keyFile, reason, actor string
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Make a bundle (.tar.gz or directory) the cluster's active intelligence, after checking it",
		Long: "import checks PATH here as `intel verify` does (with --intel-key when given), uploads it to the\n" +
			"coordinators, which check it again with their own --intel-key (refusing unsigned bundles when one\n" +
			"is configured) and keep it in their data directories by digest; Raft commits which bundle is\n" +
			"active (audited) and the leader assesses every device against it. A refused bundle names the file\n" +
			"and the reason, and the active bundle stays.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := loadIntel(args[0], keyFile)
			if err != nil {
				return err
			}
			var archive bytes.Buffer
			if err := in.WriteArchive(&archive); err != nil {
				return err
			}
			name := filepath.Base(filepath.Clean(args[0]))
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				st, err := medmeshv1.NewRiskServiceClient(conn).ImportBundle(ctx)
				if err != nil {
					return err
				}
				hdr := &medmeshv1.ImportBundleHeader{Name: name, Reason: reason, Actor: actor, RequestId: requestID}
				if err := upload(bytes.NewReader(archive.Bytes()), func(chunk []byte, first bool) error {
					m := &medmeshv1.ImportBundleRequest{Chunk: chunk}
					if first {
						m.Header = hdr
					}
					return st.Send(m)
				}); err != nil {
					return err
				}
				resp, err := st.CloseAndRecv()
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				b := resp.GetBundle()
				signed := "unsigned"
				if b.GetSigned() {
					signed = "signature verified by the coordinators"
				}
				fmt.Fprintf(w, "active bundle %s: %s, %d files, %d bytes, %s, activated by %s at index %d\n",
					name, b.GetDigest(), b.GetFiles(), b.GetSize(), signed, b.GetActivatedBy(), resp.GetIndex())
				fmt.Fprintln(w, "the leader is assessing every device against it: medmesh risk top")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "intel-key", "", "also check the signature here with this ed25519 public key (PEM)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	cmd.Flags().StringVar(&actor, "actor", "", "a comment on who asked, kept in the audit record (the actor is your certificate)")
	return cmd
}

// intelStatusCluster is `intel status` without --intel: the cluster's
// active bundle.
func intelStatusCluster(cmd *cobra.Command, output string, maxAge time.Duration) error {
	o := intelClusterStatus
	return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := medmeshv1.NewRiskServiceClient(conn).IntelStatus(ctx, &medmeshv1.IntelStatusRequest{
			MaxAgeDays: uint32(maxAge / (24 * time.Hour)), Consistency: o.consistency()})
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if output == "json" {
			return printProto(w, resp)
		}
		b := resp.GetBundle()
		if b == nil {
			fmt.Fprintln(w, "no bundle imported: medmesh intel import PATH")
		} else {
			signed := "unsigned"
			if b.GetSigned() {
				signed = "signed"
			}
			fmt.Fprintf(w, "active bundle %s (%s)\nmanifest sha256 %s, %d files, %s\nactivated by %s at %s (index %d)\n\n",
				b.GetName(), ts(b.GetCreated()), b.GetDigest(), b.GetFiles(), signed, b.GetActivatedBy(), ts(b.GetActivateTime()), b.GetIndex())
			t := newTable(w, "KIND", "SOURCE", "FILES", "RECORDS", "DATE", "AGE", "")
			for _, s := range resp.GetSources() {
				date, age := "unknown", "-"
				if s.GetDate() != nil {
					date, age = s.GetDate().AsTime().Format(time.DateOnly), fmt.Sprintf("%dd", s.GetAgeDays())
				}
				warn := ""
				if s.GetStale() {
					warn = fmt.Sprintf("WARNING: older than %d days", resp.GetMaxAgeDays())
				}
				t.row(s.GetKind(), s.GetSource(), s.GetFiles(), s.GetRecords(), date, age, warn)
			}
			if err := t.flush(); err != nil {
				return err
			}
			if resp.GetStale() > 0 {
				fmt.Fprintf(w, "\n%d source(s) older than %d days: assessments still use them; bring a newer bundle.\n", resp.GetStale(), resp.GetMaxAgeDays())
			}
		}
		if len(resp.GetSboms()) > 0 {
			fmt.Fprintln(w)
			t := newTable(w, "SBOM VENDOR", "MODEL", "VERSION", "FORMAT", "COMPONENTS", "SHA256", "BY")
			for _, a := range resp.GetSboms() {
				t.row(a.GetVendor(), a.GetModel(), a.GetVersion(), a.GetFormat(), a.GetComponents(), a.GetDigest()[:12], a.GetAttachedBy())
			}
			if err := t.flush(); err != nil {
				return err
			}
		}
		fmt.Fprintf(w, "\n%d devices assessed, %d findings (served by %s)\n", resp.GetAssessedDevices(), resp.GetFindings(), resp.GetReadInfo().GetServedBy())
		return nil
	})
}

func newSBOMCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "sbom",
		Short: "Attach software bills of materials to device models",
	}
	var vendor, model, version, reason, actor string
	imp := &cobra.Command{
		Use:   "import FILE --vendor V --model M [--version X]",
		Short: "Attach a CycloneDX or SPDX SBOM to a device model (and version): every such device is assessed with it",
		Long: "import reads FILE (CycloneDX 1.4-1.6 JSON or XML, SPDX 2.2/2.3 JSON or tag-value) here, uploads it\n" +
			"to the coordinators, which keep it by sha256 in their data directories, and attaches it to the\n" +
			"model (audited): devices whose vendor and model (and version, when given) are these get its\n" +
			"components matched against the active bundle's OSV records. An SBOM without --version covers\n" +
			"every version of the model that has none of its own.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(vendor) == "" || strings.TrimSpace(model) == "" {
				return usagef("sbom import: --vendor and --model are required")
			}
			info, err := risk.ReadSBOM(args[0])
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				st, err := medmeshv1.NewRiskServiceClient(conn).ImportSBOM(ctx)
				if err != nil {
					return err
				}
				hdr := &medmeshv1.ImportSBOMHeader{Vendor: vendor, Model: model, Version: version, Name: filepath.Base(args[0]), Reason: reason, Actor: actor, RequestId: requestID}
				if err := upload(bytes.NewReader(data), func(chunk []byte, first bool) error {
					m := &medmeshv1.ImportSBOMRequest{Chunk: chunk}
					if first {
						m.Header = hdr
					}
					return st.Send(m)
				}); err != nil {
					return err
				}
				resp, err := st.CloseAndRecv()
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				a := resp.GetAttachment()
				fmt.Fprintf(w, "attached %s (%s, %d components, sha256 %s) to %s %s %s at index %d\n",
					a.GetName(), a.GetFormat(), a.GetComponents(), a.GetDigest(), a.GetVendor(), a.GetModel(), orAll(a.GetVersion()), resp.GetIndex())
				for _, wn := range info.Warnings {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", wn)
				}
				return nil
			})
		},
	}
	f := imp.Flags()
	f.StringVar(&vendor, "vendor", "", "device vendor, as devices name it")
	f.StringVar(&model, "model", "", "device model, as devices name it")
	f.StringVar(&version, "version", "", "firmware/software version the SBOM describes (default: every version)")
	f.StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	f.StringVar(&actor, "actor", "", "a comment on who asked, kept in the audit record")
	c.AddCommand(imp)
	return c
}

func orAll(v string) string {
	if v == "" {
		return "(every version)"
	}
	return v
}

func identityText(id *medmeshv1.DeviceIdentity) string {
	s := strings.TrimSpace(strings.Join([]string{id.GetVendor(), id.GetModel(), id.GetVersion()}, " "))
	if id.GetOs() != "" {
		s += " [" + id.GetOs() + "]"
	}
	return s
}

// why is a posture's leading factors, for one table cell.
func why(p *medmeshv1.DevicePosture, n int) string {
	var parts []string
	for _, f := range p.GetScore().GetFactors() {
		if f.GetWeight() == 0 || len(parts) == n {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s +%.0f: %s", f.GetName(), f.GetWeight(), f.GetDetail()))
	}
	return strings.Join(parts, "; ")
}

func newRiskTopCmd(o *opFlags) *cobra.Command {
	var n int
	cmd := &cobra.Command{
		Use:   "top [-n 10]",
		Short: "The devices to act on first: highest posture score, with why",
		Long: "top lists the devices with the highest posture score (0-100: KEV-listed and high-CVSS/EPSS\n" +
			"vulnerabilities, end of life, recalls, default credentials, external communication, cleartext PHI\n" +
			"protocols, weighted by the device's safety tier and exposure; docs/architecture.md has the formula)\n" +
			"and the factors that make each score. `medmesh risk device MAC` shows every finding.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 0 {
				return usagef("-n must not be negative")
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewRiskServiceClient(conn).Top(ctx, &medmeshv1.TopRequest{N: int32(n), Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "SCORE", "DEVICE", "NAME", "TIER", "IDENTITY", "FINDINGS", "WHY")
				for _, p := range resp.GetPostures() {
					t.row(p.GetScore().GetScore(), p.GetDeviceMac(), p.GetHostname(), names.Enum(p.GetTier()), identityText(p.GetIdentity()),
						len(p.GetFindings()), why(p, 3))
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().IntVarP(&n, "n", "n", 10, "how many devices")
	return cmd
}

func findingRow(t *table, mac string, f *medmeshv1.Finding, withDevice bool) {
	kev, cvss, epss := "", "", ""
	if f.GetKev() {
		kev = "KEV"
	}
	if f.GetCvss() > 0 {
		cvss = fmt.Sprintf("%.1f", f.GetCvss())
	}
	if f.GetEpss() > 0 {
		epss = fmt.Sprintf("%.3f", f.GetEpss())
	}
	sum := f.GetSummary()
	if f.GetSuppressed() != "" {
		sum = "SUPPRESSED (" + f.GetSuppressed() + "): " + sum
	}
	cols := []any{f.GetKind(), f.GetId(), f.GetSeverity(), f.GetConfidence(), cvss, epss, kev, truncate(sum, 110)}
	if withDevice {
		cols = append([]any{mac}, cols...)
	}
	t.row(cols...)
}

func newRiskDeviceCmd(o *opFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "device MAC",
		Short: "A device's posture: score, the factors behind it, and every finding explained",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewRiskServiceClient(conn).GetPosture(ctx, &medmeshv1.GetPostureRequest{DeviceMac: args[0], Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				p := resp.GetPosture()
				fmt.Fprintf(w, "device    %s %s\nidentity  %s\ntier      %s\nscore     %d\nassessed  %s against bundle %s", p.GetDeviceMac(), p.GetHostname(),
					identityText(p.GetIdentity()), names.Enum(p.GetTier()), p.GetScore().GetScore(), ts(p.GetAssessTime()), shortDigest(p.GetBundleDigest()))
				if p.GetSbomDigest() != "" {
					fmt.Fprintf(w, " and SBOM %s", shortDigest(p.GetSbomDigest()))
				}
				fmt.Fprintf(w, " (index %d)\n\n", p.GetIndex())
				ft := newTable(w, "FACTOR", "POINTS", "WHY")
				for _, f := range p.GetScore().GetFactors() {
					pts := fmt.Sprintf("%.1f", f.GetWeight())
					if f.GetName() == "tier" || f.GetName() == "exposure" {
						pts = ""
					}
					ft.row(f.GetName(), pts, f.GetDetail())
				}
				if err := ft.flush(); err != nil {
					return err
				}
				fmt.Fprintln(w)
				t := newTable(w, "KIND", "ID", "SEVERITY", "CONFIDENCE", "CVSS", "EPSS", "KEV", "SUMMARY")
				for _, f := range p.GetFindings() {
					findingRow(t, "", f, false)
				}
				if err := t.flush(); err != nil {
					return err
				}
				if p.GetTruncated() > 0 {
					fmt.Fprintf(w, "... and %d less urgent findings (-o json shows the 256 kept)\n", p.GetTruncated())
				}
				for _, f := range p.GetFindings() {
					if f.GetRemediation() != "" && f.GetSuppressed() == "" {
						fmt.Fprintf(w, "\n%s %s: %s", f.GetKind(), f.GetId(), truncate(f.GetRemediation(), 300))
					}
				}
				fmt.Fprintln(w)
				return nil
			})
		},
	}
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	if d == "" {
		return "(none)"
	}
	return d
}

func newRiskFindingsCmd(o *opFlags) *cobra.Command {
	var kind, device, minSev, minConf string
	var kev, suppressed bool
	var limit int
	cmd := &cobra.Command{
		Use:   "findings [--kind kev|vulnerability|end_of_life|recall|default_credentials|external_communication|cleartext_phi_protocol]",
		Short: "List findings across devices, with filters",
		Long: "findings lists every device's findings, device by device, most urgent first. --kind kev is\n" +
			"short for --kind vulnerability --kev (CISA's Known Exploited Vulnerabilities). Filters combine.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := strings.ReplaceAll(kind, "-", "_")
			if k == "kev" {
				k, kev = "vulnerability", true
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewRiskServiceClient(conn)
				var last *medmeshv1.ListFindingsResponse
				fs, next, err := listAll(limit, func(token string, size int32) ([]*medmeshv1.DeviceFinding, string, error) {
					resp, err := cl.ListFindings(ctx, &medmeshv1.ListFindingsRequest{PageSize: size, PageToken: token, Kind: k, DeviceMac: device, Kev: kev,
						MinSeverity: minSev, MinConfidence: minConf, IncludeSuppressed: suppressed, Consistency: o.consistency()})
					last = resp
					return resp.GetFindings(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListFindingsResponse{Findings: fs, NextPageToken: next, ReadInfo: last.GetReadInfo()})
				}
				t := newTable(w, "DEVICE", "KIND", "ID", "SEVERITY", "CONFIDENCE", "CVSS", "EPSS", "KEV", "SUMMARY")
				for _, f := range fs {
					findingRow(t, f.GetDeviceMac(), f.GetFinding(), true)
				}
				return t.flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kind, "kind", "", "only this kind (kev: KEV-listed vulnerabilities)")
	f.StringVar(&device, "device", "", "only this device's (MAC)")
	f.BoolVar(&kev, "kev", false, "only KEV-listed vulnerabilities")
	f.StringVar(&minSev, "min-severity", "", "only this severity or worse: critical, high, medium, low")
	f.StringVar(&minConf, "min-confidence", "", "only this confidence or surer: exact, range, model, possible, vendor")
	f.BoolVar(&suppressed, "suppressed", false, "include findings a VEX statement suppressed")
	f.IntVar(&limit, "limit", 0, "at most this many findings (0: all)")
	return cmd
}

func newRiskWatchCmd(o *opFlags) *cobra.Command {
	var from uint64
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream device postures as the leader commits them, until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			var t *table
			if !o.json() {
				t = newTable(w, "INDEX", "SCORE", "DEVICE", "NAME", "FINDINGS", "WHY")
				if err := t.flush(); err != nil {
					return err
				}
			}
			open := func(ctx context.Context, conn *grpc.ClientConn, from uint64, token string) (func() (watchEvent[*medmeshv1.DevicePosture], error), error) {
				s, err := medmeshv1.NewRiskServiceClient(conn).WatchFindings(ctx, &medmeshv1.WatchFindingsRequest{FromIndex: from, ResumeToken: token})
				if err != nil {
					return nil, err
				}
				return func() (watchEvent[*medmeshv1.DevicePosture], error) {
					m, err := s.Recv()
					if err != nil {
						return watchEvent[*medmeshv1.DevicePosture]{}, err
					}
					p := m.GetPosture()
					return watchEvent[*medmeshv1.DevicePosture]{item: p, index: p.GetIndex(), applied: m.GetAppliedIndex(), token: m.GetResumeToken(), isItem: p != nil}, nil
				}, nil
			}
			return watch(cmd, o, from, open, func(p *medmeshv1.DevicePosture) error {
				if o.json() {
					return printLine(w, p)
				}
				t.row(p.GetIndex(), p.GetScore().GetScore(), p.GetDeviceMac(), p.GetHostname(), len(p.GetFindings()), truncate(why(p, 2), 140))
				return t.flush()
			})
		},
	}
	cmd.Flags().Uint64Var(&from, "from-index", 0, "postures committed after this Raft index (0: every device's current one first)")
	return cmd
}

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
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/compliance"
	compreport "github.com/medmesh/medmesh/compliance/report"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

var frameworks = map[string]medmeshv1.ComplianceFramework{
	"":              medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED,
	"all":           medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED,
	"hipaa":         medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA,
	"hicp":          medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HICP,
	"proposed-2025": medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_PROPOSED_2025,
}

// addComplianceClusterCommands adds the cluster forms (report,
// exceptions, trend, mds2) to the compliance command, beside the offline
// assess.
func addComplianceClusterCommands(c *cobra.Command) {
	o := &opFlags{}
	c.Long = "assess evaluates offline (no cluster). The other commands ask the coordinators: reports are\n" +
		"computed from committed state, stamped with the Raft index and the active intelligence bundle's\n" +
		"date. Risk exceptions (approvers only, audited) take a remediation action or a finding off the\n" +
		"plan until their expiry; an expired exception's action is back in the plan. The leader records\n" +
		"one trend point a day (90 days kept). MDS2 workbooks attach vendor answers to device models."
	var framework, format, out, from string
	rep := &cobra.Command{
		Use:   "report",
		Short: "Write the campus compliance report (HTML, JSON or PDF)",
		Long: "Write the report: --format html is one self-contained page (inline CSS and SVG charts,\n" +
			"no external asset, prints well); json is the report as protobuf JSON; pdf prints the HTML\n" +
			"with headless Chromium (Debian package chromium), and says so where it is not installed.\n" +
			"The per-device results are fetched in pages of one evaluation (one Raft index), so a\n" +
			"campus of any size fits; if the leader drops that evaluation mid-way the report starts again.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fw, ok := frameworks[framework]
			if !ok {
				return fmt.Errorf("--framework %q: want hipaa, hicp, proposed-2025 or all", framework)
			}
			if format != "html" && format != "json" && format != "pdf" {
				return fmt.Errorf("--format %q: want html, json or pdf", format)
			}
			if format == "pdf" && out == "" {
				return fmt.Errorf("--format pdf needs --out FILE")
			}
			if format == "pdf" && compreport.ChromiumPath() == "" {
				return compreport.ErrNoChromium
			}
			if from != "" {
				if cmd.Flags().Changed("framework") {
					return fmt.Errorf("--from renders a saved report: its framework is the one it was made for")
				}
				b, err := os.ReadFile(from)
				if err != nil {
					return err
				}
				var r medmeshv1.ComplianceReport
				if err := protojson.Unmarshal(b, &r); err != nil {
					return fmt.Errorf("%s: not a JSON compliance report: %v", from, err)
				}
				return writeReport(cmd, &r, format, out)
			}
			conn, err := o.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := medmeshv1.NewComplianceServiceClient(conn)
			// --timeout bounds each page.
			r, err := compreport.Fetch(cmd.Context(), fw, func(ctx context.Context, req *medmeshv1.GetReportRequest) (*medmeshv1.GetReportResponse, error) {
				ctx, cancel := context.WithTimeout(ctx, o.timeout)
				defer cancel()
				return client.GetReport(ctx, req)
			})
			if err != nil {
				return o.rpcError(err)
			}
			return writeReport(cmd, r, format, out)
		},
	}
	rep.Flags().StringVar(&framework, "framework", "all", "hipaa, hicp, proposed-2025 or all")
	rep.Flags().StringVar(&format, "format", "html", "html, json or pdf")
	rep.Flags().StringVar(&out, "out", "", "write to FILE (default stdout; required for pdf)")
	rep.Flags().StringVar(&from, "from", "", "render a report saved with --format json instead of asking the cluster (the same figures)")

	exc := &cobra.Command{Use: "exceptions", Short: "List, accept and revoke risk exceptions"}
	var activeOnly bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List risk exceptions, in the order they were accepted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewComplianceServiceClient(conn).ListExceptions(ctx, &medmeshv1.ListExceptionsRequest{ActiveOnly: activeOnly})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "ID", "KIND", "TARGET", "OWNER", "EXPIRES", "STATE", "ACCEPTED BY", "REASON")
				for _, e := range resp.GetExceptions() {
					t.row(e.GetId(), shortEnum(e.GetTargetKind().String(), "EXCEPTION_TARGET_KIND_"), e.GetTarget(), e.GetOwner(), ts(e.GetExpireTime()),
						shortEnum(e.GetState().String(), "EXCEPTION_STATE_"), e.GetAcceptedBy(), e.GetReason())
				}
				return t.flush()
			})
		},
	}
	list.Flags().BoolVar(&activeOnly, "active", false, "only the exceptions in force")

	var kind, owner, reason, comment, expires string
	accept := &cobra.Command{
		Use:   "accept TARGET",
		Short: "Accept a remediation action (by id) or a finding (--kind finding) as a risk exception (approvers)",
		Long: "Accept TARGET (an action id from the report's plan, or a finding id with --kind finding)\n" +
			"until --expires (a duration such as 720h, or an RFC 3339 time; at most a year). --owner and\n" +
			"--reason are required. Audited as exception.accept under your certificate's identity.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k := medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_ACTION
			switch kind {
			case "action":
			case "finding":
				k = medmeshv1.ExceptionTargetKind_EXCEPTION_TARGET_KIND_FINDING
			default:
				return fmt.Errorf("--kind %q: want action or finding", kind)
			}
			exp, err := parseExpiry(expires, time.Now())
			if err != nil {
				return err
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				resp, err := medmeshv1.NewComplianceServiceClient(conn).AcceptException(ctx, &medmeshv1.AcceptExceptionRequest{
					TargetKind: k, Target: args[0], Owner: owner, Reason: reason, ExpireTime: timestamppb.New(exp), RequestId: requestID, Comment: comment,
				})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				e := resp.GetException()
				fmt.Fprintf(cmd.OutOrStdout(), "%s accepts %s until %s (index %d)\n", e.GetId(), e.GetTarget(), ts(e.GetExpireTime()), e.GetIndex())
				return nil
			})
		},
	}
	accept.Flags().StringVar(&kind, "kind", "action", "action or finding")
	accept.Flags().StringVar(&owner, "owner", "", "who owns the risk (required)")
	accept.Flags().StringVar(&reason, "reason", "", "why it is accepted (required)")
	accept.Flags().StringVar(&expires, "expires", "720h", "when it ends: a duration from now or an RFC 3339 time")
	accept.Flags().StringVar(&comment, "actor", defaultActor(), "a comment on who makes the change (the audit actor is your certificate's identity)")

	var revReason, revComment string
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a risk exception in force (approvers); its target is back in the plan",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				resp, err := medmeshv1.NewComplianceServiceClient(conn).RevokeException(ctx, &medmeshv1.RevokeExceptionRequest{Id: args[0], Reason: revReason, RequestId: requestID, Comment: revComment})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s revoked\n", resp.GetException().GetId())
				return nil
			})
		},
	}
	revoke.Flags().StringVar(&revReason, "reason", "", "why (required)")
	revoke.Flags().StringVar(&revComment, "actor", defaultActor(), "a comment on who makes the change (the audit actor is your certificate's identity)")
	exc.AddCommand(list, accept, revoke)

	var days uint32
	trend := &cobra.Command{
		Use:   "trend",
		Short: "Show the daily compliance trend (one point a day, at most 90 days)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewComplianceServiceClient(conn).GetTrend(ctx, &medmeshv1.GetTrendRequest{Days: days})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "DAY", "DEVICES", "CRITICAL", "HIGH", "MEDIUM", "LOW", "NONE", "CAMPUS RISK", "MET", "UNMET", "NOT EVIDENCED", "EXCEPTIONS")
				for _, p := range resp.GetPoints() {
					t.row(p.GetDay(), p.GetDevices(), p.GetPostureCritical(), p.GetPostureHigh(), p.GetPostureMedium(), p.GetPostureLow(), p.GetPostureNone(),
						fmt.Sprintf("%.0f", p.GetCampusRisk()), p.GetControlsMet(), p.GetControlsUnmet(), p.GetControlsNotEvidenced(), p.GetExceptionsActive())
				}
				return t.flush()
			})
		},
	}
	trend.Flags().Uint32Var(&days, "days", 0, "at most this many recent days (0: all kept)")
	c.AddCommand(rep, exc, trend, newMDS2Cmd(o))
	o.register(c)
}

func newMDS2Cmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{Use: "mds2", Short: "Import and list device models' MDS2 forms (ANSI/NEMA HN 1-2019)"}
	var manufacturer, model, reason, actor string
	imp := &cobra.Command{
		Use:   "import FILE.xlsx",
		Short: "Attach an MDS2 workbook's answers to its device model (operators; audited)",
		Long: "import reads FILE (an MDS2 workbook in the ANSI/NEMA HN 1-2019 layout) here, uploads it, and\n" +
			"the coordinator attaches its answers to the model the form names (DOC-1 manufacturer, DOC-3\n" +
			"model; --manufacturer and --model override them to match the inventory's spelling), replacing\n" +
			"the one before. Compliance reports use the answers as evidence (e.g. \"vendor states no\n" +
			"transmission encryption\" and HL7 in clear seen: confirmed).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := compliance.ReadMDS2(args[0]); err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				st, err := medmeshv1.NewComplianceServiceClient(conn).ImportMDS2(ctx)
				if err != nil {
					return err
				}
				hdr := &medmeshv1.ImportMDS2Request_Header{Name: filepath.Base(args[0]), Manufacturer: manufacturer, Model: model, Reason: reason, RequestId: requestID, Comment: actor}
				if err := upload(bytes.NewReader(data), func(chunk []byte, first bool) error {
					m := &medmeshv1.ImportMDS2Request{Chunk: chunk}
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
				fmt.Fprintf(w, "attached %s (%d answers, sha256 %s) to %s %s at index %d\n", a.GetName(), len(a.GetAnswers()), a.GetDigest(), a.GetManufacturer(), a.GetModel(), a.GetIndex())
				return nil
			})
		},
	}
	imp.Flags().StringVar(&manufacturer, "manufacturer", "", "device manufacturer as devices name it (default: the form's DOC-1)")
	imp.Flags().StringVar(&model, "model", "", "device model as devices name it (default: the form's DOC-3)")
	imp.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	imp.Flags().StringVar(&actor, "actor", defaultActor(), "a comment on who makes the change (the audit actor is your certificate's identity)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the attached MDS2 forms",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewComplianceServiceClient(conn).ListMDS2(ctx, &medmeshv1.ListMDS2Request{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "MANUFACTURER", "MODEL", "FILE", "ANSWERS", "ATTACHED BY", "ATTACHED")
				for _, a := range resp.GetAttachments() {
					t.row(a.GetManufacturer(), a.GetModel(), a.GetName(), len(a.GetAnswers()), a.GetAttachedBy(), ts(a.GetAttachTime()))
				}
				return t.flush()
			})
		},
	}
	c.AddCommand(imp, list)
	return c
}

func shortEnum(v, prefix string) string { return strings.ToLower(strings.TrimPrefix(v, prefix)) }

// parseExpiry reads --expires: a duration from now or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--expires %q: must be in the future", s)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires %q: want a duration (720h) or an RFC 3339 time", s)
	}
	return t, nil
}

// writeReport writes r as html, json or pdf to out (stdout when empty).
func writeReport(cmd *cobra.Command, r *medmeshv1.ComplianceReport, format, out string) error {
	if format == "pdf" {
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
		defer cancel()
		return compreport.PDF(ctx, r, out)
	}
	var w io.Writer = cmd.OutOrStdout()
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if format == "json" {
		b, err := compreport.JSON(r)
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	return compreport.HTML(w, r)
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// addPolicyModelCmds adds generate, export-mud, import-mud and audit to
// `medmesh policies`.
func addPolicyModelCmds(c *cobra.Command, o *opFlags) {
	var device, mode string
	generate := &cobra.Command{
		Use:   "generate --device MAC",
		Short: "Build a device's least-privilege policy from its frozen baseline, and show what it would drop",
		Long: "Generate builds the device's policy from its frozen baseline (or its class's) plus the class\n" +
			"defaults (DHCP, DNS, NTP), and replays the device's recent flow summaries against it. Nothing\n" +
			"is stored or enforced: save it with `policies put`, then `policies activate` it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if device == "" {
				return usagef("generate: --device is required")
			}
			m, err := parseEnum(medmeshv1.PolicyMode(0).Descriptor(), "mode", mode)
			if err != nil {
				return err
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewPolicyServiceClient(conn).GeneratePolicy(ctx, &medmeshv1.GeneratePolicyRequest{
					DeviceMac: device, Mode: medmeshv1.PolicyMode(m)})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				if err := printPolicy(w, resp.GetPolicy()); err != nil {
					return err
				}
				return printSimulation(w, resp.GetSimulation())
			})
		},
	}
	generate.Flags().StringVar(&device, "device", "", "the device's MAC (required)")
	generate.Flags().StringVar(&mode, "mode", "", "monitor (default) or enforce")

	var url string
	export := &cobra.Command{
		Use:   "export-mud NAME",
		Short: "Print a policy as an RFC 8520 MUD file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewPolicyServiceClient(conn).ExportPolicyMud(ctx, &medmeshv1.ExportPolicyMudRequest{Name: args[0], MudUrl: url})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), resp.GetMudJson())
				return err
			})
		},
	}
	export.Flags().StringVar(&url, "mud-url", "", "MUD URL written into the file")

	var name string
	imp := &cobra.Command{
		Use:   "import-mud --device MAC FILE|-",
		Short: "Parse a MUD file (RFC 8520 or the older draft form) into a policy for a device",
		Long: "Import prints the policy and a warning for each MUD entry it could not express (left out, so\n" +
			"the policy allows less than the file, never more); a malformed file is refused with the JSON\n" +
			"path of the bad value. It stores nothing. Pipe `-o json` ({\"policy\": ..., \"warnings\": [...]})\n" +
			"into `policies put -` to keep it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if device == "" {
				return usagef("import-mud: --device is required")
			}
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return usagef("import-mud: %w", err)
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewPolicyServiceClient(conn).ImportPolicyMud(ctx, &medmeshv1.ImportPolicyMudRequest{
					DeviceMac: device, MudJson: string(data), Name: name})
				if err != nil {
					return err
				}
				// Every warning is an ACE left out: the user sees each
				// one in every format, and on stderr too, so a pipe into
				// `policies put -` does not hide them.
				for _, warn := range resp.GetWarnings() {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+warn)
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				if err := printPolicy(w, resp.GetPolicy()); err != nil {
					return err
				}
				return printWarnings(w, resp.GetWarnings())
			})
		},
	}
	imp.Flags().StringVar(&device, "device", "", "the device's MAC (required)")
	imp.Flags().StringVar(&name, "name", "", "policy name (default device/MAC)")

	var resource string
	audit := &cobra.Command{
		Use:   "audit",
		Short: "Read back the audit trail of policies and decisions (who, what, when, why)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewPolicyServiceClient(conn)
				var all []*medmeshv1.AuditRecord
				token := ""
				for {
					resp, err := cl.ListAuditRecords(ctx, &medmeshv1.ListAuditRecordsRequest{PageSize: 1000, PageToken: token, Resource: resource, Consistency: o.consistency()})
					if err != nil {
						return err
					}
					all = append(all, resp.GetRecords()...)
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListAuditRecordsResponse{Records: all})
				}
				t := newTable(w, "INDEX", "TIME", "ACTOR", "ACTION", "RESOURCE", "REASON")
				for _, r := range all {
					t.row(r.GetIndex(), ts(r.GetTime()), r.GetActor(), r.GetAction(), r.GetResource(), truncate(r.GetReason(), 80))
				}
				return t.flush()
			})
		},
	}
	audit.Flags().StringVar(&resource, "resource", "", `only records about this resource, e.g. "policy/NAME"`)
	c.AddCommand(generate, export, imp, audit)
}

func printSimulation(w io.Writer, s *medmeshv1.Simulation) error {
	fmt.Fprintf(w, "\nsimulation over recent flow summaries: %d flows, %d allowed, %d would be dropped\n",
		s.GetFlowsTotal(), s.GetFlowsAllowed(), s.GetFlowsDropped())
	if len(s.GetDropped()) == 0 {
		return nil
	}
	t := newTable(w, "PEER", "NAME", "PROTO", "PORT", "DIRECTION", "FLOWS", "APP")
	for _, d := range s.GetDropped() {
		f := d.GetFlow()
		t.row(f.GetPeerIp(), f.GetPeerName(), names.Protocol(f.GetProtocol()), port(f.GetPort()), names.Enum(f.GetDirection()), f.GetFlows(), f.GetApp())
	}
	return t.flush()
}

// printWarnings lists import warnings under a table.
func printWarnings(w io.Writer, warnings []string) error {
	if len(warnings) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\n%d warnings: these MUD entries are not in the policy\n", len(warnings))
	for _, warn := range warnings {
		if _, err := fmt.Fprintln(w, "  "+warn); err != nil {
			return err
		}
	}
	return nil
}

// port is a flow's port, "-" for a port-less protocol.
func port(p uint32) string {
	if p == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(p), 10)
}

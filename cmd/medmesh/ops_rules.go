package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newRulesCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "rules",
		Short: "List and change the response rules (alert -> automatic decision)",
		Long: "The response rules are replicated state: every coordinator evaluates them when an alert\n" +
			"is committed, so all replicas make the same decisions. Changing them is for approvers,\n" +
			"and audited. Against a life-critical device, or one of unknown tier, every action but\n" +
			"notify waits for approval whatever a rule says.",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the response rules in the order they are evaluated (by name)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewRuleServiceClient(conn).ListRules(ctx, &medmeshv1.ListRulesRequest{Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "NAME", "KINDS", "MIN SCORE", "CLASSES", "TIERS", "ACTION", "VERSION", "UPDATED BY", "UPDATED")
				for _, r := range resp.GetRules() {
					t.row(r.GetName(), orAny(r.GetKinds()), r.GetMinScore(), orAny(enumNames(r.GetDeviceClasses())), orAny(enumNames(r.GetTiers())),
						names.Enum(r.GetAction()), r.GetVersion(), r.GetUpdatedBy(), ts(r.GetUpdateTime()))
				}
				return t.flush()
			})
		},
	}

	var w writeFlags
	put := &cobra.Command{
		Use:   "put [FILE|-]",
		Short: "Create or replace a response rule from its JSON (a file, or stdin)",
		Long: "Create or replace a response rule. The rule is read as protobuf JSON, e.g.\n" +
			`  {"name": "quarantine-scanner", "kinds": ["scan"], "min_score": 50, "action": "DECISION_ACTION_QUARANTINE"}` + "\n" +
			"Kinds are the alert kinds sensors emit: known_bad_destination, default_credentials,\n" +
			"cleartext_credentials, protocol_misuse, cleartext_phi, failed_login_burst, scan,\n" +
			"external_destination, new_peer, new_port, volume_anomaly. A cluster seeded before the sensors\n" +
			"named scans \"scan\" keeps quarantine-scanner on fan_out: put it again with kinds [\"scan\"].\n" +
			"With --expected-version the write is a compare-and-set (0: must not exist yet).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := "-"
			if len(args) == 1 {
				src = args[0]
			}
			r, err := readRule(cmd.InOrStdin(), src)
			if err != nil {
				return err
			}
			req := &medmeshv1.PutRuleRequest{Rule: r, Actor: w.actor, Reason: w.reason}
			if cmd.Flags().Changed("expected-version") {
				req.ExpectedVersion = &w.expectedVersion
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				req.RequestId = requestID
				resp, err := medmeshv1.NewRuleServiceClient(conn).PutRule(ctx, req)
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rule %s stored: version %d, index %d\n",
					resp.GetRule().GetName(), resp.GetRule().GetVersion(), resp.GetIndex())
				return nil
			})
		},
	}
	w.register(put)

	var dw writeFlags
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a response rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &medmeshv1.DeleteRuleRequest{Name: args[0], Actor: dw.actor, Reason: dw.reason}
			if cmd.Flags().Changed("expected-version") {
				req.ExpectedVersion = &dw.expectedVersion
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				req.RequestId = requestID
				resp, err := medmeshv1.NewRuleServiceClient(conn).DeleteRule(ctx, req)
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rule %s deleted at index %d\n", args[0], resp.GetIndex())
				return nil
			})
		},
	}
	dw.register(del)
	c.AddCommand(list, put, del)
	return c
}

func readRule(stdin io.Reader, src string) (*medmeshv1.ResponseRule, error) {
	var (
		b   []byte
		err error
	)
	if src == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	} else {
		b, err = os.ReadFile(src)
	}
	if err != nil {
		return nil, usagef("read rule: %w", err)
	}
	r := &medmeshv1.ResponseRule{}
	if err := protojson.Unmarshal(b, r); err != nil {
		return nil, usagef("parse rule %s: %w", src, err)
	}
	return r, nil
}

func enumNames[E protoreflect.Enum](es []E) []string {
	var out []string
	for _, e := range es {
		out = append(out, names.Enum(e))
	}
	return out
}

func orAny(s []string) string {
	if len(s) == 0 {
		return "any"
	}
	return strings.Join(s, ",")
}

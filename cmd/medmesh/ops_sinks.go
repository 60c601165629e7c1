package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newSinksCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "sinks",
		Short: "List and change the outbound sinks (SIEM syslog, webhooks)",
		Long: "Outbound sinks receive every committed alert and audit record (decisions, approvals,\n" +
			"policy and rule changes, imports) and, when they list \"finding\" in events, the risk\n" +
			"findings of every device posture committed: syslog RFC 5424 over TCP or TLS with CEF or OCSF\n" +
			"payloads, or webhooks (JSON, OCSF or ServiceNow Import Set rows, HMAC-SHA256 signed).\n" +
			"The leader delivers and commits how far each sink got, so delivery resumes there after a\n" +
			"failover; events carry stable ids (alert/ID, audit/SEQ,\n" +
			"finding/MAC/INDEX/ID) for receivers to deduplicate.\n" +
			"Secrets are file paths on the coordinators, never their contents. Changing sinks is for\n" +
			"approvers, and audited. See docs/integrations.md.",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the sinks and their committed positions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewSinkServiceClient(conn).ListSinks(ctx, &medmeshv1.ListSinksRequest{Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "NAME", "KIND", "FORMAT", "DESTINATION", "EVENTS", "ALERT POS", "AUDIT SEQ", "VERSION", "UPDATED BY")
				for _, s := range resp.GetSinks() {
					dest := s.GetAddress()
					if s.GetUrl() != "" {
						dest = s.GetUrl()
					} else if s.GetTls() {
						dest += " (tls)"
					}
					t.row(s.GetName(), strings.ToLower(strings.TrimPrefix(s.GetKind().String(), "SINK_KIND_")),
						strings.ToLower(strings.TrimPrefix(sinkcfg.Format(s).String(), "SINK_FORMAT_")), dest,
						eventsOrAll(s.GetEvents()), s.GetAlertPosition(), s.GetAuditSeq(), s.GetVersion(), s.GetUpdatedBy())
				}
				return t.flush()
			})
		},
	}

	var w writeFlags
	var fromStart bool
	put := &cobra.Command{
		Use:   "put [FILE|-]",
		Short: "Create or replace a sink from its JSON (a file, or stdin)",
		Long: "Create or replace a sink. The sink is read as protobuf JSON, e.g.\n" +
			`  {"name": "siem", "kind": "SINK_KIND_SYSLOG", "address": "siem.example:6514", "tls": true,` + "\n" +
			`   "ca_file": "/etc/medmesh/siem-ca.pem"}` + "\n" +
			`  {"name": "tickets", "kind": "SINK_KIND_WEBHOOK", "url": "https://itsm.example/hook",` + "\n" +
			`   "hmac_key_file": "/etc/medmesh/hook.key", "events": ["alert"]}` + "\n" +
			"events: any of \"alert\", \"audit\", \"finding\"; none listed: alerts and audit records.\n" +
			"\"finding\" sends one event per risk finding of each device posture committed (CEF line,\n" +
			"OCSF 2002 Vulnerability Finding, or JSON), id finding/MAC/POSTURE-INDEX/FINDING-ID; a\n" +
			"posture replaced before delivery is delivered as its latest version only.\n" +
			"Files are paths on every coordinator. A new sink starts with the events committed after\n" +
			"it (--from-start: the retained history and every device's current posture too); a\n" +
			"replaced sink keeps its positions.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := "-"
			if len(args) == 1 {
				src = args[0]
			}
			s, err := readSink(cmd.InOrStdin(), src)
			if err != nil {
				return err
			}
			req := &medmeshv1.PutSinkRequest{Sink: s, Actor: w.actor, Reason: w.reason, StartAtBeginning: fromStart}
			if cmd.Flags().Changed("expected-version") {
				req.ExpectedVersion = &w.expectedVersion
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				req.RequestId = requestID
				resp, err := medmeshv1.NewSinkServiceClient(conn).PutSink(ctx, req)
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sink %s stored: version %d, index %d\n", resp.GetSink().GetName(), resp.GetSink().GetVersion(), resp.GetIndex())
				return nil
			})
		},
	}
	w.register(put)
	put.Flags().BoolVar(&fromStart, "from-start", false, "a new sink delivers the retained history too")

	var dw writeFlags
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a sink",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &medmeshv1.DeleteSinkRequest{Name: args[0], Actor: dw.actor, Reason: dw.reason}
			if cmd.Flags().Changed("expected-version") {
				req.ExpectedVersion = &dw.expectedVersion
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				req.RequestId = requestID
				resp, err := medmeshv1.NewSinkServiceClient(conn).DeleteSink(ctx, req)
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sink %s deleted at index %d\n", args[0], resp.GetIndex())
				return nil
			})
		},
	}
	dw.register(del)

	test := &cobra.Command{
		Use:   "test NAME",
		Short: "Send one test event (id test/...) to a sink from the leader",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewSinkServiceClient(conn).TestSink(ctx, &medmeshv1.TestSinkRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				if !resp.GetDelivered() {
					return fmt.Errorf("sink %s: test event %s not delivered: %s", args[0], resp.GetEventId(), resp.GetError())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sink %s: test event %s delivered\n", args[0], resp.GetEventId())
				return nil
			})
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the leader's delivery state of every sink (backlog, failures, stuck)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewSinkServiceClient(conn).GetSinkStatus(ctx, &medmeshv1.GetSinkStatusRequest{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "NAME", "BACKLOG", "DELIVERED", "FAILURES", "STUCK", "LAST DELIVERY", "FAILING SINCE", "LAST ERROR")
				for _, s := range resp.GetSinks() {
					t.row(s.GetName(), s.GetBacklog(), s.GetDeliveredTotal(), s.GetFailuresTotal(), s.GetStuck(),
						ts(s.GetLastDeliveryTime()), ts(s.GetFailingSince()), s.GetLastError())
				}
				if err := t.flush(); err != nil {
					return err
				}
				fmt.Fprintf(w, "(delivered by %s, the leader)\n", resp.GetServedBy())
				return nil
			})
		},
	}
	c.AddCommand(list, put, del, test, status)
	return c
}

// readSink reads a sink file with sinkcfg.ParseConfig: unknown and
// output-only fields are refused here, before anything is sent.
func readSink(stdin io.Reader, src string) (*medmeshv1.Sink, error) {
	var (
		b   []byte
		err error
	)
	if src == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, sinkcfg.MaxConfigSize+1))
	} else {
		b, err = os.ReadFile(src)
	}
	if err != nil {
		return nil, usagef("read sink: %w", err)
	}
	s, err := sinkcfg.ParseConfig(b)
	if err != nil {
		return nil, usagef("%s: %w", src, err)
	}
	return s, nil
}

func eventsOrAll(s []string) string {
	if len(s) == 0 {
		return "alert,audit"
	}
	return strings.Join(s, ",")
}

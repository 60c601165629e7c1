package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newDecisionsCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "decisions",
		Short: "List, watch and review enforcement decisions",
	}
	var (
		device, state string
		limit         int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List decisions in index order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := parseEnum(medmeshv1.DecisionState(0).Descriptor(), "state", state)
			if err != nil {
				return err
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				cl := medmeshv1.NewDecisionServiceClient(conn)
				var last *medmeshv1.ListDecisionsResponse
				ds, next, err := listAll(limit, func(token string, size int32) ([]*medmeshv1.Decision, string, error) {
					resp, err := cl.ListDecisions(ctx, &medmeshv1.ListDecisionsRequest{PageSize: size, PageToken: token,
						DeviceMac: device, State: medmeshv1.DecisionState(n), Consistency: o.consistency()})
					last = resp
					return resp.GetDecisions(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListDecisionsResponse{Decisions: ds, NextPageToken: next, ReadInfo: last.GetReadInfo()})
				}
				t := decisionTable(w)
				for _, d := range ds {
					decisionRow(t, d)
				}
				return t.flush()
			})
		},
	}
	list.Flags().StringVar(&device, "device", "", "only this device's decisions")
	list.Flags().StringVar(&state, "state", "", "only this state (effective, pending-approval, approved, rejected)")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many decisions (0: all)")

	var from uint64
	watchCmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream decisions as they are committed, until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			var t *table
			if !o.json() {
				t = decisionTable(w)
				if err := t.flush(); err != nil {
					return err
				}
			}
			open := func(ctx context.Context, conn *grpc.ClientConn, from uint64, token string) (func() (watchEvent[*medmeshv1.Decision], error), error) {
				s, err := medmeshv1.NewDecisionServiceClient(conn).WatchDecisions(ctx,
					&medmeshv1.WatchDecisionsRequest{FromIndex: from, ResumeToken: token, WatcherId: "cli/" + defaultActor()})
				if err != nil {
					return nil, err
				}
				return func() (watchEvent[*medmeshv1.Decision], error) {
					m, err := s.Recv()
					if err != nil {
						return watchEvent[*medmeshv1.Decision]{}, err
					}
					d := m.GetDecision()
					return watchEvent[*medmeshv1.Decision]{item: d, index: d.GetIndex(), applied: m.GetAppliedIndex(), token: m.GetResumeToken(), isItem: d != nil}, nil
				}, nil
			}
			return watch(cmd, o, from, open, func(d *medmeshv1.Decision) error {
				if o.json() {
					return printLine(w, d)
				}
				decisionRow(t, d)
				return t.flush()
			})
		},
	}
	watchCmd.Flags().Uint64Var(&from, "from-index", 0, "stream decisions with a Raft index above this (0: from the beginning)")

	c.AddCommand(list, watchCmd, reviewCmd(o, true), reviewCmd(o, false))
	return c
}

// reviewCmd builds "approve ID" or "reject ID".
func reviewCmd(o *opFlags, approve bool) *cobra.Command {
	verb, short := "reject", "Reject a pending decision"
	if approve {
		verb, short = "approve", "Approve a pending decision (life-critical devices need this)"
	}
	var actor, reason string
	c := &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return usagef("%s: --reason is required", verb)
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				cl := medmeshv1.NewDecisionServiceClient(conn)
				var d *medmeshv1.Decision
				if approve {
					resp, err := cl.ApproveDecision(ctx, &medmeshv1.ApproveDecisionRequest{Id: args[0], Actor: actor, Reason: reason, RequestId: requestID})
					if err != nil {
						return err
					}
					d = resp.GetDecision()
				} else {
					resp, err := cl.RejectDecision(ctx, &medmeshv1.RejectDecisionRequest{Id: args[0], Actor: actor, Reason: reason, RequestId: requestID})
					if err != nil {
						return err
					}
					d = resp.GetDecision()
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, d)
				}
				t := decisionTable(w)
				decisionRow(t, d)
				return t.flush()
			})
		},
	}
	c.Flags().StringVar(&actor, "actor", defaultActor(), "a comment on who reviews (the audit actor is your certificate's identity)")
	c.Flags().StringVar(&reason, "reason", "", "why (required, recorded in the audit trail)")
	return c
}

func decisionTable(w io.Writer) *table {
	return newTable(w, "INDEX", "ID", "ACTION", "STATE", "DEVICE", "TIER", "PEER/POLICY", "ACTOR", "REASON", "CREATED")
}

func decisionRow(t *table, d *medmeshv1.Decision) {
	target := d.GetPeerCidr()
	if d.GetPolicy() != nil {
		target = d.GetPolicy().GetName()
	}
	state := names.Enum(d.GetState())
	if d.GetAdvisory() {
		state += " (advisory)" // no inline enforcer: for a gateway or NAC
	}
	t.row(d.GetIndex(), d.GetId(), names.Enum(d.GetAction()), state, d.GetDeviceMac(),
		names.Enum(d.GetTier()), target, d.GetActor(), truncate(d.GetReason(), 40), ts(d.GetCreateTime()))
}

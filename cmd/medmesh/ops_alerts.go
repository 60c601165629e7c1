package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newAlertsCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "alerts",
		Short: "List, watch and acknowledge alerts",
	}
	var (
		device, state string
		minScore      uint32
		limit         int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List alerts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := parseEnum(medmeshv1.AlertState(0).Descriptor(), "state", state)
			if err != nil {
				return err
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewAlertServiceClient(conn)
				var last *medmeshv1.ListAlertsResponse
				as, next, err := listAll(limit, func(token string, size int32) ([]*medmeshv1.Alert, string, error) {
					resp, err := cl.ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: size, PageToken: token,
						DeviceMac: device, State: medmeshv1.AlertState(n), MinScore: minScore, Consistency: o.consistency()})
					last = resp
					return resp.GetAlerts(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListAlertsResponse{Alerts: as, NextPageToken: next, ReadInfo: last.GetReadInfo()})
				}
				t := alertTable(w)
				for _, a := range as {
					alertRow(t, a)
				}
				return t.flush()
			})
		},
	}
	list.Flags().StringVar(&device, "device", "", "only this device's alerts")
	list.Flags().StringVar(&state, "state", "", "only this state (open, acknowledged)")
	list.Flags().Uint32Var(&minScore, "min-score", 0, "only alerts with at least this risk score")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many alerts (0: all)")

	var from uint64
	watchCmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream alerts as they are committed, until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			var t *table
			if !o.json() {
				t = alertTable(w)
				if err := t.flush(); err != nil {
					return err
				}
			}
			open := func(ctx context.Context, conn *grpc.ClientConn, from uint64, token string) (func() (watchEvent[*medmeshv1.Alert], error), error) {
				s, err := medmeshv1.NewAlertServiceClient(conn).WatchAlerts(ctx, &medmeshv1.WatchAlertsRequest{FromIndex: from, ResumeToken: token})
				if err != nil {
					return nil, err
				}
				return func() (watchEvent[*medmeshv1.Alert], error) {
					m, err := s.Recv()
					if err != nil {
						return watchEvent[*medmeshv1.Alert]{}, err
					}
					a := m.GetAlert()
					return watchEvent[*medmeshv1.Alert]{item: a, index: a.GetIndex(), applied: m.GetAppliedIndex(), token: m.GetResumeToken(), isItem: a != nil}, nil
				}, nil
			}
			return watch(cmd, o, from, open, func(a *medmeshv1.Alert) error {
				if o.json() {
					return printLine(w, a)
				}
				alertRow(t, a)
				return t.flush()
			})
		},
	}
	watchCmd.Flags().Uint64Var(&from, "from-index", 0, "stream alerts with a Raft index above this (0: from the beginning)")

	var actor, note string
	ack := &cobra.Command{
		Use:   "ack ID",
		Short: "Acknowledge an alert",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				resp, err := medmeshv1.NewAlertServiceClient(conn).AcknowledgeAlert(ctx,
					&medmeshv1.AcknowledgeAlertRequest{Id: args[0], Actor: actor, Note: note, RequestId: requestID})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := alertTable(w)
				alertRow(t, resp.GetAlert())
				return t.flush()
			})
		},
	}
	ack.Flags().StringVar(&actor, "actor", defaultActor(), "a comment on who acknowledges (the audit actor is your certificate's identity)")
	ack.Flags().StringVar(&note, "note", "", "note kept with the acknowledgement")

	c.AddCommand(list, watchCmd, ack)
	return c
}

func alertTable(w io.Writer) *table {
	return newTable(w, "INDEX", "ID", "STATE", "DEVICE", "TIER", "KIND", "SCORE", "SUMMARY", "DETECTED")
}

func alertRow(t *table, a *medmeshv1.Alert) {
	t.row(a.GetIndex(), a.GetId(), names.Enum(a.GetState()), a.GetDeviceMac(), names.Enum(a.GetTier()), a.GetKind(),
		a.GetRisk().GetScore(), truncate(a.GetSummary(), 60), ts(a.GetDetectTime()))
}

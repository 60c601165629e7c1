package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newClusterCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "cluster",
		Short: "Show and manage the coordinator cluster",
	}
	c.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the leader and every member's state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewClusterServiceClient(conn).GetClusterStatus(ctx,
					&medmeshv1.GetClusterStatusRequest{Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				leader := resp.GetLeader()
				if leader == "" {
					leader = "(none)"
				}
				fmt.Fprintf(w, "leader: %s  term: %d  commit index: %d\n\n", leader, resp.GetTerm(), resp.GetCommitIndex())
				t := newTable(w, "ID", "ROLE", "STATE", "SUFFRAGE", "FLOOR", "ZONE", "API", "RAFT", "GOSSIP", "APPLIED", "HEALTH", "LAST SEEN")
				for _, m := range resp.GetMembers() {
					t.row(m.GetId(), m.GetRole(), m.GetState(), m.GetSuffrage(), m.GetFloor(), m.GetZone(), m.GetApiAddr(), m.GetRaftAddr(),
						m.GetGossipAddr(), m.GetAppliedIndex(), m.GetHealth(), ts(m.GetLastSeen()))
				}
				return t.flush()
			})
		},
	})
	return c
}

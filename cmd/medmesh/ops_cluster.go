package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
				if status.Code(err) == codes.Unavailable {
					return leaderless(cmd, o, err)
				}
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

// leaderless answers `cluster status` when no leader answers (err): it asks
// each --addr coordinator for its own view, without routing to a leader,
// prints each one's reachability, Raft state, term and last contact with
// the leader, and fails: a cluster without a leader takes no writes.
func leaderless(cmd *cobra.Command, o *opFlags, cause error) error {
	addrs := strings.Split(o.addr, ",")
	views := make([]*medmeshv1.Member, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			views[i] = probeCoordinator(cmd.Context(), o, strings.TrimSpace(a))
		}()
	}
	wg.Wait()
	w := cmd.OutOrStdout()
	answering := 0
	for _, m := range views {
		if m.GetHealth() == "ok" {
			answering++
		}
	}
	if answering == 0 {
		return cause // nobody to show: the connection error says it all
	}
	if o.json() {
		if err := printProto(w, &medmeshv1.GetClusterStatusResponse{Members: views}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "leader: (none)  %d of %d coordinators answer\n\n", answering, len(addrs))
		t := newTable(w, "ADDR", "ID", "REACHABLE", "STATE", "APPLIED", "LAST CONTACT", "HEALTH")
		for _, m := range views {
			reach, contact := "yes", "never"
			if m.GetHealth() != "ok" {
				reach, contact = "no", "-"
			} else if m.GetLastSeen() != nil {
				contact = time.Since(m.GetLastSeen().AsTime()).Round(time.Millisecond).String() + " ago"
			}
			t.row(m.GetApiAddr(), m.GetId(), reach, m.GetState(), m.GetAppliedIndex(), contact, m.GetHealth())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return fmt.Errorf("no leader: %d of %d coordinators answer, none is or knows a leader (%v)", answering, len(addrs), o.rpcError(cause))
}

// probeCoordinator asks one coordinator for its own Raft view, answered
// locally (the probe metadata coordinators use among themselves).
func probeCoordinator(ctx context.Context, o *opFlags, addr string) *medmeshv1.Member {
	one := *o
	one.addr = addr
	m := &medmeshv1.Member{ApiAddr: addr, Role: "coordinator", State: "unreachable"}
	conn, err := one.dial()
	if err != nil {
		m.Health = err.Error()
		return m
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-medmesh-probe", "cli"), o.timeout)
	defer cancel()
	resp, err := medmeshv1.NewClusterServiceClient(conn).GetClusterStatus(ctx,
		&medmeshv1.GetClusterStatusRequest{Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
	if err != nil {
		m.Health = one.rpcError(err).Error()
		return m
	}
	for _, s := range resp.GetMembers() {
		if s.GetId() == resp.GetReadInfo().GetServedBy() {
			s.ApiAddr = addr
			return s
		}
	}
	m.State, m.Health = "unknown", "answered without its own member entry"
	return m
}

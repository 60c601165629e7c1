package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/coordinator"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newSnapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up a running cluster and restore it into a new one",
	}
	o := &opFlags{}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a checksummed backup archive of the cluster's state to FILE",
		Long: "save asks the leader (through any coordinator in --addr) for a Raft snapshot taken now and\n" +
			"writes one archive: the snapshot, the audit segments up to the snapshot's audit head, the\n" +
			"other files of the leader's data directory (the risk bundle and SBOM store) and SHA256SUMS,\n" +
			"the SHA-256 of every file. Needs an approver certificate. FILE is written only when complete.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				return saveSnapshot(ctx, cmd.OutOrStdout(), conn, args[0])
			})
		},
	}
	o.register(save)
	if err := save.PersistentFlags().Set("timeout", "30m"); err != nil {
		panic(err)
	}
	save.PersistentFlags().Lookup("timeout").DefValue = "30m0s"
	c.AddCommand(save)

	var ro coordinator.RestoreOptions
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR --id ID [--raft ADDR]",
		Short: "Write a backup archive into a fresh data directory (offline)",
		Long: "restore checks every file of the archive against its SHA256SUMS (a corrupt archive is refused,\n" +
			"naming the file), loads the snapshot and checks its state hash, then writes it into DIR, which\n" +
			"must be empty or absent: the Raft snapshot with the coordinator --id ID at --raft ADDR as the\n" +
			"only voter, the audit trail, and the data files. Start that coordinator on DIR with the same\n" +
			"--id and --raft and no --bootstrap-expect; the other coordinators of the new cluster start\n" +
			"with empty data directories and --join it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ro.DataDir == "" || ro.ID == "" {
				return usagef("restore: --data-dir and --id are required")
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			res, err := coordinator.RestoreSnapshot(f, ro)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "restored:    %s into %s\n", args[0], ro.DataDir)
			fmt.Fprintf(w, "raft:        index %d, term %d; %s at %s is the only voter\n", res.Index, res.Term, ro.ID, ro.RaftAddr)
			fmt.Fprintf(w, "state hash:  %s\n", res.StateHash)
			fmt.Fprintf(w, "audit head:  record %d\nfiles:       %d\n", res.AuditHeadSeq, res.Files)
			fmt.Fprintf(w, "next:        medmesh coordinator --id %s --raft %s --data-dir %s ...\n", ro.ID, ro.RaftAddr, ro.DataDir)
			return nil
		},
	}
	f := restore.Flags()
	f.StringVar(&ro.DataDir, "data-dir", "", "the new coordinator's data directory (empty or absent)")
	f.StringVar(&ro.ID, "id", "", "the --id of the coordinator that will start on it")
	f.StringVar(&ro.RaftAddr, "raft", "127.0.0.1:7401", "the --raft address of that coordinator")
	c.AddCommand(restore)
	return c
}

// saveSnapshot receives the archive into FILE.partial and renames it to
// FILE once the summary arrived.
func saveSnapshot(ctx context.Context, w io.Writer, conn *grpc.ClientConn, file string) error {
	start := time.Now()
	stream, err := medmeshv1.NewClusterServiceClient(conn).SaveSnapshot(ctx, &medmeshv1.SaveSnapshotRequest{})
	if err != nil {
		return err
	}
	tmp := file + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error { return errors.Join(err, f.Close(), os.Remove(tmp)) }
	var size int64
	var sum *medmeshv1.SnapshotSummary
	for sum == nil {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fail(errors.New("the coordinator ended the archive without its summary: incomplete, not saved"))
		}
		if err != nil {
			return fail(err)
		}
		n, err := f.Write(m.GetChunk())
		size += int64(n)
		if err != nil {
			return fail(err)
		}
		sum = m.GetSummary()
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	abs, _ := filepath.Abs(file)
	fmt.Fprintf(w, "saved:       %s (%d bytes, %s)\n", abs, size, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(w, "raft:        index %d, term %d, from %s\n", sum.GetIndex(), sum.GetTerm(), sum.GetServedBy())
	fmt.Fprintf(w, "state hash:  %s\n", sum.GetStateHash())
	fmt.Fprintf(w, "audit head:  record %d\nfiles:       %d (and SHA256SUMS)\n", sum.GetAuditHeadSeq(), sum.GetFiles())
	return nil
}

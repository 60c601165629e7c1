package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/replay"
)

// replayOptions are the flags of `medmesh replay`.
type replayOptions struct {
	pcap, output string
	debug        bool
	flows        uint32
	report       bool
	learn        string
	score        string
}

func newReplayCmd() *cobra.Command {
	o := replayOptions{}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Run a pcap or pcapng capture through the sensor's XDP program and print its flows",
		Long: "Replay reads a capture (Ethernet, Linux cooked v1/v2, raw IP or BSD loopback), runs every\n" +
			"packet through the sensor's own XDP program with BPF_PROG_TEST_RUN (needs root) using the\n" +
			"capture's timestamps, and prints one flow record per flow, sorted by first_ns.\n\n" +
			"With --report it also runs the sensor's engine (detectors, device identity, baselines,\n" +
			"scoring) and prints the devices found, the detections and the alerts (-o table|json).\n" +
			"With --learn A.pcap --score B.pcap it learns baselines from A, freezes them, and scores B.",
		Example: "  medmesh replay --pcap hl7.pcap -o jsonl\n" +
			"  medmesh replay --pcap ward.pcap --report -o table\n" +
			"  medmesh replay --learn week.pcap --score today.pcap -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runReplay(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.pcap, "pcap", "", "capture file, pcap or pcapng")
	f.StringVarP(&o.output, "output", "o", "", "output: jsonl (default; one flow record per line) or table; with --report or --score: table (default) or json")
	f.BoolVar(&o.report, "report", false, "run the sensor engine and print devices, detections and alerts")
	f.StringVar(&o.learn, "learn", "", "capture to learn baselines from (with --score)")
	f.StringVar(&o.score, "score", "", "capture to score against the baselines learned from --learn")
	f.BoolVar(&o.debug, "debug", false, "full verifier log if the program fails to load")
	f.Uint32Var(&o.flows, "flows", replay.DefaultOptions().FlowEntries, "flow table size")
	return cmd
}

func runReplay(ctx context.Context, o replayOptions, stdout io.Writer) error {
	opts := replay.DefaultOptions()
	opts.Debug, opts.FlowEntries = o.debug, o.flows
	if o.learn != "" || o.score != "" || o.report {
		return runAnalyze(ctx, o, opts, stdout)
	}
	if o.pcap == "" {
		return usagef("replay: --pcap is required")
	}
	if o.output == "" {
		o.output = "jsonl"
	}
	if o.output != "jsonl" && o.output != "table" {
		return usagef("replay: -o %q: want jsonl or table", o.output)
	}
	recs, err := replay.Run(ctx, o.pcap, opts, nil)
	if err != nil && !errors.Is(err, replay.ErrTruncated) {
		return err
	}
	// A truncated capture prints the flows read until the cut, then fails.
	truncated := err
	w := bufio.NewWriter(stdout)
	if o.output == "jsonl" {
		enc := json.NewEncoder(w)
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return fmt.Errorf("replay: write: %w", err)
			}
		}
	} else {
		printTable(w, recs)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("replay: write: %w", err)
	}
	return truncated
}

// runAnalyze runs the engine: --report on --pcap, or --learn A --score B.
func runAnalyze(ctx context.Context, o replayOptions, opts replay.Options, stdout io.Writer) error {
	if (o.learn == "") != (o.score == "") {
		return usagef("replay: --learn and --score go together")
	}
	target := o.pcap
	if o.score != "" {
		if o.pcap != "" {
			return usagef("replay: use either --pcap with --report, or --learn with --score")
		}
		target = o.score
	}
	if target == "" {
		return usagef("replay: --pcap is required")
	}
	if o.output == "" {
		o.output = "table"
	}
	if o.output != "table" && o.output != "json" {
		return usagef("replay: -o %q: want table or json with --report or --score", o.output)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := replay.Analyze(ctx, target, replay.AnalyzeOptions{Replay: opts, Learn: o.learn}, log)
	if err != nil && (a == nil || !errors.Is(err, replay.ErrTruncated)) {
		return err
	}
	truncated := err
	w := bufio.NewWriter(stdout)
	if o.output == "json" {
		err = a.WriteJSON(w)
	} else {
		err = a.WriteTable(w)
	}
	if err != nil {
		return fmt.Errorf("replay: write: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("replay: write: %w", err)
	}
	return truncated
}

func printTable(w io.Writer, recs []flow.Record) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIRST\tPROTO\tSRC\tSPORT\tDST\tDPORT\tVLAN\tFWD_PKTS\tFWD_BYTES\tREV_PKTS\tREV_BYTES\tDURATION\tAPP\tSRC_MAC\tDST_MAC")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n",
			time.Unix(0, r.FirstNs).UTC().Format("2006-01-02T15:04:05.000000Z"), names.Protocol(uint32(r.Proto)), r.Src, r.SrcPort, r.Dst, r.DstPort, r.VLAN,
			r.FwdPackets, r.FwdBytes, r.RevPackets, r.RevBytes, time.Duration(r.LastNs-r.FirstNs), r.App, r.SrcMAC, r.DstMAC)
	}
	tw.Flush()
}

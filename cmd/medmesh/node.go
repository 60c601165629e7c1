package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/node/sensor"
)

// nodeOptions are the flags of `medmesh node`.
type nodeOptions struct {
	id, iface, mode, admin string
	debug, generic         bool
	flows                  uint32
	// Used once the mesh is wired (accepted now, not acted on yet).
	coordinator, join []string
	gossip, zone      string
	floor             int
}

func newNodeCmd() *cobra.Command {
	o := nodeOptions{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a sensor: XDP flow capture on one interface",
		Long: "Run the sensor datapath on --iface. tap mode is for a dedicated mirror port (frames are\n" +
			"dropped after accounting); passive mode passes every frame on. Until the mesh is wired,\n" +
			"flow records are logged.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runNode(ctx, o, os.Stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "sensor id, unique in the mesh")
	f.StringVar(&o.iface, "iface", "", "interface to capture on (required)")
	f.StringVar(&o.mode, "mode", sensor.ModePassive, "tap (mirror port: drop after accounting) or passive (pass frames on)")
	f.BoolVar(&o.debug, "debug", false, "debug logging and the full verifier log if the program fails to load")
	f.BoolVar(&o.generic, "generic", false, "attach in generic (skb) mode even if the driver has native XDP")
	f.Uint32Var(&o.flows, "flows", sensor.DefaultConfig().FlowEntries, "flow table size")
	f.StringVar(&o.admin, "admin", "127.0.0.1:7403", "metrics listener (/metrics); empty to disable")
	f.StringSliceVar(&o.coordinator, "coordinator", nil, "coordinator API addresses (used once the mesh is wired)")
	f.StringVar(&o.gossip, "gossip", "", "gossip listen address (used once the mesh is wired)")
	f.StringSliceVar(&o.join, "join", nil, "gossip peers to join (used once the mesh is wired)")
	f.IntVar(&o.floor, "floor", 0, "floor of this sensor (used once the mesh is wired)")
	f.StringVar(&o.zone, "zone", "", "zone of this sensor, e.g. icu (used once the mesh is wired)")
	return cmd
}

func runNode(ctx context.Context, o nodeOptions, stderr io.Writer) error {
	if o.iface == "" {
		return usagef("node: --iface is required")
	}
	if o.mode != sensor.ModeTap && o.mode != sensor.ModePassive {
		return usagef("node: --mode %q: want tap or passive", o.mode)
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "node")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if o.admin != "" {
		ln, err := net.Listen("tcp", o.admin)
		if err != nil {
			return fmt.Errorf("node: admin listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	cfg := sensor.DefaultConfig()
	cfg.Iface, cfg.Mode, cfg.ID, cfg.Debug = o.iface, o.mode, o.id, o.debug
	cfg.ForceGeneric, cfg.FlowEntries = o.generic, o.flows
	// TODO(lead): mesh wiring (--coordinator, --gossip, --join, --floor,
	// --zone) and the engine's flow.Handler go here; nil logs records only.
	if err := sensor.Run(ctx, cfg, log, reg, nil); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
